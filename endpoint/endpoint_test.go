package endpoint

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

// fakeTransport is the in-memory transport of package linktest.
type fakeTransport = linktest.Transport

func newFakeTransport(local string) *fakeTransport {
	return linktest.New(netip.MustParseAddrPort(local))
}

// sink is a NetworkDispatcher that records delivered packets (as bytes,
// from the network header on) and their protocol.
type sink struct {
	mu    sync.Mutex
	pkts  [][]byte
	proto []tcpip.NetworkProtocolNumber
	types []tcpip.PacketType
	count int
	keep  bool
}

func (s *sink) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if !s.keep {
		return
	}
	v := pkt.Data().AsRange().ToSlice()
	s.pkts = append(s.pkts, v)
	s.proto = append(s.proto, p)
	s.types = append(s.types, pkt.PktType)
}
func (s *sink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func newTestEndpoint(t testing.TB, cfg Config) (*Endpoint, *fakeTransport, *sink) {
	t.Helper()
	ft := newFakeTransport("192.0.2.1:6081")
	e, d := newEndpointOn(t, ft, cfg)
	return e, ft, d
}

// newEndpointOn makes an endpoint for cfg (remote 192.0.2.2 unless set) on
// a socket over tr, attached to a recording sink.
func newEndpointOn(t testing.TB, tr link.Transport, cfg Config) (*Endpoint, *sink) {
	t.Helper()
	sock, err := NewSocket(tr)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Remotes) == 0 && !cfg.Group.IsValid() {
		cfg.Remotes = []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	}
	e, err := New(sock, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &sink{keep: true}
	e.Attach(d)
	t.Cleanup(e.Close)
	return e, d
}

// ipv4UDP builds an IPv4/UDP packet with a valid checksum.
func ipv4UDP(src, dst string, sport, dport uint16, tos uint8, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TOS: tos, TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(netip.MustParseAddr(src).As4()), DstAddr: tcpip.AddrFrom4(netip.MustParseAddr(dst).As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[20:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(8 + len(payload))})
	copy(b[28:], payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(8+len(payload)))
	xsum = checksum.Checksum(payload, xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))
	return b
}

// outbound makes an outbound packet as the stack hands it to the link:
// network and transport headers pushed, link header added by AddHeader.
func outbound(e *Endpoint, ip []byte, dstMAC tcpip.LinkAddress) *stack.PacketBuffer {
	ihl := int(ip[0]&0xf) * 4
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(e.MaxHeaderLength()) + ihl + 8,
		Payload:            buffer.MakeWithData(ip[ihl+8:]),
	})
	copy(pkt.TransportHeader().Push(8), ip[ihl:ihl+8])
	copy(pkt.NetworkHeader().Push(ihl), ip[:ihl])
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = dstMAC
	e.AddHeader(pkt)
	return pkt
}

func write(t testing.TB, e *Endpoint, pkts ...*stack.PacketBuffer) {
	var l stack.PacketBufferList
	for _, p := range pkts {
		l.PushBack(p)
	}
	if _, err := e.WritePackets(l); err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		p.DecRef()
	}
}

