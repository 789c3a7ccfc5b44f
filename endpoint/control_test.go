package endpoint

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// What a control plane (stack/evpn) drives: static entries marked by
// origin, a flood list changed at run time, ARP/ND suppression, L3 host
// routes and local learning.

func TestStaticFromOrigin(t *testing.T) {
	e, _, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2})
	fdb := e.FDB()
	mac := net.HardwareAddr(macB)
	if err := fdb.AddStaticFrom(mac, netip.MustParseAddrPort("192.0.2.3:0"), "evpn"); err != nil {
		t.Fatal(err)
	}
	if err := fdb.AddStatic(net.HardwareAddr(macC), netip.MustParseAddrPort("192.0.2.4:0")); err != nil {
		t.Fatal(err)
	}
	if err := fdb.AddStatic(net.HardwareAddr(macC), netip.MustParseAddrPort("[2001:db8::4]:0")); err == nil || !strings.Contains(err.Error(), "the underlay is IPv4") {
		t.Fatalf("an IPv6 remote on an IPv4 underlay: %v", err)
	}
	d := fdb.Dump()
	if len(d) != 2 || d[0].Origin != "evpn" || d[1].Origin != "" || !strings.Contains(d[0].String(), "192.0.2.3:6081 static evpn") {
		t.Fatalf("dump %v", d)
	}
	if fdb.RemoveFrom(net.HardwareAddr(macC), "evpn") {
		t.Fatal("RemoveFrom removed an entry of another origin")
	}
	if n := fdb.RemoveOrigin("evpn"); n != 1 || len(fdb.Dump()) != 1 {
		t.Fatalf("RemoveOrigin removed %d, left %v", n, fdb.Dump())
	}
	if err := fdb.AddStaticFrom(mac, netip.MustParseAddrPort("192.0.2.3:0"), "evpn"); err != nil {
		t.Fatal(err)
	}
	if !fdb.RemoveFrom(mac, "evpn") || len(fdb.Dump()) != 1 {
		t.Fatalf("RemoveFrom: %v", fdb.Dump())
	}
}

// broadcast sends one broadcast frame and returns its destinations.
func broadcast(t *testing.T, e *Endpoint, ft *fakeTransport) []netip.AddrPort {
	return sendTo(t, e, ft, tcpip.LinkAddress(header.EthernetBroadcastAddress))
}

