package endpoint

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// flowSeg describes one segment of a test TCP flow (10.0.0.2:80 ->
// 10.0.0.1:40000, or fd00::2 -> fd00::1).
type flowSeg struct {
	seq    uint32
	n      int // payload bytes
	flags  header.TCPFlags
	window uint16
	tsval  uint32 // the timestamp option's value, 0 for no options
	src    string // another source address, for a second flow
}

// build returns the segment's IP packet with valid checksums. Its payload
// bytes are a function of the sequence number, so a coalesced packet can
// be compared with the stream.
func (f flowSeg) build(v6 bool) []byte {
	hl := 20
	if f.tsval != 0 {
		hl += 12
	}
	seg := make([]byte, hl+f.n)
	binary.BigEndian.PutUint16(seg[0:], 80)
	binary.BigEndian.PutUint16(seg[2:], 40000)
	binary.BigEndian.PutUint32(seg[4:], f.seq)
	binary.BigEndian.PutUint32(seg[8:], 7)
	seg[12] = byte(hl/4) << 4
	flags := f.flags
	if flags == 0 {
		flags = header.TCPFlagAck
	}
	seg[13] = uint8(flags)
	w := f.window
	if w == 0 {
		w = 1000
	}
	binary.BigEndian.PutUint16(seg[14:], w)
	if f.tsval != 0 {
		copy(seg[20:], []byte{1, 1, 8, 10})
		binary.BigEndian.PutUint32(seg[24:], f.tsval)
		binary.BigEndian.PutUint32(seg[28:], 99)
	}
	for i := range f.n {
		seg[hl+i] = byte(f.seq + uint32(i))
	}
	src, dst := "10.0.0.2", "10.0.0.1"
	if v6 {
		src, dst = "fd00::2", "fd00::1"
	}
	if f.src != "" {
		src = f.src
	}
	return withTransport(netip.MustParseAddr(src), netip.MustParseAddr(dst), protoTCP, seg, 16)
}

// coalesceRig is an endpoint whose sink records GSO options, and the
// datagrams to feed it.
type coalesceRig struct {
	e    *Endpoint
	ft   *fakeTransport
	d    *gsoSink
	mode Mode
	v6   bool
}

func newCoalesceRig(t *testing.T, mode Mode, v6 bool) *coalesceRig {
	e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: mode})
	d := &gsoSink{sink: sink{keep: true}}
	e.Attach(d)
	return &coalesceRig{e: e, ft: ft, d: d, mode: mode, v6: v6}
}

// segmentSink is a gsoSink that also takes runs as a link.SegmentWriter
// (as a TAP device does), recording them as the packets they stand for.
type segmentSink struct {
	gsoSink
	linkLen int
	writes  int
}

func (s *segmentSink) WriteSegments(hdr []byte, payloads [][]byte, mss int) bool {
	s.writes++
	p := append([]byte{}, hdr[s.linkLen:]...)
	for _, b := range payloads {
		p = append(p, b...)
	}
	s.pkts = append(s.pkts, p)
	typ := stack.GSOTCPv4
	if p[0]>>4 == 6 {
		typ = stack.GSOTCPv6
	}
	s.gso = append(s.gso, stack.GSO{Type: typ, NeedsCsum: true, CsumOffset: link.TCPChecksumOffset, MSS: uint16(mss)})
	s.validated = append(s.validated, true)
	s.firstView = append(s.firstView, len(hdr))
	return true
}

// withSegmentWriter makes r's sink a segmentSink.
func (r *coalesceRig) withSegmentWriter() *segmentSink {
	d := &segmentSink{gsoSink: gsoSink{sink: sink{keep: true}}}
	if r.mode == L2 {
		d.linkLen = header.EthernetMinimumSize
	}
	r.e.Attach(d)
	r.d = &d.gsoSink
	return d
}