func TestEncapsulateL2(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 0xabcdef, Mode: L2, TOS: 0x20})
	peer := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
	ip := ipv4UDP("10.0.0.1", "10.0.0.2", 1000, 2000, 0x02 /* ECT(0) */, []byte("hello"))
	write(t, e, outbound(e, ip, peer))
	sent := ft.Take()
	if len(sent) != 1 {
		t.Fatalf("sent %d datagrams, want 1", len(sent))
	}
	d := sent[0]
	h, off, err := geneve.Decode(d.Data)
	if err != nil {
		t.Fatal(err)
	}
	if d.Data[0]>>6 != 0 || h.VNI != 0xabcdef || h.Protocol != geneve.ProtoEthernet || h.OAM || h.Critical || len(h.Options) != 0 {
		t.Errorf("header %+v", h)
	}
	if d.Data[1]&0x3f != 0 || d.Data[7] != 0 {
		t.Errorf("reserved bits not zero: % x", d.Data[:8])
	}
	frame := d.Data[off:]
	eth := header.Ethernet(frame)
	if eth.DestinationAddress() != peer || eth.SourceAddress() != e.LinkAddress() || eth.Type() != header.IPv4ProtocolNumber {
		t.Errorf("inner Ethernet %x", frame[:14])
	}
	if string(frame[14:]) != string(ip) {
		t.Errorf("inner packet differs")
	}
	if d.Packet.Dst != netip.MustParseAddrPort("192.0.2.2:6081") {
		t.Errorf("dst %v", d.Packet.Dst)
	}
	if d.Packet.TOS != 0x22 {
		t.Errorf("outer TOS %#x, want DSCP 0x20 | inner ECT(0) = 0x22", d.Packet.TOS)
	}
	if d.Packet.TTL != DefaultTTL {
		t.Errorf("TTL %d", d.Packet.TTL)
	}
	if d.Packet.SrcPort < DefaultSrcPortMin || d.Packet.SrcPort > DefaultSrcPortMax {
		t.Errorf("source port %d outside %d..%d", d.Packet.SrcPort, DefaultSrcPortMin, DefaultSrcPortMax)
	}
	if st := e.Stats(); st.TxPackets != 1 || st.TxBytes != uint64(len(frame)) {
		t.Errorf("stats %v", st)
	}
}

func TestSourcePortPerFlow(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L3, SrcPortMin: 50000, SrcPortMax: 50099})
	ports := map[uint16]bool{}
	for i := 0; i < 200; i++ {
		for rep := 0; rep < 2; rep++ {
			write(t, e, outbound(e, ipv4UDP("10.0.0.1", "10.0.0.2", uint16(1000+i), 53, 0, []byte("x")), ""))
		}
		sent := ft.Take()
		if sent[0].Packet.SrcPort != sent[1].Packet.SrcPort {
			t.Fatalf("flow %d: source ports %d and %d differ", i, sent[0].Packet.SrcPort, sent[1].Packet.SrcPort)
		}
		p := sent[0].Packet.SrcPort
		if p < 50000 || p > 50099 {
			t.Fatalf("source port %d outside 50000..50099", p)
		}
		ports[p] = true
		if h, _, _ := geneve.Decode(sent[0].Data); h.Protocol != geneve.ProtoIPv4 {
			t.Fatalf("L3 protocol %#x, want 0x0800", h.Protocol)
		}
	}
	if len(ports) < 60 {
		t.Errorf("200 flows used only %d of 100 source ports", len(ports))
	}
}

func TestEncapsulateOptionsAndReplication(t *testing.T) {
	opts, _ := geneve.AppendOption(nil, geneve.Option{Class: 0xffff, Type: 0x81, Data: []byte{1, 2, 3, 4}})
	e, ft, _ := newTestEndpoint(t, Config{VNI: 7, Mode: L2, Options: opts, Remotes: []netip.Addr{
		netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")}})
	if got, want := e.MTU(), uint32(1450-8); got != want {
		t.Errorf("MTU %d, want %d (1450 minus 8 option bytes)", got, want)
	}
	write(t, e, outbound(e, ipv4UDP("10.0.0.1", "10.0.0.255", 1, 2, 0, nil), header.EthernetBroadcastAddress))
	sent := ft.Take()
	if len(sent) != 3 {
		t.Fatalf("broadcast replicated to %d remotes, want 3", len(sent))
	}
	for i, d := range sent {
		h, _, err := geneve.Decode(d.Data)
		if err != nil || !h.Critical || string(h.Options) != string(opts) {
			t.Errorf("datagram %d: %+v %v", i, h, err)
		}
		if want := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + i)}), 6081); d.Packet.Dst != want {
			t.Errorf("datagram %d to %v, want %v", i, d.Packet.Dst, want)
		}
	}
}

// peerAddr is the remote of newTestEndpoint's endpoints.
var peerAddr = netip.MustParseAddrPort("192.0.2.2:6081")

// datagram builds a received Geneve datagram.
func datagram(h geneve.Header, payload []byte) []byte {
	b := make([]byte, h.Len()+len(payload))
	if _, err := h.Encode(b); err != nil {
		panic(err)
	}
	copy(b[h.Len():], payload)
	return b
}

