// Package nsudp is a link.Transport whose UDP/IP runs in a gVisor netstack
// (the underlay netstack), on any link endpoint: the AF_PACKET endpoint,
// the TAP underlay NIC, or the test fabric.
package nsudp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Options configures a Transport transport.
type Options struct {
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
	// §4.3 allows it).
	NoChecksum4 bool

	// ZeroChecksumTx6 sends IPv6 datagrams with a zero UDP checksum (RFC
	// 8926 §4.3.1 allows it only when configured, in a controlled network;
	// RFC 6935/6936). Possible here because the transport writes the UDP
	// header itself.
	ZeroChecksumTx6 bool

	// Segmenter is the link endpoint that takes UDP segmentation jobs
	// (link.GSOUDPL4) for this transport's NIC; nil means the NIC's link
	// endpoint if it implements link.UDPSegmenter. Set it when the endpoint is
	// wrapped (a capture, say) in something that does not. Jobs are built
	// only while Segmenter.UDPSegmentation says so.
	Segmenter link.UDPSegmenter

	// link.TunnelSegmenter is the link endpoint that takes UDP-tunnel
	// segmentation jobs (link.GSOUDPTunnel) for this transport's NIC; nil means
	// the NIC's link endpoint if it implements link.TunnelSegmenter. Like
	// Segmenter, set it when the endpoint is wrapped.
	TunnelSegmenter link.TunnelSegmenter

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

// Transport is a Transport whose UDP/IP runs in a gVisor netstack: the
// underlay stack.
//
// It registers itself with the stack's transport demultiplexer for the
// Geneve port, like a UDP socket bound to every address of its NIC, but
// without a socket's receive queue: each datagram is checked (length, UDP
// checksum) on the stack's receive goroutine, referenced (not copied) into
// a queue, and handed to the link.Receiver in batches by one goroutine, which
// lets the receiver keep the bytes without copying them (link.Datagram.Buffer)
// and coalesce with GRO over the batch.
//
// Sending writes the UDP header in front of the Geneve payload and hands
// the packet to a cached netstack route: the payload bytes are shared, not
// copied, and every datagram carries its own source port, TOS, TTL and DF.
// On a NIC with checksum offload (CapabilityTXChecksumOffload) the UDP
// checksum is left to the NIC (GSOOptions.NeedsCsum), and on one that takes
// UDP segmentation jobs (link.UDPSegmenter) runs of equal datagrams go down as
// one job (see WriteBatch); the AF_PACKET endpoint (PacketEndpoint) does
// both.
type Transport struct {
	opts  Options
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
	rx     link.Receiver
	groups map[netip.Addr]int

	done    chan struct{}
	wg      sync.WaitGroup
	started atomic.Bool
	closed  atomic.Bool

	stats counters
}

// Stats is a snapshot of a Transport's counters, as Transport.Stats
// returns it.
type Stats struct {
	// TxDatagrams counts datagrams handed to the underlay stack (those of
	// segmentation jobs one by one).
	TxDatagrams uint64
	// TxErrors counts datagrams that could not be sent: no route, or
	// refused by the underlay stack.
	TxErrors uint64
	// TxGSOJobs counts runs of datagrams handed to the underlay NIC as one
	// UDP segmentation job, and TxGSODatagrams the datagrams in them (they
	// count in TxDatagrams too).
	TxGSOJobs, TxGSODatagrams uint64
	// TxTunnelJobs counts UDP-tunnel segmentation jobs (link.Packet.InnerMSS)
	// handed to the underlay NIC.
	TxTunnelJobs uint64
	// RxDatagrams counts datagrams handed to the receiver.
	RxDatagrams uint64
	// RxMalformed counts datagrams whose UDP length is wrong.
	RxMalformed uint64
	// RxChecksumErrors counts datagrams with a bad UDP checksum, and IPv6
	// datagrams with a zero checksum unless ZeroChecksumRx6 is set.
	RxChecksumErrors uint64
	// RxQueueFull counts datagrams dropped because the receiver fell
	// QueueLen datagrams behind.
	RxQueueFull uint64
	// RxNotStarted counts datagrams that arrived before Start or after
	// Close.
	RxNotStarted uint64
	// ICMPErrors counts ICMP errors received for sent datagrams.
	ICMPErrors uint64
}

// counters are the live counters behind Stats.
type counters struct {
	txDatagrams, txErrors, txGSOJobs, txGSODatagrams, txTunnelJobs        atomic.Uint64
	rxDatagrams, rxMalformed, rxChecksumErrors, rxQueueFull, rxNotStarted atomic.Uint64
	icmpErrors                                                            atomic.Uint64
}

var _ stack.TransportEndpoint = (*Transport)(nil)

// New claims the Geneve port on the underlay stack's NIC.
func New(opts Options) (*Transport, error) {
	if opts.Stack == nil {
		return nil, errors.New("netstack underlay: nil stack")
	}
	if !opts.Local.Addr().IsValid() {
		return nil, errors.New("netstack underlay: local address is required")
	}
	if opts.Local.Port() == 0 {
		return nil, errors.New("netstack underlay: local port is required (6081 is Geneve's)")
	}
	t := &Transport{
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
	if t.opts.Segmenter == nil {
		if nic, ok := opts.Stack.NICInfo()[opts.NIC]; ok && nic.Name != "" {
			if sg, ok := opts.Stack.GetLinkEndpointByName(nic.Name).(link.UDPSegmenter); ok {
				t.opts.Segmenter = sg
			}
		}
	}
	if t.opts.TunnelSegmenter == nil {
		if nic, ok := opts.Stack.NICInfo()[opts.NIC]; ok && nic.Name != "" {
			if sg, ok := opts.Stack.GetLinkEndpointByName(nic.Name).(link.TunnelSegmenter); ok {
				t.opts.TunnelSegmenter = sg
			}
		}
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
func (t *Transport) LocalAddr() netip.AddrPort { return t.opts.Local }

// MTU implements Transport.
func (t *Transport) MTU() int { return t.mtu }

// Stats returns a snapshot of the transport's counters.
func (t *Transport) Stats() Stats {
	c := &t.stats
	return Stats{
		TxDatagrams:      c.txDatagrams.Load(),
		TxErrors:         c.txErrors.Load(),
		TxGSOJobs:        c.txGSOJobs.Load(),
		TxGSODatagrams:   c.txGSODatagrams.Load(),
		TxTunnelJobs:     c.txTunnelJobs.Load(),
		RxDatagrams:      c.rxDatagrams.Load(),
		RxMalformed:      c.rxMalformed.Load(),
		RxChecksumErrors: c.rxChecksumErrors.Load(),
		RxQueueFull:      c.rxQueueFull.Load(),
		RxNotStarted:     c.rxNotStarted.Load(),
		ICMPErrors:       c.icmpErrors.Load(),
	}
}

// JoinGroup implements Transport: the NIC joins the group, and the
// underlay stack sends IGMP/MLD reports if it was created with them enabled.
func (t *Transport) JoinGroup(group netip.Addr) error {
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
func (t *Transport) LeaveGroup(group netip.Addr) error {
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
func (t *Transport) route(dst netip.Addr) (*stack.Route, tcpip.Error) {
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
func (t *Transport) forgetRoute(dst netip.Addr, r *stack.Route) {
	t.routeMu.Lock()
	if t.routes[dst] == r {
		delete(t.routes, dst)
		r.Release()
	}
	t.routeMu.Unlock()
}

// WriteBatch implements Transport.
//
// When the underlay NIC's link endpoint takes UDP segmentation jobs
// (link.UDPSegmenter: the AF_PACKET endpoint with udp-gso), runs of consecutive
// packets with the same Dst, SrcPort, TOS, TTL and DF and equal payload
// sizes (the last may be shorter), each fitting the MTU, go down as one job
// (link.GSOUDPL4): one packet through the netstack route, which resolves the
// neighbour, queues while it is unresolved and builds the IP header; the
// endpoint then has the kernel or NIC cut it into datagrams. Everything
// else is sent datagram by datagram.
func (t *Transport) WriteBatch(pkts []link.Packet) (int, error) {
	sent := 0
	var firstErr error
	fail := func(err error, n int) {
		t.stats.txErrors.Add(uint64(n))
		if firstErr == nil {
			firstErr = err
		}
	}
	maxSegs := 0
	if sg := t.opts.Segmenter; sg != nil && !t.zeroChecksum() {
		if n, ok := sg.UDPSegmentation(); ok {
			maxSegs = n
		}
	}
	for i := 0; i < len(pkts); {
		if maxSegs > 1 {
			if n := t.runLength(pkts[i:], maxSegs); n > 1 {
				done, err := t.writeRun(pkts[i : i+n])
				switch {
				case done && err != nil:
					fail(err, n)
					i += n
					continue
				case done:
					sent += n
					i += n
					continue
				}
				// Not possible as a job: one by one.
				for k := i; k < i+n; k++ {
					if err := t.write(&pkts[k]); err != nil {
						fail(err, 1)
					} else {
						sent++
					}
				}
				i += n
				continue
			}
		}
		if err := t.write(&pkts[i]); err != nil {
			fail(err, 1)
		} else {
			sent++
		}
		i++
	}
	t.stats.txDatagrams.Add(uint64(sent))
	return sent, firstErr
}

// TunnelSegmentation implements link.TunnelSegmenter: jobs are taken while the
// NIC's link endpoint takes them.
func (t *Transport) TunnelSegmentation() (int, bool) {
	sg := t.opts.TunnelSegmenter
	if sg == nil {
		return 0, false
	}
	n, ok := sg.TunnelSegmentation()
	return min(n, t.maxJobPayload()), ok
}

// zeroChecksum reports whether datagrams leave with a zero UDP checksum.
func (t *Transport) zeroChecksum() bool {
	if t.proto == ipv4.ProtocolNumber {
		return t.opts.NoChecksum4
	}
	return t.opts.ZeroChecksumTx6
}

// maxJobPayload is the most UDP payload bytes of one segmentation job: its
// UDP length and IP length fields must not overflow.
func (t *Transport) maxJobPayload() int {
	if t.proto == ipv4.ProtocolNumber {
		return 0xffff - header.IPv4MinimumSize - header.UDPMinimumSize
	}
	return 0xffff - header.UDPMinimumSize
}

// runLength returns how many packets from pkts[0] can form one
// segmentation job (1 if none).
func (t *Transport) runLength(pkts []link.Packet, maxSegs int) int {
	p := &pkts[0]
	size := int(p.Payload.Size())
	if size == 0 || p.FlowLabel != 0 {
		return 1 // a GSO job cannot carry a flow label
	}
	limit := t.maxJobPayload()
	total, n := size, 1
	for n < len(pkts) && n < maxSegs {
		q := &pkts[n]
		sz := int(q.Payload.Size())
		if sz == 0 || sz > size || total+sz > limit ||
			q.Dst != p.Dst || q.SrcPort != p.SrcPort || q.TOS != p.TOS || q.TTL != p.TTL || q.DF != p.DF {
			break
		}
		n++
		total += sz
		if sz < size {
			break // a shorter datagram ends the run
		}
	}
	return n
}

// ttl returns the TTL / hop limit for p on r.
func (t *Transport) ttl(p *link.Packet, dst netip.Addr, r *stack.Route) uint8 {
	if p.TTL != 0 {
		return p.TTL
	}
	if dst.IsMulticast() {
		return t.opts.MulticastTTL
	}
	return r.DefaultTTL()
}

// writeRun sends run as one segmentation job. done is false, with nothing
// sent, when the run cannot go as a job (the route loops packets back
// locally, needs software checksums, or a datagram would not fit the MTU);
// the caller then sends it datagram by datagram.
func (t *Transport) writeRun(run []link.Packet) (done bool, err error) {
	p := &run[0]
	dst := p.Dst.Addr().Unmap()
	r, terr := t.route(dst)
	if terr != nil {
		return false, nil // the datagram path reports it
	}
	size := int(p.Payload.Size())
	if r.Loop() != stack.PacketOut || r.RequiresTXTransportChecksum() || uint32(size+header.UDPMinimumSize) > r.MTU() {
		return false, nil
	}
	var payload buffer.Buffer
	for i := range run {
		c := run[i].Payload.Clone()
		payload.Merge(&c)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + header.UDPMinimumSize,
		Payload:            payload,
	})
	defer pkt.DecRef()
	length := uint16(pkt.Size() + header.UDPMinimumSize)
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: t.srcPort(p), DstPort: p.Dst.Port(), Length: length})
	u.SetChecksum(r.PseudoHeaderChecksum(udp.ProtocolNumber, length))
	pkt.TransportProtocolNumber = udp.ProtocolNumber
	pkt.GSOOptions = stack.GSO{
		Type:       link.GSOUDPL4,
		NeedsCsum:  true,
		CsumOffset: link.UDPChecksumOffset,
		MSS:        uint16(size),
		L3HdrLen:   t.l3HdrLen(),
		MaxSize:    uint32(t.maxJobPayload()),
	}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: udp.ProtocolNumber, TTL: t.ttl(p, dst, r), TOS: p.TOS, DF: p.DF}, pkt); terr != nil {
		t.forgetRoute(dst, r)
		return true, fmt.Errorf("send to %s: %s", p.Dst, terr)
	}
	t.stats.txGSOJobs.Add(1)
	t.stats.txGSODatagrams.Add(uint64(len(run)))
	return true, nil
}

func (t *Transport) l3HdrLen() uint16 {
	if t.proto == ipv4.ProtocolNumber {
		return header.IPv4MinimumSize
	}
	return header.IPv6MinimumSize
}

func (t *Transport) srcPort(p *link.Packet) uint16 {
	if p.SrcPort != 0 {
		return p.SrcPort
	}
	return t.opts.Local.Port()
}

// write sends one datagram. Its UDP checksum is, in order: zero if so
// configured (NoChecksum4, ZeroChecksumTx6); computed here if the NIC does
// not offload it, or if the datagram will be fragmented (an offloaded
// checksum is per frame); else left to the NIC: the field holds the
// pseudo-header sum and the packet is marked GSOOptions.NeedsCsum (Type
// GSONone, CsumOffset 6), which a link endpoint advertising
// CapabilityTXChecksumOffload must complete.
func (t *Transport) write(p *link.Packet) error {
	dst := p.Dst.Addr().Unmap()
	r, terr := t.route(dst)
	if terr != nil {
		return fmt.Errorf("route to %s: %s", dst, terr)
	}
	if p.InnerMSS != 0 {
		return t.writeTunnelJob(p, r, dst)
	}
	if p.FlowLabel != 0 && t.proto == ipv6.ProtocolNumber {
		return t.writeFlowLabel(p, r, dst)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + header.UDPMinimumSize,
		Payload:            p.Payload.Clone(),
	})
	defer pkt.DecRef()
	length := uint16(pkt.Size() + header.UDPMinimumSize)
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: t.srcPort(p), DstPort: p.Dst.Port(), Length: length})
	pkt.TransportProtocolNumber = udp.ProtocolNumber
	switch {
	case t.zeroChecksum():
	case r.RequiresTXTransportChecksum() || uint32(length) > r.MTU():
		xsum := r.PseudoHeaderChecksum(udp.ProtocolNumber, length)
		xsum = checksum.Combine(xsum, pkt.Data().Checksum())
		u.SetChecksum(^u.CalculateChecksum(xsum))
		if u.Checksum() == 0 {
			u.SetChecksum(0xffff) // RFC 768: zero means "no checksum"
		}
	default:
		u.SetChecksum(r.PseudoHeaderChecksum(udp.ProtocolNumber, length))
		pkt.GSOOptions = stack.GSO{Type: stack.GSONone, NeedsCsum: true, CsumOffset: link.UDPChecksumOffset, L3HdrLen: t.l3HdrLen()}
	}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: udp.ProtocolNumber, TTL: t.ttl(p, dst, r), TOS: p.TOS, DF: p.DF}, pkt); terr != nil {
		t.forgetRoute(dst, r)
		return fmt.Errorf("send to %s: %s", p.Dst, terr)
	}
	return nil
}