// datagram encapsulates an inner IP packet as the peer would.
func (r *coalesceRig) datagram(ip []byte) link.Datagram {
	h := geneve.Header{VNI: 1, Protocol: geneve.ProtoIPv4}
	if r.v6 {
		h.Protocol = geneve.ProtoIPv6
	}
	inner := ip
	if r.mode == L2 {
		h.Protocol = geneve.ProtoEthernet
		typ := uint16(0x0800)
		if r.v6 {
			typ = 0x86dd
		}
		inner = ether(r.e.LinkAddress(), tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02"), typ, ip)
	}
	return link.Datagram{Payload: datagram(h, inner), Src: peerAddr}
}

// deliver hands segs to the endpoint as one batch, with the payloads also
// in one gVisor buffer when lend is set, as the netstack underlay lends a
// super-frame's datagrams.
func (r *coalesceRig) deliver(t *testing.T, lend bool, segs ...flowSeg) {
	t.Helper()
	batch := make([]link.Datagram, len(segs))
	for i, s := range segs {
		batch[i] = r.datagram(s.build(r.v6))
	}
	if lend {
		shared := lendTogether(batch)
		defer shared.Release()
	}
	r.ft.Deliver(batch)
}

// lendTogether copies the payloads of batch, after a few bytes of
// something else, into one gVisor buffer that every datagram lends from
// its own offset. The caller releases it after the delivery.
func lendTogether(batch []link.Datagram) *buffer.Buffer {
	all := []byte{0xde, 0xad, 0xbe}
	offs := make([]int, len(batch))
	for i := range batch {
		offs[i] = len(all)
		all = append(all, batch[i].Payload...)
	}
	shared := buffer.MakeWithData(all)
	for i := range batch {
		batch[i].Buffer, batch[i].BufferOff = &shared, offs[i]
	}
	return &shared
}

// stream returns n full segments of mss bytes from seq.
func stream(seq uint32, n, mss int) []flowSeg {
	segs := make([]flowSeg, n)
	for i := range segs {
		segs[i] = flowSeg{seq: seq + uint32(i*mss), n: mss}
	}
	return segs
}

// checkCoalesced checks that packet i is the coalesced form of segs: the
// first segment's headers with the total length, a valid IPv4 header
// checksum, the flags of all, every payload in order, and GSO options
// that give the first segment's size.
func (r *coalesceRig) checkCoalesced(t *testing.T, i int, segs ...flowSeg) {
	t.Helper()
	if i >= len(r.d.pkts) {
		t.Fatalf("packet %d not delivered (%d delivered, stats %v)", i, len(r.d.pkts), r.e.Stats())
	}
	got := r.d.pkts[i]
	first := segs[0].build(r.v6)
	ipHL := 20
	if r.v6 {
		ipHL = 40
	}
	hl := ipHL + int(first[ipHL+12]>>4)*4
	want := append([]byte{}, first[:hl]...)
	for _, s := range segs {
		want = append(want, s.build(r.v6)[hl:]...)
		want[ipHL+13] |= uint8(s.flags) & uint8(header.TCPFlagPsh|header.TCPFlagFin)
	}
	if r.v6 {
		binary.BigEndian.PutUint16(want[4:], uint16(len(want)-40))
	} else {
		binary.BigEndian.PutUint16(want[2:], uint16(len(want)))
		binary.BigEndian.PutUint16(want[10:], 0)
		binary.BigEndian.PutUint16(want[10:], ^checksum.Checksum(want[:20], 0))
	}
	if len(segs) > 1 {
		// A segmentation job's TCP checksum field holds the
		// pseudo-header sum: completing it over the segment must give
		// the segment's real checksum.
		tcp := got[ipHL:min(len(got), len(want))]
		if len(got) == len(want) {
			full := ^checksum.Checksum(tcp, 0)
			tcp = bytes.Clone(tcp)
			binary.BigEndian.PutUint16(tcp[16:], full)
			if !tcpChecksumValid(got[:ipHL], tcp) {
				t.Errorf("packet %d: the TCP checksum field is not the pseudo-header sum", i)
			}
		}
		copy(want[ipHL+16:ipHL+18], got[ipHL+16:ipHL+18])
	}
	if !bytes.Equal(got, want) {
		t.Errorf("packet %d: %d bytes, want %d (first %d header bytes: got %x want %x)", i, len(got), len(want), hl, got[:min(hl, len(got))], want[:hl])
	}
	wantType := stack.GSOTCPv4
	if r.v6 {
		wantType = stack.GSOTCPv6
	}
	if g := r.d.gso[i]; len(segs) > 1 && (g.Type != wantType || int(g.MSS) != segs[0].n || !g.NeedsCsum || g.CsumOffset != 16) {
		t.Errorf("packet %d: GSO %+v, want %v with MSS %d", i, g, wantType, segs[0].n)
	}
	if !r.d.validated[i] {
		t.Errorf("packet %d: checksums not claimed validated", i)
	}
	// The headers sit in a small view of their own (gVisor fills its
	// spare room from the next one), not in the payload's: gVisor
	// copies the whole chunk it reads a header from when that chunk is
	// shared.
	if len(segs) > 1 && len(r.d.firstView) > i && r.d.firstView[i] > 256 {
		t.Errorf("packet %d: the first view holds %d bytes, want the headers' small view", i, r.d.firstView[i])
	}
}

// TestCoalesceRun: consecutive segments of one flow in a batch become one
// packet, in both modes, both families, from reused memory and from lent
// buffers, delivered as a PacketBuffer or written to a link.SegmentWriter;
// the counters count each segment.
func TestCoalesceRun(t *testing.T) {
	for _, mode := range []Mode{L2, L3} {
		for _, v6 := range []bool{false, true} {
			for _, lend := range []bool{false, true} {
				for _, writer := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/v6=%v/lend=%v/writer=%v", mode, v6, lend, writer), func(t *testing.T) {
						r := newCoalesceRig(t, mode, v6)
						var w *segmentSink
						if writer {
							w = r.withSegmentWriter()
						}
						segs := stream(1000, 40, 1348)
						r.deliver(t, lend, segs...)
						if len(r.d.pkts) != 1 {
							t.Fatalf("%d packets delivered, want 1 (stats %v)", len(r.d.pkts), r.e.Stats())
						}
						r.checkCoalesced(t, 0, segs...)
						if w != nil && w.writes != 1 {
							t.Errorf("%d runs written, want 1", w.writes)
						}
						if s := r.e.Stats(); s.RxPackets != 40 || s.RxCoalesced != 40 || s.TotalDrops() != 0 {
							t.Errorf("stats %v", s)
						}
					})
				}
			}
		}
	}
}

