package link

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// NetstackUDPOptions configures a NetstackUDP transport.
type NetstackUDPOptions struct {
	// Stack is the underlay netstack; NIC is its NIC that carries the
	// Geneve traffic. Local.Addr() must be assigned to that NIC.
	Stack *stack.Stack
	NIC   tcpip.NICID
	Local netip.AddrPort

	// MTU is the underlay IP MTU; 0 means the NIC's MTU.
	MTU int

	// MulticastTTL is the TTL of datagrams sent to a multicast group when
	// the packet does not set one; 0 means 64 (as geneve(4) does).
	MulticastTTL uint8

	// NoChecksum4 sends IPv4 datagrams with a zero UDP checksum (RFC 8926
	// §4.3 allows it). IPv6 always carries a checksum from this transport.
	NoChecksum4 bool

	// ZeroChecksumRx6 accepts IPv6 datagrams with a zero UDP checksum
	// (RFC 8926 §4.3.1 allows it only when configured). IPv4 datagrams with
	// a zero checksum are always accepted.
	ZeroChecksumRx6 bool

	// QueueLen bounds the datagrams waiting for the receiver; 0 means 4096.
	QueueLen int

	// BatchSize is the most datagrams handed to the receiver at once; 0
	// means 64.
	BatchSize int
}

// NetstackUDP is a Transport whose UDP/IP runs in a gVisor netstack: the
// underlay stack.
//
// It registers itself with the stack's transport demultiplexer for the
// Geneve port, like a UDP socket bound to every address of its NIC, but
// without a socket's receive queue: each datagram is checked (length, UDP
// checksum) on the stack's receive goroutine, referenced (not copied) into
// a queue, and handed to the Receiver in batches by one goroutine, which
// lets the receiver keep the bytes without copying them (Datagram.Buffer)
// and coalesce with GRO over the batch.
//
// Sending writes the UDP header in front of the Geneve payload and hands
// the packet to a cached netstack route: the payload bytes are shared, not
// copied, and every datagram carries its own source port, TOS, TTL and DF.
type NetstackUDP struct {
	opts  NetstackUDPOptions
	proto tcpip.NetworkProtocolNumber
	local tcpip.Address
	mtu   int
	id    stack.TransportEndpointID

	routeMu sync.RWMutex
	routes  map[netip.Addr]*stack.Route

	// The receive queue: HandlePacket appends referenced packets, the
	// receive goroutine swaps the slice out and processes it.
	qmu    sync.Mutex
	queue  []*stack.PacketBuffer
	wake   chan struct{}
	rx     Receiver
	groups map[netip.Addr]int

	done    chan struct{}
	wg      sync.WaitGroup
	started atomic.Bool
	closed  atomic.Bool

	stats NetstackUDPStats
}

// NetstackUDPStats counts what the transport did.
type NetstackUDPStats struct {
	TxDatagrams, TxErrors atomic.Uint64
	RxDatagrams           atomic.Uint64
	// RxMalformed counts datagrams whose UDP length is wrong.
	RxMalformed atomic.Uint64
	// RxChecksumErrors counts datagrams with a bad UDP checksum, and IPv6
	// datagrams with a zero checksum unless ZeroChecksumRx6 is set.
	RxChecksumErrors atomic.Uint64
	// RxQueueFull counts datagrams dropped because the receiver fell
	// QueueLen datagrams behind.
	RxQueueFull atomic.Uint64
	// RxNotStarted counts datagrams that arrived before Start or after
	// Close.
	RxNotStarted atomic.Uint64
	// ICMPErrors counts ICMP errors received for sent datagrams.
	ICMPErrors atomic.Uint64
}

var _ stack.TransportEndpoint = (*NetstackUDP)(nil)

