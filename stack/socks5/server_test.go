package socks5_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gnv-project/gnv/stack/internal/proxytest"
	"github.com/gnv-project/gnv/stack/socks5"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/leakcheck"
)

// TestMain runs every test under gVisor's reference leak checker.
func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

// fixture is a SOCKS5 server on the host's loopback whose destinations are
// in overlay a; overlay b runs the test HTTP server (10.0.0.2:80 and
// [fd00::2]:80) and a UDP echo server (10.0.0.2:7 and [fd00::2]:7).
type fixture struct {
	a, b  *testutil.Host
	srv   *socks5.Server
	proxy string
}

func newFixture(t *testing.T, opts socks5.Options) *fixture {
	t.Helper()
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, ":80")
	proxytest.ServeHTTP(t, ln, "b")
	for _, addr := range []string{"10.0.0.2:7", "[fd00::2]:7"} {
		pc := proxytest.ListenPacket(t, b.Tunnel, addr)
		proxytest.ServeUDPEcho(t, pc)
	}
	f := &fixture{a: a, b: b, srv: socks5.New(a.Tunnel, opts)}
	pl := proxytest.Listen(t, nil, "127.0.0.1:0")
	f.proxy = pl.Addr().String()
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(pl) }()
	t.Cleanup(func() {
		f.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// dial runs a SOCKS5 handshake and request on a new connection to proxy.
// auth, if set, is a username and password.
func dial(proxy string, cmd socks5.Command, dst socks5.Addr, auth ...string) (net.Conn, socks5.Reply, socks5.Addr, error) {
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		return nil, 0, socks5.Addr{}, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fail := func(err error) (net.Conn, socks5.Reply, socks5.Addr, error) {
		c.Close()
		return nil, 0, socks5.Addr{}, err
	}
	method := byte(socks5.MethodNoAuth)
	if len(auth) == 2 {
		method = socks5.MethodUserPass
	}
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return fail(err)
	}
	var m [2]byte
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return fail(err)
	}
	if m[1] != method {
		return fail(fmt.Errorf("server chose method %d", m[1]))
	}
	if method == socks5.MethodUserPass {
		msg := append([]byte{1, byte(len(auth[0]))}, auth[0]...)
		msg = append(append(msg, byte(len(auth[1]))), auth[1]...)
		if _, err := c.Write(msg); err != nil {
			return fail(err)
		}
		if _, err := io.ReadFull(r, m[:]); err != nil {
			return fail(err)
		}
		if m[1] != 0 {
			return fail(fmt.Errorf("authentication status %d", m[1]))
		}
	}
	req, err := socks5.Request{Command: cmd, Addr: dst}.AppendBinary(nil)
	if err != nil {
		return fail(err)
	}
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fail(err)
	}
	// The bound address has the request's layout after VER, REP, RSV.
	q, err := socks5.ReadRequest(io.MultiReader(bytes.NewReader([]byte{5, 0, 0}), r))
	if err != nil {
		return fail(err)
	}
	c.SetDeadline(time.Time{})
	if r.Buffered() > 0 {
		return fail(errors.New("server sent data after the reply"))
	}
	return c, socks5.Reply(h[1]), q.Addr, nil
}

func addr(s string) socks5.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		host, port, _ := net.SplitHostPort(s)
		var p uint16
		fmt.Sscan(port, &p)
		return socks5.Addr{Name: host, Port: p}
	}
	return socks5.AddrFromAddrPort(ap)
}

