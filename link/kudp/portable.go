package kudp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// portableBufSize is the portable transport's receive buffer and send
// scratch size: the largest UDP payload.
const portableBufSize = 65535

// portableScratchPool is how many send scratch buffers are kept for
// concurrent WriteBatch calls.
const portableScratchPool = 8

// portableErrorPause is how long the receive goroutine waits after a run
// of failed reads, so that a socket error that repeats does not spin.
const portableErrorPause = 10 * time.Millisecond

// Portable is a link.Transport over ordinary kernel UDP sockets written
// with package net alone: one datagram per system call each way, no
// batching and no offloads. It is the kernel UDP transport on systems
// other than Linux, where Transport is Portable and New opens one; on
// Linux New opens the batched transport (recvmmsg, sendmmsg, UDP GSO and
// GRO), and NewPortable this one, which is how its tests run there. It
// needs no privileges. Options are honoured as follows:
//
//   - Local, Family, Device, MTU, MulticastTTL, MulticastLoop and
//     SourcePorts as by the Linux transport: the source-port pool gives
//     flows different outer source ports, and multicast groups are joined
//     through golang.org/x/net.
//   - DontFragment (and SetDontFragment): IP_MTU_DISCOVER as by the Linux
//     transport on Linux; IP_DONTFRAG / IPV6_DONTFRAG on macOS and
//     FreeBSD; IP_DONTFRAGMENT / IPV6_DONTFRAG on Windows. On other
//     systems DF stays clear and asking for it fails.
//   - ReadBuffer, WriteBuffer: SO_RCVBUF and SO_SNDBUF, which the system
//     may cap.
//   - NoChecksumTx4, ZeroChecksumTx6, ZeroChecksumRx6 (where they apply to
//     the family): refused, NewPortable fails; zero UDP checksums need the
//     Linux transport.
//   - BatchSize, DisableGSO, DisableGRO: nothing to do.
//
// Packet.TOS and Packet.TTL are applied by setting the socket's IP_TOS /
// IPV6_TCLASS and IP_TTL / IPV6_UNICAST_HOPS (IP_MULTICAST_TTL for a
// group) when a packet wants other values than the one before it, under a
// lock per socket; an option the system refuses is left alone from then
// on. Packet.DF (per socket instead) and Packet.FlowLabel are not applied.
// A received datagram carries its source and, when Local is a unicast
// address, that address as Dst; its outer TOS and TTL are not known (zero),
// so an outer ECN mark does not reach the inner packet.
type Portable struct {
	cfg   config
	dev   *net.Interface
	main  *portableSocket
	extra []*portableSocket // Options.SourcePorts; fixed after New
	local netip.AddrPort
	dst   netip.Addr // Datagram.Dst: the bound unicast address, if any
	mtu   int

	scratch chan []byte

	stats struct {
		sent, bytesSent, sendErrs atomic.Uint64
		recv, bytesRecv, recvErrs atomic.Uint64
	}

	life
}

var (
	_ link.Transport        = (*Portable)(nil)
	_ link.WireSourcePorter = (*Portable)(nil)
)

// portableSocket is one UDP socket of a portable transport and the
// per-datagram fields last set on it.
type portableSocket struct {
	conn *net.UDPConn
	ip   ipSocket

	mu                  sync.Mutex // held while a field is set and the datagram sent
	tos, ttl, mcastTTL  int        // as the socket has them; -1: unknown
	noTOS, noTTL, noMTT bool       // the system refused to set it
	defaultTTL          int        // the unicast TTL for Packet.TTL 0; -1: unknown
}

// ipSocket is the per-family socket options of golang.org/x/net.
type ipSocket interface {
	SetTOS(int) error
	SetTTL(int) error
	TTL() (int, error)
	SetMulticastTTL(int) error
	SetMulticastInterface(*net.Interface) error
	SetMulticastLoopback(bool) error
	JoinGroup(*net.Interface, net.Addr) error
	LeaveGroup(*net.Interface, net.Addr) error
}

// ipv6Socket gives an ipv6.PacketConn ipv4's names.
type ipv6Socket struct{ *ipv6.PacketConn }

func (s ipv6Socket) SetTOS(v int) error          { return s.SetTrafficClass(v) }
func (s ipv6Socket) SetTTL(v int) error          { return s.SetHopLimit(v) }
func (s ipv6Socket) TTL() (int, error)           { return s.HopLimit() }
func (s ipv6Socket) SetMulticastTTL(v int) error { return s.SetMulticastHopLimit(v) }

// platformSocket, when set, prepares every socket of a portable transport
// for the system (on Windows: no ICMP errors reported by reads); its
// failure is not fatal.
var platformSocket func(syscall.RawConn) error

