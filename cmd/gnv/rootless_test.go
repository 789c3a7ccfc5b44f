package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/stack/socks5"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/netns"
)

// nobody is the setpriv prefix that runs gnv with no privileges at all: user
// and group nobody, no supplementary groups, no capabilities in any set,
// and no way to gain any.
var nobody = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
	"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"}

// TestRootlessEndToEnd is issue 14's rootless-to-rootless case: two gnv up
// instances with no privileges at all, in two namespaces joined by a veth,
// netstack overlays over kernel UDP. A serves a host HTTP server and a
// host UDP echo into its overlay (--expose); B reaches them through SOCKS5
// (CONNECT with curl, UDP ASSOCIATE), the HTTP proxy (curl -x, plain and
// CONNECT), a UDP forward (--forward udp:) and a TCP forward added at run
// time over the control socket. Every transfer is content-checked.
func TestRootlessEndToEnd(t *testing.T) {
	netns.RequireRoot(t)
	netns.RequireTools(t, "setpriv", "curl")
	a, b := pair(t)
	ua := underlaySide(t, a, "va", "udp", "192.0.2.1", 24)
	ub := underlaySide(t, b, "vb", "udp", "192.0.2.2", 24)

	payload := make([]byte, 2<<20)
	_, _ = rand.NewChaCha8([32]byte{14}).Read(payload)
	want := sha256.Sum256(payload)
	serveHost(t, a, payload)
	// A DNS server on A's host, exposed into the overlay as 10.42.0.1:53:
	// B looks names up with it (--dns), through the tunnel.
	var dnsPC net.PacketConn
	if err := a.Do(func() (err error) { dnsPC, err = net.ListenPacket("udp", "127.0.0.1:5300"); return err }); err != nil {
		t.Fatal(err)
	}
	dns := testutil.ServeDNS(dnsPC, map[string][]netip.Addr{"files.gnv.test": {netip.MustParseAddr("10.42.0.1")}})
	defer dns.Close()

	// gnv runs as nobody: its binary and control sockets must be reachable.
	bin := gnvBinary(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "gnv-rootless")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, 65534, 65534); err != nil { // gnv refuses a directory others can write
		t.Fatal(err)
	}
	common := []string{"--vni", "42", "--overlay", "netstack", "--port", "16081", "--local-port", "16081"}
	pa := gnvUpAs(t, a, nobody, filepath.Join(dir, "a.sock"), 1, append(append(common, ua...),
		"--remote", "192.0.2.2", "--addr", "10.42.0.1/24", "--name", "gnva",
		"--expose", "tcp:10.42.0.1:80=127.0.0.1:8080", "--expose", "udp:10.42.0.1:7=127.0.0.1:7007",
		"--expose", "udp:10.42.0.1:53=127.0.0.1:5300")...)
	pb := gnvUpAs(t, b, nobody, filepath.Join(dir, "b.sock"), 1, append(append(common, ub...),
		"--remote", "192.0.2.1", "--addr", "10.42.0.2/24", "--name", "gnvb",
		"--socks5", "127.0.0.1:1080", "--http-proxy", "127.0.0.1:3128", "--forward", "udp:127.0.0.1:5353=10.42.0.1:7",
		"--dns", "10.42.0.1")...)
	for _, p := range []*upProc{pa, pb} {
		checkUnprivileged(t, p.cmd.Process.Pid)
	}

	curl := func(args ...string) {
		t.Helper()
		out, err := b.Run("curl", append([]string{"-sS", "--max-time", "60"}, args...)...)
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		if got := sha256.Sum256([]byte(out)); got != want {
			t.Fatalf("curl %v: got %d bytes that differ from the %d served", args, len(out), len(payload))
		}
	}
	curl("--socks5-hostname", "127.0.0.1:1080", "http://10.42.0.1/file")
	curl("-x", "http://127.0.0.1:3128", "http://10.42.0.1/file")
	curl("-p", "-x", "http://127.0.0.1:3128", "http://10.42.0.1/file")
	// Names, looked up in the overlay.
	curl("--socks5-hostname", "127.0.0.1:1080", "http://files.gnv.test/file")
	curl("-x", "http://127.0.0.1:3128", "http://files.gnv.test/file")
	if out, err := b.Run("curl", "-sS", "--max-time", "20", "--socks5-hostname", "127.0.0.1:1080", "http://nosuch.gnv.test/file"); err == nil || !strings.Contains(out, "SOCKS5 connection to nosuch.gnv.test. (4)") { // reply 4: host unreachable
		t.Errorf("curl of an unknown name through SOCKS5: %v: %s", err, out)
	}
	if dns.Queries() == 0 {
		t.Error("the overlay's DNS server got no query")
	}

	// UDP both ways of reaching the exposed echo.
	if err := b.Do(func() error { return udpEcho("127.0.0.1:5353") }); err != nil {
		t.Errorf("UDP through --forward udp: %v", err)
	}
	if err := b.Do(func() error { return socksUDPEcho("127.0.0.1:1080", netip.MustParseAddrPort("10.42.0.1:7")) }); err != nil {
		t.Errorf("UDP through SOCKS5 UDP ASSOCIATE: %v", err)
	}

	// A forward added at run time, used, listed, and removed.
	var out bytes.Buffer
	if err := ctlRequest(&out, pb.ctl, []string{"forward", "add", "-", "tcp:127.0.0.1:8081=10.42.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	curl("http://127.0.0.1:8081/file")
	out.Reset()
	if err := ctlRequest(&out, pb.ctl, []string{"forward", "list", "-"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "tcp:127.0.0.1:8081=10.42.0.1:80 connections 1") {
		t.Errorf("forward list: %q", out.String())
	}
	if err := ctlRequest(io.Discard, pb.ctl, []string{"forward", "del", "-", "tcp:127.0.0.1:8081"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run("curl", "-sS", "--max-time", "5", "http://127.0.0.1:8081/file"); err == nil {
		t.Error("the removed forward still answers")
	}
	if err := ctlRequest(io.Discard, pa.ctl, []string{"expose", "add", "-", "tcp:127.0.0.1:80=127.0.0.1:8080"}); err == nil ||
		!strings.Contains(err.Error(), "not an overlay address") {
		t.Errorf("an expose listening on a host address: %v", err)
	}
}

// serveHost runs, on ns's loopback, an HTTP server with payload at /file
// (127.0.0.1:8080) and a UDP echo server (127.0.0.1:7007), until the test
// ends.
func serveHost(t *testing.T, ns *netns.NS, payload []byte) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp", "127.0.0.1:8080"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", "127.0.0.1:7007")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/file" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		_, _ = w.Write(payload)
	})}
	go func() { _ = srv.Serve(ln) }()
	go testutil.EchoPackets(pc)
	t.Cleanup(func() { srv.Close(); pc.Close() })
}

