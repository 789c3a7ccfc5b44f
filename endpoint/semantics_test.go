package endpoint

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/linktest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	macA = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0a")
	macB = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0b")
	macC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0c")
)

func threeRemotes() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")}
}

// receiveFrame feeds an L2 frame from srcMAC behind the outer source src.
func receiveFrame(e *Endpoint, ft *fakeTransport, src string, srcMAC tcpip.LinkAddress) {
	ip := ipv4UDP("10.0.0.9", "10.0.0.1", 1, 2, 0, []byte("hi"))
	ft.Deliver([]link.Datagram{{
		Payload: datagram(geneve.Header{VNI: e.VNI(), Protocol: geneve.ProtoEthernet}, ether(e.LinkAddress(), srcMAC, 0x0800, ip)),
		Src:     netip.MustParseAddrPort(src + ":50000"),
	}})
}

// sendTo sends one frame to dstMAC and returns the destinations it went to.
func sendTo(t *testing.T, e *Endpoint, ft *fakeTransport, dstMAC tcpip.LinkAddress) []netip.AddrPort {
	t.Helper()
	write(t, e, outbound(e, ipv4UDP("10.0.0.1", "10.0.0.9", 1, 2, 0, []byte("x")), dstMAC))
	var out []netip.AddrPort
	for _, d := range ft.Take() {
		out = append(out, d.Packet.Dst)
	}
	return out
}

func TestFDBLearningAndAgeing(t *testing.T) {
	clock := faketime.NewManualClock()
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, Remotes: threeRemotes(), Clock: clock, FDBTimeout: 60 * time.Second})
	if got := sendTo(t, e, ft, macB); len(got) != 3 {
		t.Fatalf("unknown unicast went to %v, want all 3 remotes", got)
	}
	receiveFrame(e, ft, "192.0.2.3", macB)
	want := netip.MustParseAddrPort("192.0.2.3:6081") // the remote port, not the packet's source port
	if got := sendTo(t, e, ft, macB); len(got) != 1 || got[0] != want {
		t.Fatalf("learned unicast went to %v, want [%v]", got, want)
	}
	if got := sendTo(t, e, ft, header.EthernetBroadcastAddress); len(got) != 3 {
		t.Errorf("broadcast went to %v, want all 3 remotes", got)
	}
	// The MAC moves to another remote.
	receiveFrame(e, ft, "192.0.2.4", macB)
	if got := sendTo(t, e, ft, macB); len(got) != 1 || got[0].Addr() != netip.MustParseAddr("192.0.2.4") {
		t.Fatalf("after the move, unicast went to %v", got)
	}
	dump := e.FDB().Dump()
	if len(dump) != 1 || dump[0].Static || !bytes.Equal(dump[0].MAC, []byte(macB)) {
		t.Fatalf("dump %v", dump)
	}
	// Ageing on the manual clock: still there at 59 s, gone after 61 s.
	clock.Advance(59 * time.Second)
	if got := sendTo(t, e, ft, macB); len(got) != 1 {
		t.Errorf("entry expired early: %v", got)
	}
	clock.Advance(2 * time.Second)
	if got := sendTo(t, e, ft, macB); len(got) != 3 {
		t.Errorf("expired entry still used: %v", got)
	}
	if d := e.FDB().Dump(); len(d) != 0 {
		t.Errorf("expired entry dumped: %v", d)
	}
	clock.Advance(FDBPruneInterval)
	if st := e.FDB().Stats(); st.Count != 0 || st.Expired != 1 || st.Learned != 1 || st.Moved != 1 {
		t.Errorf("stats after pruning %+v", st)
	}
}

