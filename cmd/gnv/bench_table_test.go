//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/netns"
	"golang.org/x/sys/unix"
)

// The performance table of the README (issue 13), in one command:
//
//	go test -run '^$' -bench Table -benchtime 1x ./cmd/gnv/ -args -table.samples 3 -table.out /tmp/perf
//
// writes /tmp/perf.md and /tmp/perf.json. Needs root and iperf3 (ping for
// the RTT column, perf for -table.profile of the gnv processes).
var (
	tableSamples = flag.Int("table.samples", 3, "BenchmarkTable: samples per path and stream count")
	tableOut     = flag.String("table.out", "", "BenchmarkTable: write the table to `PREFIX`.md and PREFIX.json")
	tableTime    = flag.Duration("table.time", 5*time.Second, "BenchmarkTable: duration of one sample")
	tablePaths   = flag.String("table.paths", "", "BenchmarkTable: comma-separated gnv paths to run (default all)")
	tableStreams = flag.String("table.streams", "1,4", "BenchmarkTable: comma-separated parallel TCP stream counts")
	tableProfile = flag.String("table.profile", "", "BenchmarkTable: write a CPU profile of each gnv sample to `DIR` (pprof in-process, perf record for gnv up)")
	tableMemory  = flag.Bool("table.memory", true, "BenchmarkTable: measure the RSS of gnv up, idle and with 100k learned MACs")
)

// benchPath is one row of the table.
type benchPath struct {
	Name, Desc string
	// run measures one sample in a fresh pair of namespaces.
	run func(tb testing.TB, m *measure) sample
}

// tablePathList is the table's rows: kernel VXLAN (the baseline) and the
// gnv paths of issue 13.
func tablePathList() []benchPath {
	return []benchPath{
		{"kernel-vxlan", "kernel VXLAN (baseline)", runVXLAN},
		{"tap-tapu", "kernel app ↔ TAP overlay, TAP underlay", func(tb testing.TB, m *measure) sample { return runGnvTAP(tb, m, "tap") }},
		{"tap-udp", "kernel app ↔ TAP overlay, kernel UDP underlay", func(tb testing.TB, m *measure) sample { return runGnvTAP(tb, m, "udp") }},
		{"tap-packet", "kernel app ↔ TAP overlay, AF_PACKET underlay", func(tb testing.TB, m *measure) sample { return runGnvTAP(tb, m, "packet") }},
		{"netstack-udp", "netstack ↔ netstack, kernel UDP underlay (rootless)", func(tb testing.TB, m *measure) sample { return runGnvNetstack(tb, m, "udp") }},
		{"netstack-tapu", "netstack ↔ netstack, TAP underlay", func(tb testing.TB, m *measure) sample { return runGnvNetstack(tb, m, "tap") }},
	}
}

// measure is what one sample is asked to do.
type measure struct {
	streams int
	dur     time.Duration
	profile string // file name prefix for a CPU profile, or ""
}

