package httpproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/stack/httpproxy"
	"github.com/gnv-project/gnv/stack/internal/proxytest"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/leakcheck"
)

// TestMain runs every test under gVisor's reference leak checker.
func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

// fixture is an HTTP proxy on the host's loopback whose destinations are
// in overlay a; overlay b serves the test HTTP server on port 80 (IPv4
// and IPv6).
type fixture struct {
	a, b  *testutil.Host
	p     *httpproxy.Proxy
	proxy string // host:port
}

func newFixture(t *testing.T, opts httpproxy.Options) *fixture {
	t.Helper()
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, ":80")
	proxytest.ServeHTTP(t, ln, "b")
	f := &fixture{a: a, b: b, p: httpproxy.New(a.Tunnel, opts)}
	pl := proxytest.Listen(t, nil, "127.0.0.1:0")
	f.proxy = pl.Addr().String()
	srv := &http.Server{Handler: f.p, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(pl)
	}()
	t.Cleanup(func() {
		srv.Close()
		f.p.Close()
		<-done
	})
	return f
}

// client is a Go HTTP client that uses the proxy.
func (f *fixture) client(user ...string) *http.Client {
	u := &url.URL{Scheme: "http", Host: f.proxy}
	if len(user) == 2 {
		u.User = url.UserPassword(user[0], user[1])
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}}
}

