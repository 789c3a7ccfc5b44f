//go:build linux

package stack_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil/netns"
	"golang.org/x/sys/unix"
)

// TestOuterDFUnderlays checks the outer DF bit on the wire of the
// underlays on host interfaces, captured at the far end of a veth: the
// AF_PACKET and TAP underlays (netstack: DF per packet, as in
// TestOuterDFNetstack) and the kernel UDP underlay, whose socket sets DF
// for all its datagrams: clear for DFUnset (the default) and DFInherit,
// set for DFSet. The tunnels take turns on one underlay, so the kernel
// socket also follows a tunnel that replaces one with another policy.
func TestOuterDFUnderlays(t *testing.T) {
	netns.RequireRoot(t)
	for _, kind := range []string{"kernel", "packet", "tap"} {
		t.Run(kind, func(t *testing.T) {
			a, b := netns.New(t, "gnvdf-a"), netns.New(t, "gnvdf-b")
			netns.Veth(t, a, "va", b, "vb")
			b.MustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
			local := netip.MustParsePrefix("192.0.2.1/24")
			var ul stack.Underlay
			switch kind {
			case "kernel":
				a.MustRun(t, "ip", "addr", "add", local.String(), "dev", "va")
				ul = stack.KernelUDPUnderlay{Local: local.Addr()}
			case "packet":
				netns.RequireTools(t, "sysctl")
				a.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.va.disable_ipv6=1")
				ul = stack.PacketUnderlay{Device: "va", NetstackOptions: stack.NetstackOptions{Address: local}}
			case "tap":
				netns.Bridge(t, a, "br0", "va")
				ul = stack.TAPUnderlay{Name: "gnvu0", Bridge: "br0", NetstackOptions: stack.NetstackOptions{Address: local}}
			}
			var u *stack.SharedUnderlay
			if err := a.Do(func() (err error) {
				u, err = stack.OpenUnderlay(ul, stack.UnderlayOptions{})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { u.Close() })
			capture := captureOn(t, b, "vb")
			for _, mode := range dfModes {
				h := overlayHost(t, 0, stack.Config{VNI: 12, Mode: endpoint.L3, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
					Underlay: u, Endpoint: endpoint.Config{DF: mode}})
				sendOverlay(t, h)
				frames := capture()
				h.Tunnel.Close()
				n, innerDF := checkOuterDF(t, frames, mode, kind == "kernel")
				if n == 0 || innerDF == 0 || innerDF == n {
					t.Errorf("df %s: checked %d Geneve datagrams, %d with inner DF: want some with and some without", mode, n, innerDF)
				}
			}
		})
	}
}

// captureOn opens an AF_PACKET socket on dev in ns and returns a function
// that returns the frames received since its last call, once dev has been
// quiet for a moment.
func captureOn(t *testing.T, ns *netns.NS, dev string) func() [][]byte {
	t.Helper()
	var fd int
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		const ethPAll = unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8 // network byte order
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, ethPAll); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<17)
	return func() [][]byte {
		var out [][]byte
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			switch err {
			case nil:
				out = append(out, append([]byte(nil), buf[:n]...))
			case unix.EINTR:
			case unix.EAGAIN:
				return out
			default:
				t.Fatalf("capture on %s: %v", dev, err)
			}
		}
		return out
	}
}

// TestKernelUnderlayDFShared checks that tunnels sharing a kernel UDP
// underlay must agree on DF (the socket sets it for all of them): unset and
// inherit (both DF clear) mix, set does not, and the setting is free again
// once its tunnels are gone.
func TestKernelUnderlayDFShared(t *testing.T) {
	u, err := stack.OpenUnderlay(stack.KernelUDPUnderlay{Local: netip.MustParseAddr("127.0.0.1")}, stack.UnderlayOptions{EphemeralPort: true})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	open := func(vni uint32, mode endpoint.DFMode) (*stack.Tunnel, error) {
		return stack.New(stack.Config{VNI: vni, Mode: endpoint.L3, Remotes: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Underlay: u,
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}, Endpoint: endpoint.Config{DF: mode}})
	}
	a, err := open(1, endpoint.DFUnset)
	if err != nil {
		t.Fatal(err)
	}
	b, err := open(2, endpoint.DFInherit)
	if err != nil {
		t.Fatalf("inherit next to unset: %v", err)
	}
	if c, err := open(3, endpoint.DFSet); err == nil {
		c.Close()
		t.Fatal("df set next to df unset: no error")
	} else {
		t.Logf("df set next to df unset: %v", err)
	}
	a.Close()
	b.Close()
	c, err := open(3, endpoint.DFSet)
	if err != nil {
		t.Fatalf("df set alone: %v", err)
	}
	c.Close()
}
