package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gnv-project/gnv/testutil/netns"
)

// These tests run the gnv binary in network namespaces joined by veth
// pairs, with kernel programs and kernel sockets on the overlay. They need
// root (CI runs them as root).

var (
	buildOnce sync.Once
	gnvBin    string
	buildErr  error
)

// gnvBinary builds the gnv command once per test binary.
func gnvBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gnv-bin")
		if err != nil {
			buildErr = err
			return
		}
		gnvBin = filepath.Join(dir, "gnv")
		out, err := exec.Command("go", "build", "-o", gnvBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return gnvBin
}

// gnvUp runs "gnv up args..." inside ns until the test ends, and waits for
// its start-up lines (one per interface).
type upProc struct {
	cmd    *exec.Cmd
	out    *lockedBuf
	stderr *lockedBuf
	ctl    string
	stop   func() // SIGINT and wait; also run at the end of the test
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func gnvUp(t *testing.T, ns *netns.NS, ifaces int, args ...string) *upProc {
	t.Helper()
	bin := gnvBinary(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	args = append([]string{"up", "--control", ctl}, args...)
	cmd := ns.Command(bin, args...)
	p := &upProc{cmd: cmd, out: &lockedBuf{}, stderr: &lockedBuf{}, ctl: ctl}
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(p.out, pw)
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-exited:
				if err != nil && !t.Failed() {
					t.Errorf("gnv up in %s exited with %v after SIGINT\nstderr: %s", ns.Name, err, p.stderr.String())
				}
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("gnv up in %s did not stop within 15 s of SIGINT", ns.Name)
			}
		})
	}
	t.Cleanup(p.stop)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(20 * time.Second)
	for n := 0; n < ifaces; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("gnv up %v in %s exited before it was up\nstdout: %s\nstderr: %s", args, ns.Name, p.out.String(), p.stderr.String())
			}
			if strings.Contains(l, ": up, ") {
				t.Logf("%s: %s", ns.Name, l)
				n++
			}
		case <-deadline:
			t.Fatalf("gnv up %v in %s: no start-up line after 20 s\nstderr: %s", args, ns.Name, p.stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return p
}

// ping runs the kernel's ping inside ns.
func ping(t *testing.T, ns *netns.NS, dst string) {
	t.Helper()
	var last string
	for try := 0; try < 3; try++ {
		out, err := ns.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", dst)
		if err == nil && strings.Contains(out, " 0% packet loss") {
			return
		}
		last = out
	}
	t.Fatalf("ping %s from %s: %s", dst, ns.Name, last)
}

