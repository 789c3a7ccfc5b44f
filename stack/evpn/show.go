package evpn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// Stats counts the routes the speaker received.
type Stats struct {
	// Received and Withdrawn count EVPN best-path changes from peers.
	Received, Withdrawn uint64
	// IgnoredEncap counts routes with another encapsulation than Geneve
	// (VXLAN, MPLS, or none, which means MPLS); IgnoredRT those no
	// attached VNI imports (route target or VNI); IgnoredType routes of
	// types other than 2 and 3, or unusable ones.
	IgnoredEncap, IgnoredRT, IgnoredType uint64
	// Moves counts MAC mobility events: a MAC that moved here from another
	// VTEP, or away from here.
	Moves uint64
	// DuplicateMACs counts the MACs found to be duplicates (moving too
	// often: Options.DupMACMoves).
	DuplicateMACs uint64
	// GracefulRestarts counts peer sessions that went down gracefully with
	// routes kept (Options.NoGracefulRestart); StaleRemoved the kept routes
	// that the peer did not send again once back.
	GracefulRestarts, StaleRemoved uint64
}

// PeerInfo is a BGP neighbour as Show reports it.
type PeerInfo struct {
	Address netip.Addr
	ASN     uint32
	// State is the session state: idle, connect, active, opensent,
	// openconfirm or established.
	State string
	// Uptime is how long the session has been established (0 if not).
	Uptime time.Duration
	// Received, Accepted and Advertised count l2vpn-evpn routes.
	Received, Accepted, Advertised uint64
}

// VNIInfo is an attached tunnel as Show reports it.
type VNIInfo struct {
	VNI         uint32
	RouteTarget string
	RD          string
	// Local are the MACs this VTEP advertises, with their addresses and
	// sequence numbers.
	Local []MACInfo
	// VTEPs is the flood list learned from Type-3 routes.
	VTEPs []netip.Addr
	// Remote are the MACs other VTEPs advertise (the winning route each).
	Remote []MACInfo
	// Duplicates are the MACs frozen as duplicates (see
	// Speaker.ClearDuplicates).
	Duplicates []DuplicateInfo
}

// DuplicateInfo is a MAC frozen as a duplicate.
type DuplicateInfo struct {
	MAC   net.HardwareAddr
	Since time.Time
	// Until is when the freeze ends; zero means when it is cleared.
	Until time.Time
}

// MACInfo is one MAC of a VNI.
type MACInfo struct {
	MAC  net.HardwareAddr
	IPs  []netip.Addr
	VTEP netip.Addr // unset for local MACs
	Seq  uint32
}

// Snapshot is the speaker's state.
type Snapshot struct {
	ASN      uint32
	RouterID netip.Addr
	NextHop  netip.Addr
	Peers    []PeerInfo
	VNIs     []VNIInfo
	Stats    Stats
}

