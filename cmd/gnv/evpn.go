package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/gnv-project/gnv/stack/evpn"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/spf13/pflag"
)

// gnv up's BGP EVPN control plane: the --evpn-* flags (socket-level: one
// speaker serves every interface of the process), the speaker's life
// cycle, and "gnv evpn show".

// evpnFlags are the --evpn-* flags as given.
type evpnFlags struct {
	asn       int64
	peers     []string
	routerID  string
	rt        string
	hold      int
	keepalive int
	strictV6  bool
	dupMoves  int
	dupWindow int
	dupFreeze int
}

func addEVPNFlags(fs *pflag.FlagSet, e *evpnFlags) {
	fs.Int64Var(&e.asn, "evpn-asn", 0, "run a BGP EVPN control plane in this AS, 1..4294967295 (iBGP with the --evpn-peer route reflectors); the interfaces then need no --remote, and learning is off unless --learn is given")
	fs.StringArrayVar(&e.peers, "evpn-peer", nil, "BGP EVPN peer (route reflector), ADDR or ADDR:PORT (port 179); repeatable")
	fs.StringVar(&e.routerID, "evpn-router-id", "", "BGP router ID, an IPv4 address (default: the VTEP address --local or --underlay-addr, if IPv4)")
	fs.StringVar(&e.rt, "evpn-rt", "", "route target of every interface, AS:N or IP:N (default: ASN:VNI per interface, as FRR derives it)")
	fs.IntVar(&e.hold, "evpn-hold", 90, "BGP hold time in seconds, 3..65535: a peer silent this long is down and its routes go")
	fs.BoolVar(&e.strictV6, "evpn-strict-ipv6", false, "with an IPv6 VTEP address, send the Type-3 route as the RFCs have it (IPv6 originating router and PMSI tunnel identifier); by default it names the router ID and has no PMSI tunnel attribute, which FRR 8.4 needs")
	fs.IntVar(&e.keepalive, "evpn-keepalive", 0, "BGP keepalive interval in seconds, 1..hold/3 (default: hold/3, at most 30)")
	fs.IntVar(&e.dupMoves, "evpn-dup-moves", evpn.DefaultDupMACMoves, "duplicate MAC detection (RFC 7432 15.1): a MAC that moves between this VTEP and others this many times within --evpn-dup-window is frozen as a duplicate, 2..1000; 0 turns detection off")
	fs.IntVar(&e.dupWindow, "evpn-dup-window", int(evpn.DefaultDupMACWindow/time.Second), "duplicate MAC detection window in seconds, 1..3600")
	fs.IntVar(&e.dupFreeze, "evpn-dup-freeze", 0, "how long a duplicate MAC stays frozen, in seconds, 1..86400; 0: until gnv evpn clear-duplicates")
}

