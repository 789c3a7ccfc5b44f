package endpoint

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// segmentingTransport is a fakeTransport that takes UDP-tunnel
// segmentation jobs while on is set.
type segmentingTransport struct {
	*fakeTransport
	on bool
}

func (s *segmentingTransport) TunnelSegmentation() (int, bool) { return 0xffff - 8, s.on }

func newJobEndpoint(t *testing.T, cfg Config) (*Endpoint, *segmentingTransport, *sink) {
	t.Helper()
	st := &segmentingTransport{fakeTransport: newFakeTransport("192.0.2.1:6081"), on: true}
	e, d := newEndpointOn(t, st, cfg)
	return e, st, d
}

// TestTunnelJobs: with a transport that takes UDP-tunnel jobs, a TCP
// super-packet goes down whole, with InnerMSS and its partial checksum,
// and one segment or less still goes out segmented in software.
func TestTunnelJobs(t *testing.T) {
	for _, mode := range []Mode{L2, L3} {
		for _, v6 := range []bool{false, true} {
			e, st, _ := newJobEndpoint(t, Config{VNI: 9, Mode: mode})
			if e.GSOMaxSize() > 65535-160 {
				t.Fatalf("GSOMaxSize %d leaves no room for the outer headers", e.GSOMaxSize())
			}
			payload := bytes.Repeat([]byte{0xab}, 20000)
			write(t, e, tcpSuperPacket(e, v6, payload, 1380, header.TCPFlagAck))
			sent := st.Take()
			if len(sent) != 1 || sent[0].Packet.InnerMSS != 1380 {
				t.Fatalf("%v v6=%v: %d datagrams (InnerMSS %d), want one job", mode, v6, len(sent), sent[0].Packet.InnerMSS)
			}
			h, off, err := geneve.Decode(sent[0].Data)
			if err != nil || h.VNI != 9 {
				t.Fatalf("decode: %v %+v", err, h)
			}
			inner := sent[0].Data[off:]
			if mode == L2 {
				inner = inner[header.EthernetMinimumSize:]
			}
			ipLen := 20
			if v6 {
				ipLen = 40
			}
			if tcp := header.TCP(inner[ipLen:]); tcp.Checksum() != 0x1234 || !bytes.Equal(tcp.Payload(), payload) {
				t.Errorf("%v v6=%v: the job's TCP checksum %#x or payload changed", mode, v6, tcp.Checksum())
			}
			if s := e.Stats(); s.TxTunnelJobs != 1 || s.TxGSOSegments != 0 {
				t.Errorf("stats %+v", s)
			}
			write(t, e, tcpSuperPacket(e, v6, payload[:1000], 1380, header.TCPFlagAck))
			if sent := st.Take(); len(sent) != 1 || sent[0].Packet.InnerMSS != 0 {
				t.Errorf("a single segment went down as a job")
			}
			st.on = false
			write(t, e, tcpSuperPacket(e, v6, payload, 1380, header.TCPFlagAck))
			if sent := st.Take(); len(sent) != 15 {
				t.Errorf("offload off: %d datagrams, want 15 segments", len(sent))
			}
		}
	}
}

// partialTCPPacket returns an IPv4 TCP packet of n payload bytes whose
// checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL).
func partialTCPPacket(n int) []byte {
	b := make([]byte, 40+n)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1})})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[20:])
	tcp.Encode(&header.TCPFields{SrcPort: 80, DstPort: 40000, SeqNum: 1, AckNum: 1, DataOffset: 20, Flags: header.TCPFlagAck, WindowSize: 1000})
	for i := range b[40:] {
		b[40+i] = byte(i)
	}
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(20+n)))
	return b
}

// gsoSink records the GSO options and checksum claim of what it gets, and
// how many bytes of it (from the link header on) its first view holds.
type gsoSink struct {
	sink
	gso       []stack.GSO
	validated []bool
	firstView []int
}

func (s *gsoSink) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	s.gso = append(s.gso, pkt.GSOOptions)
	s.validated = append(s.validated, pkt.RXChecksumValidated)
	vl, off := pkt.AsViewList()
	s.firstView = append(s.firstView, vl.Front().Size()-off)
	s.sink.DeliverNetworkPacket(p, pkt)
}

