//go:build linux

package tuntap_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/kudp"
	"github.com/gnv-project/gnv/link/tuntap"
	"github.com/gnv-project/gnv/testutil/netns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

// requireTun skips unless the test can create TAP/TUN devices in network
// namespaces.
func requireTun(t *testing.T) {
	t.Helper()
	netns.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun (modprobe tun): %v", err)
	}
}

// The read loops' functions, as a stack dump names them.
const (
	readLoopFunc      = "tuntap.(*Device).readLoop"      // the ioctl backend's
	waterReadLoopFunc = "tuntap.(*Device).waterReadLoop" // the water backend's
)

// loopGoroutines counts goroutines running fn, one of the read loops'
// functions.
func loopGoroutines(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), fn)
}

// loopGoroutinesSettled waits (boundedly) until the count of goroutines
// running fn is want, whether it has to rise or fall, and returns it:
// Close waits for the read goroutine's WaitGroup, which it signals from a
// deferred call, so the goroutine may still be on its way out for a moment
// when Close returns; and a goroutine that has not run yet does not show
// its function in a stack dump.
func loopGoroutinesSettled(fn string, want int) int {
	n := loopGoroutines(fn)
	for i := 0; i < 200 && n != want; i++ {
		time.Sleep(5 * time.Millisecond)
		n = loopGoroutines(fn)
	}
	return n
}

const needsCapMsg = "needs CAP_NET_ADMIN (run as root or grant the capability)"

func TestDeviceNeedsCapNetAdmin(t *testing.T) {
	opts := tuntap.Options{Name: "gnvperm0", Mode: tuntap.ModeTAP}
	check := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("New succeeded without CAP_NET_ADMIN")
		}
		want := "creating TAP device gnvperm0 " + needsCapMsg
		var perm *tuntap.PermissionError
		if !strings.Contains(err.Error(), want) || !errors.Is(err, os.ErrPermission) || !errors.As(err, &perm) {
			t.Fatalf("error %q: want a *PermissionError that contains %q and matches os.ErrPermission", err, want)
		}
		t.Logf("error without CAP_NET_ADMIN: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			t.Skip("no /dev/net/tun")
		}
		_, err := tuntap.New(opts)
		check(err)
		return
	}
	requireTun(t)
	ns := netns.New(t, "gnvperm")
	var openErr error
	err := ns.Do(func() error {
		// Capabilities are per thread: drop CAP_NET_ADMIN from this one
		// (ns.Do never hands its thread back to the scheduler).
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		d, err := tuntap.New(opts)
		if err == nil {
			d.Close()
		}
		openErr = err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check(openErr)
}

func TestDeviceLifecycle(t *testing.T) {
	requireTun(t)
	for _, mode := range []tuntap.Mode{tuntap.ModeTAP, tuntap.ModeTUN} {
		for _, off := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/offloads=%v", mode, off), func(t *testing.T) {
				ns := netns.New(t, "gnvdev")
				mac := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x01}
				var d *tuntap.Device
				err := ns.Do(func() error {
					var err error
					d, err = tuntap.New(tuntap.Options{
						Name: "gnv0", Mode: mode, MTU: 1400, MAC: mac, NoDAD: true, DisableOffloads: !off,
						Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("fd09::1/64")},
					})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s offloads: %s", d.Name(), d.Offloads())
				if d.Name() != "gnv0" || !d.Created() || d.MTU() != 1400 || d.Mode() != mode {
					t.Errorf("name %q created %v mtu %d mode %v", d.Name(), d.Created(), d.MTU(), d.Mode())
				}
				if on := d.Offloads().Has(link.OffloadVnetHdr | link.OffloadTSO4 | link.OffloadTSO6 | link.OffloadRxChecksum); on != off {
					t.Errorf("offloads %s with DisableOffloads=%v", d.Offloads(), !off)
				}
				out := ns.MustRun(t, "ip", "-d", "addr", "show", "dev", "gnv0")
				for _, want := range []string{"mtu 1400", "10.9.0.1/24", "fd09::1/64", ",UP", "type " + mode.String(), fmt.Sprintf("vnet_hdr %s", map[bool]string{true: "on", false: "off"}[off])} {
					if !strings.Contains(out, want) {
						t.Errorf("ip addr show lacks %q:\n%s", want, out)
					}
				}
				if mode == tuntap.ModeTAP && (!strings.Contains(out, mac.String()) || d.MAC().String() != mac.String()) {
					t.Errorf("MAC %v, want %v:\n%s", d.MAC(), mac, out)
				}
				// A mismatched endpoint is refused.
				if mode == tuntap.ModeTAP {
					if err := d.Attach(channel.New(1, 1400, "")); err == nil || !strings.Contains(err.Error(), "needs an l2 endpoint") {
						t.Errorf("Attach(l3 endpoint) = %v", err)
					}
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				if err := d.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				if out, err := ns.Run("ip", "link", "show", "gnv0"); err == nil {
					t.Errorf("gnv0 still exists after Close:\n%s", out)
				}
			})
		}
	}
}

