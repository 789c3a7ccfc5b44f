// Package evpn is a BGP EVPN control plane for gnv's Geneve tunnels (RFC
// 7432, RFC 8365, draft-ietf-bess-evpn-geneve): a GoBGP speaker runs in the
// process, peers over iBGP with route reflectors (FRR, say) over the host
// network, and drives the forwarding state of the tunnels attached to it.
//
// Per attached tunnel (one VNI) the speaker advertises
//
//   - a Type-3 Inclusive Multicast Ethernet Tag route: originating router
//     and PMSI tunnel (ingress replication, label = VNI) = this VTEP's
//     underlay address (for an IPv6 VTEP by default the router ID and no
//     PMSI tunnel, which FRR 8.4 can carry: see Options.StrictIPv6);
//   - Type-2 MAC/IP routes for the MACs behind this VTEP: a netstack
//     overlay's own MAC with each of its addresses; for a TAP overlay the
//     device's MAC and addresses and the MACs (and ARP/ND sender addresses)
//     the host sends, learned locally and aged like the forwarding table,
//     with MAC mobility sequence numbers (RFC 7432 §15) when a MAC moves
//     here from another VTEP;
//
// all with the BGP Encapsulation extended community for Geneve (tunnel
// type 19, RFC 9012), RD = router-id:VNI and the route target ASN:VNI (the
// RFC 8365 §5.1.2.1 convention FRR follows) or a configured one. From the
// routes other VTEPs advertise it builds
//
//   - the flood list (Type-3: head-end replication to every VTEP of the
//     VNI, no multicast);
//   - static forwarding entries, origin "evpn" (Type-2: MAC → the VTEP
//     that advertised it; the highest sequence number wins);
//   - ARP/ND suppression entries (Type-2 with an address), so neighbour
//     resolution for remote hosts is answered locally;
//   - for L3 tunnels, host routes (Type-2 with an address → VTEP).
//
// A MAC that moves between this VTEP and others too often (on two hosts at
// once, or in an L2 loop) is frozen as a duplicate (RFC 7432 §15.1; see
// Options.DupMACMoves and Speaker.ClearDuplicates).
//
// Routes with another encapsulation (VXLAN, MPLS, or none, which means
// MPLS), with route targets of no attached VNI, or of other route types are
// ignored and counted. When a peer goes down GoBGP withdraws its routes and
// their entries go, unless it restarts gracefully (RFC 4724; see
// Options.NoGracefulRestart): then they stay until it is back. Close
// withdraws this VTEP's routes before it stops.
//
// Single-homing only: no Ethernet segments (Type-1/Type-4) and no IP
// prefix routes (Type-5).
package evpn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/gnv-project/gnv/stack"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Origin marks the forwarding, suppression and host-route entries the
// speaker installs (endpoint.FDBEntry.Origin).
const Origin = "evpn"

// Defaults.
const (
	DefaultHoldTime          = 90 * time.Second
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultConnectRetry      = 5 * time.Second
	DefaultLocalInterval     = time.Second
	BGPPort                  = 179
)

