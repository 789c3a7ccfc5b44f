package evpn

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/testutil"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// TestGracefulRestartStale drives the speaker's events as GoBGP delivers
// them around a peer's graceful restart: the routes are kept when the
// session goes down; those sent again unchanged stay as they are (the
// same routes, nothing undone and redone); at the peer's End-of-RIB those
// not sent again go. A session that ends otherwise marks nothing.
func TestGracefulRestartStale(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 6})
	defer f.Close()
	tun := tunnel(t, f, 1, endpoint.L2)
	s, err := New(Options{ASN: testASN, RouterID: netip.MustParseAddr("10.255.0.1"),
		Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.10"), Port: 1}}, ConnectRetry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Attach(tun); err != nil {
		t.Fatal(err)
	}
	rr := netip.MustParseAddr("127.0.0.10")
	rt, _ := autoRT(testASN, 100)
	geneve := bgp.NewEncapExtended(bgp.TUNNEL_TYPE_GENEVE)
	path := func(nlri bgp.NLRI, vtep netip.Addr) *apiutil.Path {
		mp, _ := bgp.NewPathAttributeMpReachNLRI(bgp.RF_EVPN, []bgp.PathNLRI{{NLRI: nlri}}, vtep)
		return &apiutil.Path{Family: bgp.RF_EVPN, Nlri: nlri, PeerAddress: rr, Attrs: []bgp.PathAttributeInterface{
			bgp.NewPathAttributeOrigin(0), mp, bgp.NewPathAttributeExtendedCommunities([]bgp.ExtendedCommunityInterface{rt, geneve}),
		}}
	}
	imet := func(i byte) *apiutil.Path {
		vtep := netip.AddrFrom4([4]byte{192, 0, 2, i})
		rd, _ := bgp.NewRouteDistinguisherIPAddressAS(netip.AddrFrom4([4]byte{10, 255, 0, i}), 100)
		n, _ := bgp.NewEVPNMulticastEthernetTagRoute(rd, 0, vtep)
		return path(n, vtep)
	}
	stay, gone := imet(77), imet(78)
	floodList := func() []netip.AddrPort { return tun.Endpoint().FloodRemotes() }
	peerDown := func(reason api.PeerState_DisconnectReason) {
		s.onPeer(&apiutil.WatchEventMessage_PeerEvent{Type: apiutil.PEER_EVENT_STATE, Peer: apiutil.Peer{State: apiutil.PeerState{
			NeighborAddress: rr, SessionState: bgp.BGP_FSM_IDLE, DisconnectReason: reason}}}, time.Now())
	}
	eor := func() { s.onEOR(&apiutil.Path{Family: bgp.RF_EVPN, PeerAddress: rr}, time.Now()) }

	s.onUpdate([]*apiutil.Path{stay, gone}, time.Now())
	if fl := floodList(); len(fl) != 2 {
		t.Fatalf("flood list %v, want the two VTEPs", fl)
	}
	// A session that ends without graceful restart marks nothing (GoBGP
	// withdraws the routes itself then).
	peerDown(api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED)
	eor()
	if st := s.Stats(); st.GracefulRestarts != 0 || st.StaleRemoved != 0 || len(floodList()) != 2 {
		t.Fatalf("after a plain session end: %+v, flood list %v", st, floodList())
	}

	s.mu.Lock()
	var kept *route
	for _, r := range s.routes {
		if r.vtep == netip.MustParseAddr("192.0.2.77") {
			kept = r
		}
	}
	s.mu.Unlock()
	peerDown(api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART)
	if st := s.Stats(); st.GracefulRestarts != 1 || len(floodList()) != 2 {
		t.Fatalf("during the restart: %+v, flood list %v; want both VTEPs kept", st, floodList())
	}
	// Back: one route is sent again, then the End-of-RIB.
	s.onUpdate([]*apiutil.Path{imet(77)}, time.Now())
	eor()
	fl := floodList()
	if len(fl) != 1 || fl[0].Addr() != netip.MustParseAddr("192.0.2.77") {
		t.Errorf("after the End-of-RIB the flood list is %v, want 192.0.2.77 alone", fl)
	}
	s.mu.Lock()
	still := false
	for _, r := range s.routes {
		if r == kept && !r.stale {
			still = true
		}
	}
	n := len(s.routes)
	s.mu.Unlock()
	if !still || n != 1 {
		t.Errorf("the route sent again unchanged was replaced or left stale (%d routes)", n)
	}
	if st := s.Stats(); st.StaleRemoved != 1 {
		t.Errorf("stale routes removed %d, want 1", st.StaleRemoved)
	}
}