// evpnPlan validates the flags into the speaker's options; nil when
// --evpn-asn is not given. local is the VTEP address (--local or
// --underlay-addr).
func (e *evpnFlags) plan(local netip.Addr) (*evpn.Options, error) {
	if e.asn == 0 {
		if len(e.peers) > 0 || e.routerID != "" || e.rt != "" || e.strictV6 {
			return nil, fmt.Errorf("--evpn-peer, --evpn-router-id, --evpn-rt and --evpn-strict-ipv6 need --evpn-asn: the AS the BGP EVPN speaker runs in")
		}
		if e.dupMoves != evpn.DefaultDupMACMoves || e.dupWindow != int(evpn.DefaultDupMACWindow/time.Second) || e.dupFreeze != 0 {
			return nil, fmt.Errorf("--evpn-dup-moves, --evpn-dup-window and --evpn-dup-freeze need --evpn-asn: the AS the BGP EVPN speaker runs in")
		}
		return nil, nil
	}
	if e.asn < 1 || e.asn > math.MaxUint32 {
		return nil, fmt.Errorf("--evpn-asn %d out of range: valid AS numbers are 1..4294967295", e.asn)
	}
	o := &evpn.Options{ASN: uint32(e.asn)}
	if len(e.peers) == 0 {
		return nil, fmt.Errorf("--evpn-asn needs --evpn-peer: at least one BGP peer (a route reflector), ADDR or ADDR:PORT")
	}
	for _, s := range e.peers {
		p := evpn.Peer{}
		if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
			p.Address, p.Port = ap.Addr().Unmap(), ap.Port()
		} else if a, err := netip.ParseAddr(s); err == nil {
			p.Address = a.Unmap()
		} else {
			return nil, fmt.Errorf("--evpn-peer %q: want ADDR or ADDR:PORT (port 1..65535), like 192.0.2.254 or [2001:db8::fe]:179", s)
		}
		if p.Address.IsUnspecified() || p.Address.IsMulticast() {
			return nil, fmt.Errorf("--evpn-peer %q: want a unicast address", s)
		}
		o.Peers = append(o.Peers, p)
	}
	if !local.IsValid() || local.IsUnspecified() {
		return nil, fmt.Errorf("--evpn-asn needs the VTEP address other hosts send to: give --local (or --underlay-addr with --underlay packet or tap)")
	}
	o.NextHop = local
	if e.routerID != "" {
		a, err := netip.ParseAddr(e.routerID)
		if err != nil || !a.Unmap().Is4() || a.IsUnspecified() {
			return nil, fmt.Errorf("--evpn-router-id %q: want an IPv4 address, like 192.0.2.1", e.routerID)
		}
		o.RouterID = a.Unmap()
	} else if !local.Is4() {
		return nil, fmt.Errorf("--evpn-router-id is required with an IPv6 VTEP address (%s): the BGP router ID is an IPv4 address", local)
	}
	if e.rt != "" {
		if _, err := bgp.ParseRouteTarget(e.rt); err != nil || !strings.Contains(e.rt, ":") {
			return nil, fmt.Errorf("--evpn-rt %q: want AS:N (like 65000:100) or IP:N (like 192.0.2.1:100)", e.rt)
		}
		o.RouteTarget = e.rt
	}
	if e.hold < 3 || e.hold > 65535 {
		return nil, fmt.Errorf("--evpn-hold %d out of range: valid hold times are 3..65535 seconds", e.hold)
	}
	o.HoldTime = time.Duration(e.hold) * time.Second
	o.StrictIPv6 = e.strictV6
	if e.keepalive != 0 {
		if e.keepalive < 1 || e.keepalive > e.hold/3 {
			return nil, fmt.Errorf("--evpn-keepalive %d out of range: valid intervals are 1..%d seconds (a third of --evpn-hold)", e.keepalive, e.hold/3)
		}
		o.KeepaliveInterval = time.Duration(e.keepalive) * time.Second
	}
	switch {
	case e.dupMoves == 0:
		o.DupMACMoves = -1
	case e.dupMoves < 2 || e.dupMoves > 1000:
		return nil, fmt.Errorf("--evpn-dup-moves %d out of range: valid counts are 2..1000 (0: no duplicate MAC detection)", e.dupMoves)
	default:
		o.DupMACMoves = e.dupMoves
	}
	if e.dupWindow < 1 || e.dupWindow > 3600 {
		return nil, fmt.Errorf("--evpn-dup-window %d out of range: valid windows are 1..3600 seconds", e.dupWindow)
	}
	o.DupMACWindow = time.Duration(e.dupWindow) * time.Second
	if e.dupFreeze < 0 || e.dupFreeze > 86400 {
		return nil, fmt.Errorf("--evpn-dup-freeze %d out of range: valid freezes are 1..86400 seconds (0: until gnv evpn clear-duplicates)", e.dupFreeze)
	}
	o.DupMACFreeze = time.Duration(e.dupFreeze) * time.Second
	return o, nil
}

