package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/netns"
)

// BenchmarkVethThroughput measures single-stream TCP throughput across an
// overlay between two network namespaces joined by one veth pair, for:
//
//   - the kernel's own VXLAN (the baseline),
//   - gnv with a kernel UDP underlay and TAP overlays,
//   - gnv with AF_PACKET underlays and TAP overlays,
//   - gnv with TAP underlays on a bridge and TAP overlays,
//   - gnv with kernel UDP underlays and netstack overlays (in-process),
//   - gnv with TAP underlays on a bridge and netstack overlays, where TCP
//     super-packets cross the kernel whole (UDP-tunnel GSO),
//
// all in the same run, and reports each in Mbit/s and as a ratio to VXLAN.
// iperf3 drives the kernel-overlay paths (5 s each); the netstack path
// moves 256 MiB with testutil.TransferTCP. Needs root and iperf3.
//
//	go test -run '^$' -bench VethThroughput -benchtime 1x ./cmd/gnv/
//
// GNV_BENCH_PATHS=gnv-netstack-tapu,... limits the run to those paths (and
// the baseline).
func BenchmarkVethThroughput(b *testing.B) {
	netns.RequireRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (apt-get install iperf3)")
	}
	results := map[string][]float64{}
	paths := []struct {
		name string
		run  func(b *testing.B) float64
	}{
		{"kernel-vxlan", benchVXLAN},
		{"gnv-udp-tap", func(b *testing.B) float64 { return benchGnvTAP(b, "udp") }},
		{"gnv-packet-tap", func(b *testing.B) float64 { return benchGnvTAP(b, "packet") }},
		{"gnv-tapu-tap", func(b *testing.B) float64 { return benchGnvTAP(b, "tap") }},
		{"gnv-netstack", func(b *testing.B) float64 { return benchGnvNetstack(b, "udp") }},
		{"gnv-netstack-tapu", func(b *testing.B) float64 { return benchGnvNetstack(b, "tap") }},
	}
	if only := os.Getenv("GNV_BENCH_PATHS"); only != "" {
		var keep []struct {
			name string
			run  func(b *testing.B) float64
		}
		for _, p := range paths {
			if p.name == "kernel-vxlan" || slices.Contains(strings.Split(only, ","), p.name) {
				keep = append(keep, p)
			}
		}
		paths = keep
	}
	for i := 0; i < b.N; i++ {
		for _, p := range paths {
			results[p.name] = append(results[p.name], p.run(b))
		}
	}
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	base := mean(results["kernel-vxlan"])
	for _, p := range paths {
		m := mean(results[p.name])
		// One line per path (go test shows only the first lines of a
		// benchmark's log).
		var samples []string
		for _, v := range results[p.name] {
			samples = append(samples, fmt.Sprintf("%.0f", v))
		}
		b.Logf("%-18s Mbit/s %s, mean %.0f (%.2fx vxlan)", p.name, strings.Join(samples, " / "), m, m/base)
		b.ReportMetric(m, p.name+"-Mbit/s")
		if p.name != "kernel-vxlan" && base > 0 {
			b.ReportMetric(m/base, p.name+"/vxlan")
		}
	}
}

// netstackPair makes two namespaces on a veth and, in this process,
// tunnels with netstack overlays 10.9.0.1/24 and 10.9.0.2/24 over kernel
// UDP underlays ("udp") or TAP underlays on a bridge with the veth ("tap").
func netstackPair(tb testing.TB, underlay string) [2]*stack.Tunnel {
	a, c := vethPair(tb, underlay == "tap")
	var us [2]*stack.SharedUnderlay
	for i, ns := range []*netns.NS{a, c} {
		local := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		var u stack.Underlay = stack.KernelUDPUnderlay{Local: local}
		if underlay == "tap" {
			netns.Bridge(tb, ns, "br0", []string{"va", "vb"}[i])
			u = stack.TAPUnderlay{Bridge: "br0", NetstackOptions: stack.NetstackOptions{Address: netip.PrefixFrom(local, 24)}}
		}
		if err := ns.Do(func() (err error) {
			us[i], err = stack.OpenUnderlay(u, stack.UnderlayOptions{})
			return err
		}); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { us[i].Close() })
	}
	var tuns [2]*stack.Tunnel
	for i := range tuns {
		tun, err := stack.New(stack.Config{
			VNI: 100, Mode: endpoint.L2, Underlay: us[i],
			Remotes:   []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(2 - i)})},
			Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}), 24)},
		})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { tun.Close() })
		tuns[i] = tun
	}
	return tuns
}