func TestFDBOverflowFlushStatic(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, Remotes: threeRemotes(), FDBMax: 2})
	f := e.FDB()
	receiveFrame(e, ft, "192.0.2.2", macA)
	receiveFrame(e, ft, "192.0.2.3", macB)
	receiveFrame(e, ft, "192.0.2.4", macC) // table full
	if st := f.Stats(); st.Count != 2 || st.NoSpace != 1 {
		t.Fatalf("stats %+v, want 2 entries and nospace 1", st)
	}
	if got := sendTo(t, e, ft, macC); len(got) != 3 {
		t.Errorf("MAC not learned for lack of space should flood, went to %v", got)
	}
	if err := f.AddStatic(net.HardwareAddr(macC), netip.MustParseAddrPort("198.51.100.7:0")); err == nil {
		t.Error("static entry accepted into a full table")
	}
	f.Flush()
	if err := f.AddStatic(net.HardwareAddr(macC), netip.MustParseAddrPort("198.51.100.7:0")); err != nil {
		t.Fatal(err)
	}
	receiveFrame(e, ft, "192.0.2.2", macA)
	d := f.Dump()
	if len(d) != 2 || d[0].Static == d[1].Static {
		t.Fatalf("dump %v, want one static and one dynamic entry", d)
	}
	// Learning does not override a static entry.
	receiveFrame(e, ft, "192.0.2.3", macC)
	if got := sendTo(t, e, ft, macC); len(got) != 1 || got[0] != netip.MustParseAddrPort("198.51.100.7:6081") {
		t.Errorf("static entry: frames went to %v", got)
	}
	f.Flush() // dynamic only (vxlan(4)'s meaning)
	if d := f.Dump(); len(d) != 1 || !d[0].Static {
		t.Errorf("after Flush: %v, want the static entry only", d)
	}
	f.FlushAll()
	if d := f.Dump(); len(d) != 0 {
		t.Errorf("after FlushAll: %v", d)
	}
	if err := f.AddStatic(net.HardwareAddr(macA), netip.MustParseAddrPort("198.51.100.8:7000")); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(net.HardwareAddr(macA)); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(net.HardwareAddr(macA)); err == nil {
		t.Error("removing a missing entry succeeded")
	}
	if err := f.AddStatic(net.HardwareAddr("\x01\x00\x5e\x00\x00\x01"), netip.MustParseAddrPort("198.51.100.8:7000")); err == nil {
		t.Error("multicast MAC accepted as a static entry")
	}
}

func TestNoLearn(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, Remotes: threeRemotes(), NoLearn: true})
	receiveFrame(e, ft, "192.0.2.3", macB)
	if got := sendTo(t, e, ft, macB); len(got) != 3 || len(e.FDB().Dump()) != 0 {
		t.Errorf("with learning off, frames went to %v", got)
	}
}

func TestMulticastLearning(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L2, Group: netip.MustParseAddr("239.1.1.1"), TTL: 9})
	group := netip.MustParseAddrPort("239.1.1.1:6081")
	sent := func(dst tcpip.LinkAddress) []linktest.Sent {
		write(t, e, outbound(e, ipv4UDP("10.0.0.1", "10.0.0.9", 1, 2, 0, nil), dst))
		return ft.Take()
	}
	if s := sent(macB); len(s) != 1 || s[0].Packet.Dst != group || s[0].Packet.TTL != 9 {
		t.Fatalf("unknown unicast: %+v, want the group with TTL 9", s)
	}
	// Any source is accepted in multicast mode, and learned.
	receiveFrame(e, ft, "198.51.100.20", macB)
	if s := sent(macB); len(s) != 1 || s[0].Packet.Dst != netip.MustParseAddrPort("198.51.100.20:6081") || s[0].Packet.TTL != 9 {
		t.Fatalf("learned unicast: %+v", s)
	}
	// A separate multicast TTL applies to the group only.
	m, mft, _ := newTestEndpoint(t, Config{VNI: 2, Mode: L2, Group: netip.MustParseAddr("239.1.1.1"), TTL: 30, MulticastTTL: 1})
	receiveFrame(m, mft, "198.51.100.20", macB)
	write(t, m, outbound(m, ipv4UDP("10.0.0.1", "10.0.0.9", 1, 2, 0, nil), macC))
	write(t, m, outbound(m, ipv4UDP("10.0.0.1", "10.0.0.9", 1, 2, 0, nil), macB))
	if s := mft.Take(); len(s) != 2 || s[0].Packet.Dst != group || s[0].Packet.TTL != 1 || s[1].Packet.TTL != 30 {
		t.Errorf("multicast TTL 1, unicast TTL 30: %+v", s)
	}
}

