package nsudp

import (
	"errors"
	"net/netip"

	"github.com/gnv-project/gnv/link"
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