// TestLentFrames: frames that are delivered alone (a UDP datagram, a TCP
// segment that ends its run at once) reference their payload in the
// transport's lent buffer, from each datagram's own offset in it, and
// arrive intact.
func TestLentFrames(t *testing.T) {
	for _, mode := range []Mode{L2, L3} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", mode, v6), func(t *testing.T) {
				r := newCoalesceRig(t, mode, v6)
				src, dst := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")
				if v6 {
					src, dst = netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::1")
				}
				inner := [][]byte{
					udpDatagram(src, dst, 8+1200, 1200),
					flowSeg{seq: 1, n: 900, flags: header.TCPFlagAck | header.TCPFlagPsh}.build(v6),
					udpDatagram(src, dst, 8+333, 333),
				}
				batch := make([]link.Datagram, len(inner))
				for i, ip := range inner {
					batch[i] = r.datagram(ip)
				}
				shared := lendTogether(batch)
				r.ft.Deliver(batch)
				shared.Release()
				if len(r.d.pkts) != len(inner) {
					t.Fatalf("%d packets delivered, want %d (stats %v)", len(r.d.pkts), len(inner), r.e.Stats())
				}
				for i, want := range inner {
					if !bytes.Equal(r.d.pkts[i], want) {
						t.Errorf("packet %d:\n%x, want\n%x", i, r.d.pkts[i], want)
					}
				}
			})
		}
	}
}

