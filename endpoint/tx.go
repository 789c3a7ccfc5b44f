package endpoint

import (
	"encoding/binary"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// txBatchSize is how many datagrams are handed to the transport at once.
const txBatchSize = 64

// txBatch collects encapsulated datagrams for one WriteBatch call. Batches
// are pooled so that concurrent writers never share one and nothing is
// allocated per packet.
type txBatch struct {
	pkts     [txBatchSize]link.Packet
	inner    [txBatchSize]int // inner bytes of each datagram, for counters
	n        int
	segments int
}

// WritePackets implements stack.LinkWriter. The packets are borrowed: their
// bytes are referenced (not copied) by the datagrams, which are sent before
// WritePackets returns.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	b := e.txPool.Get().(*txBatch)
	for _, pkt := range pkts.AsSlice() {
		e.writePacket(b, pkt)
	}
	e.flush(b)
	e.stats.txGSOSegments.Add(uint64(b.segments))
	b.segments = 0
	e.txPool.Put(b)
	// Packets that could not be sent were dropped and counted; reporting
	// them as errors would only make the stack count them a second time.
	return pkts.Len(), nil
}

// writePacket encapsulates one outbound packet (or the segments of a TCP
// super-packet) into b.
func (e *Endpoint) writePacket(b *txBatch, pkt *stack.PacketBuffer) {
	var linkHdr []byte
	if e.cfg.Mode == L2 {
		linkHdr = pkt.LinkHeader().Slice()
		if len(linkHdr) < header.EthernetMinimumSize {
			e.stats.drop(DropTxMalformed)
			return
		}
	}
	dsts := e.destinations(linkHdr)
	if len(dsts) == 0 {
		e.stats.drop(DropTxNoRoute)
		return
	}
	if t := pkt.GSOOptions.Type; t == stack.GSOTCPv4 || t == stack.GSOTCPv6 {
		e.segment(b, pkt, linkHdr, dsts)
		return
	}
	ip := pkt.NetworkHeader().Slice()
	if pkt.Size()-len(linkHdr) > int(e.mtu.Load()) {
		e.stats.drop(DropTxTooBig)
		return
	}
	hash := e.hash(linkHdr, ip, pkt.TransportHeader().Slice())
	inner := pkt.ToBuffer()
	e.emit(b, &inner, ip, hash, dsts)
}

// hash returns the flow hash of an inner packet, from its IP and transport
// headers or, for non-IP frames, from its Ethernet header.
func (e *Endpoint) hash(linkHdr, ip, l4 []byte) uint32 {
	if h := flowHash(ip, l4, e.seed); h != 0 {
		return h
	}
	return bytesHash(linkHdr, e.seed)
}

// destinations returns where a frame goes: for now every flood destination
// (the group or all remotes).
func (e *Endpoint) destinations(linkHdr []byte) []netip.AddrPort {
	return e.dsts
}

// srcPort maps a flow hash into the configured source port range.
func (e *Endpoint) srcPort(hash uint32) uint16 {
	span := uint32(e.cfg.SrcPortMax) - uint32(e.cfg.SrcPortMin) + 1
	return e.cfg.SrcPortMin + uint16(uint64(hash)*uint64(span)>>32)
}

// emit prepends the Geneve header to inner (whose ownership it takes) and
// queues one datagram per destination. ip is the inner IP header (or nil),
// used for the protocol type in L3 mode and the ECN bits.
func (e *Endpoint) emit(b *txBatch, inner *buffer.Buffer, ip []byte, hash uint32, dsts []netip.AddrPort) {
	proto := geneve.ProtoEthernet
	if e.cfg.Mode == L3 {
		switch {
		case len(ip) > 0 && ip[0]>>4 == 4:
			proto = geneve.ProtoIPv4
		case len(ip) > 0 && ip[0]>>4 == 6:
			proto = geneve.ProtoIPv6
		default:
			inner.Release()
			e.stats.drop(DropTxMalformed)
			return
		}
	}
	tos := e.cfg.TOS
	if t, ok := innerTOS(ip); ok {
		tos |= t & ecnMask // RFC 6040 §4.1 normal mode: copy ECN, CE included
	}
	innerLen := int(inner.Size())
	hdrLen := geneve.HeaderLen + len(e.cfg.Options)
	for i, dst := range dsts {
		if b.n == txBatchSize {
			e.flush(b)
		}
		v := buffer.NewViewSize(hdrLen)
		h := v.AsSlice()
		// Base header (RFC 8926 §3.4): version 0, Opt Len, O=0, C, reserved 0.
		h[0] = uint8(len(e.cfg.Options) / 4)
		h[1] = 0
		if e.optCritical {
			h[1] = 0x40
		}
		binary.BigEndian.PutUint16(h[2:4], proto)
		binary.BigEndian.PutUint32(h[4:8], e.cfg.VNI<<8)
		copy(h[8:], e.cfg.Options)

		payload := buffer.MakeWithView(v)
		if i == len(dsts)-1 {
			payload.Merge(inner)
		} else {
			c := inner.Clone()
			payload.Merge(&c)
		}
		p := &b.pkts[b.n]
		*p = link.Packet{
			Payload: payload,
			Dst:     dst,
			SrcPort: e.srcPort(hash),
			TOS:     tos,
			DF:      e.cfg.DF,
		}
		if dst.Addr().IsMulticast() {
			p.TTL = 0 // the transport's multicast TTL
		} else {
			p.TTL = e.cfg.TTL
		}
		b.inner[b.n] = innerLen
		b.n++
	}
}

// hasCritical reports whether a (valid) option TLV list holds an option
// with the critical bit set.
func hasCritical(opts []byte) bool {
	for len(opts) >= 4 {
		if opts[2]&geneve.OptionCritical != 0 {
			return true
		}
		l := 4 + int(opts[3]&0x1f)*4
		if l > len(opts) {
			return false
		}
		opts = opts[l:]
	}
	return false
}

// flush sends the batch and releases its payloads.
func (e *Endpoint) flush(b *txBatch) {
	if b.n == 0 {
		return
	}
	n, _ := e.sock.t.WriteBatch(b.pkts[:b.n])
	if n > b.n {
		n = b.n
	}
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(b.inner[i])
	}
	e.stats.txPackets.Add(uint64(n))
	e.stats.txBytes.Add(bytes)
	if n < b.n {
		e.stats.drops[DropTxUnderlay].Add(uint64(b.n - n))
	}
	for i := 0; i < b.n; i++ {
		b.pkts[i].Payload.Release()
		b.pkts[i] = link.Packet{}
	}
	b.n = 0
}
