//go:build linux

package kudp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link/internal/netdev"
	"golang.org/x/sys/unix"
)

// setup sets the socket options, binds, and probes the offloads, and
// returns the bound address. An extra source-port socket (extra) gets the
// send-side options only and a minimal receive buffer, and is bound to the
// same address with port 0; the offload probes are skipped for it (GSO is
// requested per message, and the main socket's probe answers for the
// family).
func (t *Transport) setup(fd int, extra bool) (netip.AddrPort, error) {
	var local netip.AddrPort
	cfg := &t.cfg
	set := func(level, opt, v int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("kernel UDP: setsockopt %s: %w", name, err)
		}
		return nil
	}
	if extra {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, srcSockRcvBuf)
	} else if cfg.ReadBuffer > 0 {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.ReadBuffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.ReadBuffer)
		}
	}
	if cfg.WriteBuffer > 0 {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, cfg.WriteBuffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, cfg.WriteBuffer)
		}
	}
	if err := setDontFragment(fd, cfg.v6, cfg.DontFragment); err != nil {
		return local, err
	}
	noCheckTx := false
	if cfg.v6 {
		if err := set(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1, "IPV6_V6ONLY"); err != nil {
			return local, err
		}
		for _, o := range [...]struct {
			opt  int
			name string
		}{
			{unix.IPV6_RECVTCLASS, "IPV6_RECVTCLASS"},
			{unix.IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"},
			{unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"},
		} {
			if extra {
				break // never read
			}
			if err := set(unix.IPPROTO_IPV6, o.opt, 1, o.name); err != nil {
				return local, err
			}
		}
		if cfg.ZeroChecksumTx6 {
			if err := set(unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_TX, 1, "UDP_NO_CHECK6_TX"); err != nil {
				return local, err
			}
			noCheckTx = true
		}
		if cfg.ZeroChecksumRx6 && !extra {
			if err := set(unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_RX, 1, "UDP_NO_CHECK6_RX"); err != nil {
				return local, err
			}
		}
		if err := set(unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, cfg.MulticastTTL, "IPV6_MULTICAST_HOPS"); err != nil {
			return local, err
		}
		if err := set(unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, b2i(cfg.MulticastLoop), "IPV6_MULTICAST_LOOP"); err != nil {
			return local, err
		}
		if t.devIdx != 0 {
			if err := set(unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, t.devIdx, "IPV6_MULTICAST_IF"); err != nil {
				return local, err
			}
		}
	} else {
		for _, o := range [...]struct {
			opt  int
			name string
		}{
			{unix.IP_RECVTOS, "IP_RECVTOS"},
			{unix.IP_RECVTTL, "IP_RECVTTL"},
			{unix.IP_PKTINFO, "IP_PKTINFO"},
		} {
			if extra {
				break // never read
			}
			if err := set(unix.IPPROTO_IP, o.opt, 1, o.name); err != nil {
				return local, err
			}
		}
		if cfg.NoChecksumTx4 {
			if err := set(unix.SOL_SOCKET, unix.SO_NO_CHECK, 1, "SO_NO_CHECK"); err != nil {
				return local, err
			}
			noCheckTx = true
		}
		if err := set(unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, cfg.MulticastTTL, "IP_MULTICAST_TTL"); err != nil {
			return local, err
		}
		if err := set(unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, b2i(cfg.MulticastLoop), "IP_MULTICAST_LOOP"); err != nil {
			return local, err
		}
		if t.devIdx != 0 {
			mreq := unix.IPMreqn{Ifindex: int32(t.devIdx)}
			if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &mreq); err != nil {
				return local, fmt.Errorf("kernel UDP: setsockopt IP_MULTICAST_IF: %w", err)
			}
		}
	}

	// Offloads. UDP_SEGMENT=0 only sets the socket's default segment size
	// (none); success means the kernel knows UDP GSO. The kernel refuses
	// GSO sends on a socket with zero TX checksums (EINVAL), so don't try.
	if extra {
		// Nothing to probe.
	} else if !cfg.DisableGSO && (!noCheckTx || cfg.forceGSO) {
		if unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0) == nil {
			t.gso.Store(true)
		}
	}
	if !cfg.DisableGRO && !extra {
		t.gro = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	}

	// Bind.
	port := int(cfg.Local.Port())
	if extra {
		port = 0
	}
	var sa unix.Sockaddr
	if cfg.v6 {
		s6 := &unix.SockaddrInet6{Port: port, Addr: cfg.bind.As16()}
		if z := cfg.bind.Zone(); z != "" {
			idx, err := t.zoneToIndex(z)
			if err != nil {
				return local, fmt.Errorf("kernel UDP: zone %q: %w", z, err)
			}
			s6.ZoneId = idx
		}
		sa = s6
	} else {
		sa = &unix.SockaddrInet4{Port: port, Addr: cfg.bind.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return local, fmt.Errorf("kernel UDP: bind %v: %w", netip.AddrPortFrom(cfg.bind, uint16(port)), err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return local, fmt.Errorf("kernel UDP: getsockname: %w", err)
	}
	switch s := got.(type) {
	case *unix.SockaddrInet4:
		local = netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port))
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(s.Addr)
		if s.ZoneId != 0 {
			a = a.WithZone(t.indexToZone(s.ZoneId))
		}
		local = netip.AddrPortFrom(a, uint16(s.Port))
	}
	return local, nil
}

