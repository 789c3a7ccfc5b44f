package endpoint

import (
	"net/netip"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// txBatchSize is how many datagrams are handed to the transport at once,
// unless one frame is flooded to more destinations: all copies of a frame
// go in one batch, which then grows (and keeps its size in the pool).
const txBatchSize = 64

// txBatch collects encapsulated datagrams for one WriteBatch call. Batches
// are pooled so that concurrent writers never share one and nothing is
// allocated per packet.
type txBatch struct {
	pkts     []link.Packet
	inner    []int // inner bytes of each datagram, for counters
	n        int
	segments int
	one      [1]netip.AddrPort // the destination of a known unicast MAC
}

func newTxBatch() any {
	return &txBatch{pkts: make([]link.Packet, txBatchSize), inner: make([]int, txBatchSize)}
}

// room makes room for n more datagrams: it sends what the batch holds if
// they do not fit, and grows the batch if n alone does not fit.
func (e *Endpoint) room(b *txBatch, n int) {
	if b.n+n <= len(b.pkts) {
		return
	}
	e.flush(b)
	if n > len(b.pkts) {
		b.pkts = make([]link.Packet, n)
		b.inner = make([]int, n)
	}
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
	ip := pkt.NetworkHeader().Slice()
	if linkHdr != nil {
		if lt := e.local.Load(); lt != nil {
			lt.see(e, pkt, linkHdr)
		}
		if linkHdr[0]&1 != 0 && e.suppress(pkt, linkHdr) {
			return
		}
	}
	dsts := e.destinations(b, linkHdr, ip)
	if len(dsts) == 0 {
		e.stats.drop(DropTxNoRoute)
		return
	}
	extra := e.markOptions(pkt.Mark)
	if t := pkt.GSOOptions.Type; t == stack.GSOTCPv4 || t == stack.GSOTCPv6 {
		if !e.tunnelJob(b, pkt, linkHdr, dsts, extra) {
			e.segment(b, pkt, linkHdr, dsts, extra)
		}
		return
	}
	if pkt.Size()-len(linkHdr) > int(e.mtu.Load()) && !e.fragmentable(ip) {
		e.tooBig(pkt, linkHdr, ip)
		return
	}
	hash := e.hash(linkHdr, ip, pkt.TransportHeader().Slice())
	inner := pkt.ToBuffer()
	e.emit(b, &inner, ip, hash, dsts, extra, 0)
}

// tunnelJob sends a host-GSO TCP packet whole, as a UDP-tunnel
// segmentation job (link.Packet.InnerMSS) that the kernel segments after
// encapsulation, if the transport takes jobs and the packet qualifies:
// more than one segment, a partial checksum (as the stack leaves it), and
// small enough for one outer packet. It reports false, having done
// nothing, otherwise; the caller then segments in software.
func (e *Endpoint) tunnelJob(b *txBatch, pkt *stack.PacketBuffer, linkHdr []byte, dsts []netip.AddrPort, extra []byte) bool {
	if e.tseg == nil || !pkt.GSOOptions.NeedsCsum || e.cfg.FlowLabel {
		return false
	}
	maxPayload, ok := e.tseg.TunnelSegmentation()
	if !ok {
		return false
	}
	ip := pkt.NetworkHeader().Slice()
	tcp := pkt.TransportHeader().Slice()
	mss := int(pkt.GSOOptions.MSS)
	data := pkt.Data().Size()
	if len(ip) < 20 || len(tcp) < 20 || mss <= 0 || data <= mss || len(ip)+len(tcp)+mss > int(e.mtu.Load()) ||
		geneve.HeaderLen+len(e.cfg.Options)+len(extra)+pkt.Size() > maxPayload {
		return false
	}
	hash := e.hash(linkHdr, ip, tcp)
	inner := pkt.ToBuffer()
	e.emit(b, &inner, ip, hash, dsts, extra, uint16(mss))
	e.stats.txTunnelJobs.Add(1)
	return true
}

// fragmentable reports whether an inner packet larger than the tunnel MTU
// may still be sent, leaving the outer packet to be fragmented: only an
// IPv4 packet without DF, and only when the outer DF bit will be clear.
func (e *Endpoint) fragmentable(ip []byte) bool {
	if len(ip) < header.IPv4MinimumSize || ip[0]>>4 != 4 || ip[6]&0x40 != 0 {
		return false
	}
	return e.cfg.DF != DFSet
}

// markOptions returns the extra options for packets with mark, if any.
func (e *Endpoint) markOptions(mark uint32) []byte {
	if mark == 0 {
		return nil
	}
	m := e.markOpts.Load()
	if m == nil {
		return nil
	}
	return (*m)[mark]
}

// hash returns the flow hash of an inner packet, from its IP and transport
// headers or, for non-IP frames, from its Ethernet header.
func (e *Endpoint) hash(linkHdr, ip, l4 []byte) uint32 {
	if h := flowHash(ip, l4, e.seed); h != 0 {
		return h
	}
	return bytesHash(linkHdr, e.seed)
}

// destinations returns where a frame goes: the forwarding-table entry of
// a known unicast destination MAC (L2) or the host route of the inner
// destination address (L3), else every flood destination (the group, or
// all remotes: head-end replication).
func (e *Endpoint) destinations(b *txBatch, linkHdr, ip []byte) []netip.AddrPort {
	if e.fdb != nil {
		if linkHdr[0]&1 != 0 {
			e.stats.floodBUM.Add(1)
			return e.flood.Load().dsts
		}
		if r, ok := e.fdb.lookup(linkHdr[0:6]); ok {
			b.one[0] = r
			return b.one[:]
		}
		e.stats.floodUnknown.Add(1)
		return e.flood.Load().dsts
	}
	if e.hosts.n.Load() != 0 {
		if r, ok := e.hosts.lookup(ip); ok {
			b.one[0] = r
			return b.one[:]
		}
	}
	return e.flood.Load().dsts
}

// srcPort maps a flow hash into the configured source port range.
func (e *Endpoint) srcPort(hash uint32) uint16 {
	span := uint32(e.cfg.SrcPortMax) - uint32(e.cfg.SrcPortMin) + 1
	return e.cfg.SrcPortMin + uint16(uint64(hash)*uint64(span)>>32)
}

// emit prepends the Geneve header to inner (whose ownership it takes) and
// queues one datagram per destination. ip is the inner IP header (or nil),
// used for the protocol type in L3 mode and the outer header policy; extra
// are per-packet options; innerMSS, if not zero, makes the datagrams
// UDP-tunnel segmentation jobs (link.Packet.InnerMSS).
func (e *Endpoint) emit(b *txBatch, inner *buffer.Buffer, ip []byte, hash uint32, dsts []netip.AddrPort, extra []byte, innerMSS uint16) {
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
	tos, ttl, df := e.outerFields(ip)
	innerLen := int(inner.Size())
	optLen := len(e.cfg.Options) + len(extra)
	critical := e.optCritical || (len(extra) > 0 && hasCritical(extra))
	e.room(b, len(dsts))
	srcPort := e.srcPort(hash) // the same for every copy
	for i, dst := range dsts {
		v := buffer.NewViewSize(geneve.HeaderLen + optLen)
		h := v.AsSlice()
		// The options were validated when configured (Config.Options,
		// SetMarkOptions).
		geneve.PutBase(h, proto, e.cfg.VNI, optLen, false, critical)
		copy(h[geneve.HeaderLen:], e.cfg.Options)
		copy(h[geneve.HeaderLen+len(e.cfg.Options):], extra)

		payload := buffer.MakeWithView(v)
		if i == len(dsts)-1 {
			payload.Merge(inner)
		} else {
			c := inner.Clone()
			payload.Merge(&c)
		}
		b.pkts[b.n] = link.Packet{
			Payload:  payload,
			Dst:      dst,
			SrcPort:  srcPort,
			TOS:      tos,
			TTL:      ttl,
			DF:       df,
			InnerMSS: innerMSS,
		}
		if e.cfg.FlowLabel {
			b.pkts[b.n].FlowLabel = max(hash&0xfffff, 1) // 0 would mean "no label"
		}
		if e.cfg.MulticastTTL != 0 && !e.cfg.TTLInherit && dst.Addr().IsMulticast() {
			b.pkts[b.n].TTL = e.cfg.MulticastTTL
		}
		b.inner[b.n] = innerLen
		b.n++
	}
}

// outerFields applies the outer header policy to an inner IP header (nil
// for frames that are not IP): DSCP fixed or inherited, ECN copied (RFC
// 6040 §4.1 normal mode, CE included), TTL fixed or inherited, DF unset,
// set or inherited (only the DF bit; inner IPv6 counts as DF).
func (e *Endpoint) outerFields(ip []byte) (tos, ttl uint8, df bool) {
	tos, ttl, df = e.cfg.TOS, e.cfg.TTL, e.cfg.DF == DFSet
	t, ok := innerTOS(ip)
	if !ok {
		return tos, ttl, df
	}
	if e.cfg.DSCPInherit {
		tos = t &^ ecnMask
	}
	tos |= t & ecnMask
	v4 := ip[0]>>4 == 4
	if e.cfg.TTLInherit {
		if v4 {
			ttl = ip[8]
		} else {
			ttl = ip[7]
		}
	}
	if e.cfg.DF == DFInherit {
		df = !v4 || ip[6]&0x40 != 0
	}
	return tos, ttl, df
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