// newPartialEnv is an L3 endpoint (VNI 9) on a segmenting transport with a
// gsoSink, and recv, which hands it an inner IPv4 packet as a datagram from
// 192.0.2.2 (local, with a segment size, as a transport says).
func newPartialEnv(t *testing.T, cfg Config) (*Endpoint, *gsoSink, func(inner []byte, local bool, mss uint16)) {
	t.Helper()
	e, st, _ := newJobEndpoint(t, cfg)
	d := &gsoSink{sink: sink{keep: true}}
	e.Attach(d)
	hdr := make([]byte, 8)
	h := geneve.Header{Protocol: geneve.ProtoIPv4, VNI: cfg.VNI}
	if _, err := h.Encode(hdr); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("192.0.2.2:50000")
	return e, d, func(inner []byte, local bool, mss uint16) {
		p := append(append([]byte{}, hdr...), inner...)
		st.Deliver([]link.Datagram{{Payload: p, Src: src, Local: local, InnerMSS: mss}})
	}
}

// TestLocalPartialChecksums: inner checksums left partial by this host's
// kernel are accepted (marked by the transport, or recognised as the
// pseudo-header sum); a super-packet is delivered whole with its segment
// size; a checksum that is neither right nor partial is still dropped.
func TestLocalPartialChecksums(t *testing.T) {
	e, d, recv := newPartialEnv(t, Config{VNI: 9, Mode: L3})
	super := partialTCPPacket(30000)
	recv(super, true, 1400) // a tunnel job from the TAP underlay
	recv(super, false, 0)   // the same through a kernel socket
	recv(partialTCPPacket(100), false, 0)
	bad := partialTCPPacket(100)
	bad[37] ^= 0x40 // neither the pseudo-header sum nor the right checksum
	recv(bad, false, 0)
	e.flushGRO()
	if len(d.pkts) != 3 {
		t.Fatalf("%d packets delivered, want 3", len(d.pkts))
	}
	if !bytes.Equal(d.pkts[0], super) || d.gso[0].MSS != 1400 || d.gso[0].Type != stack.GSOTCPv4 || !d.validated[0] {
		t.Errorf("job: gso %+v validated %v", d.gso[0], d.validated[0])
	}
	if !bytes.Equal(d.pkts[1], super) || d.gso[1].Type != stack.GSOTCPv4 || !d.validated[1] {
		t.Errorf("kernel-socket super-packet: gso %+v validated %v", d.gso[1], d.validated[1])
	}
	s := e.Stats()
	if s.RxTunnelJobs != 2 || s.Drops[DropInnerChecksum] != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestLocalPartialChecksumsNoGRO: with GRO off the overlay stack checks
// inner checksums itself, yet a partial one from this host that a kernel
// socket could not mark must still arrive trusted (the stack would drop
// it), whole if it is a super-packet; a bad checksum is left to the stack.
func TestLocalPartialChecksumsNoGRO(t *testing.T) {
	e, d, recv := newPartialEnv(t, Config{VNI: 9, Mode: L3, DisableGRO: true})
	super := partialTCPPacket(30000)
	small := partialTCPPacket(100)
	good := partialTCPPacket(100)
	tcp := header.TCP(good[20:])
	tcp.SetChecksum(0)
	tcp.SetChecksum(^checksum.Checksum(good[20:], header.PseudoHeaderChecksum(header.TCPProtocolNumber,
		header.IPv4(good).SourceAddress(), header.IPv4(good).DestinationAddress(), uint16(len(good)-20))))
	bad := partialTCPPacket(100)
	bad[37] ^= 0x40
	for _, p := range [][]byte{super, small, good, bad} {
		recv(p, false, 0) // through a kernel socket: not marked local
	}
	if len(d.pkts) != 4 {
		t.Fatalf("%d packets delivered, want 4", len(d.pkts))
	}
	if !bytes.Equal(d.pkts[0], super) || d.gso[0].Type != stack.GSOTCPv4 || !d.validated[0] {
		t.Errorf("kernel-socket super-packet: gso %+v validated %v", d.gso[0], d.validated[0])
	}
	if !bytes.Equal(d.pkts[1], small) || d.gso[1].Type != stack.GSONone || !d.validated[1] {
		t.Errorf("partial packet: gso %+v validated %v", d.gso[1], d.validated[1])
	}
	for i := 2; i < 4; i++ {
		if d.validated[i] {
			t.Errorf("packet %d: checksum claimed valid, want it left to the overlay stack", i)
		}
	}
	if s := e.Stats(); s.RxTunnelJobs != 1 || s.Drops[DropInnerChecksum] != 0 {
		t.Errorf("stats %+v", s)
	}
}
