package evpn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

const testASN = 65000

var bgpPort atomic.Int32

func init() { bgpPort.Store(int32(20000 + os.Getpid()%20000)) }

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	for {
		p := int(bgpPort.Add(1))
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
}

// reflector is a GoBGP route reflector on 127.0.0.10 for the clients
// 127.0.0.1..n; it also originates routes for the tests (inject).
//
// Several GoBGP servers in one process need an order. GoBGP (v4.8.0)
// keeps its route selection options in package variables that every
// server's StartBgp writes and every server's path selection reads, on its
// session goroutines, under that server's lock. So every server starts
// before the sessions that will read them, and the tests order the two
// with the servers' locks: speaker starts a client's server before the
// reflector creates the session for it, and waits for that session to be
// established on both sides; a test that runs several speakers creates
// them all, then calls settle, before it attaches any tunnel (which is when
// routes begin to move).
type reflector struct {
	bgp  *server.BgpServer
	port int
	addr string
}

// newReflector starts a reflector with no clients; speaker adds them.
func newReflector(t testing.TB) *reflector { t.Helper(); return newReflectorAt(t, "127.0.0.10") }

// newReflectorAt is newReflector on another loopback address.
func newReflectorAt(t testing.TB, addr string) *reflector {
	t.Helper()
	r := &reflector{bgp: server.NewBgpServer(), port: freePort(t), addr: addr}
	go r.bgp.Serve()
	if err := r.bgp.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: testASN, RouterId: addr, ListenPort: int32(r.port), ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.bgp.Stop)
	return r
}

// addClient configures client i (127.0.0.i) on the reflector.
func (r *reflector) addClient(t testing.TB, i int) {
	t.Helper()
	if err := r.bgp.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:           &api.PeerConf{NeighborAddress: fmt.Sprintf("127.0.0.%d", i), PeerAsn: testASN},
		Transport:      &api.Transport{PassiveMode: true},
		RouteReflector: &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: r.addr},
		Timers:         &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis:       []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: evpnFamily, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
}

// established reports whether the reflector's session with client i is up.
func (r *reflector) established(i int) bool {
	up := false
	_ = r.bgp.ListPeer(context.Background(), &api.ListPeerRequest{Address: fmt.Sprintf("127.0.0.%d", i)}, func(p *api.Peer) {
		up = p.State != nil && p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
	})
	return up
}

// speaker starts client i (1..) of r, then adds it to the reflector, and
// waits for their session (see reflector).
// Each tune function may change the speaker's options first.
func (r *reflector) speaker(t testing.TB, i int, nextHop netip.Addr, tune ...func(*Options)) *Speaker {
	t.Helper()
	o := Options{
		ASN: testASN, RouterID: netip.AddrFrom4([4]byte{10, 255, 0, byte(i)}), NextHop: nextHop,
		Peers:    []Peer{{Address: netip.MustParseAddr(r.addr), Port: uint16(r.port), LocalAddress: netip.AddrFrom4([4]byte{127, 0, 0, byte(i)})}},
		HoldTime: 9 * time.Second, KeepaliveInterval: 3 * time.Second, ConnectRetry: time.Second,
	}
	for _, f := range tune {
		f(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if r.bgp == nil {
		return s // the reflector runs in another process
	}
	r.addClient(t, i)
	waitFor(t, fmt.Sprintf("speaker %d's session", i), 15*time.Second, func() bool {
		p := s.Show().Peers
		return len(p) == 1 && p[0].State == "established" && r.established(i)
	})
	// The sessions' first work (sending what each side has) follows
	// the state change at once; let it finish, then take every lock.
	time.Sleep(50 * time.Millisecond)
	r.settle(s)
	return s
}

// speakers starts clients 1..n of r (speaker) with no next hop of their
// own (a tunnel's VTEP address is used), then settles them all: the way
// to start several before attaching tunnels (see reflector).
func (r *reflector) speakers(t testing.TB, n int, tune ...func(*Options)) []*Speaker {
	t.Helper()
	var sps []*Speaker
	for i := 1; i <= n; i++ {
		sp := r.speaker(t, i, netip.Addr{}, tune...)
		t.Cleanup(func() { sp.Close() }) // if a later one fails; Close is idempotent
		sps = append(sps, sp)
	}
	r.settle(sps...)
	return sps
}

// hosts starts n speakers (speakers), then attaches to each a new tunnel
// of mode on f, whose address is the speaker's VTEP address. The caller
// closes the speakers (closeAll) before the fabric.
func (r *reflector) hosts(t testing.TB, f *testutil.Fabric, n int, mode endpoint.Mode) ([]*Speaker, []*stack.Tunnel) {
	t.Helper()
	sps := r.speakers(t, n)
	var tuns []*stack.Tunnel
	for i, sp := range sps {
		tun := tunnel(t, f, i+1, mode)
		if err := sp.Attach(tun); err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
	}
	return sps, tuns
}

// closeAll closes the speakers, the last started first.
func closeAll(sps []*Speaker) {
	for i := len(sps) - 1; i >= 0; i-- {
		sps[i].Close()
	}
}

// settle runs an operation on the reflector and on each speaker: each
// server's lock is then taken after everything done so far (see
// reflector).
func (r *reflector) settle(sps ...*Speaker) {
	_ = r.bgp.ListPeer(context.Background(), &api.ListPeerRequest{}, func(*api.Peer) {})
	for _, s := range sps {
		s.Show()
	}
}

// inject originates an EVPN route on the reflector.
func (r *reflector) inject(t testing.TB, nlri bgp.NLRI, nextHop netip.Addr, ecs ...bgp.ExtendedCommunityInterface) *apiutil.Path {
	t.Helper()
	mp, _ := bgp.NewPathAttributeMpReachNLRI(bgp.RF_EVPN, []bgp.PathNLRI{{NLRI: nlri}}, nextHop)
	p := &apiutil.Path{Family: bgp.RF_EVPN, Nlri: nlri, Attrs: []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0), mp, bgp.NewPathAttributeExtendedCommunities(ecs),
	}}
	if _, err := r.bgp.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
		t.Fatal(err)
	}
	return p
}

