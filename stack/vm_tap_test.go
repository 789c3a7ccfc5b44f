//go:build linux

package stack_test

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/netns"
)

// nsNet dials and listens in a network namespace with the host's kernel
// stack, for testutil's traffic helpers.
type nsNet struct{ ns *netns.NS }

func (n nsNet) DialContext(ctx context.Context, network, address string) (c net.Conn, err error) {
	err = n.ns.Do(func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

func (n nsNet) Listen(network, address string) (l net.Listener, err error) {
	err = n.ns.Do(func() error {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

func (n nsNet) ListenPacket(network, address string) (c net.PacketConn, err error) {
	err = n.ns.Do(func() error {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// TestVMTAP runs the switch with a TAP device as its host port: a VM
// attached to host A reaches the kernel behind A's TAP device (10.0.0.1,
// in a namespace) and host B across the tunnel, and the kernel reaches B
// through the switch, content checked.
func TestVMTAP(t *testing.T) {
	netns.RequireRoot(t)
	ns := netns.New(t, "gnvvmtap")
	fabric := testutil.NewFabric(testutil.FabricOptions{Seed: 3})
	defer fabric.Close()
	port := func() *testutil.Port {
		p, err := fabric.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pa, pb := port(), port()
	var a *stack.Tunnel
	if err := ns.Do(func() (err error) {
		a, err = stack.New(stack.Config{
			VNI: 9, Mode: endpoint.L2, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
			Underlay:  stack.NetstackUnderlay{Link: pa, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix("192.0.2.1/24")}},
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
			Device:    &stack.DeviceConfig{Name: "gnvvm0"},
			Switch:    &stack.SwitchConfig{},
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := stack.New(stack.Config{
		VNI: 9, Mode: endpoint.L2, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		Underlay:  stack.NetstackUnderlay{Link: pb, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix("192.0.2.2/24")}},
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	sock := filepath.Join(t.TempDir(), "vm.sock")
	ln, err := a.ListenVM("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	vm := dialGuest(t, sock, 3, a.MTU())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kernel := netip.MustParseAddr("10.0.0.1")
	ping(t, ctx, vm.Net, kernel)
	ping(t, ctx, vm.Net, netip.MustParseAddr("10.0.0.2"))
	k := nsNet{ns}
	for i, c := range []struct {
		name string
		from testutil.Dialer
		to   testutil.Listener
		dst  netip.Addr
	}{
		{"vm → kernel", vm.Net, k, kernel},
		{"kernel → vm", k, vm.Net, vm.v4},
		{"kernel → host B", k, b.Net, netip.MustParseAddr("10.0.0.2")},
		{"host B → kernel", b.Net, k, kernel},
		{"vm → host B", vm.Net, b.Net, netip.MustParseAddr("10.0.0.2")},
	} {
		r, err := testutil.TransferTCP(ctx, c.from, c.to, netip.AddrPortFrom(c.dst, uint16(5100+i)), 4<<20, int64(i))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		t.Logf("%s: %.0f Mbit/s", c.name, r.Mbps())
	}
	if st := a.Switch().Stats(); st.TotalDrops() != 0 {
		t.Errorf("switch: %v", st)
	}
	if st := a.Device().Stats(); st.ReadDrops+st.WriteDrops+st.WriteErrors != 0 {
		t.Errorf("TAP device: %+v", st)
	}
	for _, v := range a.VMs() {
		if st := v.Stats(); unexpectedVMDrops(st) != 0 {
			t.Errorf("%s: %v", v.Port(), st)
		}
	}
}