// Options configure a Speaker.
type Options struct {
	// ASN is the autonomous system number, 1..4294967295. Peers are iBGP
	// (the same ASN) unless they say otherwise.
	ASN uint32

	// RouterID is the BGP identifier, an IPv4 address; unset means
	// NextHop when that is IPv4. It also forms the route distinguishers.
	RouterID netip.Addr

	// NextHop is this VTEP's underlay address: the next hop and
	// originating router of the routes, where other VTEPs send Geneve.
	// Unset means the local address of the first attached tunnel's
	// underlay socket, which must then not be a wildcard.
	NextHop netip.Addr

	// Peers are the BGP neighbours, normally route reflectors. At least
	// one is required.
	Peers []Peer

	// RouteTarget, if set, is the route target ("AS:N" or "IP:N") of every
	// attached tunnel, exported and imported; empty means ASN:VNI per
	// tunnel (RFC 8365 §5.1.2.1, as FRR derives it).
	RouteTarget string

	// HoldTime and KeepaliveInterval are the BGP timers; 0 means 90 s and
	// 30 s. The hold time is 3..65535 s, the keepalive interval at most a
	// third of it.
	HoldTime, KeepaliveInterval time.Duration

	// ConnectRetry is the time between connection attempts; 0 means 5 s.
	ConnectRetry time.Duration

	// ListenPort, if not 0, makes the speaker accept BGP connections on
	// this port too (on ListenAddresses, default all); by default it only
	// connects to its peers, which is what route-reflector clients do.
	ListenPort      int
	ListenAddresses []netip.Addr

	// StrictIPv6 makes the Type-3 route of an IPv6 VTEP what RFC 7432
	// and RFC 8365 describe: the VTEP's IPv6 address as originating router
	// and, in a PMSI tunnel attribute (ingress replication, 21 bytes), as
	// tunnel identifier. FRR 8.4 (Debian 12's) parses neither: it takes
	// IPv4 originating routers and tunnel identifiers only, and resets
	// the session on anything else (FRR accepts IPv6 tunnel identifiers
	// since 2026). So by default an IPv6 VTEP's Type-3 route names the
	// router ID (IPv4) as originating router and has no PMSI tunnel
	// attribute; its next hop is the VTEP, its route target the VNI. gnv
	// takes the VTEP of a Type-3 route from its PMSI tunnel attribute, or
	// else its next hop, and the VNI from the attribute's label, or else
	// the one attached VNI that imports its route target: it understands
	// both forms. IPv4 VTEPs always send the RFC form.
	StrictIPv6 bool

	// LocalInterval is how often the MACs learned behind TAP overlays are
	// compared with what is advertised; 0 means 1 s.
	LocalInterval time.Duration

	// NoGracefulRestart turns off graceful restart (RFC 4724), which the
	// speaker otherwise offers as the receiving speaker: when a peer that
	// announced it for l2vpn-evpn (FRR: bgp graceful-restart) restarts,
	// the routes it sent are kept, and traffic flows on, until it is back
	// and has sent them again (or its restart time runs out), instead of
	// going at once with its session.
	NoGracefulRestart bool

	// Duplicate MAC detection (RFC 7432 §15.1): a MAC that moves between
	// this VTEP and others DupMACMoves times within DupMACWindow is a
	// duplicate, and its state is frozen for DupMACFreeze, or until
	// Speaker.ClearDuplicates when that is 0. DupMACMoves is 2..1000, 0
	// means 5 and -1 turns detection off; DupMACWindow is 1 s..1 h, 0
	// means 180 s; DupMACFreeze is 0 or 1 s..24 h.
	DupMACMoves                int
	DupMACWindow, DupMACFreeze time.Duration

	// Logger receives the speaker's and GoBGP's messages; nil discards
	// them.
	Logger *slog.Logger
}

// Peer is a BGP neighbour.
type Peer struct {
	// Address is the neighbour's address.
	Address netip.Addr
	// Port is its BGP port; 0 means 179.
	Port uint16
	// ASN is its AS number; 0 means Options.ASN (iBGP).
	ASN uint32
	// LocalAddress, if set, is the source address of the session.
	LocalAddress netip.Addr
}

// Speaker is a running BGP EVPN speaker.
type Speaker struct {
	opts Options
	bgp  *server.BgpServer
	log  *slog.Logger
	rt   uint64 // the configured route target, or 0 for auto

	cancel context.CancelFunc
	done   chan struct{} // the local-learning loop ended

	mu      sync.Mutex
	vnis    map[uint32]*vni
	routes  map[routeKey]*route // every usable EVPN route received, per peer
	peerIDs map[netip.Addr]uint16
	nextHop netip.Addr
	closed  bool
	stats   Stats
	started time.Time
}