// tunnel is an L2 (or L3) tunnel on the fabric with no static peers.
func tunnel(t testing.TB, f *testutil.Fabric, i int, mode endpoint.Mode) *stack.Tunnel {
	t.Helper()
	port, err := f.NewPort("", testutil.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	tun, err := stack.New(stack.Config{
		VNI: 100, Mode: mode, DynamicPeers: true,
		Underlay: stack.NetstackUnderlay{Link: port, NetstackOptions: stack.NetstackOptions{Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 24)}},
		Addresses: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 24),
			netip.MustParsePrefix(fmt.Sprintf("fd00::%d/64", i)),
		},
		Endpoint: endpoint.Config{NoLearn: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

func waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func evpnEntries(tun *stack.Tunnel) int {
	n := 0
	for _, e := range tun.Endpoint().FDB().Dump() {
		if e.Origin == Origin {
			n++
		}
	}
	return n
}

// TestThreeVTEPs: three tunnels learn one another only through BGP EVPN
// (a GoBGP route reflector): flood lists, forwarding and suppression
// entries; then ping and TCP between every pair with no unknown-unicast
// flooding and ARP answered locally; a VXLAN route is ignored; a MAC
// advertised by two VTEPs goes to the higher sequence number; a speaker
// that closes takes its entries with it.
func TestThreeVTEPs(t *testing.T) {
	rr := newReflector(t)
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 1})
	defer f.Close()
	sps, tuns := rr.hosts(t, f, 3, endpoint.L2)
	defer closeAll(sps)
	for i, tun := range tuns {
		waitFor(t, fmt.Sprintf("EVPN state on host %d", i+1), 15*time.Second, func() bool {
			return len(tun.Endpoint().FloodRemotes()) == 2 && evpnEntries(tun) == 2 && len(tun.Endpoint().FDB().Neighbors()) == 4
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, a := range tuns {
		for j, b := range tuns {
			if i == j {
				continue
			}
			for _, dst := range []string{fmt.Sprintf("10.0.0.%d", j+1), fmt.Sprintf("fd00::%d", j+1)} {
				if _, err := a.Ping(ctx, netip.MustParseAddr(dst), 1, 56); err != nil {
					t.Fatalf("ping %s from host %d: %v", dst, i+1, err)
				}
			}
			before := a.Stats().FloodUnknown + b.Stats().FloodUnknown
			res, err := testutil.TransferTCP(ctx, a, b, netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:%d", j+1, 5000+i)), 1<<20, int64(i*3+j))
			if err != nil {
				t.Fatalf("TCP %d -> %d: %v", i+1, j+1, err)
			}
			if after := a.Stats().FloodUnknown + b.Stats().FloodUnknown; after != before {
				t.Errorf("TCP %d -> %d flooded %d unknown-unicast frames", i+1, j+1, after-before)
			}
			t.Logf("TCP %d -> %d: %.0f Mbit/s", i+1, j+1, res.Mbps())
		}
	}
	for i, tun := range tuns {
		st := tun.Stats()
		if st.ARPSuppressed == 0 || st.NDSuppressed == 0 || st.ARPFlooded != 0 {
			t.Errorf("host %d: ARP/ND not answered locally: %v", i+1, st)
		}
	}
	show := sps[0].Show()
	if len(show.Peers) != 1 || show.Peers[0].State != "established" || len(show.VNIs) != 1 || len(show.VNIs[0].Remote) != 2 || len(show.VNIs[0].VTEPs) != 2 {
		t.Fatalf("show:\n%s", show)
	}
	t.Logf("show:\n%s", show)

	// A VXLAN route for the VNI: ignored and counted.
	rt, _ := autoRT(testASN, 100)
	rd, _ := bgp.NewRouteDistinguisherIPAddressAS(netip.MustParseAddr("10.255.0.99"), 100)
	mac9 := "02:00:00:00:00:99"
	nlri, _ := bgp.NewEVPNMacIPAdvertisementRoute(rd, bgp.EthernetSegmentIdentifier{}, 0, mac9, netip.Addr{}, []uint32{100})
	rr.inject(t, nlri, netip.MustParseAddr("192.0.2.99"), rt, bgp.NewEncapExtended(bgp.TUNNEL_TYPE_VXLAN))
	// ... and routes of an unknown route target.
	other, _ := autoRT(testASN, 200)
	nlri2, _ := bgp.NewEVPNMulticastEthernetTagRoute(rd, 0, netip.MustParseAddr("192.0.2.99"))
	rr.inject(t, nlri2, netip.MustParseAddr("192.0.2.99"), other, bgp.NewEncapExtended(bgp.TUNNEL_TYPE_GENEVE))
	waitFor(t, "ignored routes", 10*time.Second, func() bool {
		st := sps[0].Stats()
		return st.IgnoredEncap == 1 && st.IgnoredRT == 1
	})
	if len(tuns[0].Endpoint().FloodRemotes()) != 2 || evpnEntries(tuns[0]) != 2 {
		t.Fatalf("ignored routes changed the forwarding state: %v", tuns[0].Endpoint().FDB().Dump())
	}

	// The same MAC from two VTEPs: the higher sequence number wins.
	geneve := bgp.NewEncapExtended(bgp.TUNNEL_TYPE_GENEVE)
	for k, seq := range []uint32{0, 3} {
		rdk, _ := bgp.NewRouteDistinguisherIPAddressAS(netip.AddrFrom4([4]byte{10, 255, 1, byte(k)}), 100)
		n, _ := bgp.NewEVPNMacIPAdvertisementRoute(rdk, bgp.EthernetSegmentIdentifier{}, 0, mac9, netip.Addr{}, []uint32{100})
		ecs := []bgp.ExtendedCommunityInterface{rt, geneve}
		if seq > 0 {
			ecs = append(ecs, bgp.NewMacMobilityExtended(seq, false))
		}
		rr.inject(t, n, netip.AddrFrom4([4]byte{192, 0, 2, byte(50 + k)}), ecs...)
	}
	hw, _ := net.ParseMAC(mac9)
	waitFor(t, "the mobile MAC", 10*time.Second, func() bool {
		for _, e := range tuns[0].Endpoint().FDB().Dump() {
			if e.MAC.String() == hw.String() {
				return e.Remote.Addr() == netip.MustParseAddr("192.0.2.51")
			}
		}
		return false
	})

	// Host 3 leaves: its routes are withdrawn, its entries go.
	if err := sps[2].Close(); err != nil {
		t.Fatal(err)
	}
	if n := evpnEntries(tuns[2]); n != 0 || len(tuns[2].Endpoint().FloodRemotes()) != 0 {
		t.Fatalf("host 3 kept %d entries and flood list %v after Close", n, tuns[2].Endpoint().FloodRemotes())
	}
	start := time.Now()
	for i := 0; i < 2; i++ {
		waitFor(t, fmt.Sprintf("host 3's entries gone from host %d", i+1), 9*time.Second, func() bool {
			return len(tuns[i].Endpoint().FloodRemotes()) == 1 && evpnEntries(tuns[i]) == 2 // host 1 or 2, and the mobile MAC
		})
	}
	t.Logf("withdrawal took %v", time.Since(start))
}

// TestL3HostRoutes: L3 tunnels get host routes from MAC/IP routes.
func TestL3HostRoutes(t *testing.T) {
	rr := newReflector(t)
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 2})
	defer f.Close()
	sps, tuns := rr.hosts(t, f, 2, endpoint.L3)
	defer closeAll(sps)
	for i, tun := range tuns {
		waitFor(t, fmt.Sprintf("host routes on host %d", i+1), 15*time.Second, func() bool {
			return len(tun.Endpoint().HostRoutes()) == 2 && len(tun.Endpoint().FloodRemotes()) == 1
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := testutil.TransferTCP(ctx, tuns[0], tuns[1], netip.MustParseAddrPort("[fd00::2]:5000"), 1<<20, 1); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsErrors(t *testing.T) {
	peer := []Peer{{Address: netip.MustParseAddr("192.0.2.254")}}
	rid := netip.MustParseAddr("192.0.2.1")
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{RouterID: rid, Peers: peer}, "Options.ASN 0: valid AS numbers are 1..4294967295"},
		{Options{ASN: 1, Peers: peer}, "Options.RouterID invalid IP: want an IPv4 address"},
		{Options{ASN: 1, RouterID: rid}, "Options.Peers: at least one"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, HoldTime: time.Second}, "valid hold times are 3..65535 s"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, HoldTime: 9 * time.Second, KeepaliveInterval: 5 * time.Second}, "valid intervals are 1 s..HoldTime/3"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, RouteTarget: "nonsense"}, "RouteTarget"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, DupMACMoves: 1}, "Options.DupMACMoves 1 out of range: valid counts are 2..1000 (0: 5, -1: no duplicate detection)"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, DupMACMoves: -2}, "Options.DupMACMoves -2 out of range"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, DupMACWindow: time.Millisecond}, "Options.DupMACWindow 1ms out of range: valid windows are 1 s..1 h (0: 3m0s)"},
		{Options{ASN: 1, RouterID: rid, Peers: peer, DupMACFreeze: 25 * time.Hour}, "Options.DupMACFreeze 25h0m0s out of range: valid freezes are 1 s..24 h (0: until Speaker.ClearDuplicates)"},
	} {
		s, err := New(c.o)
		if err == nil {
			s.Close()
			t.Errorf("%+v: no error", c.o)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %q, want %q", err, c.want)
		}
	}
}

