package l2switch_test

import (
	"testing"

	"github.com/gnv-project/gnv/link/l2switch"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// sinkPort is a fakePort that only counts what the switch writes.
type sinkPort struct {
	fakePort
	n int
}

func (s *sinkPort) WritePackets(l stack.PacketBufferList) (int, tcpip.Error) {
	s.n += l.Len()
	return l.Len(), nil
}

// BenchmarkForward measures switching a 1500-byte frame from one port to
// the port its destination was learned on: learning, lookup, the parsed
// clone and the endpoint's WritePackets.
func BenchmarkForward(b *testing.B) {
	sw, err := l2switch.New(l2switch.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sw.Close()
	in, out := &fakePort{}, &sinkPort{}
	if _, err := sw.AddPort(in, l2switch.PortOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := sw.AddPort(out, l2switch.PortOptions{}); err != nil {
		b.Fatal(err)
	}
	out.inject(udpFrame(mac(1), mac(2))) // learn mac(2) on out
	frame := udpFrame(mac(2), mac(1))
	frame = append(frame, make([]byte, 1500-len(frame))...)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	pkt.LinkHeader().Consume(14)
	defer pkt.DecRef()
	in.mu.Lock()
	d := in.d
	in.mu.Unlock()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		d.DeliverNetworkPacket(0x0800, pkt)
	}
	if out.n < b.N {
		b.Fatalf("%d frames forwarded of %d", out.n, b.N)
	}
}