// NewNetstackUDP claims the Geneve port on the underlay stack's NIC.
func NewNetstackUDP(opts NetstackUDPOptions) (*NetstackUDP, error) {
	if opts.Stack == nil {
		return nil, errors.New("netstack underlay: nil stack")
	}
	if !opts.Local.Addr().IsValid() {
		return nil, errors.New("netstack underlay: local address is required")
	}
	if opts.Local.Port() == 0 {
		return nil, errors.New("netstack underlay: local port is required (6081 is Geneve's)")
	}
	t := &NetstackUDP{
		opts:   opts,
		local:  tcpip.AddrFromSlice(opts.Local.Addr().Unmap().AsSlice()),
		routes: make(map[netip.Addr]*stack.Route),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		groups: make(map[netip.Addr]int),
	}
	t.proto = ipv4.ProtocolNumber
	if !opts.Local.Addr().Unmap().Is4() {
		t.proto = ipv6.ProtocolNumber
	}
	if t.opts.MulticastTTL == 0 {
		t.opts.MulticastTTL = 64
	}
	if t.opts.BatchSize <= 0 {
		t.opts.BatchSize = 64
	}
	if t.opts.QueueLen <= 0 {
		t.opts.QueueLen = 4096
	}
	t.mtu = opts.MTU
	if t.mtu == 0 {
		nic, ok := opts.Stack.NICInfo()[opts.NIC]
		if !ok {
			return nil, fmt.Errorf("netstack underlay: no NIC %d", opts.NIC)
		}
		t.mtu = int(nic.MTU)
	}
	// Every address of the NIC, so that datagrams to joined groups arrive
	// as well as unicast ones.
	t.id = stack.TransportEndpointID{LocalPort: opts.Local.Port()}
	if terr := opts.Stack.RegisterTransportEndpoint([]tcpip.NetworkProtocolNumber{t.proto}, udp.ProtocolNumber, t.id, t, ports.Flags{}, opts.NIC); terr != nil {
		return nil, fmt.Errorf("netstack underlay: bind port %d: %s", opts.Local.Port(), terr)
	}
	return t, nil
}

// LocalAddr implements Transport.
func (t *NetstackUDP) LocalAddr() netip.AddrPort { return t.opts.Local }

// MTU implements Transport.
func (t *NetstackUDP) MTU() int { return t.mtu }

// Stats returns the transport's counters.
func (t *NetstackUDP) Stats() *NetstackUDPStats { return &t.stats }

// JoinGroup implements Transport: the NIC joins the group, and the
// underlay stack sends IGMP/MLD reports if it was created with them enabled.
func (t *NetstackUDP) JoinGroup(group netip.Addr) error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if t.groups[group] == 0 {
		if terr := t.opts.Stack.JoinGroup(t.proto, t.opts.NIC, tcpip.AddrFromSlice(group.Unmap().AsSlice())); terr != nil {
			return fmt.Errorf("join %s: %s", group, terr)
		}
	}
	t.groups[group]++
	return nil
}

// LeaveGroup implements Transport.
func (t *NetstackUDP) LeaveGroup(group netip.Addr) error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if t.groups[group] == 0 {
		return fmt.Errorf("leave %s: not joined", group)
	}
	if t.groups[group]--; t.groups[group] > 0 {
		return nil
	}
	delete(t.groups, group)
	if terr := t.opts.Stack.LeaveGroup(t.proto, t.opts.NIC, tcpip.AddrFromSlice(group.Unmap().AsSlice())); terr != nil {
		return fmt.Errorf("leave %s: %s", group, terr)
	}
	return nil
}

// route returns a cached route to dst.
func (t *NetstackUDP) route(dst netip.Addr) (*stack.Route, tcpip.Error) {
	t.routeMu.RLock()
	r := t.routes[dst]
	t.routeMu.RUnlock()
	if r != nil {
		return r, nil
	}
	t.routeMu.Lock()
	defer t.routeMu.Unlock()
	if r := t.routes[dst]; r != nil {
		return r, nil
	}
	if t.closed.Load() {
		return nil, &tcpip.ErrClosedForSend{}
	}
	r, err := t.opts.Stack.FindRoute(t.opts.NIC, t.local, tcpip.AddrFromSlice(dst.Unmap().AsSlice()), t.proto, false)
	if err != nil {
		return nil, err
	}
	t.routes[dst] = r
	return r, nil
}

