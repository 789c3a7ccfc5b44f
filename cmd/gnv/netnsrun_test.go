package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
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

// The helpers of the namespace tests (netns_test.go, ovs_test.go,
// bench_netns_test.go): building and running the gnv binary, namespaces,
// underlay set-up, kernel traffic.

var (
	buildOnce sync.Once
	gnvBin    string
	buildErr  error
)

// gnvBinary builds the gnv command once per test binary, as the README's
// "Building gnv" section does.
func gnvBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gnv-bin")
		if err != nil {
			buildErr = err
			return
		}
		gnvBin = filepath.Join(dir, "gnv")
		// The README's release build: what the tests run is what users
		// are told to install.
		cmd := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", gnvBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
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
	return gnvUpAs(t, ns, nil, filepath.Join(t.TempDir(), "ctl.sock"), ifaces, args...)
}

// gnvUpAs is gnvUp with the command prefixed by wrap (setpriv, to drop
// privileges) and its control socket at ctl.
func gnvUpAs(t *testing.T, ns *netns.NS, wrap []string, ctl string, ifaces int, args ...string) *upProc {
	t.Helper()
	bin := gnvBinary(t)
	args = append([]string{"up", "--control", ctl}, args...)
	cmd := ns.Command(bin, args...)
	if len(wrap) > 0 {
		cmd = ns.Command(wrap[0], append(append(wrap[1:len(wrap):len(wrap)], bin), args...)...)
	}
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
	netns.RequireTools(t, "ping")
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
		netns.RequireTools(t, "sysctl")
		ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")
		return []string{"--underlay", "packet", "--dev", dev, "--underlay-addr", cidr}
	case "tap":
		netns.Bridge(t, ns, "br0", dev)
		return []string{"--underlay", "tap", "--dev", "br0", "--underlay-addr", cidr}
	}
	t.Fatalf("underlay %q", kind)
	return nil
}

// checkSocketCounters checks that a gnv up that carried traffic on an
// underlay of kind (udp, packet or tap) counts it at the socket: the
// transport's datagrams both ways, and the underlay NIC's frames for a
// netstack underlay.
func checkSocketCounters(t *testing.T, p *upProc, kind string) {
	t.Helper()
	var out bytes.Buffer
	if err := ctlRequest(&out, p.ctl, []string{"stats", "-", "json"}); err != nil {
		t.Fatal(err)
	}
	var st statsReply
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	s := st.Socket
	if s.Kind != kind || s.RxDatagrams == 0 || s.TxDatagrams == 0 {
		t.Errorf("%s underlay: socket counters %+v", kind, s)
	}
	if (kind == "udp") != (s.RxBytes != nil) {
		t.Errorf("%s underlay: rx_bytes %v", kind, s.RxBytes)
	}
	if kind != "udp" && (s.NIC == nil || s.NIC.RxFrames == 0 || s.NIC.TxFrames == 0) {
		t.Errorf("%s underlay: NIC counters %+v", kind, s.NIC)
	}
}
