package vmnet

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"

	"github.com/gnv-project/gnv/internal/csum"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// hdrScratch is how many bytes of a packet's headers are examined when its
// checksums must be redone: Ethernet, IPv6 with extension headers, TCP
// with options.
const hdrScratch = 384

// WritePackets implements stack.LinkWriter. The packets are borrowed: each
// is copied into the transmit queue (cut and checksummed as the package
// documentation says) before WritePackets returns. Frames that cannot be
// queued are dropped and counted; only a closed endpoint reports an error.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.txMu.Lock()
	if e.txClosed {
		e.txMu.Unlock()
		e.stats.drops[DropTxClosed].Add(uint64(pkts.Len()))
		return 0, &tcpip.ErrClosedForSend{}
	}
	queued := len(e.fill)
	for _, pkt := range pkts.AsSlice() {
		e.queue(pkt)
	}
	more := len(e.fill) > queued
	e.txMu.Unlock()
	if more {
		select {
		case e.txWake <- struct{}{}:
		default:
		}
	}
	return pkts.Len(), nil
}

// queue appends pkt's frame, or its segments, to the transmit queue. txMu
// is held.
func (e *Endpoint) queue(pkt *stack.PacketBuffer) {
	views, off := pkt.AsViewList()
	s := link.Slices(e.wslices[:0]).AppendViews(views, off)
	e.wslices = s
	total := s.Size()
	if total < header.EthernetMinimumSize {
		e.stats.drop(DropTxMalformed)
		return
	}
	gso := pkt.GSOOptions.Type == stack.GSOTCPv4 || pkt.GSOOptions.Type == stack.GSOTCPv6
	if gso || pkt.RXChecksumValidated || pkt.GSOOptions.NeedsCsum {
		if !e.queueFixed(s, total, pkt.GSOOptions.MSS, gso) {
			e.stats.drop(DropTxMalformed)
		}
		return
	}
	rec := e.reserve(total)
	if rec == nil {
		return
	}
	s.CopyOut(rec)
}

// queueFixed queues an IP packet with TCP or UDP inside whose checksums
// cannot be trusted (partial, or stale after coalescing), cut into
// segments of at most mss bytes of TCP payload (0: derived from the MTU),
// with every checksum redone. It reports false, having queued nothing,
// for packets it does not handle (not TCP/UDP over IP, fragments, headers
// beyond hdrScratch), which the caller writes unchanged when they are not
// TCP super-packets: their checksums were complete or not ours to fix.
func (e *Endpoint) queueFixed(s link.Slices, total int, gsoMSS uint16, gso bool) bool {
	h := e.hdr[:s.CopyOut(e.hdr[:min(total, len(e.hdr))])]
	l3 := header.EthernetMinimumSize
	et := binary.BigEndian.Uint16(h[12:14])
	if et != uint16(header.IPv4ProtocolNumber) && et != uint16(header.IPv6ProtocolNumber) {
		if !gso {
			return e.queuePlain(s, total)
		}
		return false
	}
	ip, ok := frame.ParseIP(h[l3:], total-l3)
	if !ok || ip.Fragment || ip.L4Len == 0 || (ip.Version == 4) != (et == uint16(header.IPv4ProtocolNumber)) ||
		(ip.Proto != frame.ProtoTCP && ip.Proto != frame.ProtoUDP) || (gso && ip.Proto != frame.ProtoTCP) {
		if !gso {
			return e.queuePlain(s, total)
		}
		return false
	}
	l4 := l3 + ip.HdrLen
	hl := l4 + ip.L4Len
	payload := l3 + ip.TotalLen - hl // Ethernet padding is dropped
	mss := payload
	if ip.Proto == frame.ProtoTCP {
		if m := int(e.mtu.Load()) - ip.HdrLen - ip.L4Len; m > 0 && m < mss {
			mss = m
		}
		if gso && gsoMSS > 0 && int(gsoMSS) < mss {
			mss = int(gsoMSS)
		}
	}
	if mss <= 0 {
		mss = payload
	}
	nseg := 0
	for off := 0; off < payload || nseg == 0; off += mss {
		n := min(mss, payload-off)
		rec := e.reserve(hl + n)
		if rec == nil {
			// Counted once; the rest would not fit either.
			if left := payload - off - n; left > 0 {
				e.stats.drops[DropTxQueueFull].Add(uint64((left + mss - 1) / mss))
			}
			break
		}
		copy(rec, h[:hl])
		copyRange(s, rec[hl:], hl+off)
		pseudo := link.SegmentHeader(rec[:hl], l3, l4, ip.Proto, nseg, off, n, off+n >= payload)
		link.FinishChecksum(rec[l4:hl], ip.Proto, pseudo, csum.Checksum(rec[hl:], 0))
		nseg++
	}
	e.stats.txChecksums.Add(uint64(nseg))
	if nseg > 1 {
		e.stats.txSegments.Add(uint64(nseg))
	}
	return true
}