// TestCoalesceRules: what ends a run and what never joins one, after
// Linux's tcp_gro_receive.
func TestCoalesceRules(t *testing.T) {
	const mss = 1000
	type want [][]int // the segments (indexes into segs) of each delivered packet
	tests := []struct {
		name string
		segs []flowSeg
		want want
	}{
		{"gap in sequence", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss}, {seq: 1 + 3*mss, n: mss}, {seq: 1 + 4*mss, n: mss}},
			want{{0, 1}, {2, 3}}},
		{"short segment ends", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: 10}, {seq: 11 + mss, n: mss}, {seq: 11 + 2*mss, n: mss}},
			want{{0, 1}, {2, 3}}},
		{"larger segment starts anew", []flowSeg{{seq: 1, n: 500}, {seq: 501, n: 500}, {seq: 1001, n: mss}, {seq: 1001 + mss, n: mss}},
			want{{0, 1}, {2, 3}}},
		{"PSH ends", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss, flags: header.TCPFlagAck | header.TCPFlagPsh}, {seq: 1 + 2*mss, n: mss}, {seq: 1 + 3*mss, n: mss}},
			want{{0, 1}, {2, 3}}},
		{"FIN ends", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss, flags: header.TCPFlagAck | header.TCPFlagFin}},
			want{{0, 1}}},
		{"window change", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss}, {seq: 1 + 2*mss, n: mss, window: 2000}, {seq: 1 + 3*mss, n: mss, window: 2000}},
			want{{0, 1}, {2, 3}}},
		{"timestamp change", []flowSeg{{seq: 1, n: mss, tsval: 5}, {seq: 1 + mss, n: mss, tsval: 5}, {seq: 1 + 2*mss, n: mss, tsval: 6}, {seq: 1 + 3*mss, n: mss, tsval: 6}},
			want{{0, 1}, {2, 3}}},
		{"CWR never joins", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss, flags: header.TCPFlagAck | header.TCPFlagCwr}, {seq: 1 + 2*mss, n: mss}, {seq: 1 + 3*mss, n: mss}},
			want{{0}, {1}, {2, 3}}},
		{"ECE must match", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss, flags: header.TCPFlagAck | header.TCPFlagEce}, {seq: 1 + 2*mss, n: mss, flags: header.TCPFlagAck | header.TCPFlagEce}},
			want{{0}, {1, 2}}},
		{"pure ACK never joins", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss}, {seq: 1 + 2*mss, n: 0}, {seq: 1 + 2*mss, n: mss}, {seq: 1 + 3*mss, n: mss}},
			want{{0, 1}, {2}, {3, 4}}},
		{"another flow between", []flowSeg{{seq: 1, n: mss}, {seq: 1 + mss, n: mss}, {seq: 1, n: mss, src: "10.0.0.3"}, {seq: 1 + 2*mss, n: mss}, {seq: 1 + 3*mss, n: mss}},
			want{{0, 1}, {2}, {3, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newCoalesceRig(t, L3, false)
			r.deliver(t, false, tt.segs...)
			// Runs of one go through gVisor's GRO; the cases are built
			// so that it merges nothing either, and every packet is
			// compared. Only runs of two or more count as coalesced.
			var wantPkts, coalesced int
			for _, p := range tt.want {
				wantPkts++
				if len(p) > 1 {
					coalesced += len(p)
				}
			}
			if len(r.d.pkts) != wantPkts {
				t.Fatalf("%d packets delivered, want %d (stats %v)", len(r.d.pkts), wantPkts, r.e.Stats())
			}
			for i, p := range tt.want {
				segs := make([]flowSeg, len(p))
				for j, k := range p {
					segs[j] = tt.segs[k]
				}
				r.checkCoalesced(t, i, segs...)
			}
			if s := r.e.Stats(); s.RxCoalesced != uint64(coalesced) || s.RxPackets != uint64(len(tt.segs)) {
				t.Errorf("stats %v, want %d coalesced", s, coalesced)
			}
		})
	}
}

// TestCoalesceLimits: a run stops at 64 segments and below 64 KiB of IP
// packet, and never spans two batches.
func TestCoalesceLimits(t *testing.T) {
	r := newCoalesceRig(t, L3, false)
	segs := stream(1, 70, 100)
	r.deliver(t, false, segs...)
	if len(r.d.pkts) != 2 {
		t.Fatalf("%d packets, want 2 (64 + 6)", len(r.d.pkts))
	}
	r.checkCoalesced(t, 0, segs[:64]...)
	r.checkCoalesced(t, 1, segs[64:]...)

	r = newCoalesceRig(t, L3, true)
	segs = stream(1, 50, 1380)
	r.deliver(t, true, segs...)
	n := (0xffff - 60) / 1380 // segments that fit behind the first's headers
	if len(r.d.pkts) != 2 {
		t.Fatalf("%d packets, want 2", len(r.d.pkts))
	}
	r.checkCoalesced(t, 0, segs[:n]...)
	r.checkCoalesced(t, 1, segs[n:]...)

	r = newCoalesceRig(t, L2, false)
	segs = stream(1, 4, 1000)
	r.deliver(t, false, segs[:2]...)
	r.deliver(t, false, segs[2:]...)
	if len(r.d.pkts) != 2 {
		t.Fatalf("%d packets, want one per batch", len(r.d.pkts))
	}
	r.checkCoalesced(t, 0, segs[:2]...)
	r.checkCoalesced(t, 1, segs[2:]...)
}

