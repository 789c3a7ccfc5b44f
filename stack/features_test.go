package stack_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/internal/pcap"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
)

// lockedBuffer is a concurrency-safe bytes.Buffer for fabric captures.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

// frames parses a fabric capture.
func frames(t *testing.T, capture []byte) [][]byte {
	t.Helper()
	r, err := pcap.NewReader(bytes.NewReader(capture))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		data, _, err := r.Next()
		if err != nil {
			return out
		}
		out = append(out, data)
	}
}

// TestVNIIsolation puts two tunnels with different VNIs but the same
// overlay addresses on one fabric: they must never reach each other, and
// the frames of the other VNI are counted as unknown-VNI drops.
func TestVNIIsolation(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 3})
	defer f.Close()
	mk := func(vni uint32, ul, peer string, ov string) *stack.Tunnel {
		p, err := f.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		tun, err := stack.New(stack.Config{
			VNI: vni, Remotes: []netip.Addr{netip.MustParseAddr(peer)},
			Underlay:  stack.NetstackUnderlay{Link: p, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix(ul)}},
			Addresses: []netip.Prefix{netip.MustParsePrefix(ov)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return tun
	}
	// a (VNI 10) sends to b's underlay address, where only VNI 20 lives.
	a := mk(10, "192.0.2.1/24", "192.0.2.2", "10.0.0.1/24")
	defer a.Close()
	b := mk(20, "192.0.2.2/24", "192.0.2.1", "10.0.0.2/24")
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("10.0.0.2"), 1, 8); err == nil {
		t.Fatal("VNI 10 reached VNI 20")
	}
	if st := b.Stats(); st.Drops[endpoint.DropUnknownVNI] == 0 || st.RxPackets != 0 {
		t.Errorf("VNI 20 host: %v; want unknown-vni drops and nothing delivered", st)
	}
	if st := a.Stats(); st.RxPackets != 0 {
		t.Errorf("VNI 10 host received %d packets", st.RxPackets)
	}
}

// TestSharedSocketVNIs runs two VNIs over one underlay socket per host:
// each VNI reaches its own peer, and only its own.
func TestSharedSocketVNIs(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 4})
	defer f.Close()
	var tuns []*stack.Tunnel
	defer func() {
		for _, tn := range tuns {
			tn.Close()
		}
	}()
	under := make([]*stack.SharedUnderlay, 2)
	for i := range under {
		p, err := f.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := stack.OpenUnderlay(stack.NetstackUnderlay{Link: p, NetstackOptions: stack.NetstackOptions{Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 24)}}, stack.UnderlayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		under[i] = u
	}
	mk := func(host int, vni uint32, ov string) *stack.Tunnel {
		tun, err := stack.New(stack.Config{
			VNI: vni, Remotes: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(2 - host)})},
			Underlay: under[host], Addresses: []netip.Prefix{netip.MustParsePrefix(ov)},
		})
		if err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
		return tun
	}
	a1, a2 := mk(0, 1, "10.1.0.1/24"), mk(0, 2, "10.2.0.1/24")
	b1, b2 := mk(1, 1, "10.1.0.2/24"), mk(1, 2, "10.2.0.2/24")
	if _, err := stack.New(stack.Config{VNI: 1, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.2")}, Underlay: under[0]}); err == nil || !strings.Contains(err.Error(), "vni 1 already exists") {
		t.Errorf("second VNI 1 on a socket: err %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		a, b *stack.Tunnel
		dst  string
	}{{a1, b1, "10.1.0.2"}, {a2, b2, "10.2.0.2"}} {
		if _, err := testutil.TransferTCP(ctx, c.a, c.b, netip.AddrPortFrom(netip.MustParseAddr(c.dst), 80), 1<<20, 1); err != nil {
			t.Fatalf("to %s: %v", c.dst, err)
		}
	}
	short, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	if _, err := a1.Ping(short, netip.MustParseAddr("10.2.0.2"), 1, 8); err == nil {
		t.Error("VNI 1 reached VNI 2's address")
	}
}

// TestMulticastUnderlay runs three hosts whose tunnels send to a group:
// ARP/ND floods through the group and every pair talks. IGMP or MLD reports
// for the group must be on the fabric.
func TestMulticastUnderlay(t *testing.T) {
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			capture := &lockedBuffer{}
			hs, err := testutil.NewHosts(testutil.HostsOptions{N: 3, Mode: endpoint.L2, VNI: 77, UnderlayFamily: fam, Multicast: true, Pcap: capture})
			if err != nil {
				t.Fatal(err)
			}
			defer hs.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i, a := range hs.Hosts {
				for j, b := range hs.Hosts {
					if i == j {
						continue
					}
					for _, dst := range []netip.Addr{b.Overlay4, b.Overlay6} {
						if _, err := a.Tunnel.Ping(ctx, dst, uint16(j), 16); err != nil {
							t.Fatalf("host %d -> %s: %v", i+1, dst, err)
						}
					}
				}
			}
			if _, err := testutil.TransferTCP(ctx, hs.Hosts[0].Tunnel, hs.Hosts[2].Tunnel, netip.AddrPortFrom(hs.Hosts[2].Overlay4, 80), 1<<20, 2); err != nil {
				t.Fatal(err)
			}
			reports := 0
			for _, fr := range frames(t, capture.Bytes()) {
				if isMembershipReport(fr) {
					reports++
				}
			}
			if reports < 3 {
				t.Errorf("saw %d IGMP/MLD membership reports on the fabric, want at least one per host", reports)
			}
			// Leaving on Close is reported too (a state-change report).
			for _, h := range hs.Hosts {
				h.Tunnel.Close()
			}
			after := 0
			for _, fr := range frames(t, capture.Bytes()) {
				if isMembershipReport(fr) {
					after++
				}
			}
			if after < reports+3 {
				t.Errorf("%d membership reports after the hosts left, %d before: want one more per host", after, reports)
			}
		})
	}
}