// New validates o, starts the BGP speaker and adds its peers. Errors name
// the field (Options.ASN, Options.Peers, ...) and its valid range.
//
// One Speaker per process is the safe use. GoBGP (v4.8.0) keeps its route
// selection options in package variables that every server's start
// writes and every server's sessions read, so starting a second Speaker
// while the first one's sessions exchange routes is a data race inside
// GoBGP (benign, as both write the same values, but -race reports it).
// A process that needs several should start them all before any of their
// peers can connect.
func New(o Options) (*Speaker, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Speaker{opts: o, log: log, vnis: map[uint32]*vni{}, routes: map[routeKey]*route{}, peerIDs: map[netip.Addr]uint16{}, nextHop: o.NextHop.Unmap(), done: make(chan struct{}), started: time.Now()}
	if o.RouteTarget != "" {
		rt, err := parseRT(o.RouteTarget)
		if err != nil {
			return nil, fmt.Errorf("evpn: RouteTarget %q: %w", o.RouteTarget, err)
		}
		s.rt = rt
	}
	s.bgp = server.NewBgpServer(server.LoggerOption(log.With("component", "gobgp"), nil))
	go s.bgp.Serve()
	listen := int32(-1)
	var addrs []string
	if o.ListenPort != 0 {
		listen = int32(o.ListenPort)
		for _, a := range o.ListenAddresses {
			addrs = append(addrs, a.String())
		}
	}
	// Only the EVPN family: GoBGP makes two tables per family of the
	// global configuration, about 200 KiB each before a route, and by
	// default that is every family it knows (10 MiB).
	if err := s.bgp.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: o.ASN, RouterId: o.RouterID.String(), ListenPort: listen, ListenAddresses: addrs,
		Families: []uint32{uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_L2VPN_EVPN])},
	}}); err != nil {
		s.bgp.Stop()
		return nil, fmt.Errorf("evpn: start BGP: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.receiveOnly(ctx); err != nil {
		cancel()
		s.bgp.Stop()
		return nil, err
	}
	for _, p := range o.Peers {
		if err := s.addPeer(p); err != nil {
			cancel()
			s.bgp.Stop()
			return nil, err
		}
	}
	go s.localLoop(ctx)
	return s, nil
}

// localOnly is the import policy of GoBGP's global RIB: this VTEP's own
// routes, nothing received.
const localOnly = "gnv-evpn-local-only"

// receiveOnly makes the routes peers send reach the speaker as they
// arrive (GoBGP's pre-policy updates, and the withdrawals it makes when a
// peer goes down) and nowhere else: an import policy keeps them out of
// GoBGP's Loc-RIB, which would otherwise hold a second table of them, a
// MAC index and a route-target index (about 430 bytes per route).
// GoBGP's Adj-RIB-In still holds each received path; the speaker chooses
// among the copies of a route from several peers itself (routeKey.peer).
func (s *Speaker) receiveOnly(ctx context.Context) error {
	if err := s.bgp.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: localOnly, Statements: []*api.Statement{{
		Name:       localOnly,
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}}); err != nil {
		return fmt.Errorf("evpn: import policy: %w", err)
	}
	if err := s.bgp.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies: []*api.Policy{{Name: localOnly}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		return fmt.Errorf("evpn: import policy: %w", err)
	}
	if err := s.bgp.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPathUpdate: s.onUpdate, OnPeerUpdate: s.onPeer, OnPathEor: s.onEOR},
		server.WatchUpdate(false, "", ""), server.WatchAdjInWithdraw(), server.WatchPeer(), server.WatchEor(false)); err != nil {
		return fmt.Errorf("evpn: watch: %w", err)
	}
	return nil
}

