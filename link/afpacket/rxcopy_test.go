//go:build linux

package afpacket

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// frameRecorder is a NetworkDispatcher that keeps the bytes of each packet
// delivered to it, link header included.
type frameRecorder struct{ frames [][]byte }

func (f *frameRecorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.ToBuffer()
	f.frames = append(f.frames, b.Flatten())
	b.Release()
}

func (f *frameRecorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestAFPRxHandover checks how a UDP super-frame leaves its receive slot:
// up to afpCopyBreak bytes, its bytes after the head view are copied and
// the slot keeps its big view (no 64 KiB view is cleared for it); longer,
// the big view goes with the frame. Either way the frame is delivered
// whole.
func TestAFPRxHandover(t *testing.T) {
	e := &Endpoint{vnetLen: vnet.HdrLen, frameCap: 1500 + header.EthernetMinimumSize + 4}
	e.cfg.BatchSize = 1
	r := newAFPRx(e)
	defer r.release()
	mac := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02") // afpTestFrame's destination
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{e.frameCap + 1, 2 * 1472, afpCopyBreak, afpCopyBreak + 1, 44 * 1472} {
		payload := make([]byte, n-header.EthernetMinimumSize-header.IPv4MinimumSize-header.UDPMinimumSize)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		f := afpTestFrame(false, payload)
		vh := vnet.Hdr{Flags: vnet.FNeedsCsum, GSOType: vnet.GSOUDPL4, GSOSize: 1472}
		vh.Encode(r.vnet)
		split := r.heads[0].Size()
		copy(r.heads[0].AsSlice(), f)
		copy(r.bigs[0].AsSlice(), f[split:])
		r.msgs[0].Len = uint32(e.vnetLen + n)
		r.msgs[0].Hdr.Flags = 0
		r.names[0].Pkttype = unix.PACKET_HOST
		big := r.bigs[0]
		var d frameRecorder
		r.frame(&d, 0, mac)
		if len(d.frames) != 1 || !bytes.Equal(d.frames[0], f) {
			t.Fatalf("%d-byte frame: delivered %d frames, or its bytes differ", n, len(d.frames))
		}
		if kept := r.bigs[0] == big; kept != (n <= afpCopyBreak) {
			t.Errorf("%d-byte frame: slot kept its big view: %v, want %v", n, kept, n <= afpCopyBreak)
		}
	}
	if st := &e.stats; st.rxFrames.Load() != 5 || st.rxGSOSplit.Load() != 5 {
		t.Errorf("rxFrames %d, rxGSOSplit %d, want 5 each", st.rxFrames.Load(), st.rxGSOSplit.Load())
	}
}

// BenchmarkAFPRxHandover times handing a received super-frame of each size
// over from its slot and releasing it, as the receive path does: by
// copying the bytes after the head view ("copy", the path up to
// afpCopyBreak) or by taking the 64 KiB view and clearing a new one
// ("take"). The 2-datagram frame is what follows each 44-datagram frame
// of a TCP super-packet's job.
func BenchmarkAFPRxHandover(b *testing.B) {
	e := &Endpoint{}
	e.cfg.BatchSize = 1
	for _, n := range []int{2 * 1472, afpCopyBreak} {
		for _, way := range []string{"copy", "take"} {
			b.Run(way+"/"+strconv.Itoa(n), func(b *testing.B) {
				r := newAFPRx(e)
				defer r.release()
				b.ReportAllocs()
				b.SetBytes(int64(n))
				for b.Loop() {
					var p buffer.Buffer
					if way == "copy" {
						p = r.takeCopy(0, n)
					} else {
						p = r.take(0, n)
					}
					p.Release()
				}
			})
		}
	}
}