// TestConnect: CONNECT to the overlay's HTTP server, by IPv4, IPv6 and a
// name that is an IP literal, content-checked; the bound address is the
// overlay socket's.
func TestConnect(t *testing.T) {
	f := newFixture(t, socks5.Options{})
	for _, dst := range []string{"10.0.0.2:80", "[fd00::2]:80", "fd00::2:80"} {
		a := addr(dst)
		if dst == "fd00::2:80" {
			a = socks5.Addr{Name: "fd00::2", Port: 80}
		}
		c, rep, bound, err := dial(f.proxy, socks5.Connect, a)
		if err != nil || rep != socks5.Succeeded {
			t.Fatalf("CONNECT %s: %v, %v", dst, rep, err)
		}
		if want := "10.0.0.1"; a.IP.Is6() || a.Name != "" {
			want = "fd00::1"
			if bound.IP.String() != want {
				t.Errorf("CONNECT %s: bound %v, want %s", dst, bound, want)
			}
		} else if bound.IP.String() != want {
			t.Errorf("CONNECT %s: bound %v, want %s", dst, bound, want)
		}
		fmt.Fprintf(c, "GET /blob/1000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		c.Close()
		if err != nil || !bytes.Equal(body, proxytest.Blob(1000000, 1000000)) {
			t.Errorf("CONNECT %s: %d bytes, %v: content differs", dst, len(body), err)
		}
	}
	// The relay counts a chunk after writing it, so the last one may still
	// be uncounted when the client has it; a connection stops being
	// active only after its relay has counted everything.
	if !proxytest.Wait(5*time.Second, func() bool { return f.srv.Stats().Active == 0 }) {
		t.Fatalf("connections still active: %+v", f.srv.Stats())
	}
	st := f.srv.Stats()
	if st.Replies[socks5.Succeeded] != 3 || st.FromTarget < 3000000 {
		t.Errorf("stats %+v", st)
	}
}

// TestReplyCodes: each failure gets the reply code that says what
// happened.
func TestReplyCodes(t *testing.T) {
	f := newFixture(t, socks5.Options{DialTimeout: 5 * time.Second})
	short := socks5.New(f.a.Tunnel, socks5.Options{DialTimeout: 200 * time.Millisecond})
	defer short.Close()
	sl, _ := net.Listen("tcp", "127.0.0.1:0")
	go short.Serve(sl)

	cases := []struct {
		proxy string
		cmd   socks5.Command
		dst   socks5.Addr
		want  []socks5.Reply
	}{
		{f.proxy, socks5.Connect, addr("10.0.0.2:81"), []socks5.Reply{socks5.ConnectionRefused}},
		{f.proxy, socks5.Connect, addr("[fd00::2]:81"), []socks5.Reply{socks5.ConnectionRefused}},
		{f.proxy, socks5.Connect, addr("10.0.0.99:80"), []socks5.Reply{socks5.HostUnreachable, socks5.NetworkUnreachable}},
		{sl.Addr().String(), socks5.Connect, addr("10.0.0.98:80"), []socks5.Reply{socks5.TTLExpired}},
		{f.proxy, socks5.Connect, addr("no-such-host.invalid:80"), []socks5.Reply{socks5.HostUnreachable}},
		{f.proxy, socks5.Bind, addr("10.0.0.2:80"), []socks5.Reply{socks5.CommandNotSupported}},
		{f.proxy, socks5.Command(9), addr("10.0.0.2:80"), []socks5.Reply{socks5.CommandNotSupported}},
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Go(func() {
			conn, rep, _, err := dial(c.proxy, c.cmd, c.dst)
			if err != nil {
				t.Errorf("%v %v: %v", c.cmd, c.dst, err)
				return
			}
			defer conn.Close()
			if !bytes.Contains([]byte(string(c.want)), []byte{byte(rep)}) {
				t.Errorf("%v %v: reply %d (%v), want %v", c.cmd, c.dst, rep, rep, c.want)
			}
			// The server closes the connection after a failure.
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("%v %v: after the reply: %d, %v; want EOF", c.cmd, c.dst, n, err)
			}
		})
	}
	wg.Wait()

	// An unknown address type.
	c, err := net.Dial("tcp", f.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3})
	got, _ := io.ReadAll(c)
	if want := []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) {
		t.Errorf("unknown address type: got %v, want %v", got, want)
	}
}

