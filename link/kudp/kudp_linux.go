//go:build linux

package kudp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/mmsg"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
)

const (
	// recvSlotSize is the receive buffer per recvmmsg slot: the largest
	// UDP payload, and large enough for a GRO-coalesced message.
	recvSlotSize = 65535

	// gsoMaxSegments and gsoMaxBytes bound one UDP_SEGMENT message.
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000

	// maxIovPerMsg is the kernel's UIO_MAXIOV.
	maxIovPerMsg = 1024

	// recvCtrlSize is the control buffer per receive slot. It holds
	// TOS/TCLASS, TTL/HOPLIMIT, PKTINFO and UDP_GRO with room to spare.
	recvCtrlSize = 256

	// senderPoolSize is how many idle senders are kept for concurrent
	// WriteBatch calls.
	senderPoolSize = 8

	// srcSockRcvBuf is the SO_RCVBUF request of the extra source-port
	// sockets, which are never read; the kernel rounds it up to its
	// minimum.
	srcSockRcvBuf = 1
)

// sendCtrlSize is the control buffer per send message: a TOS/TCLASS int, a
// TTL/HOPLIMIT int and a UDP_SEGMENT uint16, rounded up to 8 bytes.
var sendCtrlSize = (2*unix.CmsgSpace(4) + unix.CmsgSpace(2) + 7) &^ 7

