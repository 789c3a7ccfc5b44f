//go:build linux

package tuntap_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/kudp"
	"github.com/gnv-project/gnv/link/tuntap"
	"github.com/gnv-project/gnv/testutil/netns"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

// The water backend on real devices. It is the code path macOS and
// Windows use (only the opening and configuring differ), and this is
// where it can run: as root, in network namespaces.

func TestWaterLifecycle(t *testing.T) {
	requireTun(t)
	for _, mode := range []tuntap.Mode{tuntap.ModeTAP, tuntap.ModeTUN} {
		t.Run(mode.String(), func(t *testing.T) {
			ns := netns.New(t, "gnvwat")
			mac := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x07}
			var d *tuntap.Device
			err := ns.Do(func() (err error) {
				d, err = tuntap.New(tuntap.Options{
					Name: "gnv0", Mode: mode, MTU: 1400, MAC: mac, NoDAD: true, Backend: tuntap.BackendWater,
					Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("fd09::1/64")},
				})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if d.Name() != "gnv0" || !d.Created() || d.MTU() != 1400 || d.Mode() != mode || d.Offloads() != 0 {
				t.Errorf("name %q created %v mtu %d mode %v offloads %s", d.Name(), d.Created(), d.MTU(), d.Mode(), d.Offloads())
			}
			out := ns.MustRun(t, "ip", "-d", "addr", "show", "dev", "gnv0")
			for _, want := range []string{"mtu 1400", "10.9.0.1/24", "fd09::1/64", ",UP", "type " + mode.String(), "vnet_hdr off"} {
				if !strings.Contains(out, want) {
					t.Errorf("ip addr show lacks %q:\n%s", want, out)
				}
			}
			if mode == tuntap.ModeTAP && (!strings.Contains(out, mac.String()) || d.MAC().String() != mac.String()) {
				t.Errorf("MAC %v, want %v:\n%s", d.MAC(), mac, out)
			}
			// water's descriptor must not leak into children (it would
			// keep the device alive after Close).
			if out := ns.MustRun(t, "sh", "-c", "ls -l /proc/self/fd"); strings.Contains(out, "/dev/net/tun") {
				t.Errorf("a child process inherited the device:\n%s", out)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if out, err := ns.Run("ip", "link", "show", "gnv0"); err == nil {
				t.Errorf("gnv0 still exists after Close:\n%s", out)
			}
		})
	}
}

func TestWaterPersistent(t *testing.T) {
	requireTun(t)
	ns := netns.New(t, "gnvwpers")
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "gnvp0", "mode", "tun")
	before := linkSummary(t, ns, "gnvp0")
	err := ns.Do(func() error {
		fds := tunFds(t)
		_, err := tuntap.New(tuntap.Options{Name: "gnvp0", Mode: tuntap.ModeTAP, Backend: tuntap.BackendWater})
		if err == nil || !strings.Contains(err.Error(), "is not a TAP device") {
			return fmt.Errorf("opening a TUN device as TAP: %v", err)
		}
		// water does not close /dev/net/tun when the device's setup
		// fails; New must.
		if n := tunFds(t); n != fds {
			return fmt.Errorf("the failed open left %d descriptors of /dev/net/tun open, %d before it", n, fds)
		}
		d, err := tuntap.New(tuntap.Options{Name: "gnvp0", Mode: tuntap.ModeTUN, MTU: 1300, Backend: tuntap.BackendWater,
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.9.1/24")}})
		if err != nil {
			return err
		}
		if d.Created() {
			return errors.New("Created() = true for a persistent device")
		}
		return d.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	out := ns.MustRun(t, "ip", "-d", "addr", "show", "dev", "gnvp0")
	if strings.Contains(out, "10.9.9.1") || !strings.Contains(out, "persist on") {
		t.Errorf("after Close the persistent device should stay, persistent, without the address:\n%s", out)
	}
	if after := linkSummary(t, ns, "gnvp0"); after != before {
		t.Errorf("after Close: %s, want it as found: %s", after, before)
	}
}

// tunFds counts this process's open descriptors of /dev/net/tun.
func tunFds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/net/tun" {
			n++
		}
	}
	return n
}

func TestWaterDeleted(t *testing.T) {
	requireTun(t)
	before := loopGoroutines(waterReadLoopFunc)
	ns := netns.New(t, "gnvwdel")
	var d *tuntap.Device
	if err := ns.Do(func() (err error) {
		d, err = tuntap.New(tuntap.Options{Name: "gnv0", Mode: tuntap.ModeTUN, Backend: tuntap.BackendWater})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ep := channel.New(4, 1500, "")
	defer ep.Close()
	if err := d.Attach(ep); err != nil {
		t.Fatal(err)
	}
	if n := loopGoroutinesSettled(waterReadLoopFunc, before+1); n != before+1 {
		t.Fatalf("%d read loops, want %d", n, before+1)
	}
	// The read loop ends when the interface is deleted under it, instead
	// of failing every 10 ms until Close.
	ns.MustRun(t, "ip", "link", "del", "gnv0")
	if n := loopGoroutinesSettled(waterReadLoopFunc, before); n != before {
		t.Errorf("%d read loops after the interface was deleted, want %d", n, before)
	}
	if st := d.Stats(); st.ReadErrors != 1 {
		t.Errorf("read errors %d, want 1", st.ReadErrors)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// waterSide is one namespace's half of an overlay on a kernel UDP
// underlay, with a device of the given backend.
func waterSide(t *testing.T, ns *netns.NS, mode tuntap.Mode, backend tuntap.Backend, local, peer netip.Addr, addrs ...netip.Prefix) (*tuntap.Device, *endpoint.Endpoint) {
	t.Helper()
	epMode := endpoint.L2
	if mode == tuntap.ModeTUN {
		epMode = endpoint.L3
	}
	var dev *tuntap.Device
	var ep *endpoint.Endpoint
	err := ns.Do(func() error {
		tr, err := kudp.New(kudp.Options{Local: netip.AddrPortFrom(local, 6081), MTU: 1500})
		if err != nil {
			return err
		}
		sock, err := endpoint.NewSocket(tr)
		if err != nil {
			tr.Close()
			return err
		}
		t.Cleanup(func() { sock.Close() })
		if ep, err = endpoint.New(sock, endpoint.Config{VNI: 4243, Mode: epMode, Remotes: []netip.Addr{peer}}); err != nil {
			return err
		}
		t.Cleanup(func() { ep.Close() })
		if dev, err = tuntap.New(tuntap.Options{Name: "gnv0", Mode: mode, Addresses: addrs, NoDAD: true, Backend: backend}); err != nil {
			return err
		}
		t.Cleanup(func() { dev.Close() })
		return dev.Attach(ep)
	})
	if err != nil {
		t.Fatalf("overlay in %s: %v", ns.Name, err)
	}
	return dev, ep
}

func TestWaterOverlay(t *testing.T) {
	requireTun(t)
	size := 16 << 20
	if testing.Short() {
		size = 4 << 20
	}
	cases := []struct {
		mode tuntap.Mode
		a    tuntap.Backend // b is water
	}{
		{tuntap.ModeTUN, tuntap.BackendWater},
		{tuntap.ModeTAP, tuntap.BackendWater},
		// A water device talks to an offloading one.
		{tuntap.ModeTUN, tuntap.BackendIoctl},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%s-water", tc.mode, tc.a), func(t *testing.T) {
			before := loopGoroutines(waterReadLoopFunc)
			nsA, nsB := netns.New(t, "gnvwa"), netns.New(t, "gnvwb")
			netns.Veth(t, nsA, "ula", nsB, "ulb")
			nsA.MustRun(t, "ip", "addr", "add", "192.168.78.1/24", "dev", "ula")
			nsB.MustRun(t, "ip", "addr", "add", "192.168.78.2/24", "dev", "ulb")
			ulA, ulB := netip.MustParseAddr("192.168.78.1"), netip.MustParseAddr("192.168.78.2")
			a, epA := waterSide(t, nsA, tc.mode, tc.a, ulA, ulB, netip.MustParsePrefix("10.9.1.1/24"), netip.MustParsePrefix("fd09:1::1/64"))
			b, epB := waterSide(t, nsB, tc.mode, tuntap.BackendWater, ulB, ulA, netip.MustParsePrefix("10.9.1.2/24"), netip.MustParsePrefix("fd09:1::2/64"))
			if b.MTU() != epB.MTU() {
				t.Errorf("device mtu %d, endpoint mtu %d", b.MTU(), epB.MTU())
			}
			for _, dst := range []string{"10.9.1.2", "fd09:1::2"} {
				out, err := nsA.Run("ping", "-c", "3", "-i", "0.2", "-W", "5", dst)
				if err != nil || !strings.Contains(out, " 0% packet loss") {
					t.Fatalf("ping %s: %v\n%s\nA: %+v\nB: %+v\nendpoint A: %v\nendpoint B: %v", dst, err, out, a.Stats(), b.Stats(), epA.Stats(), epB.Stats())
				}
			}
			for _, dst := range []netip.Addr{netip.MustParseAddr("10.9.1.2"), netip.MustParseAddr("fd09:1::2")} {
				mbps := tcpTransfer(t, nsA, nsB, netip.AddrPortFrom(dst, 5001), size)
				t.Logf("TCP A to B (%s): %d MiB at %.0f Mbit/s", dst, size>>20, mbps)
			}
			sa, sb := a.Stats(), b.Stats()
			t.Logf("device A (%s): %+v", tc.a, sa)
			t.Logf("device B (water): %+v", sb)
			for i, st := range []tuntap.Stats{sa, sb} {
				if st.ReadDrops != 0 || st.ReadErrors != 0 || st.WriteErrors != 0 || st.WriteDrops != 0 {
					t.Errorf("device %c: drops or errors: %+v", 'A'+i, st)
				}
			}
			// B's endpoint coalesced the stream with GRO; the water device
			// split it in software.
			if sb.WrittenSplit == 0 {
				t.Errorf("the water device split no coalesced packets: %+v", sb)
			}
			a.Close()
			b.Close()
			if n := loopGoroutinesSettled(waterReadLoopFunc, before); n != before {
				t.Errorf("%d water read goroutines after Close, want %d", n, before)
			}
		})
	}
}
