package evpn

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	api "github.com/osrg/gobgp/v4/api"
)

// TestTwoReflectors: two VTEPs, each a client of two route reflectors,
// as a fabric with redundant reflectors runs. Each route then arrives
// twice; when one reflector's sessions go, the copies through the other
// keep every entry in place and traffic flowing; when both go, the
// entries go.
func TestTwoReflectors(t *testing.T) {
	rrs := []*reflector{newReflectorAt(t, "127.0.0.10"), newReflectorAt(t, "127.0.0.11")}
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 5})
	t.Cleanup(f.Close)
	// Every server starts before any session (see reflector).
	var sps []*Speaker
	for i := 1; i <= 2; i++ {
		local := netip.AddrFrom4([4]byte{127, 0, 0, byte(i)})
		var peers []Peer
		for _, rr := range rrs {
			peers = append(peers, Peer{Address: netip.MustParseAddr(rr.addr), Port: uint16(rr.port), LocalAddress: local})
		}
		sp, err := New(Options{ASN: testASN, RouterID: netip.AddrFrom4([4]byte{10, 255, 0, byte(i)}), Peers: peers,
			HoldTime: 9 * time.Second, KeepaliveInterval: 3 * time.Second, ConnectRetry: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sp.Close() })
		sps = append(sps, sp)
	}
	defer closeAll(sps)
	for _, rr := range rrs {
		for i := 1; i <= 2; i++ {
			rr.addClient(t, i)
		}
	}
	established := func(sp *Speaker) int {
		n := 0
		for _, p := range sp.Show().Peers {
			if p.State == "established" {
				n++
			}
		}
		return n
	}
	for i, sp := range sps {
		waitFor(t, fmt.Sprintf("speaker %d's two sessions", i+1), 15*time.Second, func() bool {
			return established(sp) == 2 && rrs[0].established(i+1) && rrs[1].established(i+1)
		})
	}
	time.Sleep(50 * time.Millisecond)
	rrs[0].settle(sps...)
	rrs[1].settle()

	var tuns []*stack.Tunnel
	for i, sp := range sps {
		tun := tunnel(t, f, i+1, endpoint.L2)
		if err := sp.Attach(tun); err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
	}
	// neighbours: the other VTEP's IPv4 and IPv6 addresses.
	entries := func(i int) (flood, macs, neighbours int) {
		ep := tuns[i].Endpoint()
		return len(ep.FloodRemotes()), evpnEntries(tuns[i]), len(ep.FDB().Neighbors())
	}
	converged := func(i int) bool { f, m, n := entries(i); return f == 1 && m == 1 && n == 2 }
	for i := range sps {
		waitFor(t, fmt.Sprintf("VTEP %d's routes", i+1), 15*time.Second, func() bool { return converged(i) })
		// The other VTEP's routes came through both reflectors.
		waitFor(t, fmt.Sprintf("VTEP %d's routes from both reflectors", i+1), 15*time.Second, func() bool {
			ps := sps[i].Show().Peers
			return len(ps) == 2 && ps[0].Accepted > 0 && ps[1].Accepted > 0
		})
	}
	ping := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := tuns[0].Ping(ctx, netip.MustParseAddr("10.0.0.2"), 1, 56); err != nil {
			t.Fatalf("ping %s: %v", what, err)
		}
	}
	ping("with both reflectors")

	// The first reflector drops its clients: the copies through the
	// second keep everything.
	for i := 1; i <= 2; i++ {
		if err := rrs[0].bgp.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: fmt.Sprintf("127.0.0.%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, sp := range sps {
		waitFor(t, fmt.Sprintf("speaker %d's session with the first reflector down", i+1), 15*time.Second, func() bool { return established(sp) == 1 })
	}
	time.Sleep(200 * time.Millisecond) // withdrawals, if any, have arrived
	for i := range sps {
		if f, m, n := entries(i); !converged(i) {
			t.Errorf("VTEP %d lost routes with one reflector left: %d flood, %d forwarding, %d suppression entries", i+1, f, m, n)
		}
	}
	ping("with one reflector left")

	// The second one too: nothing is left.
	for i := 1; i <= 2; i++ {
		if err := rrs[1].bgp.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: fmt.Sprintf("127.0.0.%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range sps {
		waitFor(t, fmt.Sprintf("VTEP %d's routes gone with no reflector", i+1), 15*time.Second, func() bool {
			f, m, n := entries(i)
			return f == 0 && m == 0 && n == 0
		})
	}
}