func (o *Options) validate() error {
	if o.ASN == 0 {
		return fmt.Errorf("evpn: Options.ASN 0: valid AS numbers are 1..4294967295")
	}
	if !o.RouterID.IsValid() && o.NextHop.Unmap().Is4() {
		o.RouterID = o.NextHop.Unmap()
	}
	if !o.RouterID.IsValid() || !o.RouterID.Unmap().Is4() || o.RouterID.IsUnspecified() {
		return fmt.Errorf("evpn: Options.RouterID %v: want an IPv4 address (required when the VTEP address is not IPv4)", o.RouterID)
	}
	o.RouterID = o.RouterID.Unmap()
	if len(o.Peers) == 0 {
		return fmt.Errorf("evpn: Options.Peers: at least one BGP peer (a route reflector) is required")
	}
	for _, p := range o.Peers {
		if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast() {
			return fmt.Errorf("evpn: Options.Peers: address %v: want a unicast address", p.Address)
		}
	}
	if o.HoldTime == 0 {
		o.HoldTime = DefaultHoldTime
	}
	if o.HoldTime < 3*time.Second || o.HoldTime > 65535*time.Second {
		return fmt.Errorf("evpn: Options.HoldTime %v out of range: valid hold times are 3..65535 s", o.HoldTime)
	}
	if o.KeepaliveInterval == 0 {
		o.KeepaliveInterval = min(DefaultKeepaliveInterval, o.HoldTime/3)
	}
	if o.KeepaliveInterval < time.Second || o.KeepaliveInterval > o.HoldTime/3 {
		return fmt.Errorf("evpn: Options.KeepaliveInterval %v out of range: valid intervals are 1 s..HoldTime/3 (%v)", o.KeepaliveInterval, o.HoldTime/3)
	}
	if o.ConnectRetry == 0 {
		o.ConnectRetry = DefaultConnectRetry
	}
	if o.ConnectRetry < time.Second {
		return fmt.Errorf("evpn: Options.ConnectRetry %v: want at least 1 s", o.ConnectRetry)
	}
	if o.ListenPort < 0 || o.ListenPort > 65535 {
		return fmt.Errorf("evpn: Options.ListenPort %d out of range: valid ports are 1..65535 (0: do not listen)", o.ListenPort)
	}
	if o.LocalInterval == 0 {
		o.LocalInterval = DefaultLocalInterval
	}
	if o.DupMACMoves == 0 {
		o.DupMACMoves = DefaultDupMACMoves
	}
	if o.DupMACMoves != -1 && (o.DupMACMoves < 2 || o.DupMACMoves > 1000) {
		return fmt.Errorf("evpn: Options.DupMACMoves %d out of range: valid counts are 2..1000 (0: %d, -1: no duplicate detection)", o.DupMACMoves, DefaultDupMACMoves)
	}
	if o.DupMACWindow == 0 {
		o.DupMACWindow = DefaultDupMACWindow
	}
	if o.DupMACWindow < time.Second || o.DupMACWindow > time.Hour {
		return fmt.Errorf("evpn: Options.DupMACWindow %v out of range: valid windows are 1 s..1 h (0: %v)", o.DupMACWindow, DefaultDupMACWindow)
	}
	if o.DupMACFreeze != 0 && (o.DupMACFreeze < time.Second || o.DupMACFreeze > 24*time.Hour) {
		return fmt.Errorf("evpn: Options.DupMACFreeze %v out of range: valid freezes are 1 s..24 h (0: until Speaker.ClearDuplicates)", o.DupMACFreeze)
	}
	if nh := o.NextHop.Unmap(); nh.IsValid() && (nh.IsUnspecified() || nh.IsMulticast()) {
		return fmt.Errorf("evpn: Options.NextHop %v: want this VTEP's unicast underlay address", nh)
	}
	return nil
}

func secs(d time.Duration) uint64 { return uint64((d + time.Second - 1) / time.Second) }

var evpnFamily = &api.Family{Afi: api.Family_AFI_L2VPN, Safi: api.Family_SAFI_EVPN}

