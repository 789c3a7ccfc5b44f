package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// netstackArgs are the flags of a rootless gnv up on loopback that needs
// nothing else: a netstack overlay over a kernel UDP socket.
func netstackArgs(ctl string, port int, extra ...string) []string {
	return append([]string{"--vni", "5", "--local", "127.0.0.1", "--local-port", strconv.Itoa(port), "--port", strconv.Itoa(port + 1),
		"--remote", "127.0.0.2", "--overlay", "netstack", "--addr", "10.5.0.1/24", "--control", ctl}, extra...)
}

// TestControlSocketInUse: a second gnv up with the control socket of a
// live one refuses to start, naming the path and the flags that choose
// another, and leaves the first one's socket working.
func TestControlSocketInUse(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "gnv0.sock")
	first := startInstance(t, netstackArgs(ctl, 16290)...)
	_, _, err := runInstance(t, netstackArgs(ctl, 16292)...)
	if err == nil {
		t.Fatal("the second gnv up started on a live control socket")
	}
	for _, want := range []string{ctl, "in use", "--name", "--control"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	var out bytes.Buffer
	if err := ctlRequest(&out, first.control, []string{"stats", "-"}); err != nil {
		t.Errorf("the first instance's control socket after the refused start: %v", err)
	}
}

// TestControlSocketStale: a socket file no process answers on (left by a
// gnv up that was killed) is replaced; a file that is not a socket is not.
func TestControlSocketStale(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "gnv0.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: ctl, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(ctl); err != nil {
		t.Fatalf("the stale socket file is missing: %v", err)
	}
	inst := startInstance(t, netstackArgs(ctl, 16294)...)
	var out bytes.Buffer
	if err := ctlRequest(&out, inst.control, []string{"stats", "-"}); err != nil || !strings.Contains(out.String(), "gnv0: rx ") {
		t.Errorf("stats over the replaced socket: %q %v", out.String(), err)
	}

	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runInstance(t, netstackArgs(plain, 16296)...)
	if err == nil || !strings.Contains(err.Error(), "not a socket") || !strings.Contains(err.Error(), "--control") {
		t.Errorf("a control path that is a plain file: %v", err)
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "not a socket" {
		t.Errorf("the plain file was touched: %q %v", b, err)
	}
}