func TestFloodListAtRunTime(t *testing.T) {
	sock, err := NewSocket(newFakeTransport("192.0.2.1:6081"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	ft := sock.Transport().(*fakeTransport)
	e, err := New(sock, Config{VNI: 7, Mode: L2, NoLearn: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	d := &sink{keep: true}
	e.Attach(d)
	if got := broadcast(t, e, ft); len(got) != 0 || e.Stats().Drops[DropTxNoRoute] != 1 {
		t.Fatalf("no remotes: sent to %v, stats %v", got, e.Stats())
	}
	receiveFrame(e, ft, "192.0.2.3", macB)
	if e.Stats().Drops[DropSource] != 1 {
		t.Fatalf("a packet from an unknown VTEP passed source validation: %v", e.Stats())
	}
	for _, r := range threeRemotes() {
		if err := e.AddFloodRemote(r); err != nil {
			t.Fatal(err)
		}
		if err := e.AddFloodRemote(r); err != nil { // twice: no duplicate
			t.Fatal(err)
		}
	}
	if err := e.AddFloodRemote(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Fatal("an IPv6 flood remote on an IPv4 underlay was taken")
	}
	if got := broadcast(t, e, ft); len(got) != 3 {
		t.Fatalf("broadcast went to %v, want the 3 flood remotes", got)
	}
	if got := sendTo(t, e, ft, macC); len(got) != 3 {
		t.Fatalf("unknown unicast went to %v, want the 3 flood remotes", got)
	}
	receiveFrame(e, ft, "192.0.2.3", macB)
	if d.count != 1 {
		t.Fatalf("a packet from a flood remote was not delivered: %v", e.Stats())
	}
	if !e.RemoveFloodRemote(netip.MustParseAddr("192.0.2.3")) || e.RemoveFloodRemote(netip.MustParseAddr("192.0.2.3")) {
		t.Fatal("RemoveFloodRemote")
	}
	if got := e.FloodRemotes(); len(got) != 2 {
		t.Fatalf("flood list %v", got)
	}
	st := e.Stats()
	if st.FloodBUM != 2 || st.FloodUnknown != 1 {
		t.Fatalf("flood counters bum %d unknown %d, want 2 and 1", st.FloodBUM, st.FloodUnknown)
	}
}

// TestFloodOneBatch checks that head-end replication to 1,000 VTEPs is one
// batched send.
func TestFloodOneBatch(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2})
	for i := 0; i < 1000; i++ {
		if err := e.AddFloodRemote(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	before := ft.Batches()
	if got := broadcast(t, e, ft); len(got) != 1001 {
		t.Fatalf("flooded to %d destinations, want 1001", len(got))
	}
	if n := ft.Batches() - before; n != 1 {
		t.Fatalf("a flood to 1001 destinations took %d sends, want 1", n)
	}
}

// suppressionStack is a gVisor stack on an L2 endpoint that knows one
// remote host (10.0.0.2, fd00::2, MAC macB behind 192.0.2.3) only from its
// control plane: a static forwarding entry and suppression entries.
func suppressionStack(t *testing.T) (*Endpoint, *fakeTransport, *stack.Stack) {
	t.Helper()
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, NoLearn: true})
	remote := netip.MustParseAddr("192.0.2.3")
	if err := e.AddFloodRemote(remote); err != nil {
		t.Fatal(err)
	}
	if err := e.FDB().AddStaticFrom(net.HardwareAddr(macB), netip.AddrPortFrom(remote, 0), "evpn"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.2", "fd00::2"} {
		if err := e.FDB().AddNeighbor(netip.MustParseAddr(a), net.HardwareAddr(macB), "evpn"); err != nil {
			t.Fatal(err)
		}
	}
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol,
			ipv6.NewProtocolWithOptions(ipv6.Options{DADConfigs: stack.DADConfigurations{DupAddrDetectTransmits: 0}})},
		TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol},
	})
	t.Cleanup(s.Destroy)
	if err := s.CreateNIC(1, e); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"10.0.0.1/24", "fd00::1/64"} {
		pfx := netip.MustParsePrefix(p)
		proto := header.IPv4ProtocolNumber
		if pfx.Addr().Is6() {
			proto = header.IPv6ProtocolNumber
		}
		if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpipAddr(pfx.Addr()), PrefixLen: pfx.Bits()}}, stack.AddressProperties{}); err != nil {
			t.Fatal(err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	return e, ft, s
}

// TestARPNDSuppression: the stack's ARP request and neighbour solicitation
// for the remote host are answered by the endpoint, never flooded, and the
// datagrams that follow go unicast to the remote VTEP.
func TestARPNDSuppression(t *testing.T) {
	e, ft, s := suppressionStack(t)
	for _, dst := range []string{"10.0.0.2", "fd00::2"} {
		a := netip.MustParseAddr(dst)
		proto := header.IPv4ProtocolNumber
		if a.Is6() {
			proto = header.IPv6ProtocolNumber
		}
		c, err := gonet.DialUDP(s, nil, &tcpip.FullAddress{Addr: tcpipAddr(a), Port: 9}, proto)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hello " + dst)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		var found bool
		for !found && time.Now().Before(deadline) {
			for _, sent := range ft.Take() {
				h, off, err := geneve.Decode(sent.Data)
				if err != nil || h.VNI != 1 {
					t.Fatalf("sent %x: %v", sent.Data, err)
				}
				frame := sent.Data[off:]
				if binary.BigEndian.Uint16(frame[12:14]) == etherTypeARP {
					t.Fatalf("an ARP frame was sent: %x", frame)
				}
				if bytes.Contains(frame, []byte("hello "+dst)) {
					if string(frame[0:6]) != string(macB) || sent.Packet.Dst != netip.MustParseAddrPort("192.0.2.3:6081") {
						t.Fatalf("datagram to %s went to %v, dst MAC %x", dst, sent.Packet.Dst, frame[0:6])
					}
					found = true
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !found {
			t.Fatalf("no datagram to %s left the endpoint: %v", dst, e.Stats())
		}
	}
	st := e.Stats()
	if st.ARPSuppressed != 1 || st.ARPFlooded != 0 || st.NDSuppressed != 1 || st.NDFlooded != 0 || st.FloodUnknown != 0 {
		t.Fatalf("stats: %v", st)
	}
	if n := e.FDB().Neighbors(); len(n) != 2 || !strings.Contains(n[0].String(), "10.0.0.2 lladdr 02:00:00:00:00:0b suppress evpn") {
		t.Fatalf("neighbors %v", n)
	}
	if !e.FDB().RemoveNeighbor(netip.MustParseAddr("10.0.0.2"), net.HardwareAddr(macB), "evpn") || len(e.FDB().Neighbors()) != 1 {
		t.Fatal("RemoveNeighbor")
	}
}

// TestARPNotSuppressed: a request for an address the table does not hold
// (it holds another one) is flooded and counted as such.
func TestARPNotSuppressed(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, Remotes: threeRemotes()})
	if err := e.FDB().AddNeighbor(netip.MustParseAddr("10.0.0.8"), net.HardwareAddr{2, 0, 0, 0, 0, 8}, "evpn"); err != nil {
		t.Fatal(err)
	}
	req := make([]byte, arpLen)
	binary.BigEndian.PutUint16(req[0:2], 1)
	binary.BigEndian.PutUint16(req[2:4], etherTypeIPv4)
	req[4], req[5] = 6, 4
	binary.BigEndian.PutUint16(req[6:8], 1)
	copy(req[8:14], e.LinkAddress())
	copy(req[14:18], []byte{10, 0, 0, 1})
	copy(req[24:28], []byte{10, 0, 0, 7})
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(req)})
	pkt.NetworkProtocolNumber = header.ARPProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(header.EthernetBroadcastAddress)
	e.AddHeader(pkt)
	write(t, e, pkt)
	if got := ft.Take(); len(got) != 3 {
		t.Fatalf("request went to %d VTEPs, want 3", len(got))
	}
	if st := e.Stats(); st.ARPFlooded != 1 || st.ARPSuppressed != 0 {
		t.Fatalf("stats %v", st)
	}

	// A gratuitous ARP (target = sender: an announcement, as
	// stack.Tunnel.Announce sends) is flooded but is no lookup.
	copy(req[24:28], []byte{10, 0, 0, 1})
	pkt = stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(req)})
	pkt.NetworkProtocolNumber = header.ARPProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(header.EthernetBroadcastAddress)
	e.AddHeader(pkt)
	write(t, e, pkt)
	if got := ft.Take(); len(got) != 3 {
		t.Fatalf("announcement went to %d VTEPs, want 3", len(got))
	}
	if st := e.Stats(); st.ARPFlooded != 1 || st.ARPSuppressed != 0 {
		t.Fatalf("after a gratuitous ARP: stats %v", st)
	}
}