func (s *Speaker) addPeer(p Peer) error {
	asn := p.ASN
	if asn == 0 {
		asn = s.opts.ASN
	}
	port := uint32(p.Port)
	if port == 0 {
		port = BGPPort
	}
	tr := &api.Transport{RemotePort: port}
	if p.LocalAddress.IsValid() {
		tr.LocalAddress = p.LocalAddress.String()
	}
	err := s.bgp.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: p.Address.Unmap().String(), PeerAsn: asn},
		Transport: tr,
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: secs(s.opts.HoldTime), KeepaliveInterval: secs(s.opts.KeepaliveInterval),
			ConnectRetry: secs(s.opts.ConnectRetry), IdleHoldTimeAfterReset: secs(s.opts.ConnectRetry),
		}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: evpnFamily, Enabled: true}}},
		// Graceful restart, as the receiving speaker only (see
		// Options.NoGracefulRestart and restart.go).
		GracefulRestart: &api.GracefulRestart{Enabled: !s.opts.NoGracefulRestart, HelperOnly: true},
	}})
	if err != nil {
		return fmt.Errorf("evpn: peer %s: %w", p.Address, err)
	}
	return nil
}

// Attach puts t's VNI under the speaker's control: its routes are
// advertised and the routes of other VTEPs for it drive its forwarding
// state. The tunnel's own peers (Config.Remotes) stay in its flood list;
// give it none (stack.Config.DynamicPeers) to rely on EVPN alone. A VNI
// may be attached once.
func (s *Speaker) Attach(t *stack.Tunnel) error {
	ep := t.Endpoint()
	cfg := ep.Config()
	if cfg.Group.IsValid() {
		return fmt.Errorf("evpn: vni %d floods to the group %s: an EVPN tunnel replicates to its peers (use no group)", cfg.VNI, cfg.Group)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if _, ok := s.vnis[cfg.VNI]; ok {
		return fmt.Errorf("evpn: vni %d is already attached", cfg.VNI)
	}
	if !s.nextHop.IsValid() {
		a := t.VTEP()
		if !a.IsValid() || a.IsUnspecified() {
			return fmt.Errorf("evpn: vni %d: the tunnel's underlay has no specific local address (a socket on the wildcard address): set Options.NextHop", cfg.VNI)
		}
		s.nextHop = a
	}
	if a := t.VTEP(); a.IsValid() && !a.IsUnspecified() && a.Is4() != s.nextHop.Is4() {
		return fmt.Errorf("evpn: vni %d: the underlay is IPv%d but the VTEP address %s is not", cfg.VNI, fam(a), s.nextHop)
	}
	v := newVNI(s, t)
	s.vnis[cfg.VNI] = v
	v.start()
	// Routes received before the VNI was attached.
	for _, r := range s.routes {
		if r.on == nil && s.importer(r) == v {
			v.apply(r, true)
		}
	}
	return nil
}

func fam(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

var errClosed = errors.New("evpn: speaker closed")

// Close withdraws this VTEP's routes, waits (up to 2 s) for the
// withdrawals to reach the peers, stops the speaker and removes every
// entry it installed in the attached tunnels.
func (s *Speaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	fam := bgp.RF_EVPN
	_ = s.bgp.DeletePath(apiutil.DeletePathRequest{DeleteAll: true, DeleteFamily: &fam})
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && s.advertisedSomewhere() {
		time.Sleep(20 * time.Millisecond)
	}
	s.bgp.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.vnis {
		v.clear()
	}
	return nil
}

// advertisedSomewhere reports whether an established peer still has routes
// of ours.
func (s *Speaker) advertisedSomewhere() bool {
	any := false
	_ = s.bgp.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.State == nil || p.State.SessionState != api.PeerState_SESSION_STATE_ESTABLISHED {
			return
		}
		for _, af := range p.AfiSafis {
			if af.State != nil && af.State.Advertised > 0 {
				any = true
			}
		}
	})
	return any
}

// localLoop re-advertises the MACs learned behind TAP overlays, and ends
// the freezes of duplicate MACs that have run out.
func (s *Speaker) localLoop(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.opts.LocalInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			for _, v := range s.vnis {
				v.expireMoves(now)
				v.pollLocal()
			}
			s.mu.Unlock()
		}
	}
}