func TestSourceValidation(t *testing.T) {
	e, ft, d := newTestEndpoint(t, Config{VNI: 1, Mode: L2})
	receiveFrame(e, ft, "198.51.100.99", macB)
	if d.count != 0 || e.Stats().Drops[DropSource] != 1 {
		t.Fatalf("packet from an unknown source: delivered %d, stats %v", d.count, e.Stats())
	}
	if err := e.FDB().AddStatic(net.HardwareAddr(macC), netip.MustParseAddrPort("198.51.100.99:0")); err != nil {
		t.Fatal(err)
	}
	receiveFrame(e, ft, "198.51.100.99", macB)
	if d.count != 1 {
		t.Fatalf("packet from a static entry's remote not delivered")
	}
	any, ft2, d2 := newTestEndpoint(t, Config{VNI: 2, Mode: L2, AcceptAnySource: true})
	receiveFrame(any, ft2, "203.0.113.5", macB)
	if d2.count != 1 {
		t.Errorf("accept-any-source endpoint dropped a packet: %v", any.Stats())
	}
}

func TestOuterHeaderPolicy(t *testing.T) {
	ipDF := ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0xb9, []byte("x")) // DSCP 46, ECT(1)
	ipDF[6] |= 0x40
	ipDF[8] = 17
	header.IPv4(ipDF).SetChecksum(0)
	header.IPv4(ipDF).SetChecksum(^header.IPv4(ipDF).CalculateChecksum())
	ipNoDF := ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0x02, []byte("x"))
	for _, c := range []struct {
		name string
		cfg  Config
		ip   []byte
		tos  uint8
		ttl  uint8
		df   bool
	}{
		{"defaults", Config{TOS: 0x20}, ipDF, 0x21, 64, false},
		{"dscp inherit", Config{TOS: 0x20, DSCPInherit: true}, ipDF, 0xb9, 64, false},
		{"ttl inherit", Config{TTLInherit: true}, ipDF, 0x01, 17, false},
		{"ttl fixed", Config{TTL: 5}, ipDF, 0x01, 5, false},
		{"df set", Config{DF: DFSet}, ipNoDF, 0x02, 64, true},
		{"df inherit, DF", Config{DF: DFInherit}, ipDF, 0x01, 64, true},
		{"df inherit, no DF", Config{DF: DFInherit}, ipNoDF, 0x02, 64, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.VNI, cfg.Mode = 1, L3
			e, ft, _ := newTestEndpoint(t, cfg)
			write(t, e, outbound(e, c.ip, ""))
			s := ft.Take()
			if len(s) != 1 {
				t.Fatalf("%d datagrams", len(s))
			}
			if p := s[0].Packet; p.TOS != c.tos || p.TTL != c.ttl || p.DF != c.df {
				t.Errorf("outer TOS %#x TTL %d DF %v, want %#x %d %v", p.TOS, p.TTL, p.DF, c.tos, c.ttl, c.df)
			}
		})
	}
	// IPv6 inner with DF inherit: DF set (IPv6 is never fragmented en route).
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L3, DF: DFInherit, TTLInherit: true})
	write(t, e, tcpSuperPacket(e, true, []byte("abc"), 1000, header.TCPFlagAck))
	if s := ft.Take(); len(s) != 1 || !s[0].Packet.DF || s[0].Packet.TTL != 64 {
		t.Errorf("IPv6 inner: %+v", s)
	}
}

func TestTTLInheritOnDecapsulation(t *testing.T) {
	_, ft, d := newTestEndpoint(t, Config{VNI: 1, Mode: L3, TTLInherit: true})
	ip := ipv4UDP("10.0.0.2", "10.0.0.1", 1, 2, 0, []byte("x"))
	ft.Deliver([]link.Datagram{{Payload: datagram(geneve.Header{VNI: 1, Protocol: geneve.ProtoIPv4}, ip), Src: peerAddr, TTL: 3}})
	if len(d.pkts) != 1 {
		t.Fatal("not delivered")
	}
	got := header.IPv4(d.pkts[0])
	if got.TTL() != 3 || !got.IsChecksumValid() {
		t.Errorf("inner TTL %d (checksum valid %v), want the outer 3", got.TTL(), got.IsChecksumValid())
	}
}