func TestReplyFor(t *testing.T) {
	cases := []struct {
		err  error
		want socks5.Reply
	}{
		{nil, socks5.Succeeded},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, socks5.ConnectionRefused},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, socks5.HostUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, socks5.NetworkUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ETIMEDOUT)}, socks5.TTLExpired},
		{&net.OpError{Op: "dial", Err: context.DeadlineExceeded}, socks5.TTLExpired},
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, socks5.HostUnreachable},
		{errors.New("something"), socks5.GeneralFailure},
	}
	for _, c := range cases {
		if got := socks5.ReplyFor(c.err); got != c.want {
			t.Errorf("ReplyFor(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestAuth: with Authenticate set, username/password is required and
// checked.
func TestAuth(t *testing.T) {
	f := newFixture(t, socks5.Options{Authenticate: socks5.Credentials("alice", "s3cret")})
	c, rep, _, err := dial(f.proxy, socks5.Connect, addr("10.0.0.2:80"), "alice", "s3cret")
	if err != nil || rep != socks5.Succeeded {
		t.Fatalf("good credentials: %v, %v", rep, err)
	}
	c.Close()
	if _, _, _, err := dial(f.proxy, socks5.Connect, addr("10.0.0.2:80"), "alice", "wrong"); err == nil || !strings.Contains(err.Error(), "authentication status 1") {
		t.Errorf("wrong password: %v", err)
	}
	if _, _, _, err := dial(f.proxy, socks5.Connect, addr("10.0.0.2:80")); err == nil || !strings.Contains(err.Error(), "method 255") {
		t.Errorf("no authentication offered: %v", err)
	}
	if st := f.srv.Stats(); st.AuthFailures != 2 {
		t.Errorf("stats %+v", st)
	}
}

// udpDatagram wraps payload for the relay.
func udpDatagram(t *testing.T, frag byte, dst string, payload string) []byte {
	b, err := socks5.UDPHeader{Frag: frag, Addr: addr(dst)}.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, payload...)
}

// TestUDPAssociateNames: UDP datagrams to a name reach it once the
// destination network has looked it up (the overlay's DNS server, through
// the tunnel), those sent meanwhile included; an unknown name's datagrams
// are dropped and counted; without a resolver, so are a name's.
func TestUDPAssociateNames(t *testing.T) {
	f := newFixture(t, socks5.Options{})
	pc := proxytest.ListenPacket(t, f.b.Tunnel, "10.0.0.2:53")
	dns := testutil.ServeDNS(pc, map[string][]netip.Addr{"echo.gnv.test": {netip.MustParseAddr("10.0.0.2")}})
	defer dns.Close()
	ctl, rep, bound, err := dial(f.proxy, socks5.UDPAssociate, socks5.Addr{IP: netip.IPv4Unspecified()})
	if err != nil || rep != socks5.Succeeded {
		t.Fatalf("UDP ASSOCIATE: %v, %v", rep, err)
	}
	u, err := net.Dial("udp", bound.String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	send := func(name, msg string) {
		b, err := socks5.UDPHeader{Addr: socks5.Addr{Name: name, Port: 7}}.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		u.Write(append(b, msg...))
	}
	// No resolver yet: dropped.
	send("echo.gnv.test", "no resolver")
	if !proxytest.Wait(5*time.Second, func() bool { return f.srv.Stats().UDPDropped == 1 }) {
		t.Fatalf("stats %+v", f.srv.Stats())
	}
	if err := f.a.Tunnel.SetDNS([]netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:53")}); err != nil {
		t.Fatal(err)
	}
	// Three at once: they wait for the lookup, then go.
	want := map[string]bool{}
	for i := range 3 {
		msg := fmt.Sprint("by name ", i)
		want[msg] = true
		send("echo.gnv.test", msg)
	}
	send("nosuch.gnv.test", "lost")
	buf := make([]byte, 2048)
	for len(want) > 0 {
		u.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("replies still missing: %v: %v", want, err)
		}
		h, p, err := socks5.ParseUDPDatagram(buf[:n])
		if err != nil || h.Addr != addr("10.0.0.2:7") || !want[string(p)] {
			t.Fatalf("reply %+v %q, %v", h, p, err)
		}
		delete(want, string(p))
	}
	if !proxytest.Wait(5*time.Second, func() bool {
		st := f.srv.Stats()
		return st.UDPIn == 3 && st.UDPOut == 3 && st.UDPDropped == 2
	}) {
		t.Errorf("stats %+v", f.srv.Stats())
	}
	if dns.Queries() == 0 {
		t.Error("no DNS query")
	}
	// A lookup that gets no answer ends with its association, at once.
	silent := proxytest.ListenPacket(t, f.b.Tunnel, "10.0.0.2:54") // reads nothing, answers nothing
	defer silent.Close()
	if err := f.a.Tunnel.SetDNS([]netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:54")}); err != nil {
		t.Fatal(err)
	}
	send("slow.gnv.test", "never answered")
	time.Sleep(100 * time.Millisecond) // the lookup has started
	ctl.Close()
	if !proxytest.Wait(3*time.Second, func() bool { return f.srv.Stats().Active == 0 }) {
		t.Error("the association waited for its lookup to time out")
	}
}

// TestUDPAssociate: a Go client relays datagrams to the overlay's echo
// servers over IPv4 and IPv6; replies carry their source; fragments and
// foreign sources are dropped; closing the control connection ends the
// association and its goroutines.
func TestUDPAssociate(t *testing.T) {
	f := newFixture(t, socks5.Options{})
	before := runtime.NumGoroutine()
	ctl, rep, bound, err := dial(f.proxy, socks5.UDPAssociate, socks5.Addr{IP: netip.IPv4Unspecified()})
	if err != nil || rep != socks5.Succeeded {
		t.Fatalf("UDP ASSOCIATE: %v, %v", rep, err)
	}
	if bound.IP.String() != "127.0.0.1" || bound.Port == 0 {
		t.Fatalf("relay at %v, want 127.0.0.1:port", bound)
	}
	u, err := net.Dial("udp", bound.String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 2048)
	roundTrip := func(dst, msg string) {
		t.Helper()
		for try := 0; ; try++ {
			u.Write(udpDatagram(t, 0, dst, msg))
			u.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := u.Read(buf)
			if err != nil {
				if try < 2 {
					continue
				}
				t.Fatalf("%s: %v", dst, err)
			}
			h, p, err := socks5.ParseUDPDatagram(buf[:n])
			if err != nil || h.Addr != addr(dst) || string(p) != msg {
				t.Fatalf("%s: reply %+v %q, %v", dst, h, p, err)
			}
			return
		}
	}
	roundTrip("10.0.0.2:7", "over IPv4")
	roundTrip("[fd00::2]:7", "over IPv6")
	for i := range 20 {
		roundTrip("10.0.0.2:7", fmt.Sprint("datagram ", i, strings.Repeat("-", i*50)))
	}
	// A fragment, and a datagram from another socket: dropped.
	u.Write(udpDatagram(t, 1, "10.0.0.2:7", "fragment"))
	other, _ := net.Dial("udp", bound.String())
	other.Write(udpDatagram(t, 0, "10.0.0.2:7", "stranger"))
	other.Close()
	roundTrip("10.0.0.2:7", "still there")
	// The last reply is counted just after it is sent.
	if !proxytest.Wait(5*time.Second, func() bool {
		st := f.srv.Stats()
		return st.Associations == 1 && st.FragDropped == 1 && st.UDPDropped == 1 && st.UDPIn == 23 && st.UDPOut == 23
	}) {
		t.Errorf("stats %+v", f.srv.Stats())
	}
	// The association ends with its control connection.
	ctl.Close()
	if !proxytest.Wait(5*time.Second, func() bool { return f.srv.Stats().Active == 0 }) {
		t.Error("association still active")
	}
	u.Write(udpDatagram(t, 0, "10.0.0.2:7", "too late"))
	u.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := u.Read(buf); err == nil {
		t.Error("relay still answers after the control connection closed")
	}
	proxytest.WaitGoroutines(t, before)
}

// TestCloseEndsEverything: Close ends open CONNECTs and associations and
// leaves no goroutine.
func TestCloseEndsEverything(t *testing.T) {
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, ":22")
	proxytest.ServeIdle(t, ln)
	before := runtime.NumGoroutine()
	srv := socks5.New(a.Tunnel, socks5.Options{})
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pl) }()
	c1, rep, _, err := dial(pl.Addr().String(), socks5.Connect, addr("10.0.0.2:22"))
	if err != nil || rep != socks5.Succeeded {
		t.Fatal(rep, err)
	}
	defer c1.Close()
	c2, rep, _, err := dial(pl.Addr().String(), socks5.UDPAssociate, socks5.Addr{IP: netip.IPv4Unspecified()})
	if err != nil || rep != socks5.Succeeded {
		t.Fatal(rep, err)
	}
	defer c2.Close()
	srv.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	for _, c := range []net.Conn{c1, c2} {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("connection open after Close")
		}
		c.Close()
	}
	proxytest.WaitGoroutines(t, before)
}