// openSourcePorts creates the cfg.SourcePorts extra send-only sockets. On
// any failure (EMFILE, no ephemeral port left, …) it closes those it made
// and leaves the pool empty: the main socket then sends everything.
//
// The sockets are kept out of the runtime poller: they are created
// blocking, so that os.NewFile does not add them, and made non-blocking
// after (mmsg.SendAll needs that). A socket in the poller is watched for
// writability too, and the kernel signals write space each time a
// datagram it sent is freed (on a veth, when the peer's IP layer takes
// it), which could wake a thread of this process for every datagram with
// nothing to do. The senders poll a full socket themselves
// (mmsg.WaitWritable).
func (t *Transport) openSourcePorts(domain int) {
	n := t.cfg.SourcePorts
	if n <= 0 {
		return
	}
	files := make([]*os.File, 0, n)
	rcs := make([]syscall.RawConn, 0, n)
	ports := make([]uint16, 0, n)
	fail := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for range n {
		fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			fail()
			return
		}
		local, err := t.setup(fd, true)
		if err != nil {
			unix.Close(fd)
			fail()
			return
		}
		f := os.NewFile(uintptr(fd), "gnv-udp-src")
		files = append(files, f)
		if unix.SetNonblock(fd, true) != nil {
			fail()
			return
		}
		rc, err := f.SyscallConn()
		if err != nil {
			fail()
			return
		}
		rcs = append(rcs, rc)
		ports = append(ports, local.Port())
	}
	t.srcFiles, t.srcRCs, t.srcPorts = files, rcs, ports
}