// startEVPN starts the speaker and attaches every interface to it.
func startEVPN(o *evpn.Options, ifaces []*runningIface, log *slog.Logger) (*evpn.Speaker, error) {
	opts := *o
	opts.Logger = log
	sp, err := evpn.New(opts)
	if err != nil {
		return nil, err
	}
	for _, ri := range ifaces {
		if err := sp.Attach(ri.tun); err != nil {
			sp.Close()
			return nil, fmt.Errorf("%s: %w", ri.plan.name, err)
		}
		ri.evpn = sp
	}
	var peers []string
	for _, p := range opts.Peers {
		peers = append(peers, p.Address.String())
	}
	log.Info("evpn: BGP speaker up", "asn", opts.ASN, "vtep", opts.NextHop, "peers", strings.Join(peers, ","))
	return sp, nil
}

// handleEVPNControl answers "evpn show NAME" and "evpn clear-duplicates
// NAME [MAC]".
func handleEVPNControl(w io.Writer, op string, args []string, ifaces []*runningIface) error {
	var sp *evpn.Speaker
	for _, ri := range ifaces {
		if ri.evpn != nil {
			sp = ri.evpn
			break
		}
	}
	switch op {
	case "show":
		if sp == nil {
			break
		}
		sn := sp.Show()
		if len(args) > 0 && args[0] == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(evpnJSON(sn))
		}
		fmt.Fprint(w, sn)
		return nil
	case "clear-duplicates":
		var mac net.HardwareAddr
		if len(args) > 0 {
			var err error
			if mac, err = parseUnicastMAC("MAC", args[0]); err != nil {
				return err
			}
		}
		if sp == nil {
			break
		}
		fmt.Fprintf(w, "cleared %d duplicate MAC(s)\n", sp.ClearDuplicates(mac))
		return nil
	default:
		return fmt.Errorf("evpn %q: the commands are show and clear-duplicates", op)
	}
	return fmt.Errorf("this gnv up runs no BGP EVPN control plane (see --evpn-asn)")
}

// evpnShow is gnv evpn show --json: evpn.Snapshot with stable snake_case
// names (see the README).
type evpnShow struct {
	ASN      uint32         `json:"asn"`
	RouterID string         `json:"router_id"`
	VTEP     string         `json:"vtep"`
	Peers    []evpnPeerShow `json:"peers"`
	VNIs     []evpnVNIShow  `json:"vnis"`
	Stats    evpnStatsShow  `json:"stats"`
}

type evpnPeerShow struct {
	Address          string `json:"address"`
	ASN              uint32 `json:"asn"`
	State            string `json:"state"`
	UptimeSeconds    int64  `json:"uptime_seconds"`
	RoutesReceived   uint64 `json:"routes_received"`
	RoutesAccepted   uint64 `json:"routes_accepted"`
	RoutesAdvertised uint64 `json:"routes_advertised"`
}

type evpnVNIShow struct {
	VNI         uint32        `json:"vni"`
	RD          string        `json:"rd"`
	RouteTarget string        `json:"route_target"`
	Local       []evpnMACShow `json:"local"`
	VTEPs       []string      `json:"vteps"`
	Remote      []evpnMACShow `json:"remote"`
	Duplicates  []evpnDupShow `json:"duplicates"`
}

type evpnMACShow struct {
	MAC  string   `json:"mac"`
	IPs  []string `json:"ips"`
	VTEP string   `json:"vtep,omitempty"` // remote MACs
	Seq  uint32   `json:"seq"`
}

type evpnDupShow struct {
	MAC   string     `json:"mac"`
	Since time.Time  `json:"since"`
	Until *time.Time `json:"until,omitempty"` // absent: until cleared
}

type evpnStatsShow struct {
	RoutesReceived     uint64 `json:"routes_received"`
	RoutesWithdrawn    uint64 `json:"routes_withdrawn"`
	IgnoredEncap       uint64 `json:"ignored_encapsulation"`
	IgnoredRouteTarget uint64 `json:"ignored_route_target"`
	IgnoredType        uint64 `json:"ignored_type"`
	MACMoves           uint64 `json:"mac_moves"`
	DuplicateMACs      uint64 `json:"duplicate_macs"`
	GracefulRestarts   uint64 `json:"graceful_restarts"`
	StaleRoutesRemoved uint64 `json:"stale_routes_removed"`
}

