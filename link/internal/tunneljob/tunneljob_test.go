package tunneljob

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/tunneljob/jobtest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ipv6Job returns a job like jobtest.IPv4TCP with an inner IPv6 packet
// and a TCP header with 12 bytes of options (timestamps).
func ipv6Job(l2 bool, payload []byte, flags header.TCPFlags) []byte {
	b := []byte{0, 0, 0x86, 0xdd, 0, 0, 42, 0}
	if l2 {
		b[2], b[3] = 0x65, 0x58
		b = append(b, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd)
	}
	tcpLen := header.TCPMinimumSize + 12 + len(payload)
	src := tcpip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	dst := tcpip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34})
	ip := make([]byte, header.IPv6MinimumSize)
	header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
	tcp := make([]byte, header.TCPMinimumSize+12)
	header.TCP(tcp).Encode(&header.TCPFields{SrcPort: 1000, DstPort: 2000, SeqNum: 0xfffff000, AckNum: 5, DataOffset: 32, Flags: flags, WindowSize: 100})
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(tcp[16:], header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen)))
	b = append(append(b, ip...), tcp...)
	return append(b, payload...)
}

// withIPv4Options inserts a 4-byte IPv4 option (a router alert) into a
// job from jobtest.IPv4TCP whose inner IP header starts at l3.
func withIPv4Options(job []byte, l3 int) []byte {
	out := append(append(append([]byte{}, job[:l3+20]...), 0x94, 0x04, 0, 0), job[l3+20:]...)
	ip := header.IPv4(out[l3:])
	ip[0] = 0x46
	ip.SetTotalLength(ip.TotalLength() + 4)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return out
}

// referenceSegment is how every segment's headers were computed before
// the job kept its sums: the whole IPv4 header, pseudo-header and TCP
// header summed again for each segment.
func referenceSegment(j *Job, dst, tmpl []byte, pkt link.Slices, idx int) {
	off := idx * j.MSS
	n := min(j.MSS, j.DataLen-off)
	copy(dst[:j.HdrLen], tmpl[:j.HdrLen])
	h := dst[:j.HdrLen]
	pseudo := link.SegmentHeader(h, j.L3, j.L4, link.ProtoTCP, idx, off, n, off+n == j.DataLen)
	link.FinishChecksum(h[j.L4:], link.ProtoTCP, pseudo, pkt.Checksum(j.HdrLen+off, n))
}

// TestSegmentSums checks every segment's headers, byte for byte, against
// summing them whole, and checks that the checksums verify, for IPv4 and
// IPv6 inner packets, with and without an inner Ethernet header, with
// flags that only some segments keep, sequence numbers that wrap, IPv4
// IDs that wrap, and payloads split across slices at odd offsets.
func TestSegmentSums(t *testing.T) {
	payload := make([]byte, 20000)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	v4 := func(l2 bool, id uint16) []byte {
		job := jobtest.IPv4TCP(l2, payload)
		l3 := 8
		if l2 {
			l3 += 14
		}
		ip := header.IPv4(job[l3:])
		ip.SetID(id)
		ip.SetTOS(0x02, 0) // ECT(0)
		job[l3+20+13] |= byte(header.TCPFlagCwr | header.TCPFlagFin)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return job
	}
	for _, tc := range []struct {
		name string
		job  []byte
		v6   bool
	}{
		{"ipv4-l3", v4(false, 7), false},
		{"ipv4-l2-id-wraps", v4(true, 0xfffe), false},
		{"ipv4-options", withIPv4Options(v4(false, 9), 8), false},
		{"ipv6-l3", ipv6Job(false, payload, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin|header.TCPFlagCwr), true},
		{"ipv6-l2", ipv6Job(true, payload, header.TCPFlagAck), true},
	} {
		for _, mss := range []uint16{1, 536, 1448, 8960} {
			t.Run(fmt.Sprintf("%s/mss=%d", tc.name, mss), func(t *testing.T) {
				var tmpl [MaxHdrLen]byte
				n := copy(tmpl[:], tc.job)
				j, ok := Parse(tmpl[:n], len(tc.job), mss)
				if !ok {
					t.Fatal("Parse refused the job")
				}
				// Split the job at odd offsets, as views may lie.
				pkt := link.Slices{tc.job[:j.HdrLen+3], tc.job[j.HdrLen+3 : j.HdrLen+1001], tc.job[j.HdrLen+1001:]}
				got, want := make([]byte, j.HdrLen), make([]byte, j.HdrLen)
				for idx := 0; idx < j.Segments(); idx++ {
					off, m := j.Segment(got, tmpl[:], pkt, idx)
					referenceSegment(&j, want, tmpl[:], pkt, idx)
					if !bytes.Equal(got, want) {
						t.Fatalf("segment %d: headers\n%x, want\n%x", idx, got, want)
					}
					if off != j.HdrLen+idx*int(mss) || m != min(int(mss), j.DataLen-idx*int(mss)) {
						t.Fatalf("segment %d: payload at %d+%d", idx, off, m)
					}
					checkSegment(t, idx, got[j.L3:], tc.job[off:off+m], tc.v6)
					// The flags, independently of the code under test:
					// FIN and PSH on the last segment only, CWR on the
					// first only, the rest everywhere.
					flags := header.TCP(tc.job[j.L4:]).Flags()
					if idx != j.Segments()-1 {
						flags &^= header.TCPFlagFin | header.TCPFlagPsh
					}
					if idx > 0 {
						flags &^= header.TCPFlagCwr
					}
					if f := header.TCP(got[j.L4:]).Flags(); f != flags {
						t.Fatalf("segment %d: flags %v, want %v", idx, f, flags)
					}
				}
			})
		}
	}
}

