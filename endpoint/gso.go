package endpoint

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
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
	seq := binary.BigEndian.Uint32(tcp[4:8])
	var id uint16
	if v4 {
		id = binary.BigEndian.Uint16(ip[4:6])
	}
	flags := tcp[13]
	nseg := 0
	for off := 0; off < total || nseg == 0; off += mss {
		n := min(mss, total-off)
		last := off+n >= total

		hv := buffer.NewViewSize(hdrLen)
		h := hv.AsSlice()
		copy(h, linkHdr)
		sip := h[len(linkHdr) : len(linkHdr)+len(ip)]
		copy(sip, ip)
		stcp := h[len(linkHdr)+len(ip):]
		copy(stcp, tcp)

		l4Len := len(tcp) + n
		if v4 {
			binary.BigEndian.PutUint16(sip[2:4], uint16(len(ip)+l4Len))
			binary.BigEndian.PutUint16(sip[4:6], id+uint16(nseg))
			sip[10], sip[11] = 0, 0
			binary.BigEndian.PutUint16(sip[10:12], ^checksum.Checksum(sip, 0))
		} else {
			binary.BigEndian.PutUint16(sip[4:6], uint16(len(ip)-40+l4Len))
		}
		binary.BigEndian.PutUint32(stcp[4:8], seq+uint32(off))
		f := flags
		if !last {
			f &^= tcpFlagFIN | tcpFlagPSH
		}
		if nseg > 0 {
			f &^= tcpFlagCWR
		}
		stcp[13] = f

		seg := buffer.MakeWithView(hv)
		var sum uint16
		if n > 0 {
			p := data.Clone()
			p.TrimFront(int64(off))
			p.Truncate(int64(n))
			sum = p.Checksum(0)
			seg.Merge(&p)
		}
		// TCP checksum: pseudo-header + TCP header + payload.
		stcp[16], stcp[17] = 0, 0
		var pseudo uint16
		if v4 {
			pseudo = checksum.Checksum(sip[12:20], uint16(protoTCP))
		} else {
			pseudo = checksum.Checksum(sip[8:40], uint16(protoTCP))
		}
		pseudo = checksum.Combine(pseudo, uint16(l4Len))
		xsum := checksum.Combine(checksum.Checksum(stcp, pseudo), sum)
		binary.BigEndian.PutUint16(stcp[16:18], ^xsum)

		e.emit(b, &seg, sip, hash, dsts, extra, 0)
		nseg++
	}
	if nseg > 1 {
		b.segments += nseg
	}
}