// TestCurl: curl, a real SOCKS5 client, fetches from the overlay through
// the server: --socks5-hostname (the server is sent the name, here an IP
// literal), --socks5 (curl sends the address), IPv6, and with a username
// and password.
func TestCurl(t *testing.T) {
	f := newFixture(t, socks5.Options{})
	const n = 2<<20 + 3
	proxytest.CurlBlobs(t, n,
		[]string{"--socks5-hostname", f.proxy, fmt.Sprintf("http://10.0.0.2/blob/%d", n)},
		[]string{"--socks5", f.proxy, fmt.Sprintf("http://10.0.0.2/blob/%d", n)},
		[]string{"--socks5-hostname", f.proxy, fmt.Sprintf("http://[fd00::2]/blob/%d", n)})
	// A refused port: curl reports the server's reply code (5), in words
	// in newer versions.
	_, err := proxytest.Curl(t, "--socks5-hostname", f.proxy, "http://10.0.0.2:81/")
	if err == nil || !strings.Contains(err.Error(), "(5)") && !strings.Contains(err.Error(), "onnection refused") {
		t.Errorf("refused port: %v", err)
	}
	auth := newFixture(t, socks5.Options{Authenticate: socks5.Credentials("bob", "pw")})
	body, err := proxytest.Curl(t, "--socks5-hostname", auth.proxy, "--proxy-user", "bob:pw", "http://10.0.0.2/hello")
	if err != nil || string(body) != "hello from b\n" {
		t.Errorf("with credentials: %q, %v", body, err)
	}
	if _, err := proxytest.Curl(t, "--socks5-hostname", auth.proxy, "--proxy-user", "bob:nope", "http://10.0.0.2/hello"); err == nil {
		t.Error("wrong credentials accepted")
	}
}