// writeTunnelJob sends p, a UDP-tunnel segmentation job (link.Packet.InnerMSS),
// as one link.GSOUDPTunnel packet for the NIC to hand to the kernel. The UDP
// checksum field holds the pseudo-header sum over the whole job (the kernel
// finishes each segment's), or zero if so configured.
func (t *Transport) writeTunnelJob(p *link.Packet, r *stack.Route, dst netip.Addr) error {
	if r.Loop() != stack.PacketOut {
		return fmt.Errorf("send to %s: a tunnel segmentation job cannot be looped back", p.Dst)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + header.UDPMinimumSize,
		Payload:            p.Payload.Clone(),
	})
	defer pkt.DecRef()
	length := uint16(pkt.Size() + header.UDPMinimumSize)
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: t.srcPort(p), DstPort: p.Dst.Port(), Length: length})
	pkt.TransportProtocolNumber = udp.ProtocolNumber
	csum := !t.zeroChecksum()
	if csum {
		u.SetChecksum(r.PseudoHeaderChecksum(udp.ProtocolNumber, length))
	}
	pkt.GSOOptions = stack.GSO{
		Type:       link.GSOUDPTunnel,
		NeedsCsum:  csum,
		CsumOffset: link.UDPChecksumOffset,
		MSS:        p.InnerMSS,
		L3HdrLen:   t.l3HdrLen(),
		MaxSize:    uint32(t.maxJobPayload()),
	}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: udp.ProtocolNumber, TTL: t.ttl(p, dst, r), TOS: p.TOS, DF: p.DF}, pkt); terr != nil {
		t.forgetRoute(dst, r)
		return fmt.Errorf("send to %s: %s", p.Dst, terr)
	}
	t.stats.txTunnelJobs.Add(1)
	return nil
}