func TestHostRoutesL3(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 3, Mode: L3})
	for _, r := range threeRemotes()[1:] {
		if err := e.AddFloodRemote(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.AddHostRoute(netip.MustParseAddr("10.0.0.9"), netip.MustParseAddrPort("192.0.2.4:0"), "evpn"); err != nil {
		t.Fatal(err)
	}
	if err := e.AddHostRoute(netip.MustParseAddr("10.0.0.8"), netip.MustParseAddrPort("[2001:db8::4]:0"), "evpn"); err == nil || !strings.Contains(err.Error(), "the underlay is IPv4") {
		t.Fatalf("an IPv6 remote on an IPv4 underlay: %v", err)
	}
	send := func(dst string) []netip.AddrPort {
		write(t, e, outbound(e, ipv4UDP("10.0.0.1", dst, 1, 2, 0, []byte("x")), ""))
		var out []netip.AddrPort
		for _, d := range ft.Take() {
			out = append(out, d.Packet.Dst)
		}
		return out
	}
	if got := send("10.0.0.9"); len(got) != 1 || got[0] != netip.MustParseAddrPort("192.0.2.4:6081") {
		t.Fatalf("host route: sent to %v", got)
	}
	if got := send("10.0.0.8"); len(got) != 3 {
		t.Fatalf("no host route: sent to %v, want the remote and the 2 flood remotes", got)
	}
	if hr := e.HostRoutes(); len(hr) != 1 || hr[0].String() != "10.0.0.9 via 192.0.2.4:6081 evpn" {
		t.Fatalf("host routes %v", hr)
	}
	if e.RemoveHostRoute(netip.MustParseAddr("10.0.0.9"), "") || !e.RemoveHostRoute(netip.MustParseAddr("10.0.0.9"), "evpn") {
		t.Fatal("RemoveHostRoute")
	}
	l2, _, _ := newTestEndpoint(t, Config{VNI: 4, Mode: L2})
	if err := l2.AddHostRoute(netip.MustParseAddr("10.0.0.9"), netip.MustParseAddrPort("192.0.2.4:0"), ""); err == nil {
		t.Fatal("an l2 endpoint took a host route")
	}
}

func TestLocalLearning(t *testing.T) {
	e, _, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, FDBMax: 2})
	frame := func(src tcpip.LinkAddress) *stack.PacketBuffer {
		pkt := outbound(e, ipv4UDP("10.0.0.1", "10.0.0.9", 1, 2, 0, []byte("x")), macB)
		copy(pkt.LinkHeader().Slice()[6:12], src)
		return pkt
	}
	write(t, e, frame(macA))
	if m, _ := e.LocalMACs(); m != nil {
		t.Fatalf("learned %v with local learning off", m)
	}
	e.SetLocalLearning(true)
	write(t, e, frame(macA), frame(macC), frame(macA))
	// A gratuitous ARP from macA claims 10.0.0.5.
	req := make([]byte, arpLen)
	binary.BigEndian.PutUint16(req[0:2], 1)
	binary.BigEndian.PutUint16(req[2:4], etherTypeIPv4)
	req[4], req[5] = 6, 4
	binary.BigEndian.PutUint16(req[6:8], 1)
	copy(req[8:14], macA)
	copy(req[14:18], []byte{10, 0, 0, 5})
	copy(req[24:28], []byte{10, 0, 0, 5})
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(req)})
	pkt.NetworkProtocolNumber = header.ARPProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(header.EthernetBroadcastAddress)
	pkt.EgressRoute.LocalLinkAddress = macA
	e.AddHeader(pkt)
	write(t, e, pkt)
	write(t, e, frame(macB)) // the table is full (FDBMax 2)
	m, v := e.LocalMACs()
	if len(m) != 2 || string(m[0].MAC) != string(macA) || string(m[1].MAC) != string(macC) || fmt.Sprint(m[0].IPs) != "[10.0.0.5]" || v == 0 {
		t.Fatalf("local MACs %v version %d", m, v)
	}
	if !e.ForgetLocal(net.HardwareAddr(macA)) {
		t.Fatal("ForgetLocal")
	}
	if m, _ := e.LocalMACs(); len(m) != 1 {
		t.Fatalf("after ForgetLocal: %v", m)
	}
}