// NewPortable opens and binds the sockets of a Portable transport.
func NewPortable(opts Options) (*Portable, error) {
	cfg, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	if err := cfg.portableSupported(); err != nil {
		return nil, err
	}
	t := &Portable{cfg: cfg, scratch: make(chan []byte, portableScratchPool), life: life{done: make(chan struct{})}}
	if cfg.Device != "" {
		if t.dev, err = net.InterfaceByName(cfg.Device); err != nil {
			return nil, fmt.Errorf("kernel UDP: device %q: %w", cfg.Device, err)
		}
	}
	if t.main, err = t.open(cfg.Local.Port(), false); err != nil {
		return nil, err
	}
	t.local = t.main.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if !cfg.v6 {
		t.local = netip.AddrPortFrom(t.local.Addr().Unmap(), t.local.Port())
	}
	if a := t.local.Addr(); !a.IsUnspecified() {
		t.dst = a
	}
	t.mtu = cfg.MTU
	if t.mtu == 0 {
		t.mtu = portableMTU(t.dev, t.local.Addr())
	}
	for range cfg.SourcePorts {
		s, err := t.open(0, true)
		if err != nil {
			// As on Linux: without the whole pool, the main socket
			// sends everything.
			for _, s := range t.extra {
				s.conn.Close()
			}
			t.extra = nil
			break
		}
		t.extra = append(t.extra, s)
	}
	return t, nil
}

// portableSupported refuses the options the portable transport cannot
// honour, naming the system.
func (c *config) portableSupported() error {
	var opt string
	switch {
	case c.NoChecksumTx4 && !c.v6:
		opt = "NoChecksumTx4"
	case c.ZeroChecksumTx6 && c.v6:
		opt = "ZeroChecksumTx6"
	case c.ZeroChecksumRx6 && c.v6:
		opt = "ZeroChecksumRx6"
	default:
		return nil
	}
	return fmt.Errorf("kernel UDP: %s (zero UDP checksums) is not supported by the portable transport on %s", opt, runtime.GOOS)
}

// open binds a socket to the configured address and port and sets its
// options; extra is a send-only source-port socket.
func (t *Portable) open(port uint16, extra bool) (*portableSocket, error) {
	cfg := &t.cfg
	network := "udp4"
	if cfg.v6 {
		network = "udp6" // IPV6_V6ONLY
	}
	laddr := netip.AddrPortFrom(cfg.bind, port)
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(laddr))
	if err != nil {
		return nil, fmt.Errorf("kernel UDP: %w", err)
	}
	s := &portableSocket{conn: conn, tos: -1, ttl: -1, mcastTTL: -1, defaultTTL: -1}
	if err := t.setup(s, extra); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (t *Portable) setup(s *portableSocket, extra bool) error {
	cfg := &t.cfg
	if cfg.v6 {
		s.ip = ipv6Socket{ipv6.NewPacketConn(s.conn)}
	} else {
		s.ip = ipv4.NewPacketConn(s.conn)
	}
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("kernel UDP: %w", err)
	}
	if platformSocket != nil {
		// Best effort: the receive loop survives the errors it avoids.
		_ = platformSocket(rc)
	}
	// Buffer sizes are requests the system may cap, as on Linux.
	if extra {
		_ = s.conn.SetReadBuffer(1)
	} else if cfg.ReadBuffer > 0 {
		_ = s.conn.SetReadBuffer(cfg.ReadBuffer)
	}
	if cfg.WriteBuffer > 0 {
		_ = s.conn.SetWriteBuffer(cfg.WriteBuffer)
	}
	if err := socketDontFragment(rc, cfg.v6, cfg.DontFragment); err != nil {
		return err
	}
	if err := s.ip.SetMulticastTTL(cfg.MulticastTTL); err != nil {
		return fmt.Errorf("kernel UDP: multicast TTL: %w", err)
	}
	s.mcastTTL = cfg.MulticastTTL
	if err := s.ip.SetMulticastLoopback(cfg.MulticastLoop); err != nil {
		return fmt.Errorf("kernel UDP: multicast loop: %w", err)
	}
	if t.dev != nil {
		if err := s.ip.SetMulticastInterface(t.dev); err != nil {
			return fmt.Errorf("kernel UDP: multicast interface %s: %w", t.dev.Name, err)
		}
	}
	if ttl, err := s.ip.TTL(); err == nil {
		s.ttl, s.defaultTTL = ttl, ttl
	}
	return nil
}

// socketDontFragment sets the DF policy of the socket behind rc.
func socketDontFragment(rc syscall.RawConn, v6, on bool) error {
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setDontFragment(int(fd), v6, on) }); err != nil {
		return net.ErrClosed
	}
	return serr
}

