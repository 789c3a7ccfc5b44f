package forward_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/stack/forward"
	"github.com/gnv-project/gnv/stack/internal/proxytest"
	"github.com/gnv-project/gnv/testutil/leakcheck"
)

// TestMain runs every test under gVisor's reference leak checker.
func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

// Both the host and an overlay are Networks.
var (
	_ forward.Network = forward.Host{}
	_ forward.Network = (*stack.Net)(nil)
	_ forward.Network = (*stack.Tunnel)(nil)
)

func TestParseRule(t *testing.T) {
	good := []struct {
		in   string
		want forward.Rule
	}{
		{"tcp:127.0.0.1:8080=10.0.0.2:80", forward.Rule{Proto: "tcp", Listen: netip.MustParseAddrPort("127.0.0.1:8080"), Target: "10.0.0.2:80"}},
		{"udp:[::1]:5353=[fd00::2]:53", forward.Rule{Proto: "udp", Listen: netip.MustParseAddrPort("[::1]:5353"), Target: "[fd00::2]:53"}},
		{"tcp:10.0.0.1:0=localhost:8080", forward.Rule{Proto: "tcp", Listen: netip.MustParseAddrPort("10.0.0.1:0"), Target: "localhost:8080"}},
		{"tcp:[::ffff:127.0.0.1]:80=10.0.0.2:80", forward.Rule{Proto: "tcp", Listen: netip.MustParseAddrPort("127.0.0.1:80"), Target: "10.0.0.2:80"}},
	}
	for _, c := range good {
		got, err := forward.ParseRule(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if err == nil {
			back, err := forward.ParseRule(got.String())
			if err != nil || back != got {
				t.Errorf("ParseRule(%q.String()) = %+v, %v", c.in, back, err)
			}
		}
	}
	bad := []struct{ in, want string }{
		{"", "want PROTO:LISTEN_IP:PORT=TARGET_HOST:PORT"},
		{"sctp:127.0.0.1:80=10.0.0.2:80", `protocol "sctp": want tcp or udp`},
		{"tcp:127.0.0.1:80", "missing =TARGET"},
		{"tcp:=10.0.0.2:80", "listen address is empty"},
		{"tcp:::1:80=10.0.0.2:80", "IPv6 addresses go in brackets"},
		{"tcp:127.0.0.1:99999=10.0.0.2:80", `port "99999": want 0..65535`},
		{"tcp:localhost:80=10.0.0.2:80", `"localhost" is not an IP address`},
		{"tcp:8080=10.0.0.2:80", `listen address "8080": want IP:PORT`},
		{"tcp:127.0.0.1:80=", "target is empty"},
		{"tcp:127.0.0.1:80=fd00::2:80", "IPv6 addresses go in brackets"},
		{"tcp:127.0.0.1:80=10.0.0.2", `target "10.0.0.2": want HOST:PORT`},
		{"tcp:127.0.0.1:80=10.0.0.2:0", `port "0": want 1..65535`},
		{"tcp:127.0.0.1:80=:80", "missing host"},
		{"tcp:127.0.0.1:80=a=b:80", "is not a host name"},
	}
	for _, c := range bad {
		_, err := forward.ParseRule(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.in)) {
			t.Errorf("ParseRule(%q) error %v; want it to quote the rule and say %q", c.in, err, c.want)
		}
	}
	k, err := forward.ParseKey("udp:[::1]:5353=[fd00::2]:53")
	if err != nil || k.String() != "udp:[::1]:5353" {
		t.Errorf("ParseKey = %v, %v", k, err)
	}
	if _, err := forward.ParseKey("tcp:nope"); err == nil {
		t.Error("ParseKey(tcp:nope) succeeded")
	}
}

// hostClient is an HTTP client on the host that keeps no idle
// connections (so that goroutine counts settle).
func hostClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
}

// overlayClient is an HTTP client whose connections go through n.
func overlayClient(n forward.Network) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true, Proxy: nil}}
}

