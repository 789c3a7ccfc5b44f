package kudp

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Winsock's DF options (ws2ipdef.h), which golang.org/x/sys/windows does
// not name.
const (
	ipDontFragment = 14 // IP_DONTFRAGMENT
	ipv6DontFrag   = 14 // IPV6_DONTFRAG
)

// setDontFragment sets IP_DONTFRAGMENT (IPv6: IPV6_DONTFRAG): when on,
// IPv4 datagrams carry DF and one larger than the path MTU fails instead of
// being fragmented; off is the system's default, DF clear (so a system
// without the option fails only when DF is asked for).
func setDontFragment(fd int, v6, on bool) error {
	level, opt, name := windows.IPPROTO_IP, ipDontFragment, "IP_DONTFRAGMENT"
	if v6 {
		level, opt, name = windows.IPPROTO_IPV6, ipv6DontFrag, "IPV6_DONTFRAG"
	}
	v := 0
	if on {
		v = 1
	}
	if err := windows.SetsockoptInt(windows.Handle(fd), level, opt, v); err != nil {
		if !on {
			return nil // clear is the default: a system without the option loses nothing
		}
		return fmt.Errorf("kernel UDP: setsockopt %s: %w", name, err)
	}
	return nil
}

// noConnReset turns off SIO_UDP_CONNRESET: otherwise an ICMP port
// unreachable for a datagram sent earlier fails the next read with
// WSAECONNRESET.
func noConnReset(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		off := uint32(0)
		var ret uint32
		serr = windows.WSAIoctl(windows.Handle(fd), windows.SIO_UDP_CONNRESET,
			(*byte)(unsafe.Pointer(&off)), uint32(unsafe.Sizeof(off)), nil, 0, &ret, nil, 0)
	})
	if err == nil && serr != nil {
		err = fmt.Errorf("kernel UDP: SIO_UDP_CONNRESET: %w", serr)
	}
	return err
}

func init() { platformSocket = noConnReset }
