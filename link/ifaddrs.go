package link

import (
	"net"
	"net/netip"
)

// interfacePrefixes returns every interface with its IP addresses as
// prefixes (IPv4 unmapped, prefix length in the address's own family).
// Interfaces whose addresses cannot be read are skipped.
func interfacePrefixes() ([]net.Interface, [][]netip.Prefix, error) {
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