// BenchmarkFlood measures one broadcast frame replicated to 1,000 VTEPs
// (head-end replication, one batched send).
func BenchmarkFlood(b *testing.B) {
	e, ft, _ := newTestEndpoint(b, Config{VNI: 1, Mode: L2})
	ft.Record = false
	for i := 0; i < 999; i++ {
		if err := e.AddFloodRemote(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})); err != nil {
			b.Fatal(err)
		}
	}
	pkt := outbound(e, ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0, make([]byte, 64)), tcpip.LinkAddress(header.EthernetBroadcastAddress))
	defer pkt.DecRef()
	var l stack.PacketBufferList
	l.PushBack(pkt)
	e.WritePackets(l) // grows the pooled batch once
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.WritePackets(l)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/copy")
}

// TestStaticReAddKeepsSource: adding a static entry again unchanged (a
// control plane does so for every route naming the MAC) keeps its remote a
// valid source after another entry for that remote goes.
func TestStaticReAddKeepsSource(t *testing.T) {
	e, _, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2})
	f := e.FDB()
	r := netip.MustParseAddrPort("192.0.2.9:6081")
	a, b := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	for _, m := range []net.HardwareAddr{a, b, a} {
		if err := f.AddStaticFrom(m, r, "evpn"); err != nil {
			t.Fatal(err)
		}
	}
	if !f.RemoveFrom(b, "evpn") {
		t.Fatalf("RemoveFrom %s", b)
	}
	if !f.isStaticRemote(r.Addr()) {
		t.Fatalf("%s is no longer a static remote while %s still points to it", r.Addr(), a)
	}
}
