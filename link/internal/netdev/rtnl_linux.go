//go:build linux

package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a NETLINK_ROUTE socket used to configure a device. Keep it open
// for the device's life, so that later changes (an MTU, removing
// addresses) happen in the device's network namespace whichever thread
// makes them. Its descriptor also serves the SIOCGIF*
// ioctls, which any socket forwards to the device layer of its namespace.
type Conn struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

// Open opens a route socket in the calling thread's network namespace.
func Open() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, 1<<13)}, nil
}

// Close closes the socket; a nil Conn is fine.
func (n *Conn) Close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}

// Ifindex returns the index of the interface name.
func (n *Conn) Ifindex(name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(n.fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// MTU returns the MTU of the interface name.
func (n *Conn) MTU(name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(n.fd, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// ifreqHW is struct ifreq with ifr_hwaddr, which unix.Ifreq has no
// accessor for.
type ifreqHW struct {
	name   [unix.IFNAMSIZ]byte
	family uint16
	data   [14]byte
	_      [8]byte // the rest of the ifreq union
}

// HWAddr returns the Ethernet address of the interface name.
func (n *Conn) HWAddr(name string) (net.HardwareAddr, error) {
	var r ifreqHW
	copy(r.name[:], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), unix.SIOCGIFHWADDR, uintptr(unsafe.Pointer(&r))); e != 0 {
		return nil, e
	}
	return append(net.HardwareAddr(nil), r.data[:6]...), nil
}

// SetLink sets the MTU (if not 0) and the MAC (if not nil) of interface
// index, and brings it up if up is set (RTM_NEWLINK).
func (n *Conn) SetLink(index int, mtu uint32, mac net.HardwareAddr, up bool) error {
	msg := make([]byte, unix.SizeofIfInfomsg, 64)
	ne := binary.NativeEndian
	// struct ifinfomsg: family, pad, type, index, flags, change.
	ne.PutUint32(msg[4:8], uint32(index))
	if up {
		ne.PutUint32(msg[8:12], unix.IFF_UP)
		ne.PutUint32(msg[12:16], unix.IFF_UP)
	}
	if mtu != 0 {
		var v [4]byte
		ne.PutUint32(v[:], mtu)
		msg = attr(msg, unix.IFLA_MTU, v[:])
	}
	if mac != nil {
		msg = attr(msg, unix.IFLA_ADDRESS, mac)
	}
	return n.request(unix.RTM_NEWLINK, 0, msg)
}

// SetDown takes interface index down (RTM_NEWLINK clearing IFF_UP).
func (n *Conn) SetDown(index int) error {
	msg := make([]byte, unix.SizeofIfInfomsg)
	ne := binary.NativeEndian
	ne.PutUint32(msg[4:8], uint32(index))
	ne.PutUint32(msg[12:16], unix.IFF_UP) // change IFF_UP, to 0
	return n.request(unix.RTM_NEWLINK, 0, msg)
}

// SetMaster makes interface index a port of master (a bridge), like
// `ip link set DEV master BRIDGE`.
func (n *Conn) SetMaster(index, master int) error {
	msg := make([]byte, unix.SizeofIfInfomsg, 32)
	binary.NativeEndian.PutUint32(msg[4:8], uint32(index))
	var v [4]byte
	binary.NativeEndian.PutUint32(v[:], uint32(master))
	msg = attr(msg, unix.IFLA_MASTER, v[:])
	return n.request(unix.RTM_NEWLINK, 0, msg)
}

// Addr adds (RTM_NEWADDR) or removes (RTM_DELADDR) an address of interface
// index. Adding an address that exists is not an error; added is false
// then.
func (n *Conn) Addr(typ uint16, index int, p netip.Prefix, noDAD bool) (added bool, err error) {
	a := p.Addr()
	bits := p.Bits()
	if a.Is4In6() {
		a, bits = a.Unmap(), max(bits-96, 0)
	}
	fam, ab := uint8(unix.AF_INET6), a.AsSlice()
	if a.Is4() {
		fam = unix.AF_INET
	}
	msg := make([]byte, unix.SizeofIfAddrmsg, 64)
	// struct ifaddrmsg: family, prefixlen, flags, scope, index.
	msg[0], msg[1] = fam, uint8(bits)
	binary.NativeEndian.PutUint32(msg[4:8], uint32(index))
	msg = attr(msg, unix.IFA_LOCAL, ab)
	msg = attr(msg, unix.IFA_ADDRESS, ab)
	var flags uint16
	if typ == unix.RTM_NEWADDR {
		flags = unix.NLM_F_CREATE | unix.NLM_F_EXCL
		if noDAD && fam == unix.AF_INET6 {
			var v [4]byte
			binary.NativeEndian.PutUint32(v[:], unix.IFA_F_NODAD)
			msg = attr(msg, unix.IFA_FLAGS, v[:])
		}
	}
	err = n.request(typ, flags, msg)
	if typ == unix.RTM_NEWADDR && errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	return err == nil, err
}

// attr appends a netlink attribute (struct rtattr and data, padded to
// 4 bytes).
func attr(b []byte, typ uint16, data []byte) []byte {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:2], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one request and waits for its acknowledgement.
func (n *Conn) request(typ, flags uint16, body []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return errors.New("netlink socket closed")
	}
	n.seq++
	ne := binary.NativeEndian
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne.PutUint32(msg[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:6], typ)
	ne.PutUint16(msg[6:8], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:12], n.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	for {
		r, _, err := unix.Recvfrom(n.fd, n.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		b := n.buf[:r]
		for len(b) >= unix.SizeofNlMsghdr {
			l := int(ne.Uint32(b[0:4]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				break
			}
			if ne.Uint16(b[4:6]) == unix.NLMSG_ERROR && ne.Uint32(b[8:12]) == n.seq && l >= unix.SizeofNlMsghdr+4 {
				if code := int32(ne.Uint32(b[16:20])); code != 0 {
					return syscall.Errno(-code)
				}
				return nil
			}
			b = b[(l+3)&^3:]
		}
	}
}