// TestGoClient: net/http's client through the proxy: absolute-form GET
// and POST, content-checked, and the hop-by-hop headers gone.
func TestGoClient(t *testing.T) {
	f := newFixture(t, httpproxy.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := f.client()
	for _, base := range []string{"http://10.0.0.2", "http://[fd00::2]:80"} {
		if err := proxytest.CheckBlob(ctx, c, base, 3<<20+1); err != nil {
			t.Error(err)
		}
	}
	up := proxytest.Blob(700000, 2)
	resp, err := c.Post("http://10.0.0.2/sum", "application/octet-stream", bytes.NewReader(up))
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(sum) != proxytest.Sum(up) {
		t.Errorf("POST: server saw %s, want %s", sum, proxytest.Sum(up))
	}

	req, _ := http.NewRequestWithContext(ctx, "GET", "http://10.0.0.2/headers", nil)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "1")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("X-End-To-End", "1")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := strings.Split(string(names), "\n")
	for _, h := range []string{"X-Hop", "Proxy-Connection", "Keep-Alive", "Connection"} {
		for _, g := range got {
			if g == h {
				t.Errorf("hop-by-hop header %s reached the server: %q", h, got)
			}
		}
	}
	if !strings.Contains(string(names), "X-End-To-End") {
		t.Errorf("end-to-end header lost: %q", got)
	}
	if st := f.p.Stats(); st.Requests != 4 || st.BadGateway != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestConnectTunnel: CONNECT, then a request in the tunnel; bytes the
// client sends right behind the CONNECT arrive too.
func TestConnectTunnel(t *testing.T) {
	f := newFixture(t, httpproxy.Options{})
	c, err := net.Dial("tcp", f.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "CONNECT 10.0.0.2:80 HTTP/1.1\r\nHost: 10.0.0.2:80\r\n\r\nGET /hello HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	resp, err = http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello from b\n" {
		t.Errorf("through the tunnel: %q", body)
	}
	c.Close()
	if !testWait(func() bool { return f.p.Stats().ActiveTunnels == 0 }) {
		t.Error("tunnel still active")
	}
	if st := f.p.Stats(); st.Tunnels != 1 || st.FromTarget == 0 || st.ToTarget == 0 {
		t.Errorf("stats %+v", st)
	}
}

func testWait(cond func() bool) bool { return proxytest.Wait(5*time.Second, cond) }

// rawRequest sends a request to the proxy as written and returns the
// response status and body.
func rawRequest(t *testing.T, proxy, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, req)
	method := strings.Fields(req)[0]
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestErrors: a refused port is 502 naming the error, a dial that runs
// out of time 504, a request that is not for a proxy 400; CONNECT the
// same.
func TestErrors(t *testing.T) {
	f := newFixture(t, httpproxy.Options{DialTimeout: 1500 * time.Millisecond})
	cases := []struct {
		req  string
		code int
		body string
	}{
		{"GET http://10.0.0.2:81/ HTTP/1.1\r\nHost: 10.0.0.2:81\r\n\r\n", 502, "connection refused"},
		{"CONNECT 10.0.0.2:81 HTTP/1.1\r\nHost: 10.0.0.2:81\r\n\r\n", 502, "connection refused"},
		{"GET http://10.0.0.98/ HTTP/1.1\r\nHost: 10.0.0.98\r\n\r\n", 504, "deadline exceeded"},
		{"CONNECT 10.0.0.97:443 HTTP/1.1\r\nHost: 10.0.0.97:443\r\n\r\n", 504, "deadline exceeded"},
		{"GET http://name.invalid/ HTTP/1.1\r\nHost: name.invalid\r\n\r\n", 502, "no resolver"},
		{"GET /hello HTTP/1.1\r\nHost: 10.0.0.2\r\n\r\n", 400, "not a proxy request"},
		{"CONNECT 10.0.0.2 HTTP/1.1\r\nHost: 10.0.0.2\r\n\r\n", 400, "want host:port"},
	}
	for _, c := range cases {
		code, body := rawRequest(t, f.proxy, c.req)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%q: %d %q; want %d and %q", strings.SplitN(c.req, "\r\n", 2)[0], code, body, c.code, c.body)
		}
	}
	if st := f.p.Stats(); st.BadGateway != 3 || st.GatewayTimeout != 2 || st.BadRequests != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestAuth: with Authenticate set, requests need Basic proxy credentials.
func TestAuth(t *testing.T) {
	f := newFixture(t, httpproxy.Options{Authenticate: httpproxy.Credentials("carol", "pw")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if body, err := proxytest.Get(ctx, f.client("carol", "pw"), "http://10.0.0.2/hello"); err != nil || body == nil {
		t.Errorf("with credentials: %q, %v", body, err)
	}
	code, _ := rawRequest(t, f.proxy, "GET http://10.0.0.2/hello HTTP/1.1\r\nHost: 10.0.0.2\r\n\r\n")
	if code != http.StatusProxyAuthRequired {
		t.Errorf("without credentials: %d", code)
	}
	if _, err := proxytest.Get(ctx, f.client("carol", "nope"), "http://10.0.0.2/hello"); err == nil || !strings.Contains(err.Error(), "407") {
		t.Errorf("wrong credentials: %v", err)
	}
}

// TestCloseEndsTunnels: Close ends open tunnels and leaves no goroutine.
func TestCloseEndsTunnels(t *testing.T) {
	a, b := proxytest.Overlays(t)
	ln := proxytest.Listen(t, b.Tunnel, ":22")
	proxytest.ServeIdle(t, ln)
	before := runtime.NumGoroutine()
	p := httpproxy.New(a.Tunnel, httpproxy.Options{})
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: p}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(pl) }()
	c, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT 10.0.0.2:22 HTTP/1.1\r\nHost: 10.0.0.2:22\r\n\r\n")
	r := bufio.NewReader(c)
	if resp, err := http.ReadResponse(r, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	srv.Close() // hijacked connections are the proxy's
	<-done
	p.Close()
	if _, err := r.ReadByte(); err == nil {
		t.Error("tunnel open after Close")
	}
	c.Close()
	proxytest.WaitGoroutines(t, before)
}

// TestCurl: curl -x, a real HTTP proxy client, absolute-form and (with
// -p) through a CONNECT tunnel, over IPv4 and IPv6, content-checked; and
// the 502 page for a refused port.
func TestCurl(t *testing.T) {
	f := newFixture(t, httpproxy.Options{})
	const n = 2<<20 + 9
	proxy := "http://" + f.proxy
	proxytest.CurlBlobs(t, n,
		[]string{"-x", proxy, fmt.Sprintf("http://10.0.0.2/blob/%d", n)},
		[]string{"-p", "-x", proxy, fmt.Sprintf("http://10.0.0.2/blob/%d", n)},
		[]string{"-x", proxy, fmt.Sprintf("http://[fd00::2]/blob/%d", n)},
		[]string{"-p", "-x", proxy, fmt.Sprintf("http://[fd00::2]/blob/%d", n)})
	if st := f.p.Stats(); st.Tunnels != 2 || st.Requests != 2 {
		t.Errorf("stats %+v", st)
	}
	body, err := proxytest.Curl(t, "-x", proxy, "http://10.0.0.2:81/")
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(string(body), "connection refused") {
		t.Errorf("refused port: %q, %v", body, err)
	}
}