// forgetRoute drops a cached route after a failed write, so the next packet
// looks the destination up again.
func (t *NetstackUDP) forgetRoute(dst netip.Addr, r *stack.Route) {
	t.routeMu.Lock()
	if t.routes[dst] == r {
		delete(t.routes, dst)
		r.Release()
	}
	t.routeMu.Unlock()
}

// WriteBatch implements Transport.
func (t *NetstackUDP) WriteBatch(pkts []Packet) (int, error) {
	sent := 0
	var firstErr error
	for i := range pkts {
		if err := t.write(&pkts[i]); err != nil {
			t.stats.TxErrors.Add(1)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sent++
	}
	t.stats.TxDatagrams.Add(uint64(sent))
	return sent, firstErr
}

func (t *NetstackUDP) write(p *Packet) error {
	dst := p.Dst.Addr().Unmap()
	r, terr := t.route(dst)
	if terr != nil {
		return fmt.Errorf("route to %s: %s", dst, terr)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + header.UDPMinimumSize,
		Payload:            p.Payload.Clone(),
	})
	defer pkt.DecRef()
	srcPort := p.SrcPort
	if srcPort == 0 {
		srcPort = t.opts.Local.Port()
	}
	length := uint16(pkt.Size() + header.UDPMinimumSize)
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: srcPort, DstPort: p.Dst.Port(), Length: length})
	pkt.TransportProtocolNumber = udp.ProtocolNumber
	if r.RequiresTXTransportChecksum() && !(t.opts.NoChecksum4 && t.proto == ipv4.ProtocolNumber) {
		xsum := r.PseudoHeaderChecksum(udp.ProtocolNumber, length)
		xsum = checksum.Combine(xsum, pkt.Data().Checksum())
		u.SetChecksum(^u.CalculateChecksum(xsum))
		if u.Checksum() == 0 {
			u.SetChecksum(0xffff) // RFC 768: zero means "no checksum"
		}
	}
	ttl := p.TTL
	if ttl == 0 {
		if dst.IsMulticast() {
			ttl = t.opts.MulticastTTL
		} else {
			ttl = r.DefaultTTL()
		}
	}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: udp.ProtocolNumber, TTL: ttl, TOS: p.TOS, DF: p.DF}, pkt); terr != nil {
		t.forgetRoute(dst, r)
		return fmt.Errorf("send to %s: %s", p.Dst, terr)
	}
	return nil
}

// HandlePacket implements stack.TransportEndpoint. It runs on the underlay
// stack's receive path: it checks the UDP length and checksum, then queues a
// reference to the packet for the receive goroutine.
func (t *NetstackUDP) HandlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) {
	hdr := header.UDP(pkt.TransportHeader().Slice())
	src, dst, _, _ := outerFields(pkt.NetworkHeader().Slice())
	lengthValid, csumValid := header.UDPValid(hdr, func() uint16 { return pkt.Data().Checksum() },
		uint16(pkt.Data().Size()), pkt.NetworkProtocolNumber, src, dst, pkt.RXChecksumValidated)
	if !lengthValid {
		t.stats.RxMalformed.Add(1)
		return
	}
	if !csumValid {
		// header.UDPValid refuses a zero checksum on IPv6 (RFC 8200); RFC
		// 8926 allows it for tunnels configured so.
		if !(t.opts.ZeroChecksumRx6 && hdr.Checksum() == 0 && pkt.NetworkProtocolNumber == ipv6.ProtocolNumber) {
			t.stats.RxChecksumErrors.Add(1)
			return
		}
	}
	t.qmu.Lock()
	if t.rx == nil || t.closed.Load() {
		t.qmu.Unlock()
		t.stats.RxNotStarted.Add(1)
		return
	}
	if len(t.queue) >= t.opts.QueueLen {
		t.qmu.Unlock()
		t.stats.RxQueueFull.Add(1)
		return
	}
	t.queue = append(t.queue, pkt.IncRef())
	first := len(t.queue) == 1
	t.qmu.Unlock()
	if first {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// HandleError implements stack.TransportEndpoint: ICMP errors for sent
// datagrams are counted; Geneve has no connection to report them to.
func (t *NetstackUDP) HandleError(stack.TransportError, *stack.PacketBuffer) {
	t.stats.ICMPErrors.Add(1)
}

// Abort implements stack.TransportEndpoint; the stack calls it when it is
// closed.
func (t *NetstackUDP) Abort() { t.Close() }

// Wait implements stack.TransportEndpoint.
func (t *NetstackUDP) Wait() {}

// Start implements Transport: it starts the receive goroutine.
func (t *NetstackUDP) Start(r Receiver) error {
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("netstack underlay: already started")
	}
	t.qmu.Lock()
	t.rx = r
	t.qmu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.receiveLoop(r)
	}()
	return nil
}

