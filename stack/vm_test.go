package stack_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/vmnet"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// unexpectedVMDrops returns a VM port's drops other than those of a full
// transmit queue. A switch port drops those by design (vmnet's
// TestTxQueueFull) when its guest reads more slowly than the stack fills
// the queue, as on a loaded machine; TCP recovers, and the tests check the
// content. Any other drop is a bug.
func unexpectedVMDrops(st vmnet.Stats) uint64 {
	return st.TotalDrops() - st.Drops[vmnet.DropTxQueueFull]
}

// guest is a stand-in VM: a netstack whose NIC speaks a VM socket framing.
type guest struct {
	*stack.Net
	s  *tcpipstack.Stack
	ep *vmnet.Endpoint
	v4 netip.Addr
}

// newGuest builds a guest netstack on ep with 10.0.0.n/24 and fd00::n/64.
func newGuest(t *testing.T, ep *vmnet.Endpoint, n byte) *guest {
	t.Helper()
	s := stack.NewOverlayStack(nil)
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("guest NIC: %s", err)
	}
	v4 := netip.AddrFrom4([4]byte{10, 0, 0, n})
	for _, a := range []tcpip.ProtocolAddress{
		{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(v4.As4()), PrefixLen: 24}},
		{Protocol: ipv6.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16([16]byte{0xfd, 15: n}), PrefixLen: 64}},
	} {
		if err := s.AddProtocolAddress(1, a, tcpipstack.AddressProperties{}); err != nil {
			t.Fatalf("guest address: %s", err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	g := &guest{Net: stack.NewNet(s), s: s, ep: ep, v4: v4}
	t.Cleanup(g.close)
	return g
}

func (g *guest) close() { g.s.Destroy() }

// dialGuest connects a stream guest to a VM socket, as QEMU's
// `-netdev stream,server=off` does.
func dialGuest(t *testing.T, path string, n byte, mtu uint32) *guest {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := vmnet.NewStream(c, vmnet.Options{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	return newGuest(t, ep, n)
}

// ping pings dst from n a few times until one answer comes back.
func ping(t *testing.T, ctx context.Context, from *stack.Net, dst netip.Addr) {
	t.Helper()
	var err error
	for seq := uint16(1); seq <= 5; seq++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = from.Ping(pctx, dst, seq, 56)
		cancel()
		if err == nil {
			return
		}
	}
	t.Fatalf("ping %s: %v", dst, err)
}

// waitVMs waits for the tunnel to have n VMs attached.
func waitVMs(t *testing.T, tun *stack.Tunnel, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(tun.VMs()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d VMs attached, want %d", len(tun.VMs()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestVMAttach attaches two stand-in VMs (netstacks speaking QEMU's stream
// framing over a unix socket) to host A's overlay switch and moves traffic,
// content checked: VM ↔ remote host B across the tunnel, VM ↔ host A's own
// overlay netstack and VM ↔ VM, the last two never leaving through the
// Geneve endpoint. A VM that goes away leaves the switch; closing the
// tunnel leaves no goroutine behind.
func TestVMAttach(t *testing.T) {
	before := runtime.NumGoroutine()
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 5, Switch: &stack.SwitchConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0], hs.Hosts[1]
	sock := filepath.Join(t.TempDir(), "vm.sock")
	ln, err := a.Tunnel.ListenVM("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	mtu := a.Tunnel.MTU()
	vm1 := dialGuest(t, sock, 11, mtu)
	vm2 := dialGuest(t, sock, 12, mtu)
	waitVMs(t, a.Tunnel, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ping(t, ctx, vm1.Net, b.Overlay4)
	ping(t, ctx, b.Tunnel.Net, vm1.v4)
	ping(t, ctx, vm1.Net, a.Overlay4)
	ping(t, ctx, vm1.Net, vm2.v4)
	ping(t, ctx, vm2.Net, a.Overlay4)
	ping(t, ctx, vm1.Net, netip.MustParseAddr("fd00::2"))

	transfer := func(name string, from testutil.Dialer, to testutil.Listener, dst netip.Addr, size int64) {
		t.Helper()
		r, err := testutil.TransferTCP(ctx, from, to, netip.AddrPortFrom(dst, 5001), size, size)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %d bytes, %.0f Mbit/s", name, r.Bytes, r.Mbps())
	}
	transfer("vm1 → host B", vm1.Net, b.Tunnel.Net, b.Overlay4, 4<<20)
	transfer("host B → vm1", b.Tunnel.Net, vm1.Net, vm1.v4, 4<<20)
	transfer("vm1 → host B (IPv6)", vm1.Net, b.Tunnel.Net, b.Overlay6, 1<<20)

	// Local traffic: once the MACs are learned, nothing crosses the
	// tunnel (a stray multicast neighbour message may).
	tx0 := a.Tunnel.Stats().TxPackets
	transfer("host A → vm1", a.Tunnel.Net, vm1.Net, vm1.v4, 4<<20)
	transfer("vm2 → host A", vm2.Net, a.Tunnel.Net, a.Overlay4, 4<<20)
	transfer("vm1 → vm2", vm1.Net, vm2.Net, vm2.v4, 4<<20)
	if d := a.Tunnel.Stats().TxPackets - tx0; d > 10 {
		t.Errorf("local transfers sent %d packets through the tunnel", d)
	}

	sw := a.Tunnel.Switch()
	st := sw.Stats()
	t.Logf("switch: %v", st)
	if st.TotalDrops() != 0 {
		t.Errorf("switch drops: %v", st)
	}
	for _, vm := range a.Tunnel.VMs() {
		vs := vm.Stats()
		t.Logf("%s: %v", vm.Port(), vs)
		if unexpectedVMDrops(vs) != 0 {
			t.Errorf("%s drops: %v", vm.Port(), vs)
		}
		if len(vm.MACs()) != 1 {
			t.Errorf("%s: MACs %v", vm.Port(), vm.MACs())
		}
	}
	for i, h := range hs.Hosts {
		if s := h.Tunnel.Stats(); s.TotalDrops() != 0 {
			t.Errorf("host %d tunnel drops: %v", i+1, s)
		}
	}

	// vm2 goes away: its port and MACs leave the switch.
	vm2mac := net.HardwareAddr(vm2.ep.LinkAddress())
	vm2.close()
	waitVMs(t, a.Tunnel, 1)
	for _, e := range sw.MACs() {
		if e.MAC.String() == vm2mac.String() {
			t.Errorf("vm2's MAC %s still learned on %s", e.MAC, e.Port)
		}
	}
	ping(t, ctx, vm1.Net, b.Overlay4)

	// Closing the listener keeps vm1; closing the tunnel detaches it.
	if err := ln.Close(); err != nil {
		t.Errorf("listener close: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
	ping(t, ctx, vm1.Net, a.Overlay4)
	hs.Close()
	select {
	case <-vm1.ep.Done():
	case <-time.After(5 * time.Second):
		t.Error("the guest's link did not see the tunnel close")
	}
	vm1.close()
	waitGoroutines(t, before)
}

// waitGoroutines waits for the goroutine count to fall back to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestVMDatagram attaches a stand-in VM over unix datagram sockets (QEMU
// `-netdev dgram`, vfkit): the tunnel learns the VM's address from its
// first datagram.
func TestVMDatagram(t *testing.T) {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, Switch: &stack.SwitchConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0], hs.Hosts[1]
	dir := t.TempDir()
	gnvPath, vmPath := filepath.Join(dir, "gnv.sock"), filepath.Join(dir, "vm.sock")
	ln, err := a.Tunnel.ListenVM("unixgram:" + gnvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: vmPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := vmnet.NewDatagram(c, vmnet.Options{MTU: a.Tunnel.MTU(), Peer: &net.UnixAddr{Name: gnvPath, Net: "unixgram"}})
	if err != nil {
		t.Fatal(err)
	}
	vm := newGuest(t, ep, 21)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ping(t, ctx, vm.Net, b.Overlay4)
	ping(t, ctx, vm.Net, a.Overlay4)
	for i, dir := range []struct {
		name string
		from testutil.Dialer
		to   testutil.Listener
		dst  netip.Addr
	}{
		{"vm → host B", vm.Net, b.Tunnel.Net, b.Overlay4},
		{"host B → vm", b.Tunnel.Net, vm.Net, vm.v4},
		{"host A → vm", a.Tunnel.Net, vm.Net, vm.v4},
	} {
		if _, err := testutil.TransferTCP(ctx, dir.from, dir.to, netip.AddrPortFrom(dir.dst, uint16(5002+i)), 2<<20, 7); err != nil {
			t.Fatalf("%s: %v", dir.name, err)
		}
	}
	vms := a.Tunnel.VMs()
	if len(vms) != 1 {
		t.Fatalf("%d VMs", len(vms))
	}
	if got := vms[0].RemoteAddr(); got == nil || got.String() != vmPath {
		t.Errorf("learned peer %v, want %s", got, vmPath)
	}
	if st := vms[0].Stats(); st.TotalDrops() != 0 || st.PeerChanges != 1 {
		t.Errorf("VM port: %v", st)
	}
}

// TestVMErrors checks the refusals: VMs need an L2 tunnel with a switch,
// VM socket addresses are unix:PATH or unixgram:PATH, and ListenVM does
// not remove a file that is not a socket.
func TestVMErrors(t *testing.T) {
	fabric := testutil.NewFabric(testutil.FabricOptions{})
	defer fabric.Close()
	newTunnel := func(mode endpoint.Mode, sw *stack.SwitchConfig) (*stack.Tunnel, error) {
		port, err := fabric.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		return stack.New(stack.Config{
			VNI: 1, Mode: mode, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
			Underlay:  stack.NetstackUnderlay{Link: port, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix("192.0.2.1/24")}},
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
			Switch:    sw,
		})
	}
	if _, err := newTunnel(endpoint.L3, &stack.SwitchConfig{}); err == nil || !strings.Contains(err.Error(), "l2") {
		t.Errorf("an l3 tunnel with a switch: %v", err)
	}
	if _, err := newTunnel(endpoint.L2, &stack.SwitchConfig{MaxMACs: -1}); err == nil {
		t.Error("negative max MACs accepted")
	}
	for _, c := range []struct {
		mode endpoint.Mode
		want string
	}{{endpoint.L3, "l3 tunnel"}, {endpoint.L2, "Config.Switch"}} {
		tun, err := newTunnel(c.mode, nil)
		if err != nil {
			t.Fatal(err)
		}
		x, y := net.Pipe()
		if _, err := tun.AttachVM(x); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s AttachVM: %v", c.mode, err)
		}
		if _, err := x.Write([]byte{0}); err == nil {
			t.Errorf("%s: the refused connection is still open", c.mode)
		}
		y.Close()
		if _, err := tun.ListenVM("unix:" + filepath.Join(t.TempDir(), "s")); err == nil {
			t.Errorf("%s ListenVM succeeded", c.mode)
		}
		tun.Close()
	}
	for _, bad := range []string{"", "unix:", "tcp:1.2.3.4:5", "/path", "unixpacket:/x"} {
		if _, _, err := stack.ParseVMAddr(bad); err == nil {
			t.Errorf("ParseVMAddr(%q) accepted", bad)
		}
	}
	tun, err := newTunnel(endpoint.L2, &stack.SwitchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := tun.ListenVM("unix:" + file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("ListenVM over a regular file: %v", err)
	}
	// A stale socket file is replaced.
	sock := filepath.Join(t.TempDir(), "s")
	old, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	ln, err := tun.ListenVM("unix:" + sock)
	if err != nil {
		t.Fatalf("ListenVM over a stale socket: %v", err)
	}
	ln.Close()
}
