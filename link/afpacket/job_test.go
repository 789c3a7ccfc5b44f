//go:build linux

package afpacket

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/tunneljob/jobtest"
	"github.com/gnv-project/gnv/testutil/race"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestPacketEndpointTunnelJobs: a UDP-tunnel job leaves as its Geneve
// datagrams (in UDP_L4 frames with GSO, one frame each without, outer
// checksums by the kernel or computed here), and B's kernel receives every
// one with good outer and inner checksums and the payload in order.
func TestPacketEndpointTunnelJobs(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	if _, ok := env.ep.TunnelSegmentation(); !ok {
		t.Skip("no UDP GSO on AF_PACKET")
	}
	env.warmUp(t)
	for _, c := range []struct{ gso, csum bool }{{true, true}, {false, true}, {false, false}} {
		t.Run(fmt.Sprintf("gso=%v/csum=%v", c.gso, c.csum), func(t *testing.T) {
			env.ep.udpGSO.Store(c.gso)
			env.ep.txCsum.Store(c.csum)
			defer env.ep.udpGSO.Store(true)
			defer env.ep.txCsum.Store(true)
			const mss = 1200
			payload := afpPayload(5, 40*mss+77)
			job := jobtest.IPv4TCP(true, payload)
			b := buffer.MakeWithData(job[:8])
			_ = b.Append(buffer.NewViewWithData(job[8:3000]))
			_ = b.Append(buffer.NewViewWithData(job[3000:]))
			pkts := []link.Packet{{Payload: b, Dst: netip.AddrPortFrom(env.b, afpPort), SrcPort: 50000, TTL: 64, InnerMSS: mss}}
			jobs0, gso0 := env.ep.Stats().TxTunnelJobs, env.ep.Stats().TxGSOFrames
			n, err := env.tr.WriteBatch(pkts)
			releasePackets(pkts)
			if n != 1 || err != nil {
				t.Fatalf("WriteBatch: %d, %v", n, err)
			}
			nseg := (len(payload) + mss - 1) / mss
			var data []byte
			for i, d := range env.readB(t, nseg) {
				if !bytes.Equal(d[:22], job[:22]) {
					t.Fatalf("datagram %d: Geneve or inner Ethernet header %x", i, d[:22])
				}
				ip := header.IPv4(d[22:])
				if int(ip.TotalLength()) != len(d)-22 || !ip.IsChecksumValid() || ip.ID() != uint16(7+i) {
					t.Fatalf("datagram %d: inner IPv4 length %d of %d, checksum ok %v, ID %d", i, ip.TotalLength(), len(d)-22, ip.IsChecksumValid(), ip.ID())
				}
				tcp := header.TCP(ip.Payload())
				sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
				if checksum.Checksum(tcp, sum) != 0xffff || tcp.SequenceNumber() != uint32(100+i*mss) {
					t.Fatalf("datagram %d: bad inner TCP checksum or seq %d", i, tcp.SequenceNumber())
				}
				data = append(data, tcp.Payload()...)
			}
			if !bytes.Equal(data, payload) {
				t.Fatal("the datagrams' payload differs from the job's")
			}
			st := env.ep.Stats()
			if st.TxTunnelJobs-jobs0 != 1 || c.gso != (st.TxGSOFrames > gso0) {
				t.Errorf("stats: %d jobs, %d GSO frames", st.TxTunnelJobs-jobs0, st.TxGSOFrames-gso0)
			}
		})
	}
	if c := env.csumErrors(t); c != 0 {
		t.Errorf("B counted %d UDP checksum errors", c)
	}
	if race.Enabled {
		return // sync.Pool drops items under -race
	}
	job := jobtest.IPv4TCP(true, afpPayload(6, 20*1200))
	// DF: without it gVisor draws the IPv4 ID from its RNG, which allocates.
	pkts := []link.Packet{{Payload: buffer.MakeWithData(job), Dst: netip.AddrPortFrom(env.b, afpPort), SrcPort: 50000, TTL: 64, DF: true, InnerMSS: 1200}}
	defer releasePackets(pkts)
	if allocs := testing.AllocsPerRun(20, func() {
		if n, err := env.tr.WriteBatch(pkts); n != 1 || err != nil {
			panic(fmt.Sprint(n, err))
		}
	}); allocs != 0 {
		t.Errorf("WriteBatch of a job: %v allocations, want 0", allocs)
	}
}