// Transport is the Linux state of a Transport.
// Transport is an underlay link.Transport over one ordinary kernel UDP socket. It
// needs no privileges at all (the only privileged options it tries,
// SO_RCVBUFFORCE and SO_SNDBUFFORCE, fall back silently). What it does and does not do:
//
//   - Batching. Sends use sendmmsg(2) and receives use recvmmsg(2), with
//     preallocated message headers, iovecs, socket addresses and control
//     message buffers, so the steady state allocates nothing per packet.
//     link.Packet payloads (gVisor buffer.Buffer) are sent straight from their
//     views without copying.
//   - Offloads. UDP GSO (UDP_SEGMENT, Linux ≥ 4.18) and UDP GRO (UDP_GRO,
//     Linux ≥ 5.0) are probed at construction and used when available; see
//     (*Transport).Offloads. WriteBatch sends runs of consecutive packets
//     with the same Dst, TOS and TTL and equal payload sizes (the last may
//     be shorter; at most 64 segments, 65000 bytes, and segments that fit
//     MTU) as one UDP_SEGMENT message. If the kernel refuses such a message
//     with EIO or EINVAL, GSO is switched off for good; on EMSGSIZE it stays
//     on. Either way the datagrams are resent one by one. On receive, a
//     GRO-coalesced message is split back into its datagrams.
//   - Per-packet outer fields. TOS / traffic class (ECN included) and the
//     TTL / hop limit are set per datagram with IP_TOS / IP_TTL
//     (IPV6_TCLASS / IPV6_HOPLIMIT) control messages. Received datagrams carry
//     TOS, TTL and the destination address (from IP_PKTINFO /
//     IPV6_PKTINFO).
//   - Source port. RFC 8926 §3.3 says the outer source port SHOULD carry
//     flow entropy, which the Geneve endpoint puts in Packet.SrcPort. A
//     bound socket has one port, so Transport keeps a pool of extra
//     send-only sockets on kernel-chosen ephemeral ports
//     (Options.SourcePorts, 16 by default) and sends a packet with
//     a non-zero SrcPort from socket SrcPort % pool size: the same flow
//     always leaves from the same port, different flows spread over the
//     pool. SrcPort 0, or a disabled or unavailable pool, sends from
//     LocalAddr().Port(). The netstack transport uses SrcPort itself.
//   - DF. The Don't Fragment behaviour is per socket
//     (Options.DontFragment); Packet.DF is ignored.
//   - Zero UDP checksums (RFC 8926 §3.3, §4.3.1) are opt-in:
//     NoChecksumTx4 (SO_NO_CHECK), ZeroChecksumTx6 (UDP_NO_CHECK6_TX) and
//     ZeroChecksumRx6 (UDP_NO_CHECK6_RX). The kernel refuses UDP GSO on a
//     socket that sends zero checksums, so GSO is off when NoChecksumTx4 or
//     ZeroChecksumTx6 applies.
//   - Multicast. JoinGroup/LeaveGroup use IP_ADD_MEMBERSHIP /
//     IPV6_ADD_MEMBERSHIP on Options.Device; a receiver of group
//     traffic must be bound to the wildcard address.
//   - Lifetime. Start runs one receive goroutine that blocks in recvmmsg
//     through the runtime poller; Close interrupts it and waits for it.
type Transport struct {
	cfg     config
	file    *os.File
	rc      syscall.RawConn
	local   netip.AddrPort
	mtu     int
	devIdx  int
	maxSeg  int // largest payload per GSO segment that fits the MTU
	gso     atomic.Bool
	gro     bool
	senders chan *udpSender

	// The extra send-only sockets of Options.SourcePorts; empty
	// when the pool is disabled or could not be created. Fixed after
	// New.
	srcFiles []*os.File
	srcRCs   []syscall.RawConn
	srcPorts []uint16

	// Per-family control message levels and types.
	ipLevel, tosType, ttlType int32

	zoneMu     sync.Mutex
	zoneIndex  map[string]uint32
	zoneByName map[uint32]string

	stats struct {
		sent, bytesSent, sendErrs, gsoSends, gsoFallbacks atomic.Uint64
		recv, bytesRecv, groSplits, trunc, recvErrs       atomic.Uint64
	}

	mu        sync.Mutex
	started   bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

var (
	_ link.Transport        = (*Transport)(nil)
	_ link.OffloadReporter  = (*Transport)(nil)
	_ link.WireSourcePorter = (*Transport)(nil)
)

// New opens, configures and binds a UDP socket. It needs no
// privileges: options that do (SO_RCVBUFFORCE, SO_SNDBUFFORCE) fall back to
// their unprivileged forms.
func New(opts Options) (*Transport, error) {
	cfg, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:        cfg,
		senders:    make(chan *udpSender, senderPoolSize),
		zoneIndex:  make(map[string]uint32),
		zoneByName: make(map[uint32]string),
		done:       make(chan struct{}),
	}
	var dev *net.Interface
	if cfg.Device != "" {
		if dev, err = net.InterfaceByName(cfg.Device); err != nil {
			return nil, fmt.Errorf("kernel UDP: device %q: %w", cfg.Device, err)
		}
		t.devIdx = dev.Index
	}

	domain := unix.AF_INET
	if cfg.v6 {
		domain = unix.AF_INET6
		t.ipLevel, t.tosType, t.ttlType = unix.IPPROTO_IPV6, unix.IPV6_TCLASS, unix.IPV6_HOPLIMIT
	} else {
		t.ipLevel, t.tosType, t.ttlType = unix.IPPROTO_IP, unix.IP_TOS, unix.IP_TTL
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("kernel UDP: socket: %w", err)
	}
	if t.local, err = t.setup(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}

	// The file owns fd from here on; the runtime poller lets Close
	// interrupt a blocked receive.
	t.file = os.NewFile(uintptr(fd), "gnv-udp")
	if t.rc, err = t.file.SyscallConn(); err != nil {
		t.file.Close()
		return nil, fmt.Errorf("kernel UDP: %w", err)
	}

	t.mtu = cfg.MTU
	if t.mtu == 0 {
		t.mtu = underlayMTU(dev, t.local.Addr())
	}
	hdr := 20 + 8
	if cfg.v6 {
		hdr = 40 + 8
	}
	t.maxSeg = t.mtu - hdr
	t.openSourcePorts(domain)
	return t, nil
}