// underlayMTU finds the IP MTU of dev, else of the interface owning local,
// else DefaultMTU. Loopback counts as DefaultMTU.
func underlayMTU(dev *net.Interface, local netip.Addr) int {
	mtuOf := func(ifi *net.Interface) int {
		if ifi.Flags&net.FlagLoopback != 0 || ifi.MTU <= 0 {
			return DefaultMTU
		}
		return ifi.MTU
	}
	if dev != nil {
		return mtuOf(dev)
	}
	local = local.Unmap().WithZone("")
	if !local.IsValid() || local.IsUnspecified() || local.IsLoopback() {
		return DefaultMTU
	}
	ifs, prefixes, err := netdev.InterfacePrefixes()
	if err != nil {
		return DefaultMTU
	}
	for i := range ifs {
		for _, p := range prefixes[i] {
			if p.Addr() == local {
				return mtuOf(&ifs[i])
			}
		}
	}
	return DefaultMTU
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// putSockaddr writes dst into sa in the socket's family and returns the
// address length.
func (t *Transport) putSockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) (uint32, error) {
	a := dst.Addr()
	if !a.IsValid() || a.IsUnspecified() || dst.Port() == 0 {
		return 0, errBadDst
	}
	port := dst.Port()
	if !t.cfg.v6 {
		a = a.Unmap()
		if !a.Is4() {
			return 0, errFamilyMismatch
		}
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		s4.Family = unix.AF_INET
		putPort(&s4.Port, port)
		s4.Addr = a.As4()
		s4.Zero = [8]uint8{}
		return unix.SizeofSockaddrInet4, nil
	}
	if !a.Is6() || a.Is4In6() {
		return 0, errFamilyMismatch
	}
	sa.Family = unix.AF_INET6
	putPort(&sa.Port, port)
	sa.Flowinfo = 0
	sa.Addr = a.As16()
	sa.Scope_id = 0
	if z := a.Zone(); z != "" {
		idx, err := t.zoneToIndex(z)
		if err != nil {
			return 0, err
		}
		sa.Scope_id = idx
	} else if t.devIdx != 0 && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast()) {
		sa.Scope_id = uint32(t.devIdx)
	}
	return unix.SizeofSockaddrInet6, nil
}

// putPort stores port in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// getPort loads a port stored in network byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// zoneToIndex resolves an IPv6 zone (interface name or number) to an
// interface index, caching the answer.
func (t *Transport) zoneToIndex(zone string) (uint32, error) {
	t.zoneMu.Lock()
	idx, ok := t.zoneIndex[zone]
	t.zoneMu.Unlock()
	if ok {
		return idx, nil
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		idx = uint32(n)
	} else {
		ifi, err := net.InterfaceByName(zone)
		if err != nil {
			return 0, err
		}
		idx = uint32(ifi.Index)
	}
	t.zoneMu.Lock()
	t.zoneIndex[zone] = idx
	t.zoneMu.Unlock()
	return idx, nil
}

// indexToZone names an interface index for netip zones, caching the answer.
func (t *Transport) indexToZone(idx uint32) string {
	t.zoneMu.Lock()
	z, ok := t.zoneByName[idx]
	t.zoneMu.Unlock()
	if ok {
		return z
	}
	if ifi, err := net.InterfaceByIndex(int(idx)); err == nil {
		z = ifi.Name
	} else {
		z = strconv.FormatUint(uint64(idx), 10)
	}
	t.zoneMu.Lock()
	t.zoneByName[idx] = z
	t.zoneMu.Unlock()
	return z
}

// alignedBytes returns n zero bytes aligned for control messages.
func alignedBytes(n int) []byte {
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}

// isFatalSockErr reports errors that concern the socket, not one datagram.
func isFatalSockErr(e syscall.Errno) bool {
	return e == unix.EBADF || e == unix.ENOTSOCK || e == unix.EFAULT
}

// setDontFragment sets the socket's path MTU discovery mode, which decides
// the outer DF bit: IP_PMTUDISC_DO when on, so that IPv4 datagrams carry DF
// and one larger than the path MTU fails with EMSGSIZE; IP_PMTUDISC_DONT
// when off, so that they leave with DF clear and the kernel fragments an
// oversized one. The kernel's default ("want") would set DF. IPv6 sockets
// get IPV6_PMTUDISC_DO or IPV6_PMTUDISC_DONT: IPv6 has no DF bit, but DO
// likewise refuses a datagram larger than the path MTU instead of
// fragmenting it at the source.
func setDontFragment(fd int, v6, on bool) error {
	level, opt, mode, name := unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT, "IP_MTU_DISCOVER"
	if on {
		mode = unix.IP_PMTUDISC_DO
	}
	if v6 {
		level, opt, mode, name = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT, "IPV6_MTU_DISCOVER"
		if on {
			mode = unix.IPV6_PMTUDISC_DO
		}
	}
	if err := unix.SetsockoptInt(fd, level, opt, mode); err != nil {
		return fmt.Errorf("kernel UDP: setsockopt %s: %w", name, err)
	}
	return nil
}