// pythonClient is a SOCKS5 UDP ASSOCIATE client written from RFC 1928
// with nothing but Python's standard library: it associates, sends
// datagrams for the overlay's echo server through the relay and checks
// each reply's header (the echo server's address) and payload. It prints
// "ok N".
const pythonClient = `
import socket, struct, sys
proxy_host, proxy_port, dst_ip, dst_port, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ctl = socket.create_connection((proxy_host, proxy_port), timeout=10)
def recv_exact(n):
    b = b""
    while len(b) < n:
        chunk = ctl.recv(n - len(b))
        if not chunk:
            raise SystemExit("control connection closed")
        b += chunk
    return b
ctl.sendall(b"\x05\x01\x00")
assert recv_exact(2) == b"\x05\x00", "method"
ctl.sendall(b"\x05\x03\x00\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
ver, rep, rsv, atyp = recv_exact(4)
assert ver == 5 and rep == 0, "reply %d" % rep
assert atyp == 1, "atyp %d" % atyp
relay = (socket.inet_ntoa(recv_exact(4)), struct.unpack("!H", recv_exact(2))[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
hdr = b"\x00\x00\x00\x01" + socket.inet_aton(dst_ip) + struct.pack("!H", dst_port)
ok = 0
for i in range(count):
    msg = ("python datagram %d " % i).encode() + bytes(range(256)) * (i % 4)
    for attempt in range(3):
        u.sendto(hdr + msg, relay)
        try:
            data, src = u.recvfrom(65535)
            break
        except socket.timeout:
            continue
    else:
        raise SystemExit("datagram %d: no reply" % i)
    assert src == relay, "reply from %r, not the relay" % (src,)
    assert data[:10] == hdr, "reply header %r" % data[:10]
    assert data[10:] == msg, "datagram %d: payload differs" % i
    ok += 1
ctl.close()
print("ok", ok)
`

// TestPythonUDPAssociate: a UDP echo through the overlay by a SOCKS5 UDP
// ASSOCIATE client in Python.
func TestPythonUDPAssociate(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed (apt-get install python3): the UDP ASSOCIATE client is a Python script")
	}
	f := newFixture(t, socks5.Options{})
	host, port, _ := net.SplitHostPort(f.proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", pythonClient, host, port, "10.0.0.2", "7", "40").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok 40" {
		t.Fatalf("python3 client: %v: %s", err, out)
	}
	if !proxytest.Wait(5*time.Second, func() bool { return f.srv.Stats().Active == 0 }) {
		t.Error("association not ended by the control connection's close")
	}
	if st := f.srv.Stats(); st.Associations != 1 || st.UDPIn != st.UDPOut || st.UDPIn < 40 {
		t.Errorf("stats %+v", st)
	}
}
