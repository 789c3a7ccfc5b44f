package tuntap

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// The commands that configure water devices where water does not: the
// MTU and addresses of a utun device on macOS (ifconfig and route, as
// WireGuard's wg-quick does) and of a tap-windows6 adapter on Windows
// (netsh, active store only, so that nothing outlives a reboot). They are
// built here, on every system, so that their tests run everywhere.

// isUtunName reports whether name is utunN.
func isUtunName(name string) bool {
	n, ok := strings.CutPrefix(name, "utun")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 31)
	return err == nil
}

// darwinMTUCmd sets the MTU of the macOS interface name.
func darwinMTUCmd(name string, mtu uint32) []string {
	return []string{"ifconfig", name, "mtu", strconv.FormatUint(uint64(mtu), 10)}
}

// darwinAddrCmds add p to the utun interface name, a point-to-point
// interface: the address (its own peer for IPv4), then a route to the
// prefix through the interface, which macOS does not add itself.
func darwinAddrCmds(name string, p netip.Prefix) [][]string {
	family, addr := "inet", []string{"ifconfig", name, "inet", p.String(), p.Addr().String(), "alias"}
	if p.Addr().Is6() {
		family, addr = "inet6", []string{"ifconfig", name, "inet6", p.String(), "alias"}
	}
	cmds := [][]string{addr}
	if p.Bits() < p.Addr().BitLen() {
		cmds = append(cmds, []string{"route", "-n", "add", "-" + family, p.Masked().String(), "-interface", name})
	}
	return cmds
}

// darwinUpCmd brings the macOS interface name up.
func darwinUpCmd(name string) []string { return []string{"ifconfig", name, "up"} }

// netshMTUCmds set the MTU of the Windows adapter name for IPv4 and, when
// the MTU allows IPv6 (1280 bytes at least), for IPv6.
func netshMTUCmds(name string, mtu uint32) [][]string {
	cmds := [][]string{{"netsh", "interface", "ipv4", "set", "subinterface", name, fmt.Sprintf("mtu=%d", mtu), "store=active"}}
	if mtu >= 1280 {
		cmds = append(cmds, []string{"netsh", "interface", "ipv6", "set", "subinterface", name, fmt.Sprintf("mtu=%d", mtu), "store=active"})
	}
	return cmds
}

// netshAddrCmd adds p to the Windows adapter name.
func netshAddrCmd(name string, p netip.Prefix) []string {
	if p.Addr().Is4() {
		mask := net.IP(net.CIDRMask(p.Bits(), 32)).String()
		return []string{"netsh", "interface", "ipv4", "add", "address", name, "address=" + p.Addr().String(), "mask=" + mask, "store=active"}
	}
	return []string{"netsh", "interface", "ipv6", "add", "address", name, "address=" + p.String(), "store=active"}
}

// netshDelAddrCmd removes the address of p from the Windows adapter name.
func netshDelAddrCmd(name string, p netip.Prefix) []string {
	family := "ipv4"
	if p.Addr().Is6() {
		family = "ipv6"
	}
	return []string{"netsh", "interface", family, "delete", "address", name, "address=" + p.Addr().String()}
}

// netshNoDADCmd turns off IPv6 duplicate address detection on the
// Windows adapter name.
func netshNoDADCmd(name string) []string {
	return []string{"netsh", "interface", "ipv6", "set", "interface", name, "dadtransmits=0", "store=active"}
}

// runCmd runs a configuration command; the error quotes the command and
// its output.
func runCmd(argv []string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// runRouteCmd is runCmd for a route that may already be there.
func runRouteCmd(argv []string) error {
	err := runCmd(argv)
	if err != nil && strings.Contains(err.Error(), "File exists") {
		return nil
	}
	return err
}