// TestType3WithoutPMSI: a Type-3 route without a PMSI tunnel attribute
// (what an IPv6 VTEP sends by default, Options.StrictIPv6) puts its next
// hop, not its originating router, in the flood list of the VNI that
// imports its route target; one with a route target no VNI imports is
// ignored. A speaker with an IPv6 VTEP sends its Type-3 route in that
// form, and in the RFC form with StrictIPv6.
func TestType3WithoutPMSI(t *testing.T) {
	// Speakers with IPv6 VTEPs: the Type-3 routes they send. They start
	// first and never connect: GoBGP's StartBgp sets package variables
	// that running servers read.
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 3})
	defer f.Close()
	tun := tunnel(t, f, 1, endpoint.L2)
	for i, strict := range []bool{false, true} {
		s, err := New(Options{
			ASN: testASN, RouterID: netip.AddrFrom4([4]byte{10, 255, 0, byte(2 + i)}), NextHop: netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", 2+i)),
			Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.10"), Port: 1}}, ConnectRetry: time.Hour, StrictIPv6: strict,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		v := newVNI(s, tun)
		s.mu.Lock()
		v.start()
		s.mu.Unlock()
		n := v.imet.Nlri.(*bgp.EVPNNLRI).RouteTypeData.(*bgp.EVPNMulticastEthernetTagRoute)
		pmsi := false
		for _, a := range v.imet.Attrs {
			if _, ok := a.(*bgp.PathAttributePmsiTunnel); ok {
				pmsi = true
			}
		}
		want := s.opts.RouterID
		if strict {
			want = s.nextHop
		}
		if n.IPAddress != want || pmsi != strict {
			t.Errorf("StrictIPv6 %v: originating router %v, PMSI tunnel attribute %v; want %v, %v", strict, n.IPAddress, pmsi, want, strict)
		}
	}

	rr := newReflector(t)
	sp := rr.speaker(t, 1, netip.Addr{})
	defer sp.Close()
	if err := sp.Attach(tun); err != nil {
		t.Fatal(err)
	}
	rt, _ := autoRT(testASN, 100)
	other, _ := autoRT(testASN, 300)
	geneve := bgp.NewEncapExtended(bgp.TUNNEL_TYPE_GENEVE)
	for k, ec := range []bgp.ExtendedCommunityInterface{rt, other} {
		orig := netip.AddrFrom4([4]byte{10, 255, 0, byte(77 + k)})
		rd, _ := bgp.NewRouteDistinguisherIPAddressAS(orig, 100)
		n, _ := bgp.NewEVPNMulticastEthernetTagRoute(rd, 0, orig)
		rr.inject(t, n, netip.AddrFrom4([4]byte{192, 0, 2, byte(77 + k)}), ec, geneve)
	}
	waitFor(t, "the VTEP of the route without PMSI", 10*time.Second, func() bool {
		r := tun.Endpoint().FloodRemotes()
		return len(r) == 1 && r[0].Addr() == netip.MustParseAddr("192.0.2.77") && sp.Stats().IgnoredRT == 1
	})
}
