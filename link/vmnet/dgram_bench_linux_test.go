//go:build linux

package vmnet

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

type countingDispatcher struct{}

func (countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// BenchmarkDatagramReceive measures 1500-byte frames from a VM over a
// unix datagram socket into the endpoint: raw is the recvfrom path, net
// the net package's ReadFrom (the baseline, as off Linux), in one run.
func BenchmarkDatagramReceive(b *testing.B) {
	for _, mode := range []string{"raw", "net"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir()
			gnvAddr := &net.UnixAddr{Name: filepath.Join(dir, "gnv.sock"), Net: "unixgram"}
			gnv, err := net.ListenUnixgram("unixgram", gnvAddr)
			if err != nil {
				b.Skipf("unix datagram sockets: %v", err)
			}
			vm, err := net.DialUnix("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "vm.sock"), Net: "unixgram"}, gnvAddr)
			if err != nil {
				b.Fatal(err)
			}
			defer vm.Close()
			ep, err := NewDatagram(gnv, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer ep.Close()
			if mode == "net" {
				ep.raw = nil
			}
			frame := make([]byte, 1500)
			copy(frame, "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00")
			ep.Attach(countingDispatcher{})
			done := make(chan struct{})
			go func() { // the VM: blocking writes, paced by the endpoint's reads
				defer close(done)
				for i := 0; i < b.N; i++ {
					if _, err := vm.Write(frame); err != nil {
						return
					}
				}
			}()
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			b.ResetTimer()
			deadline := time.Now().Add(time.Minute)
			for ep.Stats().RxFrames < uint64(b.N) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			b.StopTimer()
			<-done
		})
	}
}
