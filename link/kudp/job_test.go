//go:build linux

package kudp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tunnelJob builds a UDP-tunnel segmentation job as the Geneve endpoint
// hands it down: a Geneve header (with 8 bytes of options), an inner
// Ethernet header (l2), an IPv4 or IPv6 TCP super-packet whose checksum
// holds the pseudo-header sum (partial), in nviews views.
func tunnelJob(l2, v6 bool, payload []byte, flags header.TCPFlags, nviews int) []byte {
	g := []byte{0x02, 0, 0x65, 0x58, 0, 0, 42, 0, 0x01, 0x02, 0x03, 0x01, 1, 2, 3, 4}
	if !l2 {
		g[2], g[3] = 0x08, 0x00
		if v6 {
			g[2], g[3] = 0x86, 0xdd
		}
	}
	b := append([]byte(nil), g...)
	if l2 {
		et := []byte{0x08, 0x00}
		if v6 {
			et = []byte{0x86, 0xdd}
		}
		b = append(b, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1)
		b = append(b, et...)
	}
	tcpLen := header.TCPMinimumSize + 12 + len(payload) // with options
	src, dst := tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	if v6 {
		ip := make([]byte, header.IPv6MinimumSize)
		src, dst = tcpip.AddrFrom16([16]byte{0xfd, 15: 1}), tcpip.AddrFrom16([16]byte{0xfd, 15: 2})
		header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		b = append(b, ip...)
	} else {
		ip := make([]byte, header.IPv4MinimumSize)
		header.IPv4(ip).Encode(&header.IPv4Fields{TotalLength: uint16(20 + tcpLen), ID: 7, Flags: header.IPv4FlagDontFragment, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
		b = append(b, ip...)
	}
	tcp := make([]byte, header.TCPMinimumSize+12)
	header.TCP(tcp).Encode(&header.TCPFields{SrcPort: 1000, DstPort: 2000, SeqNum: 0xfffff000, AckNum: 5, DataOffset: uint8(len(tcp)), Flags: flags, WindowSize: 100})
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}) // NOP NOP timestamps
	binary.BigEndian.PutUint16(tcp[16:], header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen)))
	b = append(b, tcp...)
	return append(b, payload...)
}

// TestKernelUDPTunnelJobs: a UDP-tunnel job leaves as its Geneve
// datagrams, each with the job's headers fixed up for its segment: lengths,
// IPv4 ID and checksum, sequence number, flags, and a valid TCP checksum
// over its own slice of the payload.
func TestKernelUDPTunnelJobs(t *testing.T) {
	probe := newKernelUDP(t, 4, false, Options{})
	if gso, _ := offloads(probe); !gso {
		t.Skip("no UDP GSO")
	}
	for _, fam := range families {
		for _, l2 := range []bool{true, false} {
			for _, v6 := range []bool{false, true} {
				t.Run(fmt.Sprintf("ipv%d/l2=%v/inner-v6=%v", fam, l2, v6), func(t *testing.T) {
					a := newKernelUDP(t, fam, false, Options{})
					b := newKernelUDP(t, fam, true, Options{})
					cb := newCollector()
					if err := b.Start(cb); err != nil {
						t.Fatal(err)
					}
					if _, ok := a.TunnelSegmentation(); !ok {
						t.Fatal("TunnelSegmentation: jobs refused with GSO on")
					}
					const mss = 1000
					payload := payloadBytes(1, 60*mss+123) // more than one GSO message
					job := tunnelJob(l2, v6, payload, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin|header.TCPFlagCwr, 3)
					pkts := []link.Packet{
						{Payload: multiView(job, 3), Dst: b.LocalAddr(), TOS: 0x10, InnerMSS: mss},
						{Payload: multiView(payloadBytes(7, 300), 1), Dst: b.LocalAddr()}, // an ordinary datagram after it
					}
					defer releaseAll(pkts)
					if n, err := a.WriteBatch(pkts); n != 2 || err != nil {
						t.Fatalf("WriteBatch = %d, %v", n, err)
					}
					nseg := (len(payload) + mss - 1) / mss
					got := cb.wait(t, nseg+1)
					hdrLen := len(job) - len(payload)
					var data []byte
					for i, d := range got[:nseg] {
						p := d.Payload
						if !bytes.Equal(p[:16], job[:16]) || d.TOS != 0x10 {
							t.Fatalf("segment %d: Geneve header %x, TOS %#x", i, p[:16], d.TOS)
						}
						ip := p[16:]
						if l2 {
							if !bytes.Equal(ip[:14], job[16:30]) {
								t.Fatalf("segment %d: inner Ethernet header changed", i)
							}
							ip = ip[14:]
						}
						var tcp header.TCP
						var src, dst tcpip.Address
						if v6 {
							h := header.IPv6(ip)
							if int(h.PayloadLength()) != len(ip)-40 {
								t.Fatalf("segment %d: IPv6 payload length %d, have %d", i, h.PayloadLength(), len(ip)-40)
							}
							tcp, src, dst = header.TCP(ip[40:]), h.SourceAddress(), h.DestinationAddress()
						} else {
							h := header.IPv4(ip)
							if int(h.TotalLength()) != len(ip) || !h.IsChecksumValid() || h.ID() != uint16(7+i) {
								t.Fatalf("segment %d: IPv4 length %d (have %d), checksum ok %v, ID %d", i, h.TotalLength(), len(ip), h.IsChecksumValid(), h.ID())
							}
							tcp, src, dst = header.TCP(ip[20:]), h.SourceAddress(), h.DestinationAddress()
						}
						sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
						if checksum.Checksum(tcp, sum) != 0xffff {
							t.Fatalf("segment %d: bad TCP checksum", i)
						}
						if tcp.SequenceNumber() != 0xfffff000+uint32(i*mss) {
							t.Fatalf("segment %d: seq %#x", i, tcp.SequenceNumber())
						}
						last := i == nseg-1
						if f := tcp.Flags(); f&(header.TCPFlagFin|header.TCPFlagPsh) != 0 != last || f&header.TCPFlagCwr != 0 != (i == 0) {
							t.Fatalf("segment %d: flags %v", i, f)
						}
						if len(p) != hdrLen+min(mss, len(payload)-i*mss) {
							t.Fatalf("segment %d: %d bytes", i, len(p))
						}
						data = append(data, tcp.Payload()...)
					}
					if !bytes.Equal(data, payload) {
						t.Fatal("the segments' payload differs from the job's")
					}
					if !bytes.Equal(got[nseg].Payload, payloadBytes(7, 300)) {
						t.Fatal("the datagram after the job is wrong")
					}
					if st := a.Stats(); st.DatagramsSent != uint64(nseg+1) || st.GSOSends < 1 {
						t.Errorf("stats %+v: want %d datagrams in GSO sends", st, nseg+1)
					}
				})
			}
		}
	}
}