func TestOptionsAPI(t *testing.T) {
	tunnelOpt, _ := geneve.AppendOption(nil, geneve.Option{Class: 0xffff, Type: 0x01, Data: []byte{1, 1, 1, 1}})
	markOpt, _ := geneve.AppendOption(nil, geneve.Option{Class: 0x0103, Type: 0x82, Data: []byte{9, 9, 9, 9, 8, 8, 8, 8}})
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L3, Options: tunnelOpt, MaxMarkOptions: 12})
	if e.MTU() != 1464-8-12 {
		t.Errorf("MTU %d, want 1464 minus 8 tunnel and 12 reserved option bytes", e.MTU())
	}
	if err := e.SetMarkOptions(7, append(append([]byte{}, markOpt...), markOpt...)); err == nil {
		t.Error("options above the reservation accepted")
	}
	if err := e.SetMarkOptions(7, markOpt); err != nil {
		t.Fatal(err)
	}
	pkt := outbound(e, ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0, []byte("x")), "")
	pkt.Mark = 7
	plain := outbound(e, ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0, []byte("x")), "")
	write(t, e, pkt, plain)
	s := ft.Take()
	h0, _, _ := geneve.Decode(s[0].Data)
	h1, _, _ := geneve.Decode(s[1].Data)
	if string(h0.Options) != string(tunnelOpt)+string(markOpt) || !h0.Critical {
		t.Errorf("marked packet options % x (C %v)", h0.Options, h0.Critical)
	}
	if string(h1.Options) != string(tunnelOpt) || h1.Critical {
		t.Errorf("unmarked packet options % x (C %v)", h1.Options, h1.Critical)
	}

	// The receiving side: the critical option is dropped until a handler
	// registers it; then the handler sees it and the packet is delivered.
	r, rft, rd := newTestEndpoint(t, Config{VNI: 1, Mode: L3})
	rft.Deliver([]link.Datagram{{Payload: s[0].Data, Src: peerAddr}})
	if rd.count != 0 || r.Stats().Drops[DropCritical] != 1 {
		t.Fatalf("unregistered critical option: delivered %d", rd.count)
	}
	var seen []geneve.Option
	r.HandleOption(OptionType{Class: 0x0103, Type: 0x82}, func(o geneve.Option, src netip.AddrPort) {
		o.Data = append([]byte(nil), o.Data...)
		seen = append(seen, o)
	})
	rft.Deliver([]link.Datagram{{Payload: s[0].Data, Src: peerAddr}, {Payload: s[1].Data, Src: peerAddr}})
	if rd.count != 2 || len(seen) != 1 || !bytes.Equal(seen[0].Data, []byte{9, 9, 9, 9, 8, 8, 8, 8}) {
		t.Errorf("delivered %d, handler saw %+v", rd.count, seen)
	}
	r.HandleOption(OptionType{Class: 0x0103, Type: 0x82}, nil)
	rft.Deliver([]link.Datagram{{Payload: s[0].Data, Src: peerAddr}})
	if rd.count != 2 {
		t.Error("critical option accepted after its handler was removed")
	}
}

