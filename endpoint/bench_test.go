package endpoint

import (
	"fmt"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// frameSizes are the inner frame sizes the issue asks about.
var frameSizes = []int{64, 1400}

// benchOutbound returns an outbound IPv4/UDP packet for e whose frame (with
// the Ethernet header in L2 mode) is size bytes.
func benchOutbound(e *Endpoint, mode Mode, size int) *stack.PacketBuffer {
	ipLen := size
	if mode == L2 {
		ipLen -= 14
	}
	return outbound(e, ipv4UDP("10.0.0.1", "10.0.0.2", 1, 2, 0, make([]byte, ipLen-28)), "\x02\x00\x00\x00\x00\x02")
}

// benchInbound returns a batch of one Geneve datagram for e from its peer
// whose inner IPv4/UDP frame is size bytes.
func benchInbound(e *Endpoint, mode Mode, size int) []link.Datagram {
	ipLen := size
	if mode == L2 {
		ipLen -= 14
	}
	ip := ipv4UDP("10.0.0.2", "10.0.0.1", 1, 2, 0, make([]byte, ipLen-28))
	h := geneve.Header{VNI: 1, Protocol: geneve.ProtoIPv4}
	payload := ip
	if mode == L2 {
		h.Protocol = geneve.ProtoEthernet
		payload = ether(e.LinkAddress(), tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02"), 0x0800, ip)
	}
	return []link.Datagram{{Payload: datagram(h, payload), Src: peerAddr}}
}

// BenchmarkEncapsulate measures WritePackets for one inner frame into a
// transport that discards: Geneve header, flow hash, batch and release.
func BenchmarkEncapsulate(b *testing.B) {
	for _, mode := range []Mode{L2, L3} {
		for _, size := range frameSizes {
			b.Run(fmt.Sprintf("%s/%dB", mode, size), func(b *testing.B) {
				e, ft, _ := newTestEndpoint(b, Config{VNI: 1, Mode: mode})
				ft.Record = false
				pkt := benchOutbound(e, mode, size)
				defer pkt.DecRef()
				var l stack.PacketBufferList
				l.PushBack(pkt)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e.WritePackets(l)
				}
				b.StopTimer()
				if st := e.Stats(); st.TxPackets != uint64(b.N) {
					b.Fatalf("sent %d of %d", st.TxPackets, b.N)
				}
			})
		}
	}
}

// BenchmarkDecapsulate measures the receive path for one datagram: decode,
// VNI lookup, checks, inner checksum validation, PacketBuffer creation and
// delivery to a dispatcher that keeps nothing.
func BenchmarkDecapsulate(b *testing.B) {
	for _, mode := range []Mode{L2, L3} {
		for _, size := range frameSizes {
			b.Run(fmt.Sprintf("%s/%dB", mode, size), func(b *testing.B) {
				e, ft, d := newTestEndpoint(b, Config{VNI: 1, Mode: mode})
				d.keep = false
				batch := benchInbound(e, mode, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					ft.Deliver(batch)
				}
				b.StopTimer()
				if d.count != b.N {
					b.Fatalf("delivered %d of %d (stats %v)", d.count, b.N, e.Stats())
				}
			})
		}
	}
}

// BenchmarkSegment measures splitting a 64 KiB TCP super-packet into
// MSS-sized segments and encapsulating them.
func BenchmarkSegment(b *testing.B) {
	e, ft, _ := newTestEndpoint(b, Config{VNI: 1, Mode: L3})
	ft.Record = false
	payload := make([]byte, 65000)
	pkt := tcpSuperPacket(e, false, payload, 1424, 0x10)
	defer pkt.DecRef()
	var l stack.PacketBufferList
	l.PushBack(pkt)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.WritePackets(l)
	}
}

// copySink keeps the copy baseline's destination alive.
var copySink []byte

// BenchmarkEncapDecapVsCopy measures, in one run, a plain copy of a
// 1400-byte frame, its encapsulation (WritePackets into a transport that
// discards) and its decapsulation (checks, inner checksum validation,
// delivery), interleaved in rounds of 1000 so that other load hits all
// three alike. It reports each in ns/frame and encapsulation plus
// decapsulation as a multiple of the copy (x-copy).
//
// It also times the least any gVisor link endpoint does for a received
// frame: put its bytes in a PacketBuffer and release it, with no check and
// no delivery (floor-ns/frame, floor-x-copy). That floor bounds how close
// to a copy decapsulation can come while the overlay is a netstack NIC.
func BenchmarkEncapDecapVsCopy(b *testing.B) {
	for _, mode := range []Mode{L2, L3} {
		b.Run(mode.String(), func(b *testing.B) {
			const size = 1400
			tx, ftx, _ := newTestEndpoint(b, Config{VNI: 1, Mode: mode})
			ftx.Record = false
			pkt := benchOutbound(tx, mode, size)
			defer pkt.DecRef()
			var l stack.PacketBufferList
			l.PushBack(pkt)

			rx, frx, d := newTestEndpoint(b, Config{VNI: 1, Mode: mode})
			d.keep = false
			batch := benchInbound(rx, mode, size)

			src := make([]byte, size)
			copySink = make([]byte, size)
			var tCopy, tEnc, tDec, tFloor time.Duration
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(1000, b.N-done)
				t0 := time.Now()
				for i := 0; i < n; i++ {
					copy(copySink, src)
				}
				t1 := time.Now()
				for i := 0; i < n; i++ {
					tx.WritePackets(l)
				}
				t2 := time.Now()
				for i := 0; i < n; i++ {
					frx.Deliver(batch)
				}
				t3 := time.Now()
				for i := 0; i < n; i++ {
					p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(src)})
					p.DecRef()
				}
				t4 := time.Now()
				tCopy += t1.Sub(t0)
				tEnc += t2.Sub(t1)
				tDec += t3.Sub(t2)
				tFloor += t4.Sub(t3)
				done += n
			}
			b.StopTimer()
			if d.count != b.N {
				b.Fatalf("delivered %d of %d (stats %v)", d.count, b.N, rx.Stats())
			}
			per := func(t time.Duration) float64 { return float64(t.Nanoseconds()) / float64(b.N) }
			b.ReportMetric(per(tCopy), "copy-ns/frame")
			b.ReportMetric(per(tEnc), "encap-ns/frame")
			b.ReportMetric(per(tDec), "decap-ns/frame")
			b.ReportMetric((per(tEnc)+per(tDec))/per(tCopy), "x-copy")
			b.ReportMetric(per(tFloor), "floor-ns/frame")
			b.ReportMetric(per(tFloor)/per(tCopy), "floor-x-copy")
		})
	}
}
