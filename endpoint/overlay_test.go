package endpoint

import (
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// A forwarding overlay: one real gVisor stack with IP forwarding on and two
// Geneve NICs sharing one socket over an in-memory transport.
//
//	NIC 1: L2 endpoint, VNI ovlL2VNI, 10.1.0.1/24 and fd00:1::1/64
//	NIC 2: L3 endpoint, VNI ovlL3VNI, 10.2.0.1/24 and fd00:2::1/64,
//	       and the default routes
//
// 10.1.0.2 and fd00:1::2 are static neighbours on NIC 1 (MAC ovlPeerMAC),
// so packets routed there leave without neighbour resolution.
const (
	ovlL2VNI  = 0x000101
	ovlL3VNI  = 0x000102
	ovlFDBMax = 8
	ovlMAC    = tcpip.LinkAddress("\x02\x00\x00\x00\x01\x01")
	// ovlPeerMAC is the L2 peer's MAC.
	ovlPeerMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x01\x02")
)

var (
	ovlRemote = netip.MustParseAddr("192.0.2.2")
	ovlL2Addr = [2]netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("fd00:1::1")}
	ovlL3Addr = [2]netip.Addr{netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("fd00:2::1")}
	ovlL2Peer = [2]netip.Addr{netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("fd00:1::2")}
	// ovlFar are addresses behind the default routes (out of NIC 2).
	ovlFar = [2]netip.Addr{netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("fd00:9::1")}
)

// overlay is the forwarding overlay described above.
type overlay struct {
	// clock drives the stack; fdbClock the L2 forwarding table, which
	// settle leaves alone so that learned entries stay.
	clock, fdbClock *faketime.ManualClock
	ft              *fakeTransport
	sock            *Socket
	l2, l3          *Endpoint
	s               *stack.Stack
}

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

// newOverlay builds the forwarding overlay. The caller must call close.
func newOverlay(t testing.TB) *overlay { t.Helper(); return newOverlayGRO(t, true) }

// newOverlayGRO is newOverlay with the endpoints' receive coalescing on or
// off (Config.DisableGRO).
func newOverlayGRO(t testing.TB, gro bool) *overlay {
	t.Helper()
	o := &overlay{clock: faketime.NewManualClock(), fdbClock: faketime.NewManualClock(), ft: newFakeTransport("192.0.2.1:6081")}
	var err error
	if o.sock, err = NewSocket(o.ft); err != nil {
		t.Fatal(err)
	}
	remotes := []netip.Addr{ovlRemote}
	if o.l2, err = New(o.sock, Config{VNI: ovlL2VNI, Mode: L2, MAC: ovlMAC, Remotes: remotes,
		FDBMax: ovlFDBMax, AcceptAnySource: true, Clock: o.fdbClock, DisableGRO: !gro}); err != nil {
		t.Fatal(err)
	}
	if o.l3, err = New(o.sock, Config{VNI: ovlL3VNI, Mode: L3, Remotes: remotes, AcceptAnySource: true,
		TTLInherit: true, Clock: o.fdbClock, DisableGRO: !gro}); err != nil {
		t.Fatal(err)
	}
	o.s = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol,
			ipv6.NewProtocolWithOptions(ipv6.Options{DADConfigs: stack.DADConfigurations{DupAddrDetectTransmits: 0}})},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		Clock:              o.clock,
	})
	for i, ep := range []*Endpoint{o.l2, o.l3} {
		nic := tcpip.NICID(i + 1)
		if err := o.s.CreateNIC(nic, ep); err != nil {
			t.Fatalf("CreateNIC: %v", err)
		}
		addrs := ovlL2Addr
		if ep == o.l3 {
			addrs = ovlL3Addr
		}
		for j, a := range addrs {
			proto, prefix := header.IPv4ProtocolNumber, 24
			if j == 1 {
				proto, prefix = header.IPv6ProtocolNumber, 64
			}
			pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpipAddr(a), PrefixLen: prefix}}
			if err := o.s.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
				t.Fatalf("AddProtocolAddress: %v", err)
			}
		}
	}
	for j, a := range ovlL2Peer {
		proto := header.IPv4ProtocolNumber
		if j == 1 {
			proto = header.IPv6ProtocolNumber
		}
		if err := o.s.AddStaticNeighbor(1, proto, tcpipAddr(a), ovlPeerMAC); err != nil {
			t.Fatalf("AddStaticNeighbor: %v", err)
		}
	}
	subnet := func(s string) tcpip.Subnet {
		p := netip.MustParsePrefix(s)
		sn, err := tcpip.NewSubnet(tcpipAddr(p.Addr()), tcpip.MaskFromBytes(net4or6Mask(p)))
		if err != nil {
			t.Fatal(err)
		}
		return sn
	}
	o.s.SetRouteTable([]tcpip.Route{
		{Destination: subnet("10.1.0.0/24"), NIC: 1},
		{Destination: subnet("fd00:1::/64"), NIC: 1},
		{Destination: subnet("0.0.0.0/0"), NIC: 2},
		{Destination: subnet("::/0"), NIC: 2},
	})
	for _, p := range []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber} {
		if err := o.s.SetForwardingDefaultAndAllNICs(p, true); err != nil {
			t.Fatalf("forwarding: %v", err)
		}
	}
	return o
}

// net4or6Mask returns the mask bytes of prefix p.
func net4or6Mask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// settle runs the overlay stack's timers far enough for everything it holds
// to go (reassembly queues time out, neighbour resolution gives up).
func (o *overlay) settle() {
	for i := 0; i < 4; i++ {
		o.clock.Advance(2 * time.Minute)
	}
}

// close destroys the stack (closing both endpoints) and the socket.
func (o *overlay) close() {
	o.settle()
	o.s.Destroy()
	o.sock.Close()
}