// receiveLoop hands queued datagrams to r in batches.
func (t *NetstackUDP) receiveLoop(r Receiver) {
	n := t.opts.BatchSize
	batch := make([]Datagram, n)
	var work []*stack.PacketBuffer
	for {
		select {
		case <-t.wake:
		case <-t.done:
			return
		}
		for {
			t.qmu.Lock()
			work, t.queue = t.queue, work[:0]
			t.qmu.Unlock()
			if len(work) == 0 {
				break
			}
			for len(work) > 0 {
				k := min(n, len(work))
				for i, pkt := range work[:k] {
					t.datagram(&batch[i], pkt)
				}
				t.stats.RxDatagrams.Add(uint64(k))
				r.Receive(batch[:k])
				for i, pkt := range work[:k] {
					batch[i].Buffer.Release()
					batch[i] = Datagram{}
					pkt.DecRef()
					work[i] = nil
				}
				work = work[k:]
			}
		}
	}
}

// datagram describes a queued packet for the receiver. The UDP payload is
// made contiguous (PullUp copies only if it spans several views) and
// offered both as a slice and as a buffer the receiver may clone.
func (t *NetstackUDP) datagram(d *Datagram, pkt *stack.PacketBuffer) {
	size := pkt.Data().Size()
	payload, _ := pkt.Data().PullUp(size)
	src, dst, tos, ttl := outerFields(pkt.NetworkHeader().Slice())
	port := header.UDP(pkt.TransportHeader().Slice()).SourcePort()
	*d = Datagram{
		Payload: payload,
		Buffer:  pkt.Data().ToBuffer(),
		Src:     netip.AddrPortFrom(addrFromTCPIP(src), port),
		Dst:     addrFromTCPIP(dst),
		TOS:     tos,
		TTL:     ttl,
	}
}

// outerFields reads the addresses, TOS / traffic class and TTL / hop limit
// of a validated IPv4 or IPv6 header without allocating.
func outerFields(ip []byte) (src, dst tcpip.Address, tos, ttl uint8) {
	if len(ip) >= header.IPv6MinimumSize && ip[0]>>4 == 6 {
		return tcpip.AddrFrom16Slice(ip[8:24]), tcpip.AddrFrom16Slice(ip[24:40]), ip[0]<<4 | ip[1]>>4, ip[7]
	}
	if len(ip) >= header.IPv4MinimumSize {
		return tcpip.AddrFrom4Slice(ip[12:16]), tcpip.AddrFrom4Slice(ip[16:20]), ip[1], ip[8]
	}
	return tcpip.Address{}, tcpip.Address{}, 0, 0
}

func addrFromTCPIP(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}

// Close implements Transport: it releases the port, stops the receive
// goroutine and drops queued datagrams.
func (t *NetstackUDP) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.opts.Stack.UnregisterTransportEndpoint([]tcpip.NetworkProtocolNumber{t.proto}, udp.ProtocolNumber, t.id, t, ports.Flags{}, t.opts.NIC)
	close(t.done)
	t.wg.Wait()
	t.qmu.Lock()
	for i, pkt := range t.queue {
		pkt.DecRef()
		t.queue[i] = nil
	}
	t.queue = nil
	for g := range t.groups {
		_ = t.opts.Stack.LeaveGroup(t.proto, t.opts.NIC, tcpip.AddrFromSlice(g.Unmap().AsSlice()))
	}
	t.groups = nil
	t.qmu.Unlock()
	t.routeMu.Lock()
	for k, r := range t.routes {
		r.Release()
		delete(t.routes, k)
	}
	t.routeMu.Unlock()
	return nil
}
