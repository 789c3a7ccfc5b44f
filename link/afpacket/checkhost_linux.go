//go:build linux

package afpacket

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/gnv-project/gnv/link/internal/netdev"
)

// CheckHost checks that dev suits an AF_PACKET underlay with address
// addr (see Endpoint for the supported setup), in the calling
// thread's network namespace. It returns an error naming each problem that
// breaks the underlay: dev missing, down, not Ethernet; the kernel having
// addr, or an address whose subnet holds addr, on dev; the kernel having
// addr on another interface (it answers ARP for its addresses on every
// interface). Warnings name what may disturb it: IPv6 enabled on dev (the
// kernel may answer ND and sends RS and MLD there), forwarding enabled on
// dev (with UseInterfaceMAC the kernel would forward the underlay's
// packets).
func CheckHost(dev string, addr netip.Addr) (warnings []string, err error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET: AF_PACKET underlay: %w", err)
	}
	a := addr.Unmap().WithZone("")
	var problems []string
	if ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) != 6 {
		problems = append(problems, fmt.Sprintf("%s is not an Ethernet interface", dev))
	}
	if ifi.Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("%s is down (ip link set %s up)", dev, dev))
	}
	ifs, prefixes, _ := netdev.InterfacePrefixes()
	for i := range ifs {
		for _, p := range prefixes[i] {
			ip := p.Addr()
			switch {
			case ifs[i].Index != ifi.Index && ip == a:
				problems = append(problems, fmt.Sprintf("the kernel has %s on %s and answers ARP/ND for its addresses on %s too; remove it", a, ifs[i].Name, dev))
			case ifs[i].Index != ifi.Index:
			case ip == a:
				problems = append(problems, fmt.Sprintf("the kernel has %s itself on %s: it would answer ARP/ND for it and take the underlay's traffic (ip addr del %s dev %s)", p, dev, p, dev))
			case p.Contains(a):
				problems = append(problems, fmt.Sprintf("the kernel has %s on %s, a subnet that holds %s: it would answer and route for it (ip addr del %s dev %s)", p, dev, a, p, dev))
			}
		}
	}
	if v, ok := afpSysctl("net/ipv6/conf/" + dev + "/disable_ipv6"); ok && v == "0" {
		warnings = append(warnings, fmt.Sprintf("IPv6 is enabled on %s: the kernel may answer ND and sends RS/MLD there (sysctl -w net.ipv6.conf.%s.disable_ipv6=1)", dev, dev))
	}
	if v, ok := afpSysctl("net/ipv4/conf/" + dev + "/forwarding"); ok && v == "1" {
		warnings = append(warnings, fmt.Sprintf("IPv4 forwarding is on for %s: if netstack shares the interface's MAC the kernel forwards its packets", dev))
	}
	if v, ok := afpSysctl("net/ipv6/conf/" + dev + "/forwarding"); ok && v == "1" {
		warnings = append(warnings, fmt.Sprintf("IPv6 forwarding is on for %s: if netstack shares the interface's MAC the kernel forwards its packets", dev))
	}
	if len(problems) > 0 {
		return warnings, fmt.Errorf("AF_PACKET: AF_PACKET underlay on %s: %s", dev, strings.Join(problems, "; "))
	}
	return warnings, nil
}

// afpSysctl reads /proc/sys/<name> in the calling thread's namespace.
func afpSysctl(name string) (string, bool) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}