// kernelTCP moves size random bytes from a kernel TCP socket in a to a
// kernel TCP socket in b (at dst:port) and checks them.
func kernelTCP(t *testing.T, a, b *netns.NS, dst string, size int) float64 {
	t.Helper()
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(dst, "5201"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, size)
	rand.Read(data)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var c net.Conn
	if err := a.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(context.Background(), "tcp", net.JoinHostPort(dst, "5201"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	recv := <-got
	elapsed := time.Since(start)
	if !bytes.Equal(recv, data) {
		t.Fatalf("TCP to %s: received %d bytes, sent %d, contents equal %v", dst, len(recv), len(data), bytes.Equal(recv, data))
	}
	return float64(size) * 8 / elapsed.Seconds() / 1e6
}

// pair makes namespaces a and b joined by veth va <-> vb.
func pair(t *testing.T) (a, b *netns.NS) {
	a, b = netns.New(t, "gnv-a"), netns.New(t, "gnv-b")
	netns.Veth(t, a, "va", b, "vb")
	return a, b
}

// underlaySide configures one end for an underlay kind and returns the
// gnv up flags for it. For udp the kernel holds the address; for packet
// the veth has no address and gnv's netstack owns it; for tap the veth is
// a port of a bridge that gnv's TAP device joins, and netstack owns the
// address.
func underlaySide(t *testing.T, ns *netns.NS, dev, kind, addr string, bits int) []string {
	t.Helper()
	cidr := fmt.Sprintf("%s/%d", addr, bits)
	switch kind {
	case "udp":
		args := []string{"ip", "addr", "add", cidr, "dev", dev}
		if strings.Contains(addr, ":") {
			args = append(args, "nodad")
		}
		ns.MustRun(t, args[0], args[1:]...)
		return []string{"--underlay", "udp", "--local", addr}
	case "packet":
		ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")
		return []string{"--underlay", "packet", "--dev", dev, "--underlay-addr", cidr}
	case "tap":
		netns.Bridge(t, ns, "br0", dev)
		return []string{"--underlay", "tap", "--dev", "br0", "--underlay-addr", cidr}
	}
	t.Fatalf("underlay %q", kind)
	return nil
}

// TestNetnsUnderlayOverlayMatrix runs gnv <-> gnv across a veth pair for
// each underlay pairing, L2 on TAP and L3 on TUN, over IPv4 and IPv6
// underlays: kernel ping (IPv4 and IPv6 overlay) and a kernel TCP transfer
// with its content checked.
func TestNetnsUnderlayOverlayMatrix(t *testing.T) {
	netns.RequireRoot(t)
	sizes := 16 << 20
	if testing.Short() {
		sizes = 2 << 20
	}
	for _, ul := range [][2]string{{"udp", "udp"}, {"packet", "packet"}, {"tap", "tap"}, {"udp", "packet"}, {"tap", "udp"}, {"tap", "packet"}} {
		for _, mode := range []string{"l2", "l3"} {
			for _, fam := range []int{4, 6} {
				name := fmt.Sprintf("%s-%s/%s/ipv%d", ul[0], ul[1], mode, fam)
				t.Run(name, func(t *testing.T) {
					a, b := pair(t)
					ipA, ipB, bits := "192.0.2.1", "192.0.2.2", 24
					if fam == 6 {
						ipA, ipB, bits = "2001:db8::1", "2001:db8::2", 64
					}
					argsA := underlaySide(t, a, "va", ul[0], ipA, bits)
					argsB := underlaySide(t, b, "vb", ul[1], ipB, bits)
					common := []string{"--vni", "4711", "--mode", mode, "--addr", "10.9.0.%d/24", "--addr", "fd09::%d/64"}
					mk := func(side []string, remote string, n int) []string {
						args := append([]string{}, side...)
						for _, c := range common {
							if strings.Contains(c, "%d") {
								c = fmt.Sprintf(c, n)
							}
							args = append(args, c)
						}
						return append(args, "--remote", remote, "--name", "gnv0")
					}
					gnvUp(t, a, 1, mk(argsA, ipB, 1)...)
					gnvUp(t, b, 1, mk(argsB, ipA, 2)...)
					ping(t, a, "10.9.0.2")
					ping(t, a, "fd09::2")
					mbps := kernelTCP(t, a, b, "10.9.0.2", sizes)
					t.Logf("%s: TCP %.0f Mbit/s", name, mbps)
					kernelTCP(t, b, a, "fd09::1", sizes/4)
				})
			}
		}
	}
}

// TestNetnsMulticast runs three gnv hosts on a bridge with a multicast
// underlay, over kernel UDP sockets and over AF_PACKET and TAP netstack
// underlays (whose IGMP/MLD joins netstack sends itself; the TAP devices
// sit on bridges with multicast snooping on): every pair pings through the
// group.
func TestNetnsMulticast(t *testing.T) {
	netns.RequireRoot(t)
	for _, kind := range []string{"udp", "packet", "tap"} {
		for _, fam := range []int{4, 6} {
			t.Run(fmt.Sprintf("%s/ipv%d", kind, fam), func(t *testing.T) {
				br := netns.New(t, "gnv-br")
				br.MustRun(t, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
				br.MustRun(t, "ip", "link", "set", "br0", "up")
				var hosts []*netns.NS
				for i := 1; i <= 3; i++ {
					h := netns.New(t, fmt.Sprintf("gnv-h%d", i))
					port := fmt.Sprintf("p%d", i)
					netns.Veth(t, h, "eth0", br, port)
					br.MustRun(t, "ip", "link", "set", port, "master", "br0")
					addr, bits, group := fmt.Sprintf("192.0.2.%d", i), 24, "239.1.2.3"
					if fam == 6 {
						addr, bits, group = fmt.Sprintf("2001:db8::%d", i), 64, "ff15::1:2:3"
					}
					args := underlaySide(t, h, "eth0", kind, addr, bits)
					if kind == "udp" {
						args = append(args, "--dev", "eth0")
					}
					gnvUp(t, h, 1, append(args, "--vni", "99", "--group", group,
						"--addr", fmt.Sprintf("10.8.0.%d/24", i), "--name", "gnv0")...)
					hosts = append(hosts, h)
				}
				for i, h := range hosts {
					for j := range hosts {
						if i != j {
							ping(t, h, fmt.Sprintf("10.8.0.%d", j+1))
						}
					}
				}
			})
		}
	}
}

// TestNetnsPcapDecodes captures gnv's underlay with its own --pcap and with
// tcpdump on the peer: tshark decodes both with zero malformed packets.
func TestNetnsPcapDecodes(t *testing.T) {
	netns.RequireRoot(t)
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("needs tshark (apt-get install tshark); CI installs it")
	}
	for _, kind := range []string{"udp", "packet"} {
		t.Run(kind, func(t *testing.T) {
			a, b := pair(t)
			dir := t.TempDir()
			pcap := filepath.Join(dir, "gnv.pcap")
			argsA := underlaySide(t, a, "va", kind, "192.0.2.1", 24)
			argsB := underlaySide(t, b, "vb", "udp", "192.0.2.2", 24)
			upA := gnvUp(t, a, 1, append(argsA, "--vni", "321", "--remote", "192.0.2.2", "--addr", "10.9.0.1/24", "--pcap", pcap)...)
			gnvUp(t, b, 1, append(argsB, "--vni", "321", "--remote", "192.0.2.1", "--addr", "10.9.0.2/24")...)
			ping(t, a, "10.9.0.2")
			kernelTCP(t, a, b, "10.9.0.2", 1<<20)
			// Stop A: the capture is complete once gnv has closed it.
			upA.stop()
			checkCapture := func() {
				out, err := exec.Command(tshark, "-r", pcap, "-Y", "_ws.malformed").Output()
				if err != nil {
					t.Fatalf("tshark: %v", err)
				}
				if n := strings.Count(string(out), "\n"); n != 0 {
					t.Errorf("%d malformed packets in gnv's capture", n)
				}
				out, err = exec.Command(tshark, "-r", pcap, "-Y", "geneve", "-T", "fields", "-e", "geneve.vni").Output()
				if err != nil {
					t.Fatal(err)
				}
				vnis := strings.Fields(string(out))
				if len(vnis) < 10 {
					t.Fatalf("only %d Geneve packets in gnv's capture", len(vnis))
				}
				for _, v := range vnis {
					if v != "0x000141" && v != "321" {
						t.Fatalf("VNI %s in capture, want 321", v)
					}
				}
			}
			checkCapture()
		})
	}
}

// TestNetnsVLANAndTwoVNIs runs one gnv up per side with two interfaces
// (VNIs 10 and 20) on one socket from a config file; both reach their
// peers, and an 802.1Q-tagged frame written to the first TAP comes
// out of the peer's TAP still tagged (L2 tunnels pass VLAN tags untouched).
func TestNetnsVLANAndTwoVNIs(t *testing.T) {
	netns.RequireRoot(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump (apt-get install tcpdump); CI installs it")
	}
	a, b := pair(t)
	dir := t.TempDir()
	for i, ns := range []*netns.NS{a, b} {
		dev := []string{"va", "vb"}[i]
		local, remote := fmt.Sprintf("192.0.2.%d", i+1), fmt.Sprintf("192.0.2.%d", 2-i)
		ns.MustRun(t, "ip", "addr", "add", local+"/24", "dev", dev)
		conf := filepath.Join(dir, fmt.Sprintf("gnv%d.conf", i))
		body := fmt.Sprintf("underlay = udp\nlocal = %s\n[gnv10]\nvni = 10\nremote = %s\naddr = 10.10.0.%d/24\n[gnv20]\nvni = 20\nmode = l3\nremote = %s\naddr = 10.20.0.%d/24\n",
			local, remote, i+1, remote, i+1)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		gnvUp(t, ns, 2, "--config", conf)
	}
	ping(t, a, "10.10.0.2")
	ping(t, a, "10.20.0.2")
	// A tagged frame, VLAN 42, from A's TAP to B's.
	var dstMAC net.HardwareAddr
	if err := b.Do(func() error {
		ifi, err := net.InterfaceByName("gnv10")
		if err == nil {
			dstMAC = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dump := b.Command("tcpdump", "-i", "gnv10", "-n", "-e", "-c", "1", "-l", "vlan 42")
	var dumpOut lockedBuf
	dump.Stdout, dump.Stderr = &dumpOut, &dumpOut
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	defer dump.Process.Kill()
	time.Sleep(500 * time.Millisecond)
	frame := append([]byte{}, dstMAC...)
	frame = append(frame, 0x02, 0, 0, 0, 0x42, 0x42, 0x81, 0x00, 0x00, 42, 0x88, 0xb5) // src, 802.1Q, VLAN 42, local experimental type
	frame = append(frame, []byte("vlan pass-through test payload, padded to the minimum")...)
	if err := a.Do(func() error { return sendRawFrame("gnv10", frame) }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- dump.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the tagged frame did not arrive on the peer's TAP; tcpdump said:\n%s", dumpOut.String())
	}
	if out := dumpOut.String(); !strings.Contains(out, "vlan 42") || !strings.Contains(out, "0x88b5") {
		t.Errorf("tcpdump on the peer:\n%s", out)
	}
}
