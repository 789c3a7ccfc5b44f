package endpoint

import (
	"net/netip"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// segment splits a host-GSO TCP packet into MSS-sized segments, finishes
// their checksums and encapsulates each. The stack marks every TCP packet
// on a host-GSO NIC with a partial checksum, including pure ACKs, so
// packets no larger than the MSS go through here too, as one segment.
//
// Each segment gets a fresh copy of the link, IP and TCP headers (a few
// dozen bytes); the payload is shared with the original packet by
// reference, never copied.
func (e *Endpoint) segment(b *txBatch, pkt *stack.PacketBuffer, linkHdr []byte, dsts []netip.AddrPort, extra []byte) {
	ip := pkt.NetworkHeader().Slice()
	tcp := pkt.TransportHeader().Slice()
	if len(tcp) < 20 || len(ip) < 20 {
		e.stats.drop(DropTxMalformed)
		return
	}
	v4 := ip[0]>>4 == 4
	if !v4 && (ip[0]>>4 != 6 || len(ip) < 40) {
		e.stats.drop(DropTxMalformed)
		return
	}
	data := pkt.Data().ToBuffer()
	defer data.Release()
	total := int(data.Size())
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || mss > total {
		mss = total
	}
	hdrLen := len(linkHdr) + len(ip) + len(tcp)
	if total > mss && len(ip)+len(tcp)+mss > int(e.mtu.Load()) {
		e.stats.drop(DropTxTooBig)
		return
	}
	if total <= mss && len(ip)+len(tcp)+total > int(e.mtu.Load()) {
		e.stats.drop(DropTxTooBig)
		return
	}
	hash := e.hash(linkHdr, ip, tcp)
	l3, l4 := len(linkHdr), len(linkHdr)+len(ip)
	nseg := 0
	for off := 0; off < total || nseg == 0; off += mss {
		n := min(mss, total-off)

		hv := buffer.NewViewSize(hdrLen)
		h := hv.AsSlice()
		copy(h, linkHdr)
		copy(h[l3:], ip)
		copy(h[l4:], tcp)
		pseudo := link.SegmentHeader(h, l3, l4, link.ProtoTCP, nseg, off, n, off+n >= total)

		seg := buffer.MakeWithView(hv)
		var sum uint16
		if n > 0 {
			p := data.Clone()
			p.TrimFront(int64(off))
			p.Truncate(int64(n))
			sum = p.Checksum(0)
			seg.Merge(&p)
		}
		link.FinishChecksum(h[l4:], link.ProtoTCP, pseudo, sum)

		e.emit(b, &seg, h[l3:l4], hash, dsts, extra, 0)
		nseg++
	}
	if nseg > 1 {
		b.segments += nseg
	}
}