// addLoopback adds a rule to m from a port on the host's loopback to
// target, failing t if m refuses it.
func addLoopback(t testing.TB, m *forward.Manager, proto, target string) forward.Rule {
	t.Helper()
	r, err := m.Add(forward.Rule{Proto: proto, Listen: netip.MustParseAddrPort("127.0.0.1:0"), Target: target})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitStats waits up to 5 s for the counters of m's rule k to satisfy
// cond, and fails t with them, saying what, if they do not.
func waitStats(t *testing.T, m *forward.Manager, k forward.Key, what string, cond func(forward.Stats) bool) {
	t.Helper()
	if !proxytest.Wait(5*time.Second, func() bool { s, _ := m.Stats(k); return cond(s) }) {
		s, _ := m.Stats(k)
		t.Errorf("%s: stats %+v", what, s)
	}
}

// idle: no connection or session is open.
func idle(s forward.Stats) bool { return s.Active == 0 }

// twoEchoed: two clients' sessions, every byte echoed back.
func twoEchoed(s forward.Stats) bool {
	return s.Connections == 2 && s.ToTarget > 0 && s.ToTarget == s.FromTarget
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestTCPForward: a host port forwarded to an HTTP server inside the other
// overlay; downloads and an upload are checked byte for byte, and the
// counters add up.
func TestTCPForward(t *testing.T) {
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, "10.0.0.2:80")
	proxytest.ServeHTTP(t, ln, "b")
	before := runtime.NumGoroutine()

	m := forward.NewManager(forward.Host{}, a.Tunnel, forward.Options{})
	r := addLoopback(t, m, "tcp", "10.0.0.2:80")
	if r.Listen.Port() == 0 {
		t.Fatalf("Add returned %v: no port", r)
	}
	ctx := testCtx(t)
	base := "http://" + r.Listen.String()
	c := hostClient()
	var wg sync.WaitGroup
	for _, n := range []int{0, 1, 1 << 20, 3<<20 + 17} {
		wg.Go(func() {
			if err := proxytest.CheckBlob(ctx, c, base, n); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	up := proxytest.Blob(512<<10, 9)
	resp, err := c.Post(base+"/sum", "application/octet-stream", bytes.NewReader(up))
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(sum) != proxytest.Sum(up) {
		t.Errorf("upload: server saw %s, want %s", sum, proxytest.Sum(up))
	}
	waitStats(t, m, r.Key(), "connections still active", idle)
	s, ok := m.Stats(r.Key())
	if !ok || s.Connections != 5 || s.ToTarget < 512<<10 || s.FromTarget < 4<<20 || s.DialErrors != 0 {
		t.Errorf("stats %+v, %v", s, ok)
	}
	if l := m.List(); len(l) != 1 || l[0].Rule != r || l[0].Stats != s {
		t.Errorf("List = %+v", l)
	}
	m.Close()
	proxytest.WaitGoroutines(t, before)
}

// TestTCPExpose: an HTTP server on the host's loopback, exposed on one
// overlay's address, fetched from the other overlay.
func TestTCPExpose(t *testing.T) {
	a, b := proxytest.Overlays(t)
	srv := httptest.NewServer(proxytest.Handler("host"))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")
	before := runtime.NumGoroutine()

	m := forward.NewManager(b.Tunnel, forward.Host{}, forward.Options{})
	defer m.Close()
	r, err := forward.ParseRule("tcp:10.0.0.2:8080=" + target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add(r); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	c := overlayClient(a.Tunnel)
	body, err := proxytest.Get(ctx, c, "http://10.0.0.2:8080/hello")
	if err != nil || string(body) != "hello from host\n" {
		t.Fatalf("GET /hello: %q, %v", body, err)
	}
	if err := proxytest.CheckBlob(ctx, c, "http://10.0.0.2:8080", 2<<20+5); err != nil {
		t.Error(err)
	}
	// The same through IPv6 on the overlay.
	r6, err := m.Add(forward.Rule{Proto: "tcp", Listen: netip.MustParseAddrPort("[fd00::2]:8080"), Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if err := proxytest.CheckBlob(ctx, c, "http://[fd00::2]:8080", 100000); err != nil {
		t.Error(err)
	}
	if err := m.Remove(r6.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Tunnel.DialContext(ctx, "tcp", "[fd00::2]:8080"); err == nil {
		t.Error("dial after Remove succeeded")
	}
	m.Close()
	srv.Client().CloseIdleConnections()
	srv.Close()
	proxytest.WaitGoroutines(t, before)
}

// TestHalfClose: the client shuts down its sending side; the server (in
// the overlay) reads to EOF, then answers on the still-open other
// direction.
func TestHalfClose(t *testing.T) {
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, "10.0.0.2:9")
	proxytest.ServeConns(t, ln, func(c net.Conn) {
		got, _ := io.ReadAll(c)
		io.WriteString(c, proxytest.Sum(got))
	})
	m := forward.NewManager(forward.Host{}, a.Tunnel, forward.Options{})
	defer m.Close()
	r := addLoopback(t, m, "tcp", "10.0.0.2:9")
	c, err := net.Dial("tcp", r.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := proxytest.Blob(300000, 4)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != proxytest.Sum(msg) {
		t.Errorf("reply %q, %v; want %s", got, err, proxytest.Sum(msg))
	}
}

// TestTCPDialError: a forward to a closed overlay port resets the client
// and counts a dial error.
func TestTCPDialError(t *testing.T) {
	a, _ := proxytest.Overlays(t)
	m := forward.NewManager(forward.Host{}, a.Tunnel, forward.Options{})
	defer m.Close()
	r := addLoopback(t, m, "tcp", "10.0.0.2:81")
	c, err := net.Dial("tcp", r.Listen.String())
	if err == nil { // else the reset came in before connect returned
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
			t.Errorf("read %d, %v: want an error", n, err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	waitStats(t, m, r.Key(), "after the failed dial", func(s forward.Stats) bool { return s.DialErrors == 1 && s.Connections == 1 })
}

// udpPair runs count echoes on each of two clients at once and checks
// that each gets its own datagrams back.
func udpPair(t *testing.T, dial func() (net.Conn, error), count int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range 2 {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Go(func() {
			if err := proxytest.EchoUDP(c, fmt.Sprintf("client%d", i), count); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestUDPForward: two host clients through one forward to an echo server
// in the overlay, concurrently; each gets only its own replies; the idle
// sessions are reaped.
func TestUDPForward(t *testing.T) {
	a, b := proxytest.Overlays(t)
	pc := proxytest.ListenPacket(t, b.Tunnel, "10.0.0.2:7")
	proxytest.ServeUDPEcho(t, pc)
	before := runtime.NumGoroutine()
	m := forward.NewManager(forward.Host{}, a.Tunnel, forward.Options{UDPIdleTimeout: time.Second})
	r := addLoopback(t, m, "udp", "10.0.0.2:7")
	udpPair(t, func() (net.Conn, error) { return net.Dial("udp", r.Listen.String()) }, 50)
	// The last reply's bytes are counted just after it is sent.
	waitStats(t, m, r.Key(), "after two clients", twoEchoed)
	waitStats(t, m, r.Key(), "idle sessions not reaped", idle)
	// A new datagram from a reaped client opens a new session.
	udpPair(t, func() (net.Conn, error) { return net.Dial("udp", r.Listen.String()) }, 3)
	if s, _ := m.Stats(r.Key()); s.Connections != 4 {
		t.Errorf("stats %+v, want 4 sessions", s)
	}
	m.Close()
	proxytest.WaitGoroutines(t, before)
}

// TestUDPExpose: a UDP echo server on the host's loopback, exposed on an
// overlay address, used by two overlay clients at once.
func TestUDPExpose(t *testing.T) {
	a, b := proxytest.Overlays(t)
	pc := proxytest.ListenPacket(t, nil, "127.0.0.1:0")
	proxytest.ServeUDPEcho(t, pc)
	m := forward.NewManager(b.Tunnel, forward.Host{}, forward.Options{UDPIdleTimeout: time.Second})
	defer m.Close()
	r, err := m.Add(forward.Rule{Proto: "udp", Listen: netip.MustParseAddrPort("10.0.0.2:7000"), Target: pc.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	udpPair(t, func() (net.Conn, error) { return a.Tunnel.DialContext(ctx, "udp", "10.0.0.2:7000") }, 50)
	waitStats(t, m, r.Key(), "after two clients", twoEchoed)
	waitStats(t, m, r.Key(), "idle sessions not reaped", idle)
}

// TestUDPSessionLimit: past MaxUDPSessions, datagrams from new clients
// are dropped and counted until a session ends.
func TestUDPSessionLimit(t *testing.T) {
	pc := proxytest.ListenPacket(t, nil, "127.0.0.1:0")
	proxytest.ServeUDPEcho(t, pc)
	m := forward.NewManager(forward.Host{}, forward.Host{}, forward.Options{MaxUDPSessions: 1, UDPIdleTimeout: 2 * time.Second})
	defer m.Close()
	r := addLoopback(t, m, "udp", pc.LocalAddr().String())
	c1, _ := net.Dial("udp", r.Listen.String())
	defer c1.Close()
	c2, _ := net.Dial("udp", r.Listen.String())
	defer c2.Close()
	if err := proxytest.EchoUDP(c1, "first", 1); err != nil {
		t.Fatal(err)
	}
	c2.Write([]byte("second"))
	c2.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c2.Read(make([]byte, 100)); err == nil {
		t.Error("a second session was let in")
	}
	// The rule's reader may not have reached the datagram yet: wait for
	// its count rather than read it once.
	waitStats(t, m, r.Key(), "second client's datagram", func(s forward.Stats) bool { return s.Dropped == 1 && s.Connections == 1 })
	// Once the first is idle, the second gets in.
	if !proxytest.Wait(5*time.Second, func() bool { s, _ := m.Stats(r.Key()); return s.Active == 0 }) {
		t.Fatal("session not reaped")
	}
	if err := proxytest.EchoUDP(c2, "second", 1); err != nil {
		t.Error(err)
	}
}

// slowFirstDial is the host network with a first dial that waits for
// release: a target whose name takes long to resolve, say.
type slowFirstDial struct {
	forward.Host
	once    sync.Once
	release chan struct{}
}

func (d *slowFirstDial) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	first := false
	d.once.Do(func() { first = true })
	if first {
		select {
		case <-d.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return d.Host.DialContext(ctx, network, address)
}

// failingDial is a network whose dials all fail.
type failingDial struct{ forward.Host }

func (failingDial) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no route to the target")
}

// TestUDPSlowDial: a new UDP client's dial runs on its own, so one that
// takes long holds up no other client; the datagrams its client sent
// meanwhile reach the target, in order, once it is done. A dial that
// fails ends the session and counts what waited as dropped.
func TestUDPSlowDial(t *testing.T) {
	pc := proxytest.ListenPacket(t, nil, "127.0.0.1:0")
	proxytest.ServeUDPEcho(t, pc)
	dial := &slowFirstDial{release: make(chan struct{})}
	m := forward.NewManager(forward.Host{}, dial, forward.Options{DialTimeout: 30 * time.Second})
	defer m.Close()
	r := addLoopback(t, m, "udp", pc.LocalAddr().String())
	slow, err := net.Dial("udp", r.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	for i := range 3 {
		fmt.Fprintf(slow, "queued %d", i)
	}
	waitStats(t, m, r.Key(), "the first client's session dialling", func(s forward.Stats) bool { return s.Active == 1 })
	fast, err := net.Dial("udp", r.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	if err := proxytest.EchoUDP(fast, "fast", 3); err != nil {
		t.Fatalf("a client behind a slow dial: %v", err)
	}
	close(dial.release)
	buf := make([]byte, 100)
	for i := range 3 {
		_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := slow.Read(buf)
		if want := fmt.Sprintf("queued %d", i); err != nil || string(buf[:n]) != want {
			t.Fatalf("the slow client's echo %d: %q, %v; want %q", i, buf[:n], err, want)
		}
	}
	if err := proxytest.EchoUDP(slow, "slow", 2); err != nil {
		t.Fatal(err)
	}
	waitStats(t, m, r.Key(), "two sessions", func(s forward.Stats) bool { return s.Connections == 2 && s.Active == 2 && s.DialErrors == 0 })

	// A target nobody can dial: the session ends, its datagrams dropped.
	bad := forward.NewManager(forward.Host{}, failingDial{}, forward.Options{})
	defer bad.Close()
	rb := addLoopback(t, bad, "udp", "192.0.2.1:9")
	c, err := net.Dial("udp", rb.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("lost"))
	waitStats(t, bad, rb.Key(), "the failed dial", func(s forward.Stats) bool {
		return s.DialErrors == 1 && s.Dropped == 1 && s.Active == 0 && s.Connections == 0
	})
}

// TestRemoveClosesConnections: removing a rule closes its listener and
// the connections it carries, and its goroutines end.
func TestRemoveClosesConnections(t *testing.T) {
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, "10.0.0.2:22")
	held := make(chan struct{}, 1)
	proxytest.ServeConns(t, ln, func(c net.Conn) {
		io.WriteString(c, "banner\n")
		held <- struct{}{}
		io.Copy(io.Discard, c)
	})
	before := runtime.NumGoroutine()
	m := forward.NewManager(forward.Host{}, a.Tunnel, forward.Options{})
	r := addLoopback(t, m, "tcp", "10.0.0.2:22")
	u := addLoopback(t, m, "udp", "10.0.0.2:53")
	c, err := net.Dial("tcp", r.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 7)
	if _, err := io.ReadFull(c, line); err != nil || string(line) != "banner\n" {
		t.Fatalf("banner %q, %v", line, err)
	}
	<-held
	if s, _ := m.Stats(r.Key()); s.Active != 1 {
		t.Errorf("stats %+v, want 1 active", s)
	}
	if err := m.Remove(r.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(line); err == nil {
		t.Error("connection still open after Remove")
	}
	if _, err := net.Dial("tcp", r.Listen.String()); err == nil {
		t.Error("still listening after Remove")
	}
	if err := m.Remove(r.Key()); !errors.Is(err, forward.ErrNoRule) {
		t.Errorf("second Remove: %v", err)
	}
	if l := m.List(); len(l) != 1 || l[0].Rule != u {
		t.Errorf("List = %+v", l)
	}
	m.Close()
	c.Close()
	proxytest.WaitGoroutines(t, before)
}

func TestAddErrors(t *testing.T) {
	m := forward.NewManager(forward.Host{}, forward.Host{}, forward.Options{})
	r := addLoopback(t, m, "tcp", "127.0.0.1:9")
	if _, err := m.Add(r); !errors.Is(err, forward.ErrRuleExists) {
		t.Errorf("duplicate: %v", err)
	}
	for _, bad := range []forward.Rule{
		{Proto: "sctp", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Target: "127.0.0.1:9"},
		{Proto: "tcp", Target: "127.0.0.1:9"},
		{Proto: "tcp", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Target: "nope"},
	} {
		if _, err := m.Add(bad); err == nil {
			t.Errorf("Add(%+v) succeeded", bad)
		}
	}
	m.Close()
	if _, err := m.Add(forward.Rule{Proto: "udp", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Target: "127.0.0.1:9"}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
}
