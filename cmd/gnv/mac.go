package main

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// hostID identifies this host for derived overlay MACs: the systemd
// machine ID (/etc/machine-id, or D-Bus's copy), else the host name.
func hostID() string {
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil {
			if id := strings.TrimSpace(string(b)); id != "" {
				return "machine-id:" + id
			}
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return "hostname:" + h
	}
	return "unknown-host"
}

// stableMAC derives an interface's overlay MAC from the host, the
// interface's name and VNI and the local underlay address (if set): the
// same every time gnv up starts with that configuration on that host, so
// that peers keep reaching it across restarts, and different for the two
// ends of a tunnel between network namespaces of one host, which share the
// host's identity but not their underlay addresses. It is a locally
// administered unicast address.
func stableMAC(host, name string, vni uint32, local netip.Addr) net.HardwareAddr {
	loc := ""
	if local.IsValid() && !local.IsUnspecified() {
		loc = local.String()
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("gnv overlay mac\x00%s\x00%s\x00%d\x00%s", host, name, vni, loc)))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// parseUnicastMAC parses an interface's or a forwarding entry's MAC
// address, named what in errors ("--mac", "MAC"): a unicast Ethernet
// address other than the zero address.
func parseUnicastMAC(what, s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%s %q: want an Ethernet address like 02:00:00:00:00:01", what, s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("%s %s is a multicast address: want a unicast one", what, mac)
	}
	if string(mac) == "\x00\x00\x00\x00\x00\x00" {
		return nil, fmt.Errorf("%s %s is the zero address: no frame comes from it", what, mac)
	}
	return mac, nil
}