// isMembershipReport recognises an IGMPv3 report (IPv4 protocol 2, type
// 0x22) or an MLDv2 report (ICMPv6 type 143, after a hop-by-hop header) in
// an Ethernet frame.
func isMembershipReport(fr []byte) bool {
	if len(fr) < 14 {
		return false
	}
	switch binary.BigEndian.Uint16(fr[12:14]) {
	case 0x0800:
		ip := fr[14:]
		if len(ip) < 20 || ip[9] != 2 {
			return false
		}
		ihl := int(ip[0]&0xf) * 4
		return len(ip) > ihl && ip[ihl] == 0x22
	case 0x86dd:
		ip := fr[14:]
		if len(ip) < 48 || ip[6] != 0 { // hop-by-hop options first
			return false
		}
		next, hbh := ip[40], 8*(int(ip[41])+1)
		return next == 58 && len(ip) > 40+hbh && ip[40+hbh] == 143
	}
	return false
}

// TestLossAndReordering moves 8 MiB across a fabric that loses 5% of the
// frames and reorders 5%: TCP must still deliver every byte intact.
func TestLossAndReordering(t *testing.T) {
	faults := testutil.Faults{Loss: 0.05, Reorder: 0.05}
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 9, Seed: 42, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := hs.Hosts[0], hs.Hosts[1]
	res, err := testutil.TransferTCP(ctx, a.Tunnel, b.Tunnel, netip.AddrPortFrom(b.Overlay4, 80), transferSize(), 3)
	if err != nil {
		t.Fatalf("%v\nfabric: %+v\nsender tunnel: %v\nreceiver tunnel: %v", err, hs.Fabric.Stats(), a.Tunnel.Stats(), b.Tunnel.Stats())
	}
	st := hs.Fabric.Stats()
	t.Logf("%d bytes at %.0f Mbit/s; fabric: %+v", res.Bytes, res.Mbps(), st)
	if st.DroppedLoss == 0 || st.Reordered == 0 {
		t.Errorf("the fabric injected no loss or no reordering: %+v", st)
	}
}

// TestConfigErrors checks that invalid configurations are refused with an
// error that names the field.
func TestConfigErrors(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	p, err := f.NewPort("", testutil.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ul := stack.NetstackUnderlay{Link: p, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix("192.0.2.1/24")}}
	r := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	for _, c := range []struct {
		cfg  stack.Config
		want string
	}{
		{stack.Config{VNI: 1 << 24, Remotes: r, Underlay: ul}, "vni 16777216 out of range: valid VNIs are 0..16777215"},
		{stack.Config{VNI: 1, Remotes: r}, "underlay: required"},
		{stack.Config{VNI: 1, Underlay: ul}, "remote or group: one is required"},
		{stack.Config{VNI: 1, Remotes: r, Group: netip.MustParseAddr("239.1.1.1"), Underlay: ul}, "remote and group are exclusive"},
		{stack.Config{VNI: 1, Group: netip.MustParseAddr("192.0.2.9"), Underlay: ul}, "group 192.0.2.9 is not a multicast address"},
		{stack.Config{VNI: 1, Remotes: []netip.Addr{netip.MustParseAddr("2001:db8::2")}, Underlay: ul}, "IPv4"},
		{stack.Config{VNI: 1, Remotes: []netip.Addr{netip.MustParseAddr("239.1.1.1")}, Underlay: ul}, "remote 239.1.1.1 must be a unicast address"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: ul, MTU: 20}, "mtu 20 out of range: valid MTUs are 68..65535"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: ul, DNS: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}}, "dns 0.0.0.0:53: want a unicast address"},
		{stack.Config{VNI: 1, Mode: 7, Remotes: r, Underlay: ul}, "valid modes are l2 and l3"},
		{stack.Config{VNI: 1, Mode: endpoint.L3, Remotes: []netip.Addr{r[0], netip.MustParseAddr("192.0.2.3")}, Underlay: ul}, "an l3 endpoint takes one remote"},
	} {
		tun, err := stack.New(c.cfg)
		if err == nil {
			tun.Close()
			t.Errorf("%+v: no error, want %q", c.cfg, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %q, want it to contain %q", err, c.want)
		}
	}
}