func evpnJSON(sn evpn.Snapshot) evpnShow {
	out := evpnShow{ASN: sn.ASN, RouterID: sn.RouterID.String(), VTEP: sn.NextHop.String(), Peers: []evpnPeerShow{}, VNIs: []evpnVNIShow{},
		Stats: evpnStatsShow{RoutesReceived: sn.Stats.Received, RoutesWithdrawn: sn.Stats.Withdrawn, IgnoredEncap: sn.Stats.IgnoredEncap,
			IgnoredRouteTarget: sn.Stats.IgnoredRT, IgnoredType: sn.Stats.IgnoredType, MACMoves: sn.Stats.Moves, DuplicateMACs: sn.Stats.DuplicateMACs,
			GracefulRestarts: sn.Stats.GracefulRestarts, StaleRoutesRemoved: sn.Stats.StaleRemoved}}
	for _, p := range sn.Peers {
		out.Peers = append(out.Peers, evpnPeerShow{Address: p.Address.String(), ASN: p.ASN, State: p.State, UptimeSeconds: int64(p.Uptime / time.Second),
			RoutesReceived: p.Received, RoutesAccepted: p.Accepted, RoutesAdvertised: p.Advertised})
	}
	macs := func(ms []evpn.MACInfo) []evpnMACShow {
		out := []evpnMACShow{}
		for _, m := range ms {
			e := evpnMACShow{MAC: m.MAC.String(), IPs: []string{}, Seq: m.Seq}
			if m.VTEP.IsValid() {
				e.VTEP = m.VTEP.String()
			}
			for _, ip := range m.IPs {
				e.IPs = append(e.IPs, ip.String())
			}
			out = append(out, e)
		}
		return out
	}
	for _, v := range sn.VNIs {
		vs := evpnVNIShow{VNI: v.VNI, RD: v.RD, RouteTarget: strings.TrimPrefix(v.RouteTarget, "rt:"), Local: macs(v.Local), VTEPs: []string{},
			Remote: macs(v.Remote), Duplicates: []evpnDupShow{}}
		for _, a := range v.VTEPs {
			vs.VTEPs = append(vs.VTEPs, a.String())
		}
		for _, d := range v.Duplicates {
			e := evpnDupShow{MAC: d.MAC.String(), Since: d.Since}
			if !d.Until.IsZero() {
				e.Until = &d.Until
			}
			vs.Duplicates = append(vs.Duplicates, e)
		}
		out.VNIs = append(out.VNIs, vs)
	}
	return out
}

// evpnSummary is the control plane in gnv show: the sessions, and the MACs
// other VTEPs advertise and those frozen as duplicates, over every VNI.
type evpnSummary struct {
	ASN           uint32          `json:"asn"`
	RouterID      string          `json:"router_id"`
	VTEP          string          `json:"vtep"`
	Peers         []evpnPeerState `json:"peers"`
	RemoteMACs    int             `json:"remote_macs"`
	DuplicateMACs int             `json:"duplicate_macs"`
}

type evpnPeerState struct {
	Address string `json:"address"`
	State   string `json:"state"`
}

func summarizeEVPN(sn evpn.Snapshot) *evpnSummary {
	e := &evpnSummary{ASN: sn.ASN, RouterID: sn.RouterID.String(), VTEP: sn.NextHop.String(), Peers: []evpnPeerState{}}
	for _, p := range sn.Peers {
		e.Peers = append(e.Peers, evpnPeerState{Address: p.Address.String(), State: p.State})
	}
	for _, v := range sn.VNIs {
		e.RemoteMACs += len(v.Remote)
		e.DuplicateMACs += len(v.Duplicates)
	}
	return e
}
