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
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
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

	// ReceiveBufferSize is the socket receive buffer in bytes; 0 means 4 MiB.
	ReceiveBufferSize int

	// BatchSize is the most datagrams handed to the receiver at once; 0
	// means 64.
	BatchSize int
}

// NetstackUDP is a Transport whose UDP/IP runs in a gVisor netstack: the
// underlay stack. Received datagrams come through an ordinary netstack UDP
// endpoint bound to the Geneve port (so multicast membership, IGMP/MLD and
// control messages work as for any socket). Datagrams are sent by writing
// the UDP header in front of the Geneve payload and handing the packet to
// a cached netstack route, which shares the payload bytes instead of copying
// them and lets every packet carry its own source port, TOS, TTL and DF.
type NetstackUDP struct {
	opts  NetstackUDPOptions
	proto tcpip.NetworkProtocolNumber
	local tcpip.Address
	mtu   int

	wq waiter.Queue
	ep tcpip.Endpoint

	routeMu sync.RWMutex
	routes  map[netip.Addr]*stack.Route

	done    chan struct{}
	wg      sync.WaitGroup
	started atomic.Bool
	closed  atomic.Bool

	stats NetstackUDPStats
}

// NetstackUDPStats counts what the transport did.
type NetstackUDPStats struct {
	TxDatagrams, TxErrors, RxDatagrams, RxTruncated atomic.Uint64
}

// NewNetstackUDP binds the Geneve port on the underlay stack.
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
		done:   make(chan struct{}),
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
	if t.opts.ReceiveBufferSize <= 0 {
		t.opts.ReceiveBufferSize = 4 << 20
	}
	t.mtu = opts.MTU
	if t.mtu == 0 {
		nic, ok := opts.Stack.NICInfo()[opts.NIC]
		if !ok {
			return nil, fmt.Errorf("netstack underlay: no NIC %d", opts.NIC)
		}
		t.mtu = int(nic.MTU)
	}
	ep, terr := opts.Stack.NewEndpoint(udp.ProtocolNumber, t.proto, &t.wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack underlay: udp endpoint: %s", terr)
	}
	so := ep.SocketOptions()
	so.SetReceiveBufferSize(int64(t.opts.ReceiveBufferSize), true)
	so.SetMulticastLoop(false)
	if t.proto == ipv4.ProtocolNumber {
		so.SetReceiveTOS(true)
		so.SetReceiveTTL(true)
		so.SetReceivePacketInfo(true)
	} else {
		so.SetV6Only(true)
		so.SetReceiveTClass(true)
		so.SetReceiveHopLimit(true)
		so.SetIPv6ReceivePacketInfo(true)
	}
	// Bind the port on the NIC for any local address, so that datagrams to
	// joined groups arrive as well as unicast ones.
	if terr := ep.Bind(tcpip.FullAddress{NIC: opts.NIC, Port: opts.Local.Port()}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack underlay: bind port %d: %s", opts.Local.Port(), terr)
	}
	t.ep = ep
	return t, nil
}

// LocalAddr implements Transport.
func (t *NetstackUDP) LocalAddr() netip.AddrPort { return t.opts.Local }

// MTU implements Transport.
func (t *NetstackUDP) MTU() int { return t.mtu }

// Stats returns the transport's counters.
func (t *NetstackUDP) Stats() *NetstackUDPStats { return &t.stats }

// JoinGroup implements Transport; the underlay stack sends IGMP/MLD reports
// if it was created with them enabled.
func (t *NetstackUDP) JoinGroup(group netip.Addr) error {
	if terr := t.ep.SetSockOpt(&tcpip.AddMembershipOption{NIC: t.opts.NIC, MulticastAddr: tcpip.AddrFromSlice(group.Unmap().AsSlice())}); terr != nil {
		return fmt.Errorf("join %s: %s", group, terr)
	}
	return nil
}

// LeaveGroup implements Transport.
func (t *NetstackUDP) LeaveGroup(group netip.Addr) error {
	if terr := t.ep.SetSockOpt(&tcpip.RemoveMembershipOption{NIC: t.opts.NIC, MulticastAddr: tcpip.AddrFromSlice(group.Unmap().AsSlice())}); terr != nil {
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

// Start implements Transport: it starts the receive goroutine.
func (t *NetstackUDP) Start(r Receiver) error {
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("netstack underlay: already started")
	}
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	t.wq.EventRegister(&entry)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer t.wq.EventUnregister(&entry)
		t.receiveLoop(r, notify)
	}()
	return nil
}

// maxDatagram bounds one received datagram (the UDP length field's limit).
const maxDatagram = 65535

func (t *NetstackUDP) receiveLoop(r Receiver, notify <-chan struct{}) {
	n := t.opts.BatchSize
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, maxDatagram)
	}
	// The writers live in a slice so that passing one to Read (an
	// io.Writer) does not allocate.
	writers := make([]tcpip.SliceWriter, n)
	batch := make([]Datagram, n)
	for {
		count := 0
		for count < n {
			writers[count] = bufs[count]
			res, err := t.ep.Read(&writers[count], tcpip.ReadOptions{NeedRemoteAddr: true})
			if err != nil {
				if _, ok := err.(*tcpip.ErrWouldBlock); ok {
					break
				}
				if _, ok := err.(*tcpip.ErrClosedForReceive); ok {
					return
				}
				continue
			}
			if res.Count < res.Total {
				t.stats.RxTruncated.Add(1)
				continue
			}
			d := &batch[count]
			*d = Datagram{
				Payload: bufs[count][:res.Count],
				Src:     netip.AddrPortFrom(addrFromTCPIP(res.RemoteAddr.Addr), res.RemoteAddr.Port),
			}
			cm := &res.ControlMessages
			switch {
			case cm.HasTOS:
				d.TOS = cm.TOS
			case cm.HasTClass:
				d.TOS = uint8(cm.TClass)
			}
			switch {
			case cm.HasTTL:
				d.TTL = cm.TTL
			case cm.HasHopLimit:
				d.TTL = cm.HopLimit
			}
			switch {
			case cm.HasIPPacketInfo:
				d.Dst = addrFromTCPIP(cm.PacketInfo.DestinationAddr)
			case cm.HasIPv6PacketInfo:
				d.Dst = addrFromTCPIP(cm.IPv6PacketInfo.Addr)
			}
			count++
		}
		if count > 0 {
			t.stats.RxDatagrams.Add(uint64(count))
			r.Receive(batch[:count])
			continue
		}
		select {
		case <-notify:
		case <-t.done:
			return
		}
	}
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

// Close implements Transport.
func (t *NetstackUDP) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(t.done)
	t.ep.Close()
	t.wg.Wait()
	t.routeMu.Lock()
	for k, r := range t.routes {
		r.Release()
		delete(t.routes, k)
	}
	t.routeMu.Unlock()
	return nil
}