// openSourcePorts creates the cfg.SourcePorts extra send-only sockets. On
// any failure (EMFILE, no ephemeral port left, …) it closes those it made
// and leaves the pool empty: the main socket then sends everything.
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
		fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
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
		if cfg.DontFragment {
			if err := set(unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO, "IPV6_MTU_DISCOVER"); err != nil {
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
		if cfg.DontFragment {
			if err := set(unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO, "IP_MTU_DISCOVER"); err != nil {
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

// LocalAddr returns the bound address and port (the kernel-chosen port when
// Options.Local had port 0).
func (t *Transport) LocalAddr() netip.AddrPort { return t.local }

// SourcePorts returns the local ports of the source-port sockets
// (Options.SourcePorts), in pool order: a packet with a non-zero
// Packet.SrcPort leaves from port SourcePorts()[SrcPort % len]. It is empty
// when the pool is disabled or could not be created, and every datagram
// leaves from LocalAddr().Port(). The caller may modify the returned slice.
func (t *Transport) SourcePorts() []uint16 { return slices.Clone(t.srcPorts) }

// WireSourcePort returns the UDP source port a datagram with Packet.SrcPort
// srcPort leaves from (for captures).
func (t *Transport) WireSourcePort(srcPort uint16) uint16 {
	if len(t.srcPorts) == 0 {
		return t.local.Port()
	}
	if k := srcSockIndex(srcPort, len(t.srcPorts)); k >= 0 {
		return t.srcPorts[k]
	}
	return t.local.Port()
}

// MTU returns the underlay IP MTU: Options.MTU or the one found at
// construction (1500 for loopback or when unknown).
func (t *Transport) MTU() int { return t.mtu }

// Offloads implements link.OffloadReporter: whether UDP GSO (UDP_SEGMENT)
// is in use for sends (link.OffloadUDPGSO) and UDP GRO (UDP_GRO) is enabled
// for receives (link.OffloadUDPGRO). GSO can turn off at run time if the
// kernel refuses it.
func (t *Transport) Offloads() link.Offloads {
	var o link.Offloads
	if t.gso.Load() {
		o |= link.OffloadUDPGSO
	}
	if t.gro {
		o |= link.OffloadUDPGRO
	}
	return o
}

// Stats returns a snapshot of the transport's counters.
func (t *Transport) Stats() Stats {
	s := &t.stats
	return Stats{
		DatagramsSent:     s.sent.Load(),
		BytesSent:         s.bytesSent.Load(),
		SendErrors:        s.sendErrs.Load(),
		GSOSends:          s.gsoSends.Load(),
		GSOFallbacks:      s.gsoFallbacks.Load(),
		DatagramsReceived: s.recv.Load(),
		BytesReceived:     s.bytesRecv.Load(),
		GROSplits:         s.groSplits.Load(),
		Truncated:         s.trunc.Load(),
		ReceiveErrors:     s.recvErrs.Load(),
	}
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

// putCmsg writes a control message header for level/typ with datalen bytes
// of data at the start of b and returns the data slice and the space used.
func putCmsg(b []byte, level, typ int32, datalen int) ([]byte, int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = level
	h.Type = typ
	h.SetLen(unix.CmsgLen(datalen))
	off := unix.CmsgLen(0)
	return b[off : off+datalen], unix.CmsgSpace(datalen)
}

// ---- sending ----

// sendMeta ties a built message to the packets it carries.
type sendMeta struct {
	first, count int // packets [first, first+count)
	bytes        int // payload bytes
	iovStart     int
	iovN         int
}

// udpSender holds the preallocated state of one WriteBatch call.
type udpSender struct {
	t     *Transport
	msgs  []unix.Mmsghdr
	addrs []unix.RawSockaddrInet6
	ctrl  []byte
	meta  []sendMeta
	iovs  []unix.Iovec

	// Build results: datagrams with an unusable Dst, among the packets
	// of the current run below scanned (a GSO fallback rebuilds packets
	// already scanned). badDst, badErr and badFirst cover the whole batch.
	scanned  int
	badDst   int
	badErr   error
	badFirst netip.AddrPort

	// WriteBatch results, accumulated over the runs of one batch.
	sent, bytes, errs, gsoSends, fallbacks int
	firstErr                               error // first refused datagram
	firstErrDst                            netip.AddrPort
	stopErr                                error // closed or broken socket
	stopDst                                netip.AddrPort

	// Syscall loop state, shared with the RawConn callbacks.
	i, n    int
	errno   syscall.Errno
	blocked bool

	controlFn func(fd uintptr)
	writeFn   func(fd uintptr) bool
}

func newUDPSender(t *Transport) *udpSender {
	b := t.cfg.BatchSize
	s := &udpSender{
		t:     t,
		msgs:  make([]unix.Mmsghdr, b),
		addrs: make([]unix.RawSockaddrInet6, b),
		meta:  make([]sendMeta, b),
		iovs:  make([]unix.Iovec, 0, 2*b),
	}
	s.ctrl = alignedBytes(b * sendCtrlSize)
	s.controlFn = func(fd uintptr) { s.sendLoop(fd, false) }
	s.writeFn = func(fd uintptr) bool { return s.sendLoop(fd, true) }
	return s
}

// alignedBytes returns n zero bytes aligned for control messages.
func alignedBytes(n int) []byte {
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}

func (t *Transport) getSender() *udpSender {
	select {
	case s := <-t.senders:
		return s
	default:
		return newUDPSender(t)
	}
}

func (t *Transport) putSender(s *udpSender) {
	select {
	case t.senders <- s:
	default:
	}
}

// sendLoop sends msgs[s.i:s.n] (see mmsg.SendAll), recording a failure in
// s.errno and a full socket in s.blocked.
func (s *udpSender) sendLoop(fd uintptr, canWait bool) bool {
	done, blocked, errno := mmsg.SendAll(fd, s.msgs[:s.n], &s.i, canWait)
	s.blocked = s.blocked || blocked
	if errno != 0 {
		s.errno = errno
	}
	return done
}

// build turns pkts[p:] into at most BatchSize messages, grouping runs of
// equal-sized datagrams into GSO messages unless the group would start
// before noGSOUntil. It returns the message count and the next packet.
func (s *udpSender) build(pkts []link.Packet, p, noGSOUntil int) (nm, next int) {
	t := s.t
	useGSO := t.gso.Load()
	s.iovs = s.iovs[:0]
	for nm < len(s.msgs) && p < len(pkts) {
		pk := &pkts[p]
		nameLen, err := t.putSockaddr(&s.addrs[nm], pk.Dst)
		if err != nil {
			if p >= s.scanned { // not counted by an earlier build
				if s.badDst == 0 {
					s.badErr, s.badFirst = err, pk.Dst
				}
				s.badDst++
			}
			p++
			continue
		}
		size := int(pk.Payload.Size())
		count, total := 1, size
		if useGSO && p >= noGSOUntil && size > 0 && size <= t.maxSeg {
			vl := pk.Payload.AsViewList()
			views := vl.Len()
			for q := p + 1; q < len(pkts) && count < gsoMaxSegments; q++ {
				pq := &pkts[q]
				sz := int(pq.Payload.Size())
				if sz == 0 || sz > size || total+sz > gsoMaxBytes ||
					pq.Dst != pk.Dst || pq.TOS != pk.TOS || pq.TTL != pk.TTL {
					break
				}
				vq := pq.Payload.AsViewList()
				if views += vq.Len(); views > maxIovPerMsg {
					break
				}
				count++
				total += sz
				if sz < size {
					break // a shorter segment ends the group
				}
			}
		}

		iovStart := len(s.iovs)
		for k := p; k < p+count; k++ {
			s.appendIovs(&pkts[k].Payload)
		}

		ctrl := s.ctrl[nm*sendCtrlSize : (nm+1)*sendCtrlSize]
		cl := 0
		d, n := putCmsg(ctrl, t.ipLevel, t.tosType, 4)
		binary.NativeEndian.PutUint32(d, uint32(pk.TOS))
		cl += n
		if pk.TTL != 0 {
			d, n = putCmsg(ctrl[cl:], t.ipLevel, t.ttlType, 4)
			binary.NativeEndian.PutUint32(d, uint32(pk.TTL))
			cl += n
		}
		if count > 1 {
			d, n = putCmsg(ctrl[cl:], unix.IPPROTO_UDP, unix.UDP_SEGMENT, 2)
			binary.NativeEndian.PutUint16(d, uint16(size))
			cl += n
		}

		h := &s.msgs[nm].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.addrs[nm]))
		h.Namelen = nameLen
		h.Control = &ctrl[0]
		h.SetControllen(cl)
		h.Flags = 0
		s.meta[nm] = sendMeta{first: p, count: count, bytes: total, iovStart: iovStart, iovN: len(s.iovs) - iovStart}
		nm++
		p += count
	}
	// s.iovs may have grown while building: point the messages at it now.
	for m := 0; m < nm; m++ {
		h := &s.msgs[m].Hdr
		if mt := &s.meta[m]; mt.iovN > 0 {
			h.Iov = &s.iovs[mt.iovStart]
		} else {
			h.Iov = nil
		}
		h.SetIovlen(s.meta[m].iovN)
	}
	s.scanned = max(s.scanned, p)
	return nm, p
}

// appendIovs adds one iovec per non-empty view of b, without copying.
func (s *udpSender) appendIovs(b *buffer.Buffer) {
	vl := b.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		sl := v.AsSlice()
		if len(sl) == 0 {
			continue
		}
		s.iovs = append(s.iovs, unix.Iovec{Base: &sl[0]})
		s.iovs[len(s.iovs)-1].SetLen(len(sl))
	}
}

// release drops references to the caller's payload memory.
func (s *udpSender) release(nm int) {
	clear(s.iovs)
	for m := 0; m < nm; m++ {
		s.msgs[m].Hdr.Iov = nil
	}
}

// isFatalSockErr reports errors that concern the socket, not one datagram.
func isFatalSockErr(e syscall.Errno) bool {
	return e == unix.EBADF || e == unix.ENOTSOCK || e == unix.EFAULT
}

// WriteBatch sends pkts with sendmmsg, as GSO super-datagrams where
// possible. It returns the number of packets the kernel accepted. A datagram
// the kernel refuses is skipped and counted; the first such error is
// returned after the rest of the batch has been attempted. A packet with a
// non-zero Packet.SrcPort leaves from the source-port socket SrcPort % n of
// the pool (Options.SourcePorts), others from the bound socket;
// maximal runs of consecutive packets for the same socket are sent
// together. Packet.DF is ignored (see Options.DontFragment). Safe
// for concurrent use.
func (t *Transport) WriteBatch(pkts []link.Packet) (int, error) {
	if t.closed.Load() {
		return 0, net.ErrClosed
	}
	if len(pkts) == 0 {
		return 0, nil
	}
	s := t.getSender()
	defer t.putSender(s)
	s.resetResult()
	n := len(t.srcRCs)
	if n == 0 {
		t.writeRun(s, t.rc, pkts)
		return t.finishWrite(s)
	}
	for p := 0; p < len(pkts); {
		k := srcSockIndex(pkts[p].SrcPort, n)
		q := p + 1
		for q < len(pkts) && srcSockIndex(pkts[q].SrcPort, n) == k {
			q++
		}
		rc := t.rc
		if k >= 0 {
			rc = t.srcRCs[k]
		}
		if !t.writeRun(s, rc, pkts[p:q]) {
			break
		}
		p = q
	}
	return t.finishWrite(s)
}

// srcSockIndex maps a Packet.SrcPort to a pool of n source-port sockets:
// -1 means the main socket.
func srcSockIndex(srcPort uint16, n int) int {
	if srcPort == 0 {
		return -1
	}
	return int(srcPort) % n
}

// resetResult clears the per-WriteBatch results.
func (s *udpSender) resetResult() {
	s.badDst, s.badErr, s.badFirst = 0, nil, netip.AddrPort{}
	s.sent, s.bytes, s.errs, s.gsoSends, s.fallbacks = 0, 0, 0, 0, 0
	s.firstErr, s.firstErrDst, s.stopErr, s.stopDst = nil, netip.AddrPort{}, nil, netip.AddrPort{}
}

// fail records n datagrams to dst refused with err.
func (s *udpSender) fail(err error, dst netip.AddrPort, n int) {
	if s.firstErr == nil {
		s.firstErr, s.firstErrDst = err, dst
	}
	s.errs += n
}

// writeRun sends pkts on the socket rc, adding to the results in s. It
// returns false if the socket is closed or broken (s.stopErr): the rest of
// the batch is not attempted.
func (t *Transport) writeRun(s *udpSender, rc syscall.RawConn, pkts []link.Packet) bool {
	s.scanned = 0
	noGSOUntil := 0
	p := 0
	for p < len(pkts) {
		nm, next := s.build(pkts, p, noGSOUntil)
		i := 0
		for i < nm {
			s.i, s.n, s.errno, s.blocked = i, nm, 0, false
			// Try without holding the fd's write lock, so concurrent
			// WriteBatch calls overlap; if the socket buffer is full,
			// retry under RawConn.Write, which waits for writability.
			werr := rc.Control(s.controlFn)
			if werr == nil && s.blocked {
				werr = rc.Write(s.writeFn)
			}
			for k := i; k < s.i; k++ {
				m := &s.meta[k]
				s.sent += m.count
				s.bytes += m.bytes
				if m.count > 1 {
					s.gsoSends++
				}
			}
			i = s.i
			if werr != nil { // closed
				s.release(nm)
				s.stopErr, s.stopDst = net.ErrClosed, netip.AddrPort{}
				return false
			}
			if s.errno == 0 {
				continue
			}
			m := &s.meta[i]
			dst := pkts[m.first].Dst
			if isFatalSockErr(s.errno) {
				s.release(nm)
				s.stopErr, s.stopDst = s.errno, dst
				return false
			}
			if m.count > 1 && (s.errno == unix.EIO || s.errno == unix.EINVAL || s.errno == unix.EMSGSIZE) {
				// The kernel refused the GSO message. EIO/EINVAL: it
				// refuses GSO itself, so stop using it. EMSGSIZE: the
				// segment size exceeds the path MTU; resend singly and
				// let each datagram succeed or fail on its own.
				if s.errno != unix.EMSGSIZE {
					t.gso.Store(false)
				}
				s.fallbacks++
				noGSOUntil = m.first + m.count
				next = m.first
				break
			}
			s.fail(s.errno, dst, m.count)
			i++
		}
		s.release(nm)
		p = next
	}
	return true
}

// finishWrite updates the counters and forms WriteBatch's result.
func (t *Transport) finishWrite(s *udpSender) (int, error) {
	st := &t.stats
	sent := s.sent
	if sent > 0 {
		st.sent.Add(uint64(sent))
		st.bytesSent.Add(uint64(s.bytes))
	}
	if errs := s.errs + s.badDst; errs > 0 {
		st.sendErrs.Add(uint64(errs))
	}
	if s.gsoSends > 0 {
		st.gsoSends.Add(uint64(s.gsoSends))
	}
	if s.fallbacks > 0 {
		st.gsoFallbacks.Add(uint64(s.fallbacks))
	}
	err, dst := s.stopErr, s.stopDst
	if err == nil {
		err, dst = s.firstErr, s.firstErrDst
	}
	if err == nil && s.badErr != nil {
		err, dst = s.badErr, s.badFirst
	}
	// Drop references to errors and addresses until the next call.
	s.firstErr, s.stopErr, s.badErr = nil, nil, nil
	switch {
	case err == nil:
		return sent, nil
	case errors.Is(err, net.ErrClosed):
		return sent, err
	default:
		return sent, &net.OpError{Op: "write", Net: t.netName(), Source: net.UDPAddrFromAddrPort(t.local), Addr: net.UDPAddrFromAddrPort(dst), Err: os.NewSyscallError("sendmmsg", err)}
	}
}

func (t *Transport) netName() string {
	if t.cfg.v6 {
		return "udp6"
	}
	return "udp4"
}

// ---- receiving ----

// udpReceiver holds the receive goroutine's preallocated state.
type udpReceiver struct {
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
	addrs  []unix.RawSockaddrInet6
	ctrl   []byte
	bufs   []byte
	dgrams []link.Datagram
	used   int // slots the last recvmmsg filled

	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func newUDPReceiver(b int) *udpReceiver {
	r := &udpReceiver{
		msgs:   make([]unix.Mmsghdr, b),
		iovs:   make([]unix.Iovec, b),
		addrs:  make([]unix.RawSockaddrInet6, b),
		ctrl:   alignedBytes(b * recvCtrlSize),
		bufs:   make([]byte, b*recvSlotSize),
		dgrams: make([]link.Datagram, 0, b),
	}
	for j := range r.msgs {
		r.iovs[j].Base = &r.bufs[j*recvSlotSize]
		r.iovs[j].SetLen(recvSlotSize)
		h := &r.msgs[j].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.addrs[j]))
		h.Iov = &r.iovs[j]
		h.SetIovlen(1)
		h.Control = &r.ctrl[j*recvCtrlSize]
	}
	r.used = b
	r.readFn = func(fd uintptr) bool {
		for {
			n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
				uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			r.n, r.errno = int(n), e
			return true
		}
	}
	return r
}

// reset restores the in/out fields of the slots the last call used.
func (r *udpReceiver) reset() {
	for j := 0; j < r.used; j++ {
		h := &r.msgs[j].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(recvCtrlSize)
		h.Flags = 0
		r.msgs[j].Len = 0
	}
	r.n, r.errno = 0, 0
}

// Start starts the receive goroutine, which delivers batches to r until
// Close. It may be called once. r.Receive must not call Close.
func (t *Transport) Start(r link.Receiver) error {
	if r == nil {
		return errNilReceiver
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return net.ErrClosed
	}
	if t.started {
		return errAlreadyStarted
	}
	t.started = true
	rs := newUDPReceiver(t.cfg.BatchSize)
	go t.recvLoop(rs, r)
	return nil
}

func (t *Transport) recvLoop(rs *udpReceiver, r link.Receiver) {
	defer close(t.done)
	for {
		rs.reset()
		if err := t.rc.Read(rs.readFn); err != nil {
			return // closed
		}
		if rs.errno != 0 {
			rs.used = 0
			t.stats.recvErrs.Add(1)
			if isFatalSockErr(rs.errno) || rs.errno == unix.EINVAL {
				return
			}
			continue
		}
		rs.used = rs.n
		if batch := t.parse(rs); len(batch) > 0 {
			r.Receive(batch)
		}
	}
}

// parse turns the received messages into Datagrams, splitting GRO messages.
func (t *Transport) parse(rs *udpReceiver) []link.Datagram {
	dg := rs.dgrams[:0]
	var bytes, trunc, splits int
	for j := 0; j < rs.n; j++ {
		m := &rs.msgs[j]
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			trunc++
			continue
		}
		l := int(m.Len)
		payload := rs.bufs[j*recvSlotSize : j*recvSlotSize+l]

		var d link.Datagram
		sa := &rs.addrs[j]
		if sa.Family == unix.AF_INET {
			s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
			d.Src = netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), getPort(&s4.Port))
		} else {
			a := netip.AddrFrom16(sa.Addr)
			if sa.Scope_id != 0 {
				a = a.WithZone(t.indexToZone(sa.Scope_id))
			}
			d.Src = netip.AddrPortFrom(a, getPort(&sa.Port))
		}

		gsoSize := 0
		ctrl := rs.ctrl[j*recvCtrlSize : j*recvCtrlSize+min(int(m.Hdr.Controllen), recvCtrlSize)]
		for len(ctrl) >= unix.SizeofCmsghdr {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
			hl := int(h.Len)
			if hl < unix.CmsgLen(0) || hl > len(ctrl) {
				break
			}
			data := ctrl[unix.CmsgLen(0):hl]
			switch {
			case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(data) >= 1:
				d.TOS = data[0]
			case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && len(data) >= 4:
				d.TTL = uint8(binary.NativeEndian.Uint32(data))
			case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
				pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
				d.Dst = netip.AddrFrom4(pi.Addr)
			case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_TCLASS && len(data) >= 4:
				d.TOS = uint8(binary.NativeEndian.Uint32(data))
			case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
				d.TTL = uint8(binary.NativeEndian.Uint32(data))
			case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
				pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
				d.Dst = netip.AddrFrom16(pi.Addr)
			case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO:
				if len(data) >= 4 {
					gsoSize = int(binary.NativeEndian.Uint32(data))
				} else if len(data) >= 2 {
					gsoSize = int(binary.NativeEndian.Uint16(data))
				}
			}
			sp := unix.CmsgSpace(hl - unix.CmsgLen(0))
			if sp >= len(ctrl) {
				break
			}
			ctrl = ctrl[sp:]
		}

		bytes += l
		if gsoSize <= 0 || gsoSize >= l {
			d.Payload = payload
			dg = append(dg, d)
			continue
		}
		splits++
		for off := 0; off < l; off += gsoSize {
			d.Payload = payload[off:min(off+gsoSize, l)]
			dg = append(dg, d)
		}
	}
	rs.dgrams = dg[:0]
	st := &t.stats
	if len(dg) > 0 {
		st.recv.Add(uint64(len(dg)))
		st.bytesRecv.Add(uint64(bytes))
	}
	if trunc > 0 {
		st.trunc.Add(uint64(trunc))
	}
	if splits > 0 {
		st.groSplits.Add(uint64(splits))
	}
	return dg
}

