//go:build darwin || freebsd

package kudp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// setDontFragment sets IP_DONTFRAG (IPv6: IPV6_DONTFRAG): when on, IPv4
// datagrams carry DF and one larger than the path MTU fails instead of
// being fragmented; off is the system's default, DF clear (so a system
// without the option fails only when DF is asked for).
func setDontFragment(fd int, v6, on bool) error {
	level, opt, name := unix.IPPROTO_IP, unix.IP_DONTFRAG, "IP_DONTFRAG"
	if v6 {
		level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, "IPV6_DONTFRAG"
	}
	v := 0
	if on {
		v = 1
	}
	if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
		if !on {
			return nil // clear is the default: a system without the option loses nothing
		}
		return fmt.Errorf("kernel UDP: setsockopt %s: %w", name, err)
	}
	return nil
}