// TestKernelUDPTunnelJobMalformed: a job whose headers do not parse is
// dropped and counted, and the rest of the batch still goes.
func TestKernelUDPTunnelJobMalformed(t *testing.T) {
	a := newKernelUDP(t, 4, false, Options{})
	b := newKernelUDP(t, 4, true, Options{})
	cb := newCollector()
	if err := b.Start(cb); err != nil {
		t.Fatal(err)
	}
	pkts := []link.Packet{
		{Payload: multiView(payloadBytes(1, 3000), 1), Dst: b.LocalAddr(), InnerMSS: 1000},
		{Payload: multiView(payloadBytes(2, 300), 1), Dst: b.LocalAddr()},
	}
	defer releaseAll(pkts)
	n, err := a.WriteBatch(pkts)
	if n != 1 || err == nil {
		t.Fatalf("WriteBatch = %d, %v; want 1 and an error", n, err)
	}
	got := cb.wait(t, 1)
	if !bytes.Equal(got[0].Payload, payloadBytes(2, 300)) {
		t.Fatal("the good datagram did not arrive")
	}
	if st := a.Stats(); st.SendErrors != 1 {
		t.Errorf("SendErrors = %d, want 1", st.SendErrors)
	}
}

// TestKernelUDPTunnelJobAllocs: cutting and sending a job allocates
// nothing once the sender's buffers have grown.
func TestKernelUDPTunnelJobAllocs(t *testing.T) {
	a := newKernelUDP(t, 4, false, Options{})
	b := newKernelUDP(t, 4, true, Options{})
	if _, ok := a.TunnelSegmentation(); !ok {
		t.Skip("no UDP GSO")
	}
	if err := b.Start(newCounter(0)); err != nil {
		t.Fatal(err)
	}
	pkts := []link.Packet{{Payload: multiView(tunnelJob(true, false, payloadBytes(1, 40000), header.TCPFlagAck, 3), 3), Dst: b.LocalAddr(), InnerMSS: 1300}}
	defer releaseAll(pkts)
	if allocs := testing.AllocsPerRun(100, func() {
		if n, err := a.WriteBatch(pkts); n != 1 || err != nil {
			panic(fmt.Sprint(n, err))
		}
	}); allocs != 0 {
		t.Errorf("WriteBatch of a job: %v allocations, want 0", allocs)
	}
}