// portableMTU is the MTU of dev, else of the interface owning local, else
// DefaultMTU; loopback counts as DefaultMTU, as on Linux.
func portableMTU(dev *net.Interface, local netip.Addr) int {
	if dev == nil {
		dev = netdev.InterfaceOf(local)
	}
	if dev == nil || dev.Flags&net.FlagLoopback != 0 || dev.MTU <= 0 {
		return DefaultMTU
	}
	return dev.MTU
}

// LocalAddr returns the bound address and port.
func (t *Portable) LocalAddr() netip.AddrPort { return t.local }

// MTU returns Options.MTU or the one found when the transport was opened.
func (t *Portable) MTU() int { return t.mtu }

// SourcePorts returns the local ports of the source-port sockets
// (Options.SourcePorts), in pool order: a packet with a non-zero
// Packet.SrcPort leaves from port SourcePorts()[SrcPort % len]. It is empty
// when the pool is disabled or could not be created.
func (t *Portable) SourcePorts() []uint16 {
	ports := make([]uint16, len(t.extra))
	for i, s := range t.extra {
		ports[i] = s.conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	}
	return ports
}

// WireSourcePort returns the UDP source port a datagram with Packet.SrcPort
// srcPort leaves from.
func (t *Portable) WireSourcePort(srcPort uint16) uint16 {
	if s := t.socketFor(srcPort); s != t.main {
		return s.conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	}
	return t.local.Port()
}

// socketFor picks the socket for Packet.SrcPort: the same flow always gets
// the same one.
func (t *Portable) socketFor(srcPort uint16) *portableSocket {
	if srcPort == 0 || len(t.extra) == 0 {
		return t.main
	}
	return t.extra[int(srcPort)%len(t.extra)]
}

// SetDontFragment changes Options.DontFragment on every socket.
func (t *Portable) SetDontFragment(on bool) error {
	for _, s := range append([]*portableSocket{t.main}, t.extra...) {
		rc, err := s.conn.SyscallConn()
		if err != nil {
			return net.ErrClosed
		}
		if err := socketDontFragment(rc, t.cfg.v6, on); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns a snapshot of the counters; the offload counters stay
// zero.
func (t *Portable) Stats() Stats {
	s := &t.stats
	return Stats{
		DatagramsSent:     s.sent.Load(),
		BytesSent:         s.bytesSent.Load(),
		SendErrors:        s.sendErrs.Load(),
		DatagramsReceived: s.recv.Load(),
		BytesReceived:     s.bytesRecv.Load(),
		ReceiveErrors:     s.recvErrs.Load(),
	}
}

// Start starts the receive goroutine, which reads one datagram at a time
// into one reused buffer and hands it to r, until Close.
func (t *Portable) Start(r link.Receiver) error { return t.start(r, t.readLoop) }

func (t *Portable) readLoop(r link.Receiver) {
	defer close(t.done)
	buf := make([]byte, portableBufSize)
	batch := make([]link.Datagram, 1)
	failed := 0
	for {
		n, src, err := t.main.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.closed.Load() {
				return
			}
			// A datagram's error (Windows reports ICMP errors on reads
			// unless told not to): count it, go on, and pause if it
			// keeps coming.
			t.stats.recvErrs.Add(1)
			if failed++; failed%100 == 0 {
				time.Sleep(portableErrorPause)
			}
			continue
		}
		failed = 0
		if !t.cfg.v6 {
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		}
		batch[0] = link.Datagram{Payload: buf[:n], Src: src, Dst: t.dst}
		t.stats.recv.Add(1)
		t.stats.bytesRecv.Add(uint64(n))
		r.Receive(batch)
		batch[0] = link.Datagram{}
	}
}

// WriteBatch sends pkts one datagram per system call. A datagram that
// cannot be sent (an unusable Dst, refused by the system) is counted and
// skipped, and the first such error is returned after the rest of the
// batch has been attempted. A packet with a non-zero SrcPort leaves from
// source-port socket SrcPort % n, others from the bound socket. Safe for
// concurrent use.
func (t *Portable) WriteBatch(pkts []link.Packet) (int, error) {
	if t.closed.Load() {
		return 0, net.ErrClosed
	}
	var scratch []byte
	sent, bytes, errs := 0, 0, 0
	var firstErr error
	for i := range pkts {
		p := &pkts[i]
		dst, err := t.checkDst(p.Dst)
		if err == nil {
			var b []byte
			b, scratch = t.contiguous(p, scratch)
			err = t.socketFor(p.SrcPort).send(t, b, dst, p)
			if err == nil {
				sent++
				bytes += len(b)
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				firstErr = err // the rest is not attempted, as on Linux
				break
			}
		}
		errs++
		if firstErr == nil {
			firstErr = err
		}
	}
	if scratch != nil {
		select {
		case t.scratch <- scratch:
		default:
		}
	}
	st := &t.stats
	if sent > 0 {
		st.sent.Add(uint64(sent))
		st.bytesSent.Add(uint64(bytes))
	}
	if errs > 0 {
		st.sendErrs.Add(uint64(errs))
	}
	return sent, firstErr
}

// contiguous returns p's payload as one slice: its only view, or a copy in
// scratch (taken from the pool when nil).
func (t *Portable) contiguous(p *link.Packet, scratch []byte) ([]byte, []byte) {
	vl := p.Payload.AsViewList()
	if f := vl.Front(); f != nil && f.Next() == nil {
		return f.AsSlice(), scratch
	}
	if scratch == nil {
		select {
		case scratch = <-t.scratch:
		default:
			scratch = make([]byte, portableBufSize)
		}
	}
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		n += copy(scratch[n:], v.AsSlice())
	}
	return scratch[:n], scratch
}