func ether(dst, src tcpip.LinkAddress, typ uint16, payload []byte) []byte {
	b := make([]byte, 14+len(payload))
	copy(b, dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], typ)
	copy(b[14:], payload)
	return b
}

func TestDecapsulateChecks(t *testing.T) {
	ip := ipv4UDP("10.0.0.2", "10.0.0.1", 1, 2, 0, []byte("payload"))
	ctrl := 0
	e, ft, d := newTestEndpoint(t, Config{VNI: 5, Mode: L2,
		KnownCritical: []OptionType{{Class: 0x0102, Type: 0x80}},
		OnControl:     func(*geneve.Header, []byte, netip.AddrPort) { ctrl++ }})
	own := e.LinkAddress()
	peer := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x09")
	frame := ether(own, peer, 0x0800, ip)
	opt := func(class uint16, typ uint8) []byte {
		o, _ := geneve.AppendOption(nil, geneve.Option{Class: class, Type: typ, Data: []byte{0, 0, 0, 1}})
		return o
	}
	cases := []struct {
		name    string
		dg      []byte
		deliver bool
		drop    DropReason
		sockets bool // counted by the socket, not the endpoint
	}{
		{"plain", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, frame), true, 0, false},
		{"reserved bits set", func() []byte {
			b := datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, frame)
			b[1] |= 0x3f
			b[7] = 0xff
			return b
		}(), true, 0, false},
		{"version 1", func() []byte {
			b := datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, frame)
			b[0] |= 0x40
			return b
		}(), false, DropVersion, true},
		{"truncated", []byte{0, 0, 0x65}, false, DropTruncated, true},
		{"unknown vni", datagram(geneve.Header{VNI: 6, Protocol: geneve.ProtoEthernet}, frame), false, DropUnknownVNI, true},
		{"O bit", datagram(geneve.Header{VNI: 5, OAM: true, Protocol: geneve.ProtoEthernet}, frame), false, DropControl, false},
		{"unknown critical", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet, Options: opt(0xffff, 0x87)}, frame), false, DropCritical, false},
		{"unknown critical, C clear", func() []byte {
			b := datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet, Options: opt(0xffff, 0x87)}, frame)
			b[1] &^= 0x40
			return b
		}(), false, DropCritical, false},
		{"known critical", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet, Options: opt(0x0102, 0x80)}, frame), true, 0, false},
		{"unknown non-critical", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet, Options: opt(0xffff, 0x07)}, frame), true, 0, false},
		{"C bit, no options", datagram(geneve.Header{VNI: 5, Critical: true, Protocol: geneve.ProtoEthernet}, frame), true, 0, false},
		{"L3 payload on L2", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoIPv4}, ip), false, DropProtocol, false},
		{"foreign MAC", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, ether("\x02\x00\x00\x00\x00\x07", peer, 0x0800, ip)), false, DropNotForUs, false},
		{"own source MAC", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, ether(header.EthernetBroadcastAddress, own, 0x0800, ip)), false, DropLoop, false},
		{"short frame", datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, frame[:10]), false, DropInnerMalformed, false},
		{"bad inner checksum", func() []byte {
			bad := append([]byte(nil), frame...)
			bad[len(bad)-1] ^= 0xff
			return datagram(geneve.Header{VNI: 5, Protocol: geneve.ProtoEthernet}, bad)
		}(), false, DropInnerChecksum, false},
	}
	for _, c := range cases {
		before, sbefore := e.Stats(), e.sock.Stats()
		d.count = 0
		ft.Deliver([]link.Datagram{{Payload: c.dg, Src: netip.MustParseAddrPort("192.0.2.2:40000")}})
		after, safter := e.Stats(), e.sock.Stats()
		if got := d.count == 1; got != c.deliver {
			t.Errorf("%s: delivered=%v, want %v", c.name, got, c.deliver)
		}
		if !c.deliver {
			b, a := before.Drops[c.drop], after.Drops[c.drop]
			if c.sockets {
				b, a = sbefore.Drops[c.drop], safter.Drops[c.drop]
			}
			if a != b+1 {
				t.Errorf("%s: drop counter %s went %d -> %d", c.name, c.drop, b, a)
			}
		}
	}
	if ctrl != 1 {
		t.Errorf("control hook called %d times, want 1", ctrl)
	}
}

