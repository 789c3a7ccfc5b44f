package nsudp

import (
	"errors"
	"net/netip"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

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

// receiveLoop hands queued datagrams to r in batches. A UDP super-frame
// (link.SetReceiveUDPSegments) becomes its datagrams, which share its
// memory and one lent buffer.
func (t *Transport) receiveLoop(r link.Receiver) {
	n := t.opts.BatchSize
	batch := make([]link.Datagram, n)
	var work []*stack.PacketBuffer
	// Packets whose datagrams are in the batch, and the free ones for
	// reuse, so that nothing is allocated per packet.
	var held, free []*heldPacket
	nd := 0
	flush := func() {
		if nd > 0 {
			t.stats.rxDatagrams.Add(uint64(nd))
			r.Receive(batch[:nd])
		}
		clear(batch[:nd])
		nd = 0
		for i, h := range held {
			h.release()
			free = append(free, h)
			held[i] = nil
		}
		held = held[:0]
	}
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
			for k, pkt := range work {
				work[k] = nil
				payload, src, dst, tos, ttl, ok := t.payload(pkt)
				if !ok {
					t.stats.rxMalformed.Add(1)
					pkt.DecRef()
					continue
				}
				var h *heldPacket
				if len(free) > 0 {
					h, free = free[len(free)-1], free[:len(free)-1]
				} else {
					h = new(heldPacket)
				}
				h.pkt, h.buf = pkt, pkt.Data().ToBuffer()
				seg := max(len(payload), 1)
				if s := int(link.ReceiveUDPSegments(pkt)); s > 0 && s < len(payload) {
					seg = s
					t.stats.rxSuperFrames.Add(1)
				}
				// The NIC's receive marks (see link.GSOUDPTunnel).
				local, innerMSS := link.ReceiveMarks(pkt)
				for off := 0; off < len(payload) || off == 0; off += seg {
					if nd == n {
						flush()
					}
					batch[nd] = link.Datagram{
						Payload:   payload[off:min(off+seg, len(payload))],
						Buffer:    &h.buf,
						BufferOff: off,
						Src:       src,
						Dst:       dst,
						TOS:       tos,
						TTL:       ttl,
						Local:     local,
						InnerMSS:  innerMSS,
					}
					nd++
				}
				// After its datagrams: a flush in their midst must not
				// release it.
				held = append(held, h)
			}
			flush()
		}
	}
}

// heldPacket is a received packet whose datagrams are being delivered, and
// the buffer of its payload they lend.
type heldPacket struct {
	pkt *stack.PacketBuffer
	buf buffer.Buffer
}

func (h *heldPacket) release() {
	h.buf.Release()
	h.pkt.DecRef()
	*h = heldPacket{}
}

// payload returns the UDP payload of a queued packet as one slice, and its
// outer addresses and fields. The payload is read in place when it lies in
// one view (as the TAP and AF_PACKET NICs read super-frames), else made
// contiguous with PullUp, which copies. Buffer.PullUp would copy a chunk
// shared with another reference even when the bytes are contiguous
// already.
func (t *Transport) payload(pkt *stack.PacketBuffer) (payload []byte, src netip.AddrPort, dst netip.Addr, tos, ttl uint8, ok bool) {
	size := pkt.Data().Size()
	payload, ok = inPlace(pkt, size)
	if !ok {
		payload, ok = pkt.Data().PullUp(size)
	}
	s, d, tos, ttl := outerFields(pkt.NetworkHeader().Slice())
	port := header.UDP(pkt.TransportHeader().Slice()).SourcePort()
	return payload, netip.AddrPortFrom(addrFromTCPIP(s), port), addrFromTCPIP(d), tos, ttl, ok
}

// inPlace returns the last size bytes of pkt (its data) if they lie in one
// of its views.
func inPlace(pkt *stack.PacketBuffer, size int) ([]byte, bool) {
	vl, off := pkt.AsViewList()
	start := off + pkt.HeaderSize() // inbound: nothing pushed, the headers consumed
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if start >= len(b) {
			start -= len(b)
			continue
		}
		if len(b)-start >= size {
			return b[start : start+size], true
		}
		return nil, false
	}
	return nil, size == 0
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
