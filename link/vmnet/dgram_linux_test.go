//go:build linux

package vmnet_test

import (
	"bytes"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link/vmnet"
	"github.com/gnv-project/gnv/testutil/race"
)

// TestDatagramAllocs: on Linux the datagram path allocates nothing per
// frame either way once the peer is known (the net package's ReadFrom and
// WriteTo would allocate an address each). The VM's side is a connected
// socket, which allocates nothing itself.
func TestDatagramAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("sync.Pool drops items under -race: allocation counts are noise")
	}
	dir := t.TempDir()
	gnvAddr := &net.UnixAddr{Name: filepath.Join(dir, "gnv.sock"), Net: "unixgram"}
	gnv, err := net.ListenUnixgram("unixgram", gnvAddr)
	if err != nil {
		t.Skipf("unix datagram sockets: %v", err)
	}
	vm, err := net.DialUnix("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "vm.sock"), Net: "unixgram"}, gnvAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	ep, err := vmnet.NewDatagram(gnv, vmnet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	d := &nopDispatcher{}
	ep.Attach(d)

	in := ethFrame(macHost, macVM, 0x0800, bytes.Repeat([]byte{3}, 1400))
	rxFrames := func() uint64 { return ep.Stats().RxFrames }
	receive := func() {
		want := rxFrames() + 1
		if _, err := vm.Write(in); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); rxFrames() < want; runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("the endpoint did not receive the frame: %v", ep.Stats())
			}
		}
	}
	out := ethFrame(macVM, macHost, 0x0800, bytes.Repeat([]byte{4}, 1400))
	buf := make([]byte, 2000)
	send := func() {
		write(t, ep, outbound(t, out))
		_ = vm.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := vm.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], out) {
			t.Fatalf("the VM received %d bytes, %v", n, err)
		}
	}
	for range 20 { // the peer learned, the pools and queues grown
		receive()
		send()
	}
	if got := ep.RemoteAddr(); got == nil || got.String() != vm.LocalAddr().String() {
		t.Fatalf("peer %v, want %v", got, vm.LocalAddr())
	}
	if a := testing.AllocsPerRun(200, receive); a != 0 {
		t.Errorf("receiving a frame: %v allocations, want 0", a)
	}
	// What send allocates besides the endpoint: the packet list it writes.
	base := testing.AllocsPerRun(200, func() { l := listOf(outbound(t, out)); l.Reset() })
	if a := testing.AllocsPerRun(200, send); a > base {
		t.Errorf("sending a frame: %v allocations (%v of them the test's packet list), want none from the endpoint", a, base)
	}
	if st := ep.Stats(); st.PeerChanges != 1 {
		t.Errorf("peer changes %d, want 1", st.PeerChanges)
	}
}