// writeFlowLabel sends p over IPv6 with its flow label. Netstack's IPv6
// writer has no flow label parameter, so the IPv6 and UDP headers are built
// here and the packet goes out header-included; the UDP checksum is
// computed in software.
func (t *Transport) writeFlowLabel(p *link.Packet, r *stack.Route, dst netip.Addr) error {
	hv := buffer.NewViewSize(header.IPv6MinimumSize + header.UDPMinimumSize)
	h := hv.AsSlice()
	length := uint16(header.UDPMinimumSize + p.Payload.Size())
	dstAddr := tcpip.AddrFrom16(dst.As16())
	header.IPv6(h).Encode(&header.IPv6Fields{
		TrafficClass:      p.TOS,
		FlowLabel:         p.FlowLabel & 0xfffff,
		PayloadLength:     length,
		TransportProtocol: udp.ProtocolNumber,
		HopLimit:          t.ttl(p, dst, r),
		SrcAddr:           t.local,
		DstAddr:           dstAddr,
	})
	u := header.UDP(h[header.IPv6MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: t.srcPort(p), DstPort: p.Dst.Port(), Length: length})
	if !t.zeroChecksum() {
		xsum := header.PseudoHeaderChecksum(udp.ProtocolNumber, t.local, dstAddr, length)
		xsum = checksum.Combine(xsum, p.Payload.Checksum(0))
		u.SetChecksum(^u.CalculateChecksum(xsum))
		if u.Checksum() == 0 {
			u.SetChecksum(0xffff)
		}
	}
	data := buffer.MakeWithView(hv)
	payload := p.Payload.Clone()
	data.Merge(&payload)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: int(r.MaxHeaderLength()), Payload: data})
	defer pkt.DecRef()
	if terr := r.WriteHeaderIncludedPacket(pkt); terr != nil {
		t.forgetRoute(dst, r)
		return fmt.Errorf("send to %s: %s", p.Dst, terr)
	}
	return nil
}