// checkUnprivileged fails the test unless process pid runs as nobody with
// no effective, permitted or bounding capability.
func checkUnprivileged(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Uid":
			if f := strings.Fields(v); len(f) == 0 || f[0] != "65534" || f[1] != "65534" {
				t.Errorf("gnv (pid %d) runs with Uid %q", pid, v)
			}
		case "CapEff", "CapPrm", "CapBnd", "CapAmb":
			if strings.Trim(v, "0") != "" {
				t.Errorf("gnv (pid %d) has %s %s", pid, k, v)
			}
		}
	}
}

// udpEcho sends datagrams to addr and checks
// each echo, retrying lost ones.
func udpEcho(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for i := range 20 {
		msg := fmt.Appendf(nil, "datagram %d %s", i, strings.Repeat("x", i*50))
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				continue
			}
			if !bytes.Equal(buf[:n], msg) {
				return fmt.Errorf("datagram %d: echo %q", i, buf[:n])
			}
			ok = true
		}
		if !ok {
			return fmt.Errorf("datagram %d: no echo after 5 tries", i)
		}
	}
	return nil
}

// socksUDPEcho runs a SOCKS5 UDP ASSOCIATE (RFC 1928 §7) through the server
// at proxy and checks echoes from dst.
func socksUDPEcho(proxy string, dst netip.AddrPort) error {
	ctl, err := net.Dial("tcp", proxy)
	if err != nil {
		return err
	}
	defer ctl.Close()
	_ = ctl.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := ctl.Write([]byte{socks5.Version, 1, socks5.MethodNoAuth}); err != nil {
		return err
	}
	var greet [2]byte
	if _, err := io.ReadFull(ctl, greet[:]); err != nil || greet[1] != socks5.MethodNoAuth {
		return fmt.Errorf("greeting: %v %v", greet, err)
	}
	req := socks5.Request{Command: socks5.UDPAssociate, Addr: socks5.AddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:0"))}
	b, err := req.AppendBinary(nil)
	if err != nil {
		return err
	}
	if _, err := ctl.Write(b); err != nil {
		return err
	}
	var rep [10]byte // IPv4 bound address: the relay listens on 127.0.0.1
	if _, err := io.ReadFull(ctl, rep[:]); err != nil || rep[1] != 0 || rep[3] != socks5.AddrIPv4 {
		return fmt.Errorf("UDP ASSOCIATE reply %v: %v", rep, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), uint16(rep[8])<<8|uint16(rep[9]))
	c, err := net.Dial("udp", relay.String())
	if err != nil {
		return err
	}
	defer c.Close()
	hdr, err := socks5.UDPHeader{Addr: socks5.AddrFromAddrPort(dst)}.AppendBinary(nil)
	if err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for i := range 20 {
		msg := fmt.Appendf(nil, "socks datagram %d", i)
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if _, err := c.Write(append(hdr[:len(hdr):len(hdr)], msg...)); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				continue
			}
			h, data, err := socks5.ParseUDPDatagram(buf[:n])
			if err != nil {
				return fmt.Errorf("datagram %d: reply header: %v", i, err)
			}
			if h.Addr.IP != dst.Addr() || h.Addr.Port != dst.Port() || !bytes.Equal(data, msg) {
				return fmt.Errorf("datagram %d: echo %q from %v", i, data, h.Addr)
			}
			ok = true
		}
		if !ok {
			return fmt.Errorf("datagram %d: no echo after 5 tries", i)
		}
	}
	return nil
}
