package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startUp runs gnv up with args until the test ends and returns its
// interfaces once they are up.
func startUp(t *testing.T, args ...string) []*runningIface {
	t.Helper()
	return startInstance(t, args...).ifaces
}

// startInstance runs gnv up with args until the test ends and returns the
// instance once it is up.
func startInstance(t *testing.T, args ...string) *instance {
	t.Helper()
	return startInstanceLog(t, slog.New(slog.NewTextHandler(io.Discard, nil)), args...)
}

// startInstanceLog is startInstance with a logger.
func startInstanceLog(t *testing.T, log *slog.Logger, args ...string) *instance {
	t.Helper()
	inst, stop, err := runInstanceLog(t, log, args...)
	if err != nil {
		t.Fatalf("gnv up: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("gnv up: %v", err)
		}
	})
	return inst
}

// runInstance starts gnv up with args and returns the instance once it is
// up, and a function that stops it and returns runUp's error; or the error
// with which gnv up failed to start.
func runInstance(t *testing.T, args ...string) (*instance, func() error, error) {
	t.Helper()
	return runInstanceLog(t, slog.New(slog.NewTextHandler(io.Discard, nil)), args...)
}

// runInstanceLog is runInstance with a logger.
func runInstanceLog(t *testing.T, log *slog.Logger, args ...string) (*instance, func() error, error) {
	t.Helper()
	p, err := planArgs(args...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan *instance, 1)
	done := make(chan error, 1)
	var out lockedBuf
	go func() { done <- runUp(ctx, p, log, &out, func(i *instance) { up <- i }) }()
	select {
	case inst := <-up:
		if !strings.Contains(out.String(), "up, l2 vni") && !strings.Contains(out.String(), "up, l3 vni") {
			t.Errorf("start-up line missing: %q", out.String())
		}
		var once sync.Once
		var stopErr error
		return inst, func() error {
			once.Do(func() {
				cancel()
				stopErr = <-done
			})
			return stopErr
		}, nil
	case err := <-done:
		cancel()
		return nil, nil, err
	}
}

// TestUpNetstackOverlay runs two gnv up instances over kernel UDP on
// loopback with netstack overlays (no privileges): a port forward and a
// SOCKS5 server on A reach a TCP service in B's overlay, and the control
// socket shows and edits A's forwarding table.
func TestUpNetstackOverlay(t *testing.T) {
	dir := t.TempDir()
	ctlA := filepath.Join(dir, "a.sock")
	a := startUp(t, "--vni", "77", "--local", "127.0.0.1", "--port", "16191", "--local-port", "16190", "--remote", "127.0.0.2",
		"--overlay", "netstack", "--addr", "10.77.0.1/24", "--name", "gnva",
		"--forward", "tcp:127.0.0.1:0=10.77.0.2:80", "--socks5", "127.0.0.1:0", "--control", ctlA)
	b := startUp(t, "--vni", "77", "--local", "127.0.0.2", "--port", "16190", "--local-port", "16191", "--remote", "127.0.0.1",
		"--overlay", "netstack", "--addr", "10.77.0.2/24", "--name", "gnvb", "--control", filepath.Join(dir, "b.sock"))

	ln, err := b[0].tun.Listen("tcp", "10.77.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(append([]byte("echo "), buf...))
				}
			}()
		}
	}()
	check := func(c net.Conn) {
		t.Helper()
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hello"))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "echo hello" {
			t.Errorf("got %q, %v", got, err)
		}
	}
	fwd := a[0].svc.forwards.List()[0].Rule.Listen.String()
	c, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	check(c)

	socks := a[0].svc.socksAddr.String()
	s, err := net.Dial("tcp", socks)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	s.Write([]byte{5, 1, 0})
	reply := make([]byte, 2)
	if _, err := io.ReadFull(s, reply); err != nil || reply[1] != 0 {
		t.Fatalf("socks greeting reply %v %v", reply, err)
	}
	req := []byte{5, 1, 0, 1, 10, 77, 0, 2, 0, 0}
	binary.BigEndian.PutUint16(req[8:], 80)
	s.Write(req)
	rep := make([]byte, 10)
	if _, err := io.ReadFull(s, rep); err != nil || rep[1] != 0 {
		t.Fatalf("socks connect reply %v %v", rep, err)
	}
	check(s)

	// The control socket: A learned B's overlay MAC from the traffic.
	var out bytes.Buffer
	if err := ctlRequest(&out, ctlA, []string{"fdb", "show", "-"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "127.0.0.2:16191 dynamic") {
		t.Errorf("fdb show: %q", out.String())
	}
	if err := ctlRequest(&out, ctlA, []string{"fdb", "add", "-", "02:00:00:00:00:99", "127.0.0.9"}); err != nil {
		t.Fatal(err)
	}
	// A remote of the other family is refused by the running instance
	// (exit status 1, the argument named).
	if code, _, stderr := runCLI("fdb", "add", "--control", ctlA, "02:00:00:00:00:98", "2001:db8::9"); code != 1 ||
		!strings.Contains(stderr, "REMOTE 2001:db8::9 is an IPv6 address, but the underlay of gnva is IPv4") {
		t.Errorf("fdb add with an IPv6 remote on an IPv4 underlay: exit %d, stderr %q", code, stderr)
	}
	if err := ctlRequest(&out, ctlA, []string{"fdb", "add", "-", "00:00:00:00:00:00", "127.0.0.9"}); err == nil || !strings.Contains(err.Error(), "zero address") {
		t.Errorf("fdb add of the zero MAC, sent to the socket directly: %v", err)
	}
	// flush keeps static entries; flushall removes them. (Dynamic entries
	// may be learned again at once from packets still in flight, so only
	// the static entry is checked; the endpoint tests cover the rest.)
	show := func() string {
		t.Helper()
		var o bytes.Buffer
		if err := ctlRequest(&o, ctlA, []string{"fdb", "show", "-"}); err != nil {
			t.Fatal(err)
		}
		return o.String()
	}
	static := "02:00:00:00:00:99 127.0.0.9:16191 static"
	if err := ctlRequest(&out, ctlA, []string{"fdb", "flush", "-"}); err != nil {
		t.Fatal(err)
	}
	if got := show(); !strings.Contains(got, static) {
		t.Errorf("after flush: %q, want the static entry kept", got)
	}
	if err := ctlRequest(&out, ctlA, []string{"fdb", "flushall", "-"}); err != nil {
		t.Fatal(err)
	}
	if got := show(); strings.Contains(got, "static") {
		t.Errorf("after flushall: %q, want no static entry", got)
	}
	if err := ctlRequest(&out, ctlA, []string{"fdb", "del", "-", "02:00:00:00:00:42"}); err == nil || !strings.Contains(err.Error(), "no such forwarding entry") {
		t.Errorf("deleting a missing entry: %v", err)
	}
	out.Reset()
	if err := ctlRequest(&out, ctlA, []string{"stats", "-"}); err != nil || !strings.Contains(out.String(), "gnva: rx ") {
		t.Errorf("stats: %q %v", out.String(), err)
	}
}