// Offloads implements link.OffloadReporter: the offloads of the underlay
// NIC's link endpoint.
func (t *Transport) Offloads() link.Offloads {
	var o link.Offloads
	if r, ok := t.opts.Segmenter.(link.OffloadReporter); ok {
		o |= r.Offloads()
	}
	if r, ok := t.opts.TunnelSegmenter.(link.OffloadReporter); ok {
		o |= r.Offloads()
	}
	return o
}

// HandlePacket implements stack.TransportEndpoint. It runs on the underlay
// stack's receive path: it checks the UDP length and checksum, then queues a
// reference to the packet for the receive goroutine.
func (t *Transport) HandlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) {
	hdr := header.UDP(pkt.TransportHeader().Slice())
	src, dst, _, _ := outerFields(pkt.NetworkHeader().Slice())
	lengthValid, csumValid := header.UDPValid(hdr, func() uint16 { return pkt.Data().Checksum() },
		uint16(pkt.Data().Size()), pkt.NetworkProtocolNumber, src, dst, pkt.RXChecksumValidated)
	if !lengthValid {
		t.stats.rxMalformed.Add(1)
		return
	}
	// A zero checksum on IPv6 is accepted only when configured (RFC 8926
	// §4.3.1). header.UDPValid refuses it, unless the NIC claimed to have
	// validated the packet, so decide here whatever the NIC says.
	zero6 := hdr.Checksum() == 0 && pkt.NetworkProtocolNumber == ipv6.ProtocolNumber
	if zero6 && !t.opts.ZeroChecksumRx6 || !csumValid && !(zero6 && t.opts.ZeroChecksumRx6) {
		t.stats.rxChecksumErrors.Add(1)
		return
	}
	t.qmu.Lock()
	if t.rx == nil || t.closed.Load() {
		t.qmu.Unlock()
		t.stats.rxNotStarted.Add(1)
		return
	}
	if len(t.queue) >= t.opts.QueueLen {
		t.qmu.Unlock()
		t.stats.rxQueueFull.Add(1)
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
func (t *Transport) HandleError(stack.TransportError, *stack.PacketBuffer) {
	t.stats.icmpErrors.Add(1)
}

// Abort implements stack.TransportEndpoint; the stack calls it when it is
// closed.
func (t *Transport) Abort() { t.Close() }

// Wait implements stack.TransportEndpoint.
func (t *Transport) Wait() {}

// Start implements Transport: it starts the receive goroutine.
func (t *Transport) Start(r link.Receiver) error {
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
func (t *Transport) receiveLoop(r link.Receiver) {
	n := t.opts.BatchSize
	batch := make([]link.Datagram, n)
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
			// Index instead of reslicing, so that work keeps its capacity
			// for the next swap and nothing is allocated.
			for start := 0; start < len(work); start += n {
				chunk := work[start:min(start+n, len(work))]
				for i, pkt := range chunk {
					t.datagram(&batch[i], pkt)
				}
				t.stats.rxDatagrams.Add(uint64(len(chunk)))
				r.Receive(batch[:len(chunk)])
				for i, pkt := range chunk {
					batch[i].Buffer.Release()
					batch[i] = link.Datagram{}
					pkt.DecRef()
					chunk[i] = nil
				}
			}
		}
	}
}

// datagram describes a queued packet for the receiver. The UDP payload is
// made contiguous (PullUp copies only if it spans several views) and
// offered both as a slice and as a buffer the receiver may clone.
func (t *Transport) datagram(d *link.Datagram, pkt *stack.PacketBuffer) {
	size := pkt.Data().Size()
	payload, _ := pkt.Data().PullUp(size)
	src, dst, tos, ttl := outerFields(pkt.NetworkHeader().Slice())
	port := header.UDP(pkt.TransportHeader().Slice()).SourcePort()
	*d = link.Datagram{
		Payload: payload,
		Buffer:  pkt.Data().ToBuffer(),
		Src:     netip.AddrPortFrom(addrFromTCPIP(src), port),
		Dst:     addrFromTCPIP(dst),
		TOS:     tos,
		TTL:     ttl,
		// The NIC's receive marks (see link.GSOUDPTunnel).
		Local:    pkt.GSOOptions.NeedsCsum,
		InnerMSS: pkt.GSOOptions.MSS,
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
func (t *Transport) Close() error {
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
