//go:build linux

// Package netns creates Linux network namespaces and veth pairs for
// integration tests, and runs code inside a namespace.
//
// Everything needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Tests call
// RequireRoot first, which skips them with a clear message otherwise.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it runs as root with the ip command.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces and veth); run the tests as root, as CI does")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs the ip command (apt-get install iproute2)")
	}
}

// toolPackages names the Debian package that provides each tool the
// integration tests run, for the skip message.
var toolPackages = map[string]string{
	"ip": "iproute2", "bridge": "iproute2", "ping": "iputils-ping", "sysctl": "procps",
	"tshark": "tshark", "tcpdump": "tcpdump", "iperf3": "iperf3", "ethtool": "ethtool",
	"nft": "nftables", "curl": "curl", "python3": "python3", "socat": "socat",
	"setpriv": "util-linux", "ovs-vsctl": "openvswitch-switch", "ovs-vswitchd": "openvswitch-switch",
	"ovsdb-server": "openvswitch-switch", "qemu-system-x86_64": "qemu-system-x86",
	"bgpd": "frr", "zebra": "frr", "vtysh": "frr",
}

// RequireTools skips the test, naming the tool and the Debian package that
// provides it, unless every tool is on PATH (or, for FRR's daemons, in
// /usr/lib/frr). CI installs them all; a machine without them skips the
// tests that need them instead of failing.
func RequireTools(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, t := range tools {
		if _, err := exec.LookPath(t); err == nil {
			continue
		}
		if _, err := os.Stat("/usr/lib/frr/" + t); err == nil {
			continue
		}
		pkg := toolPackages[t]
		if pkg == "" {
			pkg = t
		}
		tb.Skipf("needs %s, which is not installed (apt-get install %s)", t, pkg)
	}
}

// NS is a named network namespace.
type NS struct {
	Name string
	fd   int
}

// New creates a namespace with a unique name starting with prefix, brings
// its loopback up, and deletes it when the test ends.
func New(tb testing.TB, prefix string) *NS {
	tb.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := prefix + "-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		tb.Fatalf("open netns %s: %v", name, err)
	}
	ns := &NS{Name: name, fd: fd}
	tb.Cleanup(func() {
		unix.Close(fd)
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	ns.MustRun(tb, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s (in %s): %w: %s", name, strings.Join(args, " "), ns.Name, err, out.String())
	}
	return out.String(), err
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Command returns an exec.Cmd that runs inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets, TAP
// devices and other file descriptors opened in fn belong to the namespace
// and stay there after Do returns; goroutines started by fn do not inherit
// the namespace.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it dies with the goroutine instead
		// of going back to the scheduler in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Veth creates a veth pair with one end in a and the other in b, named
// ifA and ifB, both up.
func Veth(tb testing.TB, a *NS, ifA string, b *NS, ifB string) {
	tb.Helper()
	if out, err := exec.Command("ip", "link", "add", ifA, "netns", a.Name, "type", "veth", "peer", "name", ifB, "netns", b.Name).CombinedOutput(); err != nil {
		tb.Fatalf("veth %s/%s: %v: %s", ifA, ifB, err, out)
	}
	a.MustRun(tb, "ip", "link", "set", ifA, "up")
	b.MustRun(tb, "ip", "link", "set", ifB, "up")
}

// Bridge creates a Linux bridge named name in ns with the given ports
// (interfaces already in ns), and brings it up. Bridged frames skip
// netfilter (bridge-nf-call-*), where br_netfilter would otherwise add its
// cost to every frame.
func Bridge(tb testing.TB, ns *NS, name string, ports ...string) {
	tb.Helper()
	ns.MustRun(tb, "ip", "link", "add", name, "type", "bridge")
	for _, p := range ports {
		ns.MustRun(tb, "ip", "link", "set", p, "master", name)
	}
	ns.MustRun(tb, "ip", "link", "set", name, "up")
	for _, k := range []string{"iptables", "ip6tables", "arptables"} {
		_, _ = ns.Run("sysctl", "-qw", "net.bridge.bridge-nf-call-"+k+"=0") // absent without br_netfilter
	}
}

// Existing returns an NS for a namespace created elsewhere (by a script,
// say); the caller deletes it.
func Existing(name string) *NS {
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fd = -1
	}
	return &NS{Name: name, fd: fd}
}
