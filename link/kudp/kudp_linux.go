//go:build linux

package kudp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gnv-project/gnv/link"
	"golang.org/x/sys/unix"
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
//   - DF. The Don't Fragment bit is per socket: IPv4 datagrams leave with
//     DF clear unless Options.DontFragment (or SetDontFragment) sets it;
//     Packet.DF is ignored, for the kernel has no per-datagram DF.
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

	life
}

var (
	_ link.Transport        = (*Transport)(nil)
	_ link.TunnelSegmenter  = (*Transport)(nil)
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
		life:       life{done: make(chan struct{})},
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

// TunnelSegmentation implements link.TunnelSegmenter: UDP-tunnel
// segmentation jobs (Packet.InnerMSS) are taken while UDP GSO is on.
// WriteBatch cuts each into its Geneve datagrams, writing the headers of
// every segment from the job's (the payload is gathered from the job's
// views, never copied) and finishing their TCP checksums, and sends them as
// UDP GSO messages: no segment becomes a gVisor buffer of its own.
func (t *Transport) TunnelSegmentation() (int, bool) { return 0xffff, t.gso.Load() }

// SetDontFragment changes Options.DontFragment on the socket and the
// source-port sockets: datagrams sent after it returns carry DF (on) or
// not. Safe for concurrent use with WriteBatch.
func (t *Transport) SetDontFragment(on bool) error {
	for _, rc := range append([]syscall.RawConn{t.rc}, t.srcRCs...) {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setDontFragment(int(fd), t.cfg.v6, on) }); err != nil {
			return net.ErrClosed
		}
		if serr != nil {
			return serr
		}
	}
	return nil
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
	return t.close(func() error {
		err := t.file.Close()
		for _, f := range t.srcFiles {
			if ferr := f.Close(); ferr != nil && err == nil {
				err = ferr
			}
		}
		return err
	})
}