func TestPMTU(t *testing.T) {
	big := make([]byte, 1500)
	for _, c := range []struct {
		name  string
		mode  Mode
		df    DFMode
		ipDF  bool
		v6    bool
		sent  bool
		reply bool
	}{
		{"v4 DF", L2, DFUnset, true, false, false, true},
		{"v4 DF, l3", L3, DFUnset, true, false, false, true},
		{"v4 no DF, outer may fragment", L3, DFUnset, false, false, true, false},
		{"v4 no DF, outer DF", L3, DFSet, false, false, false, false},
		{"v6", L2, DFUnset, false, true, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, ft, d := newTestEndpoint(t, Config{VNI: 1, Mode: c.mode, DF: c.df, MTU: 1400})
			peer := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
			var pkt *stack.PacketBuffer
			if c.v6 {
				pkt = tcpSuperPacket(e, true, big, 0, header.TCPFlagAck)
				pkt.GSOOptions = stack.GSO{}
			} else {
				ip := ipv4UDP("10.0.0.1", "10.0.0.2", 1000, 2000, 0, big)
				if c.ipDF {
					ip[6] |= 0x40
					header.IPv4(ip).SetChecksum(0)
					header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
				}
				pkt = outbound(e, ip, peer)
			}
			write(t, e, pkt)
			if got := len(ft.Take()) == 1; got != c.sent {
				t.Errorf("sent %v, want %v", got, c.sent)
			}
			if got := len(d.pkts) == 1; got != c.reply {
				t.Fatalf("ICMP reply %v, want %v", got, c.reply)
			}
			if !c.reply {
				return
			}
			if e.Stats().PMTUReplies != 1 || e.Stats().Drops[DropTxTooBig] != 1 {
				t.Errorf("stats %v", e.Stats())
			}
			r := d.pkts[0]
			if c.v6 {
				ip := header.IPv6(r)
				icmp := header.ICMPv6(ip.Payload())
				if icmp.Type() != header.ICMPv6PacketTooBig || icmp.MTU() != 1400 || ip.DestinationAddress().String() != "fd00::1" {
					t.Errorf("reply type %d MTU %d to %s", icmp.Type(), icmp.MTU(), ip.DestinationAddress())
				}
				return
			}
			ip := header.IPv4(r)
			icmp := header.ICMPv4(ip.Payload())
			if !ip.IsChecksumValid() || icmp.Type() != header.ICMPv4DstUnreachable || icmp.Code() != header.ICMPv4FragmentationNeeded || icmp.MTU() != 1400 ||
				ip.DestinationAddress().String() != "10.0.0.1" || ip.SourceAddress().String() != "10.0.0.2" {
				t.Errorf("reply %v -> %v type %d code %d MTU %d", ip.SourceAddress(), ip.DestinationAddress(), icmp.Type(), icmp.Code(), icmp.MTU())
			}
		})
	}
}

// TestVLANPassThrough sends and receives an 802.1Q-tagged frame through an
// L2 endpoint: the frame comes out bit for bit as it went in.
func TestVLANPassThrough(t *testing.T) {
	e, ft, d := newTestEndpoint(t, Config{VNI: 1, Mode: L2})
	ip := ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0, []byte("vlan"))
	frame := ether(macB, e.LinkAddress(), 0x8100, append([]byte{0x20, 0x0a, 0x08, 0x00}, ip...)) // VLAN 10, prio 1
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(frame[14:])})
	copy(pkt.LinkHeader().Push(14), frame[:14])
	write(t, e, pkt)
	s := ft.Take()
	if len(s) != 1 {
		t.Fatalf("%d datagrams", len(s))
	}
	_, off, _ := geneve.Decode(s[0].Data)
	if !bytes.Equal(s[0].Data[off:], frame) {
		t.Errorf("encapsulated frame differs")
	}
	in := ether(e.LinkAddress(), macB, 0x8100, append([]byte{0x20, 0x0a, 0x08, 0x00}, ip...))
	ft.Deliver([]link.Datagram{{Payload: datagram(geneve.Header{VNI: 1, Protocol: geneve.ProtoEthernet}, in), Src: peerAddr}})
	if len(d.pkts) != 1 || d.proto[0] != 0x8100 || !bytes.Equal(d.pkts[0], in[14:]) {
		t.Errorf("decapsulated VLAN frame: %d packets", len(d.pkts))
	}
}

// capsSink records whether receive offload was claimed while each packet
// was delivered.
type capsSink struct {
	e       *Endpoint
	claimed []bool
}

