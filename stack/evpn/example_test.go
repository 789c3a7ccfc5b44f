package evpn_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/stack/evpn"
	"github.com/gnv-project/gnv/testutil"
)

// Two VTEPs on the in-memory test fabric whose tunnels have no configured
// peers: each runs a BGP EVPN speaker, the two peer over loopback (one
// listens on 127.0.0.1, the other connects from 127.0.0.2), and the
// routes they exchange give each tunnel its flood list, its forwarding
// entry and its ARP suppression entry for the other. In production the
// speakers peer with route reflectors (FRR) instead.
func Example() {
	fabric := testutil.NewFabric(testutil.FabricOptions{Seed: 1})
	defer fabric.Close()
	newTunnel := func(underlay, overlay string) *stack.Tunnel {
		port, err := fabric.NewPort("", testutil.Faults{})
		if err != nil {
			log.Fatal(err)
		}
		tun, err := stack.New(stack.Config{
			VNI:          100,
			Mode:         endpoint.L2,
			DynamicPeers: true, // EVPN fills the flood list
			Underlay:     stack.NetstackUnderlay{Link: port, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix(underlay)}},
			Addresses:    []netip.Prefix{netip.MustParsePrefix(overlay)},
			Endpoint:     endpoint.Config{NoLearn: true},
		})
		if err != nil {
			log.Fatal(err)
		}
		return tun
	}
	a := newTunnel("192.0.2.1/24", "10.0.0.1/24")
	defer a.Close()
	b := newTunnel("192.0.2.2/24", "10.0.0.2/24")
	defer b.Close()

	const port = 17179
	sa, err := evpn.New(evpn.Options{
		ASN: 65000, RouterID: netip.MustParseAddr("10.255.0.1"),
		ListenPort: port, ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Peers: []evpn.Peer{{Address: netip.MustParseAddr("127.0.0.2")}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sa.Close()
	sb, err := evpn.New(evpn.Options{
		ASN: 65000, RouterID: netip.MustParseAddr("10.255.0.2"),
		Peers: []evpn.Peer{{Address: netip.MustParseAddr("127.0.0.1"), Port: port, LocalAddress: netip.MustParseAddr("127.0.0.2")}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Close()
	if err := sa.Attach(a); err != nil {
		log.Fatal(err)
	}
	if err := sb.Attach(b); err != nil {
		log.Fatal(err)
	}

	// Wait for the routes to cross.
	for deadline := time.Now().Add(20 * time.Second); len(a.Endpoint().FloodRemotes()) == 0 || len(b.Endpoint().FloodRemotes()) == 0; {
		if time.Now().After(deadline) {
			log.Fatal("no EVPN routes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("10.0.0.2"), 1, 56); err != nil {
		log.Fatal(err)
	}
	fmt.Println("flood list:", a.Endpoint().FloodRemotes())
	for _, e := range a.Endpoint().FDB().Dump() {
		fmt.Println("fdb:", e.Remote, e.Origin)
	}
	for _, n := range a.Endpoint().FDB().Neighbors() {
		fmt.Println("suppress:", n.IP, n.Origin)
	}
	fmt.Println("ARP answered locally:", a.Stats().ARPSuppressed)
	// Output:
	// flood list: [192.0.2.2:6081]
	// fdb: 192.0.2.2:6081 evpn
	// suppress: 10.0.0.2 evpn
	// ARP answered locally: 1
}