func TestDecapsulateL3(t *testing.T) {
	e, ft, d := newTestEndpoint(t, Config{VNI: 9, Mode: L3})
	ip := ipv4UDP("10.0.0.2", "10.0.0.1", 1, 2, 0, []byte("x"))
	ft.Deliver([]link.Datagram{
		{Payload: datagram(geneve.Header{VNI: 9, Protocol: geneve.ProtoIPv4}, ip), Src: peerAddr},
		{Payload: datagram(geneve.Header{VNI: 9, Protocol: geneve.ProtoEthernet}, ether("\xff\xff\xff\xff\xff\xff", "\x02\x00\x00\x00\x00\x01", 0x0800, ip)), Src: peerAddr},
		{Payload: datagram(geneve.Header{VNI: 9, Protocol: geneve.ProtoIPv6}, ip), Src: peerAddr},
	})
	if len(d.pkts) != 1 || d.proto[0] != header.IPv4ProtocolNumber || string(d.pkts[0]) != string(ip) {
		t.Fatalf("delivered %d packets", len(d.pkts))
	}
	st := e.Stats()
	if st.Drops[DropProtocol] != 1 || st.Drops[DropInnerMalformed] != 1 {
		t.Errorf("stats %v", st)
	}
}

// TestECNDecapsulation checks the 16 cases of RFC 6040 §4.2 Figure 4 on a
// real decapsulation, including the DSCP being kept and the IPv4 header
// checksum fixed.
func TestECNDecapsulation(t *testing.T) {
	const (
		notECT = 0
		ect1   = 1
		ect0   = 2
		ce     = 3
	)
	// want[inner][outer]; -1 = drop.
	want := [4][4]int{
		notECT: {notECT, notECT, notECT, -1},
		ect1:   {ect1, ect1, ect1, ce},
		ect0:   {ect0, ect1, ect0, ce},
		ce:     {ce, ce, ce, ce},
	}
	e, ft, d := newTestEndpoint(t, Config{VNI: 3, Mode: L3})
	for inner := 0; inner < 4; inner++ {
		for outer := 0; outer < 4; outer++ {
			d.pkts = nil
			ip := ipv4UDP("10.0.0.2", "10.0.0.1", 1, 2, 0xb8|uint8(inner), []byte("ecn"))
			drops := e.Stats().Drops[DropECN]
			ft.Deliver([]link.Datagram{{Payload: datagram(geneve.Header{VNI: 3, Protocol: geneve.ProtoIPv4}, ip), TOS: uint8(outer), Src: peerAddr}})
			w := want[inner][outer]
			if w < 0 {
				if len(d.pkts) != 0 || e.Stats().Drops[DropECN] != drops+1 {
					t.Errorf("inner %d outer %d: want a counted drop", inner, outer)
				}
				continue
			}
			if len(d.pkts) != 1 {
				t.Fatalf("inner %d outer %d: not delivered", inner, outer)
			}
			got := header.IPv4(d.pkts[0])
			if tos, _ := got.TOS(); tos != 0xb8|uint8(w) {
				t.Errorf("inner %d outer %d: TOS %#x, want %#x", inner, outer, tos, 0xb8|w)
			}
			if !got.IsChecksumValid() {
				t.Errorf("inner %d outer %d: IPv4 header checksum not fixed", inner, outer)
			}
		}
	}
}

// TestTunnelMTU checks the MTU table of the RFC 8926 checklist (§9).
func TestTunnelMTU(t *testing.T) {
	for _, c := range []struct {
		fam  int
		mode Mode
		opts int
		want int
	}{
		{4, L2, 0, 1450}, {6, L2, 0, 1430}, {4, L3, 0, 1464}, {6, L3, 0, 1444},
		{4, L2, 252, 1198}, {6, L3, 8, 1436},
	} {
		if got := TunnelMTU(1500, c.fam, c.mode, c.opts); got != c.want {
			t.Errorf("IPv%d %s with %d option bytes: MTU %d, want %d", c.fam, c.mode, c.opts, got, c.want)
		}
	}
}