// ---- multicast and close ----

// JoinGroup joins a multicast group on Device (or the kernel's choice of
// interface when Device is empty) with IP_ADD_MEMBERSHIP /
// IPV6_ADD_MEMBERSHIP. The kernel sends the IGMP/MLD reports. To receive
// the group's datagrams, bind Local to the wildcard address.
func (t *Transport) JoinGroup(group netip.Addr) error { return t.membership(group, true) }

// LeaveGroup leaves a group joined with JoinGroup.
func (t *Transport) LeaveGroup(group netip.Addr) error { return t.membership(group, false) }

func (t *Transport) membership(group netip.Addr, join bool) error {
	if !t.cfg.v6 {
		group = group.Unmap()
	}
	if !group.IsMulticast() {
		return errNotMulticast
	}
	if group.Is6() != t.cfg.v6 || group.Is4In6() {
		return errFamilyMismatch
	}
	var serr error
	err := t.rc.Control(func(fd uintptr) {
		if t.cfg.v6 {
			opt := unix.IPV6_ADD_MEMBERSHIP
			if !join {
				opt = unix.IPV6_DROP_MEMBERSHIP
			}
			mreq := unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(t.devIdx)}
			serr = unix.SetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IPV6, opt, &mreq)
			return
		}
		opt := unix.IP_ADD_MEMBERSHIP
		if !join {
			opt = unix.IP_DROP_MEMBERSHIP
		}
		mreq := unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(t.devIdx)}
		serr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, opt, &mreq)
	})
	if err != nil {
		return net.ErrClosed
	}
	if serr != nil {
		op := "join"
		if !join {
			op = "leave"
		}
		return fmt.Errorf("kernel UDP: %s %v: %w", op, group, serr)
	}
	return nil
}

// Close stops the receive goroutine, waits for it and closes the socket and
// the source-port sockets. It
// is safe to call more than once; later calls return the first result.
// Close must not be called from Receiver.Receive.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed.Store(true)
		started := t.started
		t.mu.Unlock()
		t.closeErr = t.file.Close()
		for _, f := range t.srcFiles {
			if err := f.Close(); err != nil && t.closeErr == nil {
				t.closeErr = err
			}
		}
		if started {
			<-t.done
		}
	})
	return t.closeErr
}
