package capture

import (
	"bytes"
	"io"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/internal/pcap"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/tunneljob/jobtest"
	"github.com/gnv-project/gnv/link/linktest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// discard is a link.Receiver that keeps nothing.
type discard struct{}

func (discard) Receive([]link.Datagram) {}

// jobTransport is a test transport that takes UDP-tunnel jobs.
type jobTransport struct{ *linktest.Transport }

func (jobTransport) TunnelSegmentation() (int, bool) { return 64, true }

// TestTransportJobsAndIPv6Checksums: a segmentation job is captured as the
// datagrams that leave, each a whole, valid packet (lengths, inner IPv4
// and TCP checksums, the payload in order), and the synthesised UDP
// header carries a valid checksum over IPv6 (where zero is not allowed) and
// none over IPv4.
func TestTransportJobsAndIPv6Checksums(t *testing.T) {
	for _, local := range []string{"192.0.2.1:6081", "[2001:db8::1]:6081"} {
		t.Run(local, func(t *testing.T) {
			l := netip.MustParseAddrPort(local)
			remote := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 6081)
			if l.Addr().Is6() {
				remote = netip.AddrPortFrom(netip.MustParseAddr("2001:db8::2"), 6081)
			}
			var out bytes.Buffer
			c, err := NewTransport(jobTransport{linktest.New(l)}, &out)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(discard{}); err != nil {
				t.Fatal(err)
			}
			if _, ok := c.TunnelSegmentation(); !ok {
				t.Fatal("the wrapper hides the wrapped transport's jobs")
			}
			payload := make([]byte, 2500)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			job := jobtest.IPv4TCP(false, payload)
			plain := []byte{0, 0, 0x65, 0x58, 0, 0, 42, 0, 1, 2, 3} // odd length
			if _, err := c.WriteBatch([]link.Packet{
				{Payload: buffer.MakeWithData(job), Dst: remote, InnerMSS: 1000},
				{Payload: buffer.MakeWithData(plain), Dst: remote},
			}); err != nil {
				t.Fatal(err)
			}
			c.Receive([]link.Datagram{{Payload: plain, Src: remote}})

			rd, err := pcap.NewReader(&out)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			for {
				p, _, err := rd.Next()
				if err != nil {
					break
				}
				got = append(got, append([]byte(nil), p...))
			}
			if len(got) != 5 {
				t.Fatalf("%d records, want 3 segments and 2 plain datagrams", len(got))
			}
			var data []byte
			for i, p := range got {
				_, _, udp, ok := pcap.UDPPayload(pcap.LinkTypeRaw, p)
				if !ok {
					t.Fatalf("record %d is not a UDP packet: % x", i, p)
				}
				checkUDPChecksum(t, i, p, l.Addr().Is6())
				if i >= 3 {
					if !bytes.Equal(udp, plain) {
						t.Errorf("record %d: %x, want %x", i, udp, plain)
					}
					continue
				}
				ip := header.IPv4(udp[8:])
				if !ip.IsValid(len(ip)) || int(ip.TotalLength()) != len(ip) || ip.CalculateChecksum() != 0xffff {
					t.Fatalf("segment %d: bad inner IPv4 header % x", i, udp[8:28])
				}
				tcp := header.TCP(ip.Payload())
				want := []int{1000, 1000, 500}[i]
				if len(tcp.Payload()) != want || tcp.SequenceNumber() != uint32(100+1000*i) {
					t.Errorf("segment %d: %d bytes at seq %d, want %d at %d", i, len(tcp.Payload()), tcp.SequenceNumber(), want, 100+1000*i)
				}
				if !tcp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(tcp.Payload(), 0), uint16(len(tcp.Payload()))) {
					t.Errorf("segment %d: bad TCP checksum", i)
				}
				if psh := tcp.Flags()&header.TCPFlagPsh != 0; psh != (i == 2) {
					t.Errorf("segment %d: PSH %v", i, psh)
				}
				data = append(data, tcp.Payload()...)
			}
			if !bytes.Equal(data, payload) {
				t.Error("the segments do not carry the job's payload in order")
			}
		})
	}
}

// checkUDPChecksum checks the outer UDP checksum of the raw IP packet p:
// valid over IPv6, absent over IPv4.
func checkUDPChecksum(t *testing.T, i int, p []byte, v6 bool) {
	t.Helper()
	if !v6 {
		if cs := header.UDP(p[20:]).Checksum(); cs != 0 {
			t.Errorf("record %d: IPv4 UDP checksum %#x, want none (0)", i, cs)
		}
		return
	}
	ip := header.IPv6(p)
	udp := header.UDP(ip.Payload())
	if udp.Checksum() == 0 {
		t.Fatalf("record %d: zero UDP checksum over IPv6", i)
	}
	pseudo := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(udp)))
	if got := checksum.Checksum(udp, pseudo); got != 0xffff {
		t.Errorf("record %d: UDP checksum does not verify (%#x)", i, got)
	}
}

// TestTransportNoAllocs: once warm, capturing a sent datagram made of two
// views, a sent segmentation job and a received datagram allocates
// nothing.
func TestTransportNoAllocs(t *testing.T) {
	local, remote := netip.MustParseAddrPort("192.0.2.1:6081"), netip.MustParseAddrPort("192.0.2.2:6081")
	lt := linktest.New(local)
	lt.Record = false
	c, err := NewTransport(jobTransport{lt}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(discard{}); err != nil {
		t.Fatal(err)
	}
	plain := buffer.MakeWithData([]byte{0, 0, 0x65, 0x58, 0, 0, 42, 0})
	rest := buffer.MakeWithData(make([]byte, 1400))
	plain.Merge(&rest)
	job := buffer.MakeWithData(jobtest.IPv4TCP(true, make([]byte, 5000)))
	defer plain.Release()
	defer job.Release()
	pkts := []link.Packet{{Payload: plain, Dst: remote}, {Payload: job, Dst: remote, InnerMSS: 1400}}
	batch := []link.Datagram{{Payload: make([]byte, 1000), Src: remote}}
	if n := testing.AllocsPerRun(100, func() {
		c.WriteBatch(pkts)
		c.Receive(batch)
	}); n != 0 {
		t.Errorf("%.1f allocations per batch, want 0", n)
	}
}