// TestDevicePersistent attaches to devices made by `ip tuntap add`: a TUN
// device is refused as TAP; each is left in place by Close, without the
// addresses New added, with its MTU and MAC back and down as it was found.
func TestDevicePersistent(t *testing.T) {
	requireTun(t)
	ns := netns.New(t, "gnvpers")
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "gnvp0", "mode", "tun")
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "gnvp1", "mode", "tap")
	ns.MustRun(t, "ip", "link", "set", "gnvp1", "address", "02:00:00:00:0a:01", "mtu", "1400")
	before := map[string]string{}
	for _, dev := range []string{"gnvp0", "gnvp1"} {
		before[dev] = linkSummary(t, ns, dev)
	}
	err := ns.Do(func() error {
		_, err := tuntap.New(tuntap.Options{Name: "gnvp0", Mode: tuntap.ModeTAP})
		if err == nil || !strings.Contains(err.Error(), "is not a TAP device") {
			return fmt.Errorf("opening a TUN device as TAP: %v", err)
		}
		for _, o := range []tuntap.Options{
			{Name: "gnvp0", Mode: tuntap.ModeTUN, MTU: 1300, Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.9.1/24")}},
			{Name: "gnvp1", Mode: tuntap.ModeTAP, MTU: 1280, MAC: net.HardwareAddr{2, 0, 0, 0, 0x0a, 0x02},
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.8.1/24")}},
		} {
			d, err := tuntap.New(o)
			if err != nil {
				return err
			}
			if d.Created() {
				return fmt.Errorf("%s: Created() = true for a persistent device", o.Name)
			}
			if got := linkSummary(t, ns, o.Name); got == before[o.Name] || !strings.Contains(got, fmt.Sprintf("mtu %d up", o.MTU)) {
				return fmt.Errorf("%s while attached: %s", o.Name, got)
			}
			if err := d.Close(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"gnvp0", "gnvp1"} {
		if after := linkSummary(t, ns, dev); after != before[dev] {
			t.Errorf("%s after Close: %s, want it as found: %s", dev, after, before[dev])
		}
		if out := ns.MustRun(t, "ip", "addr", "show", "dev", dev); strings.Contains(out, "10.9.") {
			t.Errorf("Close left the address on the persistent device:\n%s", out)
		}
	}
}

// linkSummary is "mtu N up|down MAC" of the interface dev in ns, from
// ip -j link.
func linkSummary(t *testing.T, ns *netns.NS, dev string) string {
	t.Helper()
	var links []struct {
		MTU     int      `json:"mtu"`
		Flags   []string `json:"flags"`
		Address string   `json:"address"`
	}
	if err := json.Unmarshal([]byte(ns.MustRun(t, "ip", "-j", "link", "show", "dev", dev)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show dev %s: %v", dev, err)
	}
	state := "down"
	if slices.Contains(links[0].Flags, "UP") {
		state = "up"
	}
	return fmt.Sprintf("mtu %d %s %s", links[0].MTU, state, links[0].Address)
}

// overlaySide is one namespace's half of an overlay: a Geneve endpoint on
// a kernel UDP underlay, patched to a TAP or TUN device.
type overlaySide struct {
	ns   *netns.NS
	sock *endpoint.Socket
	ep   *endpoint.Endpoint
	dev  *tuntap.Device
}

func (s *overlaySide) close() {
	if s.dev != nil {
		s.dev.Close()
	}
	if s.ep != nil {
		s.ep.Close()
	}
	if s.sock != nil {
		s.sock.Close()
	}
}

func newOverlaySide(t *testing.T, ns *netns.NS, mode tuntap.Mode, off, noGRO bool, local, peer netip.Addr, addrs ...netip.Prefix) *overlaySide {
	t.Helper()
	s := &overlaySide{ns: ns}
	t.Cleanup(s.close)
	epMode := endpoint.L2
	if mode == tuntap.ModeTUN {
		epMode = endpoint.L3
	}
	err := ns.Do(func() error {
		tr, err := kudp.New(kudp.Options{Local: netip.AddrPortFrom(local, 6081), MTU: 1500})
		if err != nil {
			return err
		}
		if s.sock, err = endpoint.NewSocket(tr); err != nil {
			tr.Close()
			return err
		}
		if s.ep, err = endpoint.New(s.sock, endpoint.Config{VNI: 4242, Mode: epMode, Remotes: []netip.Addr{peer}, DisableGRO: noGRO}); err != nil {
			return err
		}
		if s.dev, err = tuntap.New(tuntap.Options{Name: "gnv0", Mode: mode, Addresses: addrs, NoDAD: true, DisableOffloads: !off}); err != nil {
			return err
		}
		return s.dev.Attach(s.ep)
	})
	if err != nil {
		t.Fatalf("overlay in %s: %v", ns.Name, err)
	}
	return s
}

// tcpPattern is the content of TCP test streams, repeated: random bytes
// with a length that no segment size divides, so that lost, duplicated or
// reordered data shows up as a mismatch.
var tcpPattern = func() []byte {
	r := rand.New(rand.NewPCG(7, 42))
	b := make([]byte, 1<<20+13)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// tcpTransfer sends size bytes of tcpPattern from namespace a to dst in
// namespace b with the kernel's TCP, checks every byte on arrival and
// returns the throughput in Mbit/s.
func tcpTransfer(t *testing.T, a, b *netns.NS, dst netip.AddrPort, size int) float64 {
	t.Helper()
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", dst.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		buf := make([]byte, 1<<16)
		got := 0
		for {
			n, err := c.Read(buf)
			for b := buf[:n]; len(b) > 0; {
				off := got % len(tcpPattern)
				k := min(len(b), len(tcpPattern)-off)
				if !bytes.Equal(b[:k], tcpPattern[off:off+k]) {
					done <- fmt.Errorf("content mismatch in bytes %d..%d", got, got+k)
					return
				}
				b, got = b[k:], got+k
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				done <- fmt.Errorf("read after %d bytes: %w", got, err)
				return
			}
		}
		if got != size {
			done <- fmt.Errorf("received %d bytes, want %d", got, size)
			return
		}
		_, err = c.Write([]byte("ok"))
		done <- err
	}()
	var c net.Conn
	if err := a.Do(func() (err error) { c, err = net.DialTimeout("tcp", dst.String(), 10*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	start := time.Now()
	for sent := 0; sent < size; {
		off := sent % len(tcpPattern)
		n := min(1<<16, size-sent, len(tcpPattern)-off)
		if _, err := c.Write(tcpPattern[off : off+n]); err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
		sent += n
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 2)
	_, rerr := io.ReadFull(c, ack)
	elapsed := time.Since(start)
	if err := <-done; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	if rerr != nil {
		t.Fatalf("reading the receiver's ok: %v", rerr)
	}
	return float64(size) * 8 / elapsed.Seconds() / 1e6
}

// udpGSOTransfer sends one UDP_SEGMENT super-datagram of n segments of seg
// bytes from namespace a to dst in namespace b and checks that the n
// datagrams arrive intact.
func udpGSOTransfer(t *testing.T, a, b *netns.NS, src netip.Addr, dst netip.AddrPort, seg, n int) {
	t.Helper()
	var rc, sc *net.UDPConn
	if err := b.Do(func() (err error) { rc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst)); return err }); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := a.Do(func() (err error) {
		sc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, seg) }); err != nil || serr != nil {
		t.Skipf("UDP_SEGMENT: %v %v", err, serr)
	}
	want := make([]byte, seg*n)
	for i := range want {
		want[i] = byte(i*7 + i/seg)
	}
	if _, err := sc.WriteToUDPAddrPort(want, dst); err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make(map[int]bool)
	buf := make([]byte, 65536)
	for len(got) < n {
		m, _, err := rc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("received %d of %d datagrams: %v", len(got), n, err)
		}
		k := -1
		for i := range n {
			if bytes.Equal(buf[:m], want[i*seg:(i+1)*seg]) {
				k = i
				break
			}
		}
		if k < 0 {
			t.Fatalf("a datagram of %d bytes matches no segment", m)
		}
		got[k] = true
	}
}

func TestDeviceOverlay(t *testing.T) {
	requireTun(t)
	size := 32 << 20
	if testing.Short() {
		size = 4 << 20
	}
	type overlayCase struct {
		mode       tuntap.Mode
		off, noGRO bool
	}
	cases := []overlayCase{
		{tuntap.ModeTAP, true, false}, {tuntap.ModeTAP, false, false},
		{tuntap.ModeTUN, true, false}, {tuntap.ModeTUN, false, false},
		// The endpoint without GRO: packets reach the device one by one,
		// unvalidated, and are written as they are.
		{tuntap.ModeTUN, true, true},
	}
	for _, tc := range cases {
		mode, off := tc.mode, tc.off
		name := fmt.Sprintf("%s/offloads=%v", mode, off)
		if tc.noGRO {
			name += "/endpoint-gro=false"
		}
		t.Run(name, func(t *testing.T) {
			before := loopGoroutines(readLoopFunc)
			nsA, nsB := netns.New(t, "gnva"), netns.New(t, "gnvb")
			netns.Veth(t, nsA, "ula", nsB, "ulb")
			nsA.MustRun(t, "ip", "addr", "add", "192.168.77.1/24", "dev", "ula")
			nsB.MustRun(t, "ip", "addr", "add", "192.168.77.2/24", "dev", "ulb")
			ulA, ulB := netip.MustParseAddr("192.168.77.1"), netip.MustParseAddr("192.168.77.2")
			a := newOverlaySide(t, nsA, mode, off, tc.noGRO, ulA, ulB, netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("fd09::1/64"))
			b := newOverlaySide(t, nsB, mode, off, tc.noGRO, ulB, ulA, netip.MustParsePrefix("10.9.0.2/24"), netip.MustParsePrefix("fd09::2/64"))
			t.Logf("device offloads: %s; mtu %d", a.dev.Offloads(), a.dev.MTU())
			// Two devices up, two read loops: the count below must see them
			// go, so it must see them here.
			if n := loopGoroutinesSettled(readLoopFunc, before+2); n != before+2 {
				t.Fatalf("%d device read loops running, want %d", n, before+2)
			}
			if a.dev.MTU() != a.ep.MTU() {
				t.Errorf("device mtu %d, endpoint mtu %d", a.dev.MTU(), a.ep.MTU())
			}

			netns.RequireTools(t, "ping")
			for _, dst := range []string{"10.9.0.2", "fd09::2"} {
				out, err := nsA.Run("ping", "-c", "3", "-i", "0.2", "-W", "5", dst)
				if err != nil || !strings.Contains(out, " 0% packet loss") {
					t.Fatalf("ping %s: %v\n%s\nA: %+v\nB: %+v\nendpoint A: %v\nendpoint B: %v", dst, err, out,
						a.dev.Stats(), b.dev.Stats(), a.ep.Stats(), b.ep.Stats())
				}
			}
			for _, dst := range []netip.Addr{netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("fd09::2")} {
				a0, b0 := a.dev.Stats(), b.dev.Stats()
				mbps := tcpTransfer(t, nsA, nsB, netip.AddrPortFrom(dst, 5001), size)
				a1, b1 := a.dev.Stats(), b.dev.Stats()
				t.Logf("TCP to %s: %d MiB at %.0f Mbit/s (A read %d frames, %d TSO; B wrote %d packets, %d GSO, %d split)",
					dst, size>>20, mbps, a1.ReadFrames-a0.ReadFrames, a1.ReadTSO-a0.ReadTSO,
					b1.WrittenPackets-b0.WrittenPackets, b1.WrittenGSO-b0.WrittenGSO, b1.WrittenSplit-b0.WrittenSplit)
			}
			if off {
				udpGSOTransfer(t, nsA, nsB, netip.MustParseAddr("10.9.0.1"), netip.MustParseAddrPort("10.9.0.2:5002"), 1000, 10)
				udpGSOTransfer(t, nsA, nsB, netip.MustParseAddr("fd09::1"), netip.MustParseAddrPort("[fd09::2]:5002"), 1000, 10)
			}

			sa, sb := a.dev.Stats(), b.dev.Stats()
			t.Logf("device A: %+v", sa)
			t.Logf("device B: %+v", sb)
			for i, st := range []tuntap.Stats{sa, sb} {
				if st.ReadDrops != 0 || st.ReadErrors != 0 || st.WriteErrors != 0 || st.WriteDrops != 0 {
					t.Errorf("device %c: drops or errors: %+v", 'A'+i, st)
				}
			}
			switch {
			case off && tc.noGRO:
				if sa.ReadTSO == 0 || sb.WrittenGSO != 0 {
					t.Errorf("A read %d TSO super-packets, B wrote %d GSO super-packets without endpoint GRO", sa.ReadTSO, sb.WrittenGSO)
				}
			case off:
				if sa.ReadTSO == 0 || sb.WrittenGSO == 0 {
					t.Errorf("offloads on, but A read %d TSO super-packets and B wrote %d GSO super-packets", sa.ReadTSO, sb.WrittenGSO)
				}
				if a.dev.Offloads().Has(link.OffloadUSO4) && sa.ReadUSO == 0 {
					t.Errorf("USO offered, but A split no UDP super-packets")
				}
			default:
				if sa.ReadTSO != 0 || sb.WrittenGSO != 0 {
					t.Errorf("offloads off, but TSO %d / GSO %d", sa.ReadTSO, sb.WrittenGSO)
				}
			}

			a.close()
			b.close()
			if n := loopGoroutinesSettled(readLoopFunc, before); n != before {
				t.Errorf("%d device goroutines after Close, want %d", n, before)
			}
			for _, ns := range []*netns.NS{nsA, nsB} {
				if out, err := ns.Run("ip", "link", "show", "gnv0"); err == nil {
					t.Errorf("gnv0 still exists in %s after Close:\n%s", ns.Name, out)
				}
			}
		})
	}
}
