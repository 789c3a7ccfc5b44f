// Package proxytest has the test fixtures that stack/forward,
// stack/socks5 and stack/httpproxy share: two overlay netstacks on the
// in-memory fabric, content-checked HTTP and UDP echo servers on either
// network, and a goroutine-leak check.
package proxytest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack/internal/proxyutil"
	"github.com/gnv-project/gnv/testutil"
)

// Overlays builds two Geneve hosts on the in-memory fabric (L2, VNI 100;
// overlay addresses 10.0.0.1, fd00::1 and 10.0.0.2, fd00::2) and closes
// them when the test ends.
func Overlays(t testing.TB) (a, b *testutil.Host) {
	t.Helper()
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hs.Close)
	return hs.Hosts[0], hs.Hosts[1]
}

// Network is where Listen and ListenPacket open sockets: a tunnel's
// overlay (*stack.Tunnel), or nil for the host's network.
type Network interface {
	Listen(network, address string) (net.Listener, error)
	ListenPacket(network, address string) (net.PacketConn, error)
}

// host is the host's network.
type host struct{}

func (host) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address)
}

func (host) ListenPacket(network, address string) (net.PacketConn, error) {
	return net.ListenPacket(network, address)
}

// Listen listens for TCP on n at addr, failing t if it cannot, and closes
// the listener when the test ends.
func Listen(t testing.TB, n Network, addr string) net.Listener {
	t.Helper()
	if n == nil {
		n = host{}
	}
	ln, err := n.Listen("tcp", addr)
	return closeAtEnd(t, ln, err)
}

// ListenPacket opens a UDP socket on n at addr, failing t if it cannot,
// and closes it when the test ends.
func ListenPacket(t testing.TB, n Network, addr string) net.PacketConn {
	t.Helper()
	if n == nil {
		n = host{}
	}
	pc, err := n.ListenPacket("udp", addr)
	return closeAtEnd(t, pc, err)
}

// closeAtEnd fails t if err is set, else closes c when the test ends.
func closeAtEnd[C io.Closer](t testing.TB, c C, err error) C {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Blob returns n pseudo-random bytes, the same for the same n and seed.
func Blob(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// Sum is the hex SHA-256 of b.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Handler serves name's test endpoints:
//
//	GET  /hello        "hello from NAME\n"
//	GET  /blob/N       Blob(N, N)
//	POST /echo         the request body
//	POST /sum          the hex SHA-256 of the request body
//	GET  /headers      the request's header names, one a line, sorted
func Handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	mux.HandleFunc("GET /blob/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(Blob(n, int64(n)))
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("POST /sum", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, Sum(b))
	})
	mux.HandleFunc("GET /headers", func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for k := range r.Header {
			names = append(names, k)
		}
		slices.Sort(names)
		io.WriteString(w, strings.Join(names, "\n"))
	})
	return mux
}

// ServeHTTP serves Handler(name) on ln until the test ends.
func ServeHTTP(t testing.TB, ln net.Listener, name string) {
	t.Helper()
	srv := &http.Server{Handler: Handler(name), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// ServeUDPEcho echoes every datagram on pc back to its sender until the
// test ends.
func ServeUDPEcho(t testing.TB, pc net.PacketConn) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		testutil.EchoPackets(pc)
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
}

// Get fetches url with c and checks the status is 200.
func Get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}

// CheckBlob fetches base+"/blob/N" with c and checks its content.
func CheckBlob(ctx context.Context, c *http.Client, base string, n int) error {
	body, err := Get(ctx, c, fmt.Sprintf("%s/blob/%d", base, n))
	if err != nil {
		return err
	}
	if !bytes.Equal(body, Blob(n, int64(n))) {
		return fmt.Errorf("GET %s/blob/%d: %d bytes, content differs", base, n, len(body))
	}
	return nil
}

// EchoUDP sends count datagrams tagged with tag on c, each waiting for
// its echo, and checks that every reply is its own datagram.
func EchoUDP(c net.Conn, tag string, count int) error {
	buf := make([]byte, 2048)
	for i := 0; i < count; i++ {
		msg := fmt.Sprintf("%s %d %s", tag, i, strings.Repeat("x", i*7%500))
		var got []byte
		for try := 0; ; try++ {
			if _, err := c.Write([]byte(msg)); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err == nil {
				got = buf[:n]
				break
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || try == 2 {
				return fmt.Errorf("%s: datagram %d: %w", tag, i, err)
			}
		}
		if string(got) != msg {
			return fmt.Errorf("%s: datagram %d: got %q back, want %q", tag, i, got, msg)
		}
	}
	return nil
}

// WaitGoroutines waits up to 10 s for the number of goroutines to come
// down to before, and fails t with every goroutine's stack if it does not.
func WaitGoroutines(t testing.TB, before int) {
	t.Helper()
	var now int
	for i := 0; i < 500; i++ {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Errorf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// Wait polls cond every 10 ms for up to d; it reports whether cond came
// true.
func Wait(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ServeConns accepts connections on ln until the test ends, running
// handle on each on a goroutine of its own and closing the connection
// after it; when the test ends, the listener and any connection still
// open are closed, and ServeConns's goroutines waited for.
func ServeConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	g := proxyutil.NewGroup(context.Background())
	g.Track(true, ln)
	go func() {
		defer g.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !g.Track(true, c) {
				c.Close()
				return
			}
			go func() {
				defer g.Done()
				defer g.Untrack(c)
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(g.Close)
}

// ServeIdle accepts connections on ln and keeps them open, saying
// nothing, until the client closes them or the test ends: a server for
// tests of closing.
func ServeIdle(t testing.TB, ln net.Listener) {
	t.Helper()
	ServeConns(t, ln, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// CurlBlobs runs curl with each set of args, each of which fetches
// /blob/N from the test HTTP server, and checks that the body is
// Blob(N, N).
func CurlBlobs(t testing.TB, n int, argSets ...[]string) {
	t.Helper()
	for _, args := range argSets {
		body, err := Curl(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, Blob(n, int64(n))) {
			t.Errorf("curl %v: %d bytes, content differs", args, len(body))
		}
	}
}

// Curl runs curl with args, with no proxy from the environment and
// failing on HTTP errors, and returns what it wrote to the file -o names
// (also on failure). It skips the test if curl is not installed.
func Curl(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (apt-get install curl): the real-client test needs it")
	}
	out := filepath.Join(t.TempDir(), "body")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"-sS", "--fail-with-body", "--noproxy", "", "-o", out}, args...)...)
	cmd.Env = append(os.Environ(), "ALL_PROXY=", "all_proxy=", "HTTP_PROXY=", "http_proxy=", "NO_PROXY=", "no_proxy=")
	msg, err := cmd.CombinedOutput()
	body, _ := os.ReadFile(out)
	if err != nil {
		return body, fmt.Errorf("curl %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return body, nil
}