// Stats returns the speaker's counters.
func (s *Speaker) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Show returns a snapshot of the peers and the routes per VNI.
func (s *Speaker) Show() Snapshot {
	snap := Snapshot{ASN: s.opts.ASN, RouterID: s.opts.RouterID}
	_ = s.bgp.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		pi := PeerInfo{}
		if p.Conf != nil {
			pi.Address, _ = netip.ParseAddr(p.Conf.NeighborAddress)
			pi.ASN = p.Conf.PeerAsn
		}
		pi.State = "idle"
		if p.State != nil {
			pi.State = strings.ToLower(strings.TrimPrefix(p.State.SessionState.String(), "SESSION_STATE_"))
		}
		if pi.State == "established" && p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
			pi.Uptime = time.Since(p.Timers.State.Uptime.AsTime()).Truncate(time.Second)
		}
		for _, af := range p.AfiSafis {
			if af.State != nil && af.State.Family != nil && af.State.Family.Afi == api.Family_AFI_L2VPN {
				pi.Received, pi.Accepted, pi.Advertised = af.State.Received, af.State.Accepted, af.State.Advertised
			}
		}
		snap.Peers = append(snap.Peers, pi)
	})
	sort.Slice(snap.Peers, func(i, j int) bool { return snap.Peers[i].Address.Less(snap.Peers[j].Address) })
	s.mu.Lock()
	defer s.mu.Unlock()
	snap.NextHop = s.nextHop
	snap.Stats = s.stats
	for _, v := range s.vnis {
		vi := VNIInfo{VNI: v.id, RouteTarget: v.rtEC.String(), RD: v.rd.String()}
		for mac, l := range v.local {
			vi.Local = append(vi.Local, MACInfo{MAC: net.HardwareAddr(slices.Clone(mac[:])), IPs: slices.Clone(l.ips), Seq: l.seq})
		}
		for a := range v.vteps {
			vi.VTEPs = append(vi.VTEPs, a)
		}
		for mac, rs := range v.macs {
			w := winner(rs)
			mi := MACInfo{MAC: net.HardwareAddr(slices.Clone(mac[:])), VTEP: w.vtep, Seq: w.seq}
			for _, r := range rs {
				if r.key.ip.IsValid() && r.vtep == w.vtep {
					mi.IPs = append(mi.IPs, r.key.ip)
				}
			}
			slices.SortFunc(mi.IPs, netip.Addr.Compare)
			vi.Remote = append(vi.Remote, mi)
		}
		for mac, m := range v.moves {
			if !m.dupSince.IsZero() {
				d := DuplicateInfo{MAC: net.HardwareAddr(slices.Clone(mac[:])), Since: m.dupSince}
				if s.opts.DupMACFreeze > 0 {
					d.Until = m.dupSince.Add(s.opts.DupMACFreeze)
				}
				vi.Duplicates = append(vi.Duplicates, d)
			}
		}
		byMAC := func(a, b MACInfo) int { return strings.Compare(string(a.MAC), string(b.MAC)) }
		slices.SortFunc(vi.Local, byMAC)
		slices.SortFunc(vi.Remote, byMAC)
		slices.SortFunc(vi.Duplicates, func(a, b DuplicateInfo) int { return strings.Compare(string(a.MAC), string(b.MAC)) })
		slices.SortFunc(vi.VTEPs, netip.Addr.Compare)
		snap.VNIs = append(snap.VNIs, vi)
	}
	sort.Slice(snap.VNIs, func(i, j int) bool { return snap.VNIs[i].VNI < snap.VNIs[j].VNI })
	return snap
}

// String formats the snapshot as gnv evpn show prints it.
func (sn Snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bgp asn %d router-id %s vtep %s\n", sn.ASN, sn.RouterID, sn.NextHop)
	for _, p := range sn.Peers {
		fmt.Fprintf(&b, "peer %s asn %d %s uptime %s routes in %d accepted %d out %d\n", p.Address, p.ASN, p.State, p.Uptime, p.Received, p.Accepted, p.Advertised)
	}
	for _, v := range sn.VNIs {
		fmt.Fprintf(&b, "vni %d rd %s rt %s: %d local macs, %d vteps, %d remote macs\n", v.VNI, v.RD, strings.TrimPrefix(v.RouteTarget, "rt:"), len(v.Local), len(v.VTEPs), len(v.Remote))
		for _, m := range v.Local {
			fmt.Fprintf(&b, "  local  %s%s seq %d\n", m.MAC, ipList(m.IPs), m.Seq)
		}
		for _, a := range v.VTEPs {
			fmt.Fprintf(&b, "  vtep   %s (type 3, flood list)\n", a)
		}
		for _, m := range v.Remote {
			fmt.Fprintf(&b, "  remote %s%s via %s seq %d\n", m.MAC, ipList(m.IPs), m.VTEP, m.Seq)
		}
		for _, d := range v.Duplicates {
			until := "until cleared"
			if !d.Until.IsZero() {
				until = "until " + d.Until.Format(time.RFC3339)
			}
			fmt.Fprintf(&b, "  duplicate %s frozen since %s, %s\n", d.MAC, d.Since.Format(time.RFC3339), until)
		}
	}
	st := sn.Stats
	fmt.Fprintf(&b, "routes received %d withdrawn %d, ignored: encapsulation %d route-target %d type %d, mac moves %d, duplicate macs %d, graceful restarts %d (stale routes removed %d)\n",
		st.Received, st.Withdrawn, st.IgnoredEncap, st.IgnoredRT, st.IgnoredType, st.Moves, st.DuplicateMACs, st.GracefulRestarts, st.StaleRemoved)
	return b.String()
}

func ipList(ips []netip.Addr) string {
	if len(ips) == 0 {
		return ""
	}
	var parts []string
	for _, ip := range ips {
		parts = append(parts, ip.String())
	}
	return " " + strings.Join(parts, ",")
}
