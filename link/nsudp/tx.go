package nsudp

import (
	"fmt"
	"net/netip"

	"github.com/gnv-project/gnv/internal/csum"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

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
		xsum = csum.Combine(xsum, payloadSum(&p.Payload))
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
		xsum = csum.Combine(xsum, payloadSum(&p.Payload))
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

// payloadSum returns the checksum of a datagram's payload, for a UDP
// checksum computed in software.
func payloadSum(b *buffer.Buffer) uint16 {
	var c csum.Checksumer
	vl := b.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		c.Add(v.AsSlice())
	}
	return c.Checksum()
}