// iperf runs an iperf3 server in b and a 5-second client in a towards dst,
// returning the receiver's throughput in Mbit/s.
func iperf(b *testing.B, a, srv *netns.NS, dst string) float64 {
	b.Helper()
	server := srv.Command("iperf3", "-s", "-1", "-B", dst, "-p", "5201")
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	defer server.Wait()
	var out string
	var err error
	for try := 0; try < 20; try++ {
		time.Sleep(100 * time.Millisecond)
		if out, err = a.Run("iperf3", "-c", dst, "-p", "5201", "-t", "5", "-J"); err == nil {
			break
		}
	}
	if err != nil {
		server.Process.Kill()
		b.Fatalf("iperf3: %v", err)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("iperf3 output: %v", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e6
}

// vethPair makes two namespaces with 192.0.2.1/24 and 192.0.2.2/24 on the
// veth (unless bare).
func vethPair(tb testing.TB, bare bool) (a, c *netns.NS) {
	a, c = netns.New(tb, "gnvbench-a"), netns.New(tb, "gnvbench-b")
	netns.Veth(tb, a, "va", c, "vb")
	if !bare {
		a.MustRun(tb, "ip", "addr", "add", "192.0.2.1/24", "dev", "va")
		c.MustRun(tb, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
	}
	return a, c
}

func benchVXLAN(b *testing.B) float64 {
	a, c := vxlanPair(b)
	return iperf(b, a, c, "10.3.3.2")
}

// vxlanPair makes two namespaces on a veth with kernel VXLAN devices,
// 10.3.3.1/24 and 10.3.3.2/24.
func vxlanPair(tb testing.TB) (a, c *netns.NS) {
	a, c = vethPair(tb, false)
	for i, ns := range []*netns.NS{a, c} {
		local, remote, dev := "192.0.2.1", "192.0.2.2", "va"
		if i == 1 {
			local, remote, dev = remote, local, "vb"
		}
		ns.MustRun(tb, "ip", "link", "add", "vx0", "type", "vxlan", "id", "100", "local", local, "remote", remote, "dstport", "4789", "dev", dev)
		ns.MustRun(tb, "ip", "addr", "add", fmt.Sprintf("10.3.3.%d/24", i+1), "dev", "vx0")
		ns.MustRun(tb, "ip", "link", "set", "vx0", "up")
	}
	return a, c
}

func benchGnvTAP(b *testing.B, underlay string) float64 {
	a, c, _ := gnvTAPPair(b, underlay)
	return iperf(b, a, c, "10.9.0.2")
}

// gnvTAPPair makes two namespaces on a veth running gnv up with TAP
// overlays, 10.9.0.1/24 and 10.9.0.2/24, over the underlay "udp" (kernel
// UDP), "packet" (AF_PACKET) or "tap" (a TAP device on a bridge with the
// veth), and returns the gnv processes' PIDs.
func gnvTAPPair(tb testing.TB, underlay string) (a, c *netns.NS, pids []int) {
	a, c = vethPair(tb, underlay != "udp")
	start := func(ns *netns.NS, dev, local, remote string, n int) {
		args := []string{"--vni", "100", "--remote", remote, "--addr", fmt.Sprintf("10.9.0.%d/24", n)}
		switch underlay {
		case "packet":
			netns.RequireTools(tb, "sysctl")
			ns.MustRun(tb, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")
			args = append(args, "--underlay", "packet", "--dev", dev, "--underlay-addr", local+"/24")
		case "tap":
			netns.Bridge(tb, ns, "br0", dev)
			args = append(args, "--underlay", "tap", "--dev", "br0", "--underlay-addr", local+"/24")
		default:
			args = append(args, "--local", local)
		}
		pids = append(pids, benchUp(tb, ns, args...))
	}
	start(a, "va", "192.0.2.1", "192.0.2.2", 1)
	start(c, "vb", "192.0.2.2", "192.0.2.1", 2)
	return a, c, pids
}

// benchUp runs gnv up in ns until the benchmark ends and returns its PID
// (ip netns exec execs it in its own process).
func benchUp(tb testing.TB, ns *netns.NS, args ...string) int {
	tb.Helper()
	bin := gnvBinary(tb)
	cmd := ns.Command(bin, append([]string{"up", "--control", tb.TempDir() + "/ctl.sock"}, args...)...)
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	for i := 0; i < 200; i++ {
		if strings.Contains(out.String(), ": up, ") {
			return cmd.Process.Pid
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("gnv up did not come up: %s", out.String())
	return 0
}

// benchGnvNetstack runs netstack overlays in this process over kernel UDP
// underlays ("udp") or TAP underlays on a bridge with the veth ("tap").
func benchGnvNetstack(b *testing.B, underlay string) float64 {
	tuns := netstackPair(b, underlay)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := testutil.TransferTCP(ctx, tuns[0], tuns[1], netip.MustParseAddrPort("10.9.0.2:5201"), 256<<20, 1)
	if err != nil {
		b.Fatal(err)
	}
	if testing.Verbose() {
		b.Logf("%s underlay: sender %s; receiver %s", underlay, tuns[0].Stats(), tuns[1].Stats())
	}
	return res.Mbps()
}