// TestCloseLeavesNoGoroutine runs traffic through two tunnels of each
// underlay kind, closes them and checks that the goroutine count returns
// to where it was (PacketBuffers are checked by the leak checker in
// TestMain).
func TestCloseLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := testutil.TransferTCP(ctx, hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel, netip.AddrPortFrom(hs.Hosts[1].Overlay4, 80), 1<<20, 1); err != nil {
			t.Fatal(err)
		}
	}()
	t.Run("kernel", func(t *testing.T) {
		a, b := kernelHosts(t, endpoint.L3, 4)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := testutil.TransferTCP(ctx, a.Tunnel, b.Tunnel, netip.AddrPortFrom(b.Overlay4, 80), 1<<20, 1); err != nil {
			t.Fatal(err)
		}
	})
	var now int
	for i := 0; i < 200; i++ {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Errorf("%d goroutines before, %d after Close:\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// TestManualClock runs two hosts on gVisor's manual clock with a 10 ms
// one-way delay on the fabric: the echo reply cannot arrive until the test
// advances the clock, so timing is in the test's hands.
func TestManualClock(t *testing.T) {
	clock := faketime.NewManualClock()
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L3, VNI: 2, Clock: clock, Faults: testutil.Faults{Delay: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := hs.Hosts[0].Tunnel.Ping(ctx, hs.Hosts[1].Overlay4, 1, 8)
		done <- err
	}()
	// Without advancing the clock, nothing crosses the fabric: the request
	// waits in it (however long the ping takes to send it), and no reply
	// comes.
	deadline := time.Now().Add(10 * time.Second)
	for hs.Fabric.Stats().Delayed == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("ping finished without the clock advancing: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if st := hs.Fabric.Stats(); st.Delayed == 0 || st.Delivered != 0 {
		t.Fatalf("fabric before Advance: %+v", st)
	}
	for i := 0; i < 1000; i++ {
		clock.Advance(5 * time.Millisecond)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
			time.Sleep(time.Millisecond)
		}
	}
	t.Fatal("no echo reply after advancing the clock 5 s")
}

// TestPerConnectionOptions dials a TCP connection whose packets carry a
// Geneve option; the receiving endpoint's handler sees it, while other
// traffic carries none.
func TestPerConnectionOptions(t *testing.T) {
	opt, _ := geneve.AppendOption(nil, geneve.Option{Class: 0xff01, Type: 0x42, Data: []byte("tag1")})
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L3, VNI: 3, Endpoint: endpoint.Config{MaxMarkOptions: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0], hs.Hosts[1]
	var mu sync.Mutex
	seen := 0
	b.Tunnel.Endpoint().HandleOption(endpoint.OptionType{Class: 0xff01, Type: 0x42}, func(o geneve.Option, _ netip.AddrPort) {
		if string(o.Data) == "tag1" {
			mu.Lock()
			seen++
			mu.Unlock()
		}
	})
	if b.Tunnel.MTU() != a.Tunnel.MTU() || a.Tunnel.MTU() != 1464-8 {
		t.Errorf("MTU %d, want 1464 minus the 8 reserved bytes", a.Tunnel.MTU())
	}
	ln, err := b.Tunnel.Listen("tcp", "10.0.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Tunnel.Ping(ctx, b.Overlay4, 1, 8); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if seen != 0 {
		t.Fatalf("option seen on unmarked traffic")
	}
	mu.Unlock()
	c, err := a.Tunnel.DialContextOptions(ctx, "tcp", "10.0.0.2:7", opt)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if seen < 2 { // at least the SYN and the data
		t.Errorf("the receiver saw the option on %d packets", seen)
	}
	if _, err := a.Tunnel.DialContextOptions(ctx, "tcp", "10.0.0.2:7", append(opt, opt...)); err == nil {
		t.Error("options above the reservation accepted")
	}
}

// TestNoOverlayErrors: the net-style methods of a tunnel without an
// in-process overlay (a TAP/TUN device tunnel) fail with a clear error
// instead of panicking.
func TestNoOverlayErrors(t *testing.T) {
	var tun stack.Tunnel // as a device tunnel: no overlay netstack
	ctx := context.Background()
	checks := []error{}
	_, err := tun.DialContext(ctx, "tcp", "10.0.0.1:80")
	checks = append(checks, err)
	_, err = tun.Listen("tcp", ":80")
	checks = append(checks, err)
	_, err = tun.ListenPacket("udp", ":53")
	checks = append(checks, err)
	_, err = tun.Ping(ctx, netip.MustParseAddr("10.0.0.1"), 1, 8)
	checks = append(checks, err)
	for i, err := range checks {
		if err == nil || !strings.Contains(err.Error(), "no in-process overlay") {
			t.Errorf("call %d: error %v", i, err)
		}
	}
}