// checkDst validates dst for the socket's family, as the Linux transport
// does, and scopes a zone-less link-local destination to Device.
func (t *Portable) checkDst(dst netip.AddrPort) (netip.AddrPort, error) {
	a := dst.Addr()
	var err error
	switch {
	case !a.IsValid() || a.IsUnspecified() || dst.Port() == 0:
		err = errBadDst
	case !t.cfg.v6:
		if a = a.Unmap(); !a.Is4() {
			err = errFamilyMismatch
		}
	case !a.Is6() || a.Is4In6():
		err = errFamilyMismatch
	case a.Zone() == "" && t.dev != nil && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast()):
		a = a.WithZone(t.dev.Name)
	}
	if err != nil {
		return dst, &net.OpError{Op: "write", Net: t.netName(), Source: net.UDPAddrFromAddrPort(t.local), Addr: net.UDPAddrFromAddrPort(dst), Err: err}
	}
	return netip.AddrPortFrom(a, dst.Port()), nil
}

func (t *Portable) netName() string {
	if t.cfg.v6 {
		return "udp6"
	}
	return "udp4"
}

// send writes b to dst with p's TOS and TTL.
func (s *portableSocket) send(t *Portable, b []byte, dst netip.AddrPort, p *link.Packet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(p.TOS) != s.tos && !s.noTOS {
		if s.ip.SetTOS(int(p.TOS)) == nil {
			s.tos = int(p.TOS)
		} else {
			s.noTOS, s.tos = true, -1
		}
	}
	ttl := int(p.TTL)
	switch {
	case dst.Addr().IsMulticast():
		if ttl == 0 {
			ttl = t.cfg.MulticastTTL
		}
		if ttl != s.mcastTTL && !s.noMTT {
			if s.ip.SetMulticastTTL(ttl) == nil {
				s.mcastTTL = ttl
			} else {
				s.noMTT = true
			}
		}
	default:
		if ttl == 0 {
			ttl = s.defaultTTL
		}
		if ttl > 0 && ttl != s.ttl && !s.noTTL {
			if s.ip.SetTTL(ttl) == nil {
				s.ttl = ttl
			} else {
				s.noTTL = true
			}
		}
	}
	_, err := s.conn.WriteToUDPAddrPort(b, dst)
	return err
}

// JoinGroup joins a multicast group on Device (or the system's choice of
// interface when Device is empty). To receive the group's datagrams, bind
// Local to the wildcard address.
func (t *Portable) JoinGroup(group netip.Addr) error { return t.membership(group, true) }

// LeaveGroup leaves a group joined with JoinGroup.
func (t *Portable) LeaveGroup(group netip.Addr) error { return t.membership(group, false) }

func (t *Portable) membership(group netip.Addr, join bool) error {
	group, err := checkGroup(group, t.cfg.v6)
	if err != nil {
		return err
	}
	if t.closed.Load() {
		return net.ErrClosed
	}
	g := &net.UDPAddr{IP: group.AsSlice()}
	op := "join"
	if join {
		err = t.main.ip.JoinGroup(t.dev, g)
	} else {
		op, err = "leave", t.main.ip.LeaveGroup(t.dev, g)
	}
	if err != nil {
		return fmt.Errorf("kernel UDP: %s %v: %w", op, group, err)
	}
	return nil
}

// Close stops the receive goroutine, waits for it and closes the sockets.
// Later calls return the first result. It must not be called from
// Receiver.Receive.
func (t *Portable) Close() error {
	return t.close(func() error {
		err := t.main.conn.Close()
		for _, s := range t.extra {
			if e := s.conn.Close(); e != nil && err == nil {
				err = e
			}
		}
		return err
	})
}