// sample is one measurement.
type sample struct {
	Path    string  `json:"path"`
	Streams int     `json:"streams"`
	Round   int     `json:"round"`
	Gbps    float64 `json:"gbit_per_s"`
	Bytes   float64 `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// GnvCPU is the CPU time (user+system, softirq work done in their
	// context included) of the gnv processes, or of this process for the
	// in-process paths (the TCP application included).
	GnvCPU float64 `json:"gnv_cpu_s"`
	// AppCPU is the CPU time of the iperf3 client and server.
	AppCPU float64 `json:"app_cpu_s"`
	// SoftirqCPU is the CPU time of the ksoftirqd threads.
	SoftirqCPU float64 `json:"ksoftirqd_cpu_s"`
	// HostCPU is the busy time of the whole machine (/proc/stat), which
	// includes unrelated load.
	HostCPU     float64   `json:"host_cpu_s"`
	Retransmits int       `json:"retransmits"`
	RTTms       []float64 `json:"rtt_ms,omitempty"`
}

// pathCPU is all CPU time spent on the path: gnv, the applications and
// ksoftirqd.
func (s sample) pathCPU() float64 { return s.GnvCPU + s.AppCPU + s.SoftirqCPU }

// BenchmarkTable measures TCP throughput across an overlay between two
// network namespaces joined by one veth pair, for kernel VXLAN and every
// gnv path, alternating each gnv sample with a VXLAN sample so that load
// from elsewhere hits both alike, with 1 and 4 parallel streams. Each
// sample records Gbit/s, the CPU time of gnv, of the applications and of
// ksoftirqd, and the RTT of pings sent during the load. It also measures
// the RSS of gnv up. See the flags above; the result goes to the log and,
// with -table.out, to Markdown and JSON files.
func BenchmarkTable(b *testing.B) {
	netns.RequireRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (apt-get install iperf3)")
	}
	all := tablePathList()
	base := all[0]
	var paths []benchPath
	for _, p := range all[1:] {
		if *tablePaths == "" || slices.Contains(strings.Split(*tablePaths, ","), p.Name) {
			paths = append(paths, p)
		}
	}
	var streams []int
	for _, s := range strings.Split(*tableStreams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			b.Fatalf("-table.streams %q: want counts like 1,4", *tableStreams)
		}
		streams = append(streams, n)
	}
	if *tableProfile != "" {
		if err := os.MkdirAll(*tableProfile, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	res := tableResult{
		Command: "go test -run '^$' -bench Table -benchtime 1x ./cmd/gnv/ -args " + strings.Join(tableArgs(), " "),
		Machine: machineInfo(),
		Started: time.Now().UTC().Format(time.RFC3339),
	}
	for i := 0; i < b.N; i++ {
		for round := 0; round < *tableSamples; round++ {
			for _, n := range streams {
				for _, p := range paths {
					// The baseline right before each gnv sample.
					for _, q := range []benchPath{base, p} {
						s := runSample(b, q, n, round, p.Name)
						if q.Name == base.Name {
							s.Path = base.Name + "/" + p.Name // paired with p
						}
						b.Logf("%-28s streams %d round %d: %6.2f Gbit/s, gnv CPU %.2f s, path CPU %.2f s", s.Path, n, round, s.Gbps, s.GnvCPU, s.pathCPU())
						res.Samples = append(res.Samples, s)
					}
				}
			}
		}
	}
	res.summarize(all, paths, streams)
	if *tableMemory {
		res.Memory = measureMemory(b)
	}
	md := res.markdown()
	b.Log("\n" + md)
	if *tableOut != "" {
		if err := os.WriteFile(*tableOut+".md", []byte(md), 0o644); err != nil {
			b.Fatal(err)
		}
		j, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*tableOut+".json", j, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range res.Rows {
		if r.Path != base.Name {
			b.ReportMetric(r.Ratio, fmt.Sprintf("%s-%dx/vxlan", r.Path, r.Streams))
		}
	}
}

// tableArgs are the -table.* flags as given, for the command line shown.
func tableArgs() []string {
	var args []string
	flag.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "table.") {
			args = append(args, "-"+f.Name, f.Value.String())
		}
	})
	return args
}

// runSample runs one sample of p in its own namespaces, torn down before it
// returns.
func runSample(b *testing.B, p benchPath, streams, round int, pair string) sample {
	sc := &scope{TB: b}
	defer sc.cleanup()
	m := &measure{streams: streams, dur: *tableTime}
	if *tableProfile != "" && p.Name != "kernel-vxlan" {
		m.profile = filepath.Join(*tableProfile, fmt.Sprintf("%s-%dx-%d", p.Name, streams, round))
	}
	s := p.run(sc, m)
	s.Path, s.Streams, s.Round = p.Name, streams, round
	return s
}

// scope is a testing.TB whose cleanups run when one sample ends rather
// than when the benchmark does.
type scope struct {
	testing.TB
	mu  sync.Mutex
	fns []func()
}

func (s *scope) Cleanup(f func()) {
	s.mu.Lock()
	s.fns = append(s.fns, f)
	s.mu.Unlock()
}

func (s *scope) TempDir() string {
	d, err := os.MkdirTemp("", "gnvtable")
	if err != nil {
		s.Fatal(err)
	}
	s.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (s *scope) cleanup() {
	s.mu.Lock()
	fns := s.fns
	s.fns = nil
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func runVXLAN(tb testing.TB, m *measure) sample {
	a, c := vxlanPair(tb)
	return iperfSample(tb, m, a, c, "10.3.3.2", nil)
}

func runGnvTAP(tb testing.TB, m *measure, underlay string) sample {
	a, c, pids := gnvTAPPair(tb, underlay)
	return iperfSample(tb, m, a, c, "10.9.0.2", pids)
}

// cpuMeter samples the CPU time of processes, of ksoftirqd and of the
// machine.
type cpuMeter struct {
	pids              []int
	procs, soft, host float64
}

func (m *cpuMeter) read() (procs, soft, host float64) {
	for _, p := range m.pids {
		procs += procCPU(p)
	}
	for _, p := range ksoftirqdPIDs() {
		soft += procCPU(p)
	}
	return procs, soft, hostBusy()
}

func (m *cpuMeter) start() { m.procs, m.soft, m.host = m.read() }

func (m *cpuMeter) stop(s *sample) {
	p, so, h := m.read()
	s.GnvCPU, s.SoftirqCPU, s.HostCPU = p-m.procs, so-m.soft, h-m.host
}

// clockTick is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTick = 100

// procCPU returns utime+stime of a process (all its threads) in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	// Fields after the command: state(0) ... utime(11) stime(12).
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clockTick
}

var (
	ksoftOnce sync.Once
	ksoftPIDs []int
)

func ksoftirqdPIDs() []int {
	ksoftOnce.Do(func() {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.HasPrefix(string(c), "ksoftirqd/") {
				ksoftPIDs = append(ksoftPIDs, pid)
			}
		}
	})
	return ksoftPIDs
}

// hostBusy returns the machine's busy CPU time (all but idle and iowait)
// in seconds.
func hostBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	busy := 0.0
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest is in user
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clockTick
}

// iperfSample runs iperf3 from a to an iperf3 server in srv at dst, with
// pings alongside, and measures the CPU time of pids (gnv).
func iperfSample(tb testing.TB, m *measure, a, srv *netns.NS, dst string, pids []int) sample {
	server := srv.Command("iperf3", "-s", "-1", "-B", dst, "-p", "5201")
	if err := server.Start(); err != nil {
		tb.Fatal(err)
	}
	defer server.Wait()
	secs := int(m.dur.Round(time.Second) / time.Second)
	secs = max(secs, 2)
	// The server needs a moment; the first connection attempt may fail.
	var client *exec.Cmd
	var out lockedBuf
	cpu := cpuMeter{pids: pids}
	var perf *exec.Cmd
	var pingOut lockedBuf
	var ping *exec.Cmd
	for try := 0; ; try++ {
		time.Sleep(100 * time.Millisecond)
		out = lockedBuf{}
		client = a.Command("iperf3", "-c", dst, "-p", "5201", "-t", strconv.Itoa(secs), "-P", strconv.Itoa(m.streams), "-J")
		client.Stdout = &out
		cpu.start()
		if err := client.Start(); err != nil {
			tb.Fatal(err)
		}
		// Pings and the profile start once the transfer runs.
		done := make(chan error, 1)
		go func() { done <- client.Wait() }()
		select {
		case err := <-done:
			if try < 20 {
				continue
			}
			server.Process.Kill()
			tb.Fatalf("iperf3: %v: %s", err, out.String())
		case <-time.After(time.Second):
		}
		if _, err := exec.LookPath("ping"); err == nil {
			ping = a.Command("ping", "-n", "-i", "0.01", "-w", strconv.Itoa(max(secs-2, 1)), dst)
			ping.Stdout = &pingOut
			_ = ping.Start()
		}
		if m.profile != "" && len(pids) > 0 {
			if _, err := exec.LookPath("perf"); err == nil {
				var ps []string
				for _, p := range pids {
					ps = append(ps, strconv.Itoa(p))
				}
				perf = exec.Command("perf", "record", "-F", "499", "-g", "-o", m.profile+".perf.data", "-p", strings.Join(ps, ","), "--", "sleep", strconv.Itoa(max(secs-2, 1)))
				perf.Stdout, perf.Stderr = io.Discard, io.Discard
				_ = perf.Start()
			}
		}
		err := <-done
		if err != nil {
			server.Process.Kill()
			tb.Fatalf("iperf3: %v: %s", err, out.String())
		}
		break
	}
	var s sample
	cpu.stop(&s)
	if ping != nil {
		ping.Wait()
		s.RTTms = parsePing(pingOut.String())
	}
	if perf != nil {
		perf.Wait()
	}
	var r struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
		tb.Fatalf("iperf3 output: %v", err)
	}
	e := r.End
	s.Gbps = e.SumReceived.BitsPerSecond / 1e9
	s.Bytes = e.SumReceived.Bytes
	s.Seconds = e.SumReceived.Seconds
	s.Retransmits = e.SumSent.Retransmits
	s.AppCPU = (e.CPU.HostTotal + e.CPU.RemoteTotal) / 100 * e.SumReceived.Seconds
	return s
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

func parsePing(out string) []float64 {
	var rtts []float64
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			rtts = append(rtts, v)
		}
	}
	return rtts
}

// runGnvNetstack runs netstack overlays in this process over kernel UDP
// underlays ("udp") or TAP underlays on a bridge with the veth ("tap"),
// and moves data for m.dur on m.streams TCP connections.
func runGnvNetstack(tb testing.TB, m *measure, underlay string) sample {
	tuns := netstackPair(tb, underlay)
	cpu := cpuMeter{pids: []int{os.Getpid()}}
	var s sample
	var rttErr error
	bytes, secs, err := timedTCP(tuns[0], tuns[1], m, &cpu, func(stop <-chan struct{}) {
		s.RTTms, rttErr = udpRTT(tuns[0], tuns[1], stop)
	})
	if err != nil {
		tb.Fatal(err)
	}
	if rttErr != nil {
		tb.Logf("RTT: %v", rttErr)
	}
	cpu.stop(&s)
	s.Bytes, s.Seconds = float64(bytes), secs
	s.Gbps = float64(bytes) * 8 / secs / 1e9
	return s
}

// timedTCP sends from client to server on m.streams connections for m.dur
// and returns the bytes the server received and the time they took. CPU
// time is measured from the first byte (cpu.start) and rtt runs meanwhile
// until its channel is closed.
func timedTCP(client, server *stack.Tunnel, m *measure, cpu *cpuMeter, rtt func(stop <-chan struct{})) (int64, float64, error) {
	ln, err := server.Listen("tcp4", "10.9.0.2:5201")
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	var received atomic.Int64
	var wg sync.WaitGroup
	var conns []net.Conn
	var connMu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connMu.Lock()
			conns = append(conns, c)
			connMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 256<<10)
				for {
					n, err := c.Read(buf)
					received.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), m.dur+30*time.Second)
	defer cancel()
	var senders []net.Conn
	for range m.streams {
		c, err := client.DialContext(ctx, "tcp4", "10.9.0.2:5201")
		if err != nil {
			return 0, 0, err
		}
		senders = append(senders, c)
	}
	stopSend := make(chan struct{})
	var swg sync.WaitGroup
	for _, c := range senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			buf := make([]byte, 256<<10)
			for {
				select {
				case <-stopSend:
					return
				default:
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	// Skip the slow start, as iperf3's totals do not (it is short).
	time.Sleep(200 * time.Millisecond)
	var prof *os.File
	if m.profile != "" {
		if prof, err = os.Create(m.profile + ".pprof"); err == nil {
			_ = pprof.StartCPUProfile(prof)
		}
	}
	r0 := received.Load()
	t0 := time.Now()
	cpu.start()
	stopRTT := make(chan struct{})
	rttDone := make(chan struct{})
	go func() {
		defer close(rttDone)
		time.Sleep(500 * time.Millisecond)
		rtt(stopRTT)
	}()
	time.Sleep(m.dur - 700*time.Millisecond)
	close(stopRTT)
	<-rttDone
	r1 := received.Load()
	secs := time.Since(t0).Seconds()
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	close(stopSend)
	for _, c := range senders {
		c.Close()
	}
	swg.Wait()
	ln.Close()
	connMu.Lock()
	for _, c := range conns {
		c.Close()
	}
	connMu.Unlock()
	wg.Wait()
	if r1 == r0 {
		return 0, 0, errors.New("no data received")
	}
	return r1 - r0, secs, nil
}

// udpRTT sends a small UDP datagram from client to an echo server on
// server every 10 ms until stop, and returns the round-trip times in ms.
func udpRTT(client, server *stack.Tunnel, stop <-chan struct{}) ([]float64, error) {
	pc, err := server.ListenPacket("udp4", "10.9.0.2:7")
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	go testutil.EchoPackets(pc)
	c, err := client.DialContext(context.Background(), "udp4", "10.9.0.2:7")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var rtts []float64
	msg := make([]byte, 56)
	buf := make([]byte, 2048)
	for seq := uint32(0); ; seq++ {
		select {
		case <-stop:
			return rtts, nil
		case <-time.After(10 * time.Millisecond):
		}
		msg[0], msg[1], msg[2], msg[3] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			return rtts, err
		}
		_ = c.SetReadDeadline(t.Add(time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break // lost: no sample, as ping
			}
			if n == len(msg) && string(buf[:4]) == string(msg[:4]) {
				rtts = append(rtts, float64(time.Since(t).Microseconds())/1000)
				break
			}
		}
	}
}

// memoryResult is the RSS of gnv up: all of it (VmRSS) and its anonymous
// part (RssAnon). The rest is file pages of the binary mapped from the page
// cache, shared and reclaimable, and more of them are mapped the more of
// the binary the page cache holds (fault-around).
type memoryResult struct {
	IdleKiB       int `json:"idle_rss_kib"`
	IdleAnonKiB   int `json:"idle_anon_kib"`
	MACs          int `json:"macs"`
	LearnedKB     int `json:"rss_after_macs_kib"`
	LearnedAnonKB int `json:"anon_after_macs_kib"`
	// Learned is how many entries the forwarding table held.
	Learned int `json:"learned"`
}

// measureMemory starts gnv up (TAP overlay, kernel UDP underlay) and reads
// its RSS when idle and after it learned 100k MACs from Geneve frames sent
// by its remote.
func measureMemory(b *testing.B) *memoryResult {
	sc := &scope{TB: b}
	defer sc.cleanup()
	const macs = 100000
	a, c := vethPair(sc, false)
	ctl := sc.TempDir() + "/ctl.sock"
	bin := gnvBinary(sc)
	cmd := a.Command(bin, "up", "--control", ctl, "--vni", "100", "--remote", "192.0.2.2", "--local", "192.0.2.1",
		"--addr", "10.9.0.1/24", "--max-addr", strconv.Itoa(2*macs))
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	for i := 0; i < 200 && !strings.Contains(out.String(), ": up, "); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	r := &memoryResult{MACs: macs}
	r.IdleKiB, r.IdleAnonKiB = procRSS(cmd.Process.Pid)
	// Frames from distinct source MACs, as the remote sends them: the
	// endpoint learns each before delivering it to the TAP device (where
	// the kernel drops the unknown EtherType).
	if err := c.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{192, 0, 2, 2}, Port: 6081}); err != nil {
			return err
		}
		to := &unix.SockaddrInet4{Addr: [4]byte{192, 0, 2, 1}, Port: 6081}
		pkt := make([]byte, 8+14+46)
		pkt[2], pkt[3] = 0x65, 0x58 // Ethernet
		pkt[4], pkt[5], pkt[6] = 0, 0, 100
		eth := pkt[8:]
		copy(eth[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		eth[12], eth[13] = 0x88, 0xb5 // local experimental EtherType
		for i := 0; i < macs; i++ {
			eth[6], eth[7], eth[8], eth[9], eth[10], eth[11] = 0x02, 0x42, byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			for {
				if err := unix.Sendto(fd, pkt, 0, to); err == nil {
					break
				} else if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
					return err
				}
				time.Sleep(time.Millisecond)
			}
			if i%2000 == 1999 {
				time.Sleep(2 * time.Millisecond) // let the receiver keep up
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	r.LearnedKB, r.LearnedAnonKB = procRSS(cmd.Process.Pid)
	if o, err := a.Run(bin, "fdb", "show", "--control", ctl); err == nil {
		r.Learned = strings.Count(o, "02:42:")
	}
	return r
}

// procRSS returns VmRSS and RssAnon of pid in KiB.
func procRSS(pid int) (rss, anon int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			rss, _ = strconv.Atoi(f[0])
		case "RssAnon":
			anon, _ = strconv.Atoi(f[0])
		}
	}
	return rss, anon
}

// tableResult is the whole run.
type tableResult struct {
	Command string        `json:"command"`
	Machine string        `json:"machine"`
	Started string        `json:"started"`
	Rows    []tableRow    `json:"rows"`
	Samples []sample      `json:"samples"`
	Memory  *memoryResult `json:"memory,omitempty"`
}

// tableRow summarizes one path at one stream count.
type tableRow struct {
	Path      string    `json:"path"`
	Desc      string    `json:"desc"`
	Streams   int       `json:"streams"`
	Gbps      []float64 `json:"gbit_per_s"`
	Mean      float64   `json:"mean_gbit_per_s"`
	BaseMean  float64   `json:"paired_vxlan_mean_gbit_per_s"`
	Ratio     float64   `json:"ratio_of_means"`
	GnvCPUGB  float64   `json:"gnv_cpu_s_per_gb"`
	PathCPUGB float64   `json:"path_cpu_s_per_gb"`
	HostCPUGB float64   `json:"host_cpu_s_per_gb"`
	RTTp50    float64   `json:"rtt_p50_ms"`
	RTTp99    float64   `json:"rtt_p99_ms"`
	Retrans   float64   `json:"mean_retransmits"`
}

func (r *tableResult) summarize(all, paths []benchPath, streams []int) {
	desc := map[string]string{}
	for _, p := range all {
		desc[p.Name] = p.Desc
	}
	row := func(name string, n int, match func(sample) bool) tableRow {
		t := tableRow{Path: name, Desc: desc[name], Streams: n}
		var bytes, gnv, path, host, retr float64
		var rtt []float64
		for _, s := range r.Samples {
			if s.Streams != n || !match(s) {
				continue
			}
			t.Gbps = append(t.Gbps, s.Gbps)
			bytes += s.Bytes
			gnv += s.GnvCPU
			path += s.pathCPU()
			host += s.HostCPU
			retr += float64(s.Retransmits)
			rtt = append(rtt, s.RTTms...)
		}
		if len(t.Gbps) == 0 {
			return t
		}
		t.Mean = mean(t.Gbps)
		gb := bytes / 1e9
		t.GnvCPUGB, t.PathCPUGB, t.HostCPUGB = gnv/gb, path/gb, host/gb
		t.Retrans = retr / float64(len(t.Gbps))
		t.RTTp50, t.RTTp99 = percentile(rtt, 50), percentile(rtt, 99)
		return t
	}
	for _, n := range streams {
		base := row("kernel-vxlan", n, func(s sample) bool { return strings.HasPrefix(s.Path, "kernel-vxlan") })
		base.BaseMean, base.Ratio = base.Mean, 1
		r.Rows = append(r.Rows, base)
		for _, p := range paths {
			t := row(p.Name, n, func(s sample) bool { return s.Path == p.Name })
			paired := row("", n, func(s sample) bool { return s.Path == "kernel-vxlan/"+p.Name })
			t.BaseMean = paired.Mean
			if paired.Mean > 0 {
				t.Ratio = t.Mean / paired.Mean
			}
			r.Rows = append(r.Rows, t)
		}
	}
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (r *tableResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s\n\nCommand: `%s`\n\n", r.Machine, r.Command)
	b.WriteString("| path | streams | Gbit/s per sample | mean | × VXLAN (paired) | gnv CPU s/GB | path CPU s/GB | RTT p50 / p99 ms | retransmits |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range r.Rows {
		var ss []string
		for _, g := range t.Gbps {
			ss = append(ss, fmt.Sprintf("%.2f", g))
		}
		gnv := fmt.Sprintf("%.2f", t.GnvCPUGB)
		if t.Path == "kernel-vxlan" {
			gnv = "–"
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %.2f | %.2f× (%.2f) | %s | %.2f | %.2f / %.2f | %.0f |\n",
			t.Desc, t.Streams, strings.Join(ss, " "), t.Mean, t.Ratio, t.BaseMean, gnv, t.PathCPUGB, t.RTTp50, t.RTTp99, t.Retrans)
	}
	b.WriteString("\ngnv CPU: the gnv processes (for netstack ↔ netstack, this process: gnv and the TCP application). " +
		"Path CPU: gnv, the iperf3 processes and ksoftirqd (softirq work done in a process's context counts in its time). " +
		"RTT: ping through the overlay during the load (netstack ↔ netstack: UDP echo). " +
		"× VXLAN: mean of the path over the mean of the kernel VXLAN samples run right before each of its samples.\n")
	if m := r.Memory; m != nil {
		mib := func(kib int) float64 { return float64(kib) / 1024 }
		fmt.Fprintf(&b, "\nRSS of gnv up (TAP overlay, kernel UDP underlay), all / anonymous: idle %.1f / %.1f MiB; "+
			"after learning %d MACs (%d in the table) %.1f / %.1f MiB. "+
			"The rest of RSS is the binary's pages mapped from the page cache (shared, reclaimable).\n",
			mib(m.IdleKiB), mib(m.IdleAnonKiB), m.MACs, m.Learned, mib(m.LearnedKB), mib(m.LearnedAnonKB))
	}
	return b.String()
}

// machineInfo describes the machine: CPU model, cores, kernel, Go.
func machineInfo() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	return fmt.Sprintf("%s, %d cores, Linux %s, %s", model, runtime.NumCPU(), unix.ByteSliceToString(u.Release[:]), runtime.Version())
}