// TestCoalesceBadSegment: a segment with a bad checksum in the middle of a
// run is dropped and counted; the segments around it still arrive, split
// at the hole.
func TestCoalesceBadSegment(t *testing.T) {
	r := newCoalesceRig(t, L2, false)
	segs := stream(1, 6, 1000)
	batch := make([]link.Datagram, len(segs))
	for i, s := range segs {
		batch[i] = r.datagram(s.build(false))
	}
	p := batch[3].Payload
	p[len(p)-1] ^= 0xff
	r.ft.Deliver(batch)
	if len(r.d.pkts) != 2 {
		t.Fatalf("%d packets, want 2", len(r.d.pkts))
	}
	r.checkCoalesced(t, 0, segs[:3]...)
	r.checkCoalesced(t, 1, segs[4:]...)
	if s := r.e.Stats(); s.Drops[DropInnerChecksum] != 1 || s.RxPackets != 5 {
		t.Errorf("stats %v", s)
	}
}

// BenchmarkReceiveFlow measures the receive path for a batch of 64
// full-sized TCP segments (1400-byte L2 frames) from memory the transport
// reuses, into a dispatcher that keeps nothing: with the endpoint's own
// coalescing ("run") and with gVisor's GRO alone ("gvisor-gro"), in the
// same run. The batch is one flow (a kernel UDP GRO message), or two flows
// whose segments alternate, so that every run is one segment long and
// gVisor's GRO does the merging. An op is a batch; ns/segment divides.
func BenchmarkReceiveFlow(b *testing.B) {
	const segs, mss = 64, 1348
	for _, mode := range []Mode{L2, L3} {
		for _, flows := range []int{1, 2} {
			for _, how := range []string{"gvisor-gro", "run"} {
				b.Run(fmt.Sprintf("%s/flows=%d/%s", mode, flows, how), func(b *testing.B) {
					e, ft, d := newTestEndpoint(b, Config{VNI: 1, Mode: mode})
					d.keep = false
					e.noRun = how == "gvisor-gro"
					r := &coalesceRig{e: e, ft: ft, mode: mode}
					batch := make([]link.Datagram, segs)
					for i := range batch {
						s := flowSeg{seq: uint32(1 + i/flows*mss), n: mss}
						if i%flows == 1 {
							s.src = "10.0.0.3"
						}
						batch[i] = r.datagram(s.build(false))
					}
					b.SetBytes(int64(segs * (len(batch[0].Payload) - 8)))
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						ft.Deliver(batch)
					}
					b.StopTimer()
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*segs), "ns/segment")
					if s := e.Stats(); s.TotalDrops() != 0 || s.RxPackets != uint64(b.N*segs) || d.count == 0 {
						b.Fatalf("stats %v, %d delivered", s, d.count)
					}
				})
			}
		}
	}
}

// TestCoalesceLocal: segments built on this host, whose TCP checksum
// fields hold only the pseudo-header sum (marked Local by the transport,
// or recognised through a kernel socket), coalesce as checked ones do.
func TestCoalesceLocal(t *testing.T) {
	for _, marked := range []bool{true, false} {
		t.Run(fmt.Sprintf("marked=%v", marked), func(t *testing.T) {
			r := newCoalesceRig(t, L2, false)
			segs := stream(1, 8, 1000)
			batch := make([]link.Datagram, len(segs))
			for i, s := range segs {
				ip := s.build(false)
				seg := ip[20:]
				binary.BigEndian.PutUint16(seg[16:], header.PseudoHeaderChecksum(header.TCPProtocolNumber,
					tcpip.AddrFromSlice(ip[12:16]), tcpip.AddrFromSlice(ip[16:20]), uint16(len(seg))))
				batch[i] = r.datagram(ip)
				batch[i].Local = marked
			}
			r.ft.Deliver(batch)
			if len(r.d.pkts) != 1 {
				t.Fatalf("%d packets, want 1 (stats %v)", len(r.d.pkts), r.e.Stats())
			}
			if s := r.e.Stats(); s.RxCoalesced != 8 || s.TotalDrops() != 0 {
				t.Errorf("stats %v", s)
			}
			if g := r.d.gso[0]; g.Type != stack.GSOTCPv4 || g.MSS != 1000 || !r.d.validated[0] {
				t.Errorf("GSO %+v, validated %v", g, r.d.validated[0])
			}
		})
	}
}