func (s *capsSink) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	s.claimed = append(s.claimed, s.e.Capabilities()&stack.CapabilityRXChecksumOffload != 0 && pkt.RXChecksumValidated)
}
func (s *capsSink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestReceiveOffloadOnlyWhenChecked: packets the endpoint checked (IPv6
// with a hop-by-hop header included) are delivered as validated; a
// fragment, which cannot be checked before reassembly, is delivered with
// the receive-offload claim withdrawn; a bad checksum behind an extension
// header is dropped.
func TestReceiveOffloadOnlyWhenChecked(t *testing.T) {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: L3})
	s := &capsSink{e: e}
	e.Attach(s)
	src, dst := tcpip.AddrFrom16(netip.MustParseAddr("fd00::2").As16()), tcpip.AddrFrom16(netip.MustParseAddr("fd00::1").As16())
	v6 := func(hbh bool, corrupt bool) []byte {
		payload := []byte("hello!!!")
		udp := make([]byte, 8+len(payload))
		header.UDP(udp).Encode(&header.UDPFields{SrcPort: 1, DstPort: 2, Length: uint16(len(udp))})
		copy(udp[8:], payload)
		x := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(udp)))
		header.UDP(udp).SetChecksum(^header.UDP(udp).CalculateChecksum(checksum.Checksum(payload, x)))
		if corrupt {
			udp[len(udp)-1] ^= 1
		}
		var ext []byte
		next := uint8(header.UDPProtocolNumber)
		if hbh {
			ext = []byte{next, 0, 1, 4, 0, 0, 0, 0} // PadN option
			next = 0
		}
		b := make([]byte, 40+len(ext)+len(udp))
		header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(ext) + len(udp)), TransportProtocol: tcpip.TransportProtocolNumber(next), HopLimit: 64, SrcAddr: src, DstAddr: dst})
		copy(b[40:], ext)
		copy(b[40+len(ext):], udp)
		return b
	}
	frag := ipv4UDP("10.0.0.2", "10.0.0.1", 1, 2, 0, []byte("fragment"))
	frag[6] = 0x20 // MF
	header.IPv4(frag).SetChecksum(0)
	header.IPv4(frag).SetChecksum(^header.IPv4(frag).CalculateChecksum())
	recv := func(ip []byte) {
		proto := geneve.ProtoIPv6
		if ip[0]>>4 == 4 {
			proto = geneve.ProtoIPv4
		}
		ft.Deliver([]link.Datagram{{Payload: datagram(geneve.Header{VNI: 1, Protocol: proto}, ip), Src: peerAddr}})
	}
	recv(v6(false, false))
	recv(v6(true, false))
	recv(frag)
	recv(v6(true, true))
	if want := []bool{true, true, false}; len(s.claimed) != 3 || s.claimed[0] != want[0] || s.claimed[1] != want[1] || s.claimed[2] != want[2] {
		t.Errorf("offload claimed %v, want %v", s.claimed, want)
	}
	if e.Stats().Drops[DropInnerChecksum] != 1 {
		t.Errorf("corrupt UDP behind a hop-by-hop header: stats %v", e.Stats())
	}
	if e.Capabilities()&stack.CapabilityRXChecksumOffload == 0 {
		t.Error("receive offload not restored after the unchecked packet")
	}
}

// TestFDBMoveWhileSending moves a MAC between two remotes on one goroutine
// while another looks it up, as the receive and send paths do: under -race
// this fails if a move rewrites an entry that a lookup reads.
func TestFDBMoveWhileSending(t *testing.T) {
	f := newFDB(faketime.NewManualClock(), true, 10, time.Minute, 6081, 4)
	defer f.close()
	mac := []byte(macB)
	a, b := netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")
	f.learnFrom(mac, a, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			src := a
			if i%2 == 1 {
				src = b
			}
			f.learnFrom(mac, src, int64(i))
		}
	}()
	for i := 0; i < 2000; i++ {
		r, ok := f.lookup(mac)
		if !ok || r.Addr() != a && r.Addr() != b || r.Port() != 6081 {
			t.Fatalf("lookup during moves: %v %v", r, ok)
		}
	}
	<-done
	if st := f.Stats(); st.Moved != 1999 || st.Learned != 1 {
		t.Errorf("stats %+v, want 1999 moves of 1 learned entry", st)
	}
}
