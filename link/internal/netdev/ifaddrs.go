// Package netdev looks at and configures the host's network interfaces for
// gnv's link endpoints: their addresses, a minimal rtnetlink client, and
// the errors of opening /dev/net/tun.
package netdev

import (
	"net"
	"net/netip"
)

// InterfacePrefixes returns every interface with its IP addresses as
// prefixes (IPv4 unmapped, prefix length in the address's own family).
// Interfaces whose addresses cannot be read are skipped.
func InterfacePrefixes() ([]net.Interface, [][]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, nil, err
	}
	prefixes := make([][]netip.Prefix, len(ifs))
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, bits := ipn.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && bits == 128 {
				ones -= 96
			}
			prefixes[i] = append(prefixes[i], netip.PrefixFrom(ip, ones))
		}
	}
	return ifs, prefixes, nil
}

// InterfaceOf returns the interface that has the address a, or nil (a
// invalid or unspecified, or on no interface).
func InterfaceOf(a netip.Addr) *net.Interface {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || a.IsUnspecified() {
		return nil
	}
	ifs, prefixes, err := InterfacePrefixes()
	if err != nil {
		return nil
	}
	for i := range ifs {
		for _, p := range prefixes[i] {
			if p.Addr() == a {
				return &ifs[i]
			}
		}
	}
	return nil
}