// queuePlain queues the frame in s unchanged.
func (e *Endpoint) queuePlain(s link.Slices, total int) bool {
	if rec := e.reserve(total); rec != nil {
		s.CopyOut(rec)
	}
	return true
}

// copyRange copies len(dst) bytes of s from offset off into dst.
func copyRange(s link.Slices, dst []byte, off int) {
	for _, b := range s {
		if len(dst) == 0 {
			return
		}
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n := copy(dst, b[off:])
		dst = dst[n:]
		off = 0
	}
}

// reserve appends a record for a frame of n bytes to the transmit queue and
// returns the frame's bytes, or nil (counted) if the queue is full. A frame
// larger than the whole queue still goes into an empty queue. txMu is held.
func (e *Endpoint) reserve(n int) []byte {
	if len(e.fill) > 0 && len(e.fill)+4+n > e.txLimit {
		e.stats.drop(DropTxQueueFull)
		return nil
	}
	start := len(e.fill)
	e.fill = slices.Grow(e.fill, 4+n)[:start+4+n]
	binary.BigEndian.PutUint32(e.fill[start:], uint32(n))
	return e.fill[start+4:]
}

// countRecords returns how many records q holds.
func countRecords(q []byte) int {
	n := 0
	for len(q) >= 4 {
		q = q[4+int(binary.BigEndian.Uint32(q)):]
		n++
	}
	return n
}

// writeLoop writes queued frames to the socket until the endpoint closes or
// a stream write fails.
func (e *Endpoint) writeLoop() {
	defer close(e.writerDone)
	var out []byte
	for {
		e.txMu.Lock()
		for len(e.fill) == 0 && !e.txClosed {
			e.txMu.Unlock()
			select {
			case <-e.txWake:
			case <-e.stop:
				return
			}
			e.txMu.Lock()
		}
		if e.txClosed {
			e.txMu.Unlock()
			return
		}
		out, e.fill = e.fill, out[:0]
		e.txMu.Unlock()
		if e.conn != nil {
			if !e.writeStream(out) {
				return
			}
		} else if !e.writeDatagrams(out) {
			return
		}
	}
}

// writeStream writes a batch of records as it is: the records are the
// stream framing. It reports false when the stream failed.
func (e *Endpoint) writeStream(out []byte) bool {
	frames := countRecords(out)
	if _, err := e.conn.Write(out); err != nil {
		e.stats.drops[DropTxError].Add(uint64(frames))
		e.txMu.Lock()
		e.txClosed = true // a partial write broke the framing
		e.txMu.Unlock()
		if !e.stopping() {
			e.fail(err)
		}
		return false
	}
	e.stats.txFrames.Add(uint64(frames))
	e.stats.txBytes.Add(uint64(len(out) - 4*frames))
	return true
}

// writeDatagrams sends each record as one datagram. It reports false when
// the socket is closed.
func (e *Endpoint) writeDatagrams(out []byte) bool {
	for len(out) >= 4 {
		n := int(binary.BigEndian.Uint32(out))
		f := out[4 : 4+n]
		out = out[4+n:]
		var err error
		switch {
		case e.connected:
			_, err = e.pconn.(net.Conn).Write(f)
		default:
			p := e.peer.Load()
			if p == nil {
				e.stats.drop(DropTxNoPeer)
				continue
			}
			if e.raw != nil && p.raw.named() {
				err = e.raw.send(f, &p.raw)
			} else {
				_, err = e.pconn.WriteTo(f, p.addr)
			}
		}
		if err != nil {
			e.stats.drop(DropTxError)
			if errors.Is(err, net.ErrClosed) {
				e.stats.drops[DropTxClosed].Add(uint64(countRecords(out)))
				return false
			}
			continue
		}
		e.stats.txFrames.Add(1)
		e.stats.txBytes.Add(uint64(n))
	}
	return true
}