// checkSegment verifies the IP header and TCP checksums of one segment.
func checkSegment(t *testing.T, idx int, ipTCP, payload []byte, v6 bool) {
	t.Helper()
	var src, dst tcpip.Address
	var tcp header.TCP
	if v6 {
		ip := header.IPv6(ipTCP)
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ipTCP[header.IPv6MinimumSize:])
		if int(ip.PayloadLength()) != len(tcp)+len(payload) {
			t.Fatalf("segment %d: payload length %d, want %d", idx, ip.PayloadLength(), len(tcp)+len(payload))
		}
	} else {
		ip := header.IPv4(ipTCP)
		if !ip.IsChecksumValid() {
			t.Fatalf("segment %d: bad IPv4 header checksum", idx)
		}
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ipTCP[ip.HeaderLength():])
		if int(ip.TotalLength()) != int(ip.HeaderLength())+len(tcp)+len(payload) {
			t.Fatalf("segment %d: total length %d", idx, ip.TotalLength())
		}
	}
	tcp = tcp[:tcp.DataOffset()]
	if !tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload))) {
		t.Fatalf("segment %d: bad TCP checksum", idx)
	}
}

// BenchmarkSegment cuts a 64 KB job (L2, IPv4, MSS 1448) into its
// segments' headers and checksums, as the kernel UDP and AF_PACKET
// transports do; the payload checksum is part of it, the payload itself
// is never copied. SetBytes counts the payload.
func BenchmarkSegment(b *testing.B) {
	job := jobtest.IPv4TCP(true, make([]byte, 64000))
	var tmpl [MaxHdrLen]byte
	n := copy(tmpl[:], job)
	pkt := link.Slices{job}
	hdr := make([]byte, MaxHdrLen)
	j, ok := Parse(tmpl[:n], len(job), 1448)
	if !ok {
		b.Fatal("Parse refused the job")
	}
	b.SetBytes(int64(j.DataLen))
	b.ReportAllocs()
	for b.Loop() {
		j, _ := Parse(tmpl[:n], len(job), 1448)
		for idx := 0; idx < j.Segments(); idx++ {
			j.Segment(hdr, tmpl[:], pkt, idx)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*j.Segments()), "ns/segment")
}

// FuzzSegment cuts arbitrary jobs that Parse accepts and checks every
// segment's headers, byte for byte, against summing them whole
// (referenceSegment): the sums taken once per job must give the same
// bytes for any headers, options and flags.
func FuzzSegment(f *testing.F) {
	f.Add(jobtest.IPv4TCP(true, make([]byte, 300)), uint16(100))
	f.Add(jobtest.IPv4TCP(false, make([]byte, 50)), uint16(7))
	f.Add(withIPv4Options(jobtest.IPv4TCP(true, make([]byte, 400)), 22), uint16(100))
	f.Add(ipv6Job(false, make([]byte, 200), header.TCPFlagAck|header.TCPFlagFin|header.TCPFlagCwr), uint16(64))
	f.Add(ipv6Job(true, make([]byte, 500), header.TCPFlagAck|header.TCPFlagPsh), uint16(99))
	f.Fuzz(func(t *testing.T, job []byte, mss uint16) {
		var tmpl [MaxHdrLen]byte
		n := copy(tmpl[:], job)
		j, ok := Parse(tmpl[:n], len(job), mss)
		if !ok {
			return
		}
		if j.Segments() > 256 {
			return // tiny MSS over a large job: slow, and nothing new
		}
		pkt := link.Slices{job}
		got, want := make([]byte, j.HdrLen), make([]byte, j.HdrLen)
		for idx := 0; idx < j.Segments(); idx++ {
			j.Segment(got, tmpl[:], pkt, idx)
			referenceSegment(&j, want, tmpl[:], pkt, idx)
			if !bytes.Equal(got, want) {
				t.Fatalf("segment %d of %d (mss %d): headers\n%x, want\n%x", idx, j.Segments(), mss, got, want)
			}
		}
	})
}
