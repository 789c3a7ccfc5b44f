package endpoint

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The endpoint's own receive coalescing runs before any PacketBuffer
// exists. A batch from the underlay mostly holds runs of consecutive TCP
// segments of one flow (a kernel UDP GRO message is one), each segment in
// its own Geneve datagram. gVisor's GRO would take a PacketBuffer, a view
// and a merge per segment; a run is held as borrowed slices instead and
// becomes one packet, its payloads copied once into one view (or, when
// the transport lends gVisor buffers, referenced), delivered as a
// super-packet that says its segment size (stack.GSO), as a NIC's GRO
// does. The rules follow Linux's tcp_gro_receive: same flow and headers
// except lengths, IPv4 ID and checksums; contiguous sequence numbers; no
// segment larger than the first; a shorter segment, PSH or FIN ends the
// run. A run of one goes to gVisor's GRO, which also coalesces flows that
// interleave.

// maxRunSegments bounds a run: a kernel UDP GRO message holds at most 64
// segments.
const maxRunSegments = 64

// maxRunHeader is the longest header a run has: Ethernet, an IPv6 header
// (IPv4 is shorter: runs take no IPv4 options), TCP with options.
const maxRunHeader = header.EthernetMinimumSize + header.IPv6MinimumSize + header.TCPHeaderMaximumSize

// maxRunIPLen bounds a run's coalesced IP packet: the IPv4 total length
// and IPv6 payload length fields are 16 bits.
const maxRunIPLen = 0xffff

// tcpFlagsJoin are the TCP flags a segment may carry to join a run: ACK
// always, ECE as the run's first segment has it, PSH and FIN to end it.
const tcpFlagsJoin = uint8(header.TCPFlagAck | header.TCPFlagEce | header.TCPFlagPsh | header.TCPFlagFin)

// rxSegment is one segment of a run: its inner frame, borrowed from the
// transport until the end of the batch.
type rxSegment struct {
	frame []byte
	// buf is the datagram's gVisor buffer, when the transport lends one
	// (also borrowed), and front where frame starts in it.
	buf   *buffer.Buffer
	front int
}

// rxRun is a run being coalesced. It belongs to the socket's receive
// goroutine and never outlives a batch.
type rxRun struct {
	n    int
	segs [maxRunSegments]rxSegment
	// hdr and pays are the coalesced headers and the payloads handed to
	// a link.SegmentWriter.
	hdr  [maxRunHeader]byte
	pays [maxRunSegments][]byte

	d       stack.NetworkDispatcher
	proto   tcpip.NetworkProtocolNumber
	pktType tcpip.PacketType
	l4      innerL4 // of the first segment, for a run of one

	ipOff  int    // where the IP header starts in a frame
	tcpOff int    // where the TCP header starts
	hdrLen int    // link, IP and TCP headers
	mss    int    // the first segment's TCP payload length
	next   uint32 // the sequence number that continues the run
	ipLen  int    // the coalesced IP packet's length so far
	flags  uint8  // PSH and FIN of the segments
	bufs   bool   // every segment has a buffer
}

// coalescable reports whether a checked inner TCP segment may take part
// in a run: TCP right after the IP header, payload, and flags that allow
// it (no SYN, RST, URG or CWR).
func coalescable(ip []byte, l4 *innerL4) bool {
	if !l4.groable() {
		return false
	}
	tcp := ip[l4.off:]
	doff := int(tcp[12]>>4) * 4
	return len(ip)-l4.off > doff && tcp[13]&^tcpFlagsJoin == 0 && tcp[13]&uint8(header.TCPFlagAck) != 0
}

// coalesce adds a checked TCP segment (see coalescable) to the endpoint's
// run, delivering the run first if the segment does not continue it.
func (e *Endpoint) coalesce(d stack.NetworkDispatcher, dg *link.Datagram, frame, ip []byte, l4 *innerL4, proto tcpip.NetworkProtocolNumber, pktType tcpip.PacketType) {
	r := &e.run
	if r.n > 0 && !r.continues(d, frame, ip, l4, pktType) {
		e.flushRun()
	}
	tcp := ip[l4.off:]
	doff := int(tcp[12]>>4) * 4
	pay := len(ip) - l4.off - doff
	seq := binary.BigEndian.Uint32(tcp[4:8])
	if r.n == 0 {
		// Field by field: the segments (cleared by flushRun) are 3.5 KiB
		// that a composite literal would clear again.
		ipOff := len(frame) - len(ip)
		r.d, r.proto, r.pktType, r.l4 = d, proto, pktType, *l4
		r.ipOff, r.tcpOff, r.hdrLen = ipOff, ipOff+l4.off, ipOff+l4.off+doff
		r.mss, r.flags, r.bufs = pay, 0, true
	}
	r.segs[r.n] = rxSegment{frame: frame, buf: dg.Buffer, front: dg.BufferOff + len(dg.Payload) - len(frame)}
	r.n++
	r.bufs = r.bufs && dg.Buffer != nil
	if r.n == 1 {
		r.ipLen = len(ip)
	} else {
		r.ipLen += pay
	}
	r.next = seq + uint32(pay)
	r.flags |= tcp[13] & uint8(header.TCPFlagPsh|header.TCPFlagFin)
	if pay < r.mss || r.flags != 0 || r.n == maxRunSegments {
		e.flushRun()
	}
}

// continues reports whether a segment continues the run: the same
// dispatcher and packet type, the same headers except the IP length, IPv4
// ID and checksums, TCP sequence number and checksum, the next sequence
// number, no more payload than the first segment and room left.
func (r *rxRun) continues(d stack.NetworkDispatcher, frame, ip []byte, l4 *innerL4, pktType tcpip.PacketType) bool {
	first := r.segs[0].frame
	if d != r.d || pktType != r.pktType || len(frame)-len(ip) != r.ipOff || r.ipOff+l4.off != r.tcpOff {
		return false
	}
	tcp := ip[l4.off:]
	doff := int(tcp[12]>>4) * 4
	if r.tcpOff+doff != r.hdrLen {
		return false
	}
	pay := len(ip) - l4.off - doff
	if pay > r.mss || r.ipLen+pay > maxRunIPLen || binary.BigEndian.Uint32(tcp[4:8]) != r.next {
		return false
	}
	// The link header, then the IP header field by field.
	if string(frame[:r.ipOff]) != string(first[:r.ipOff]) {
		return false
	}
	fip := first[r.ipOff:]
	if ip[0]>>4 == 4 {
		// Version and IHL, TOS; flags (fragments never get here); TTL
		// and protocol; addresses.
		if string(ip[0:2]) != string(fip[0:2]) || ip[6] != fip[6] ||
			string(ip[8:10]) != string(fip[8:10]) || string(ip[12:20]) != string(fip[12:20]) {
			return false
		}
	} else {
		// Version, traffic class and flow label; next header and hop
		// limit; addresses.
		if string(ip[0:4]) != string(fip[0:4]) || string(ip[6:40]) != string(fip[6:40]) {
			return false
		}
	}
	// TCP: ports, acknowledgment and data offset; flags but PSH and FIN
	// (which end a run, so the first segment has neither); window; the
	// options, timestamps included.
	ftcp := first[r.tcpOff:r.hdrLen]
	return string(tcp[0:4]) == string(ftcp[0:4]) &&
		string(tcp[8:13]) == string(ftcp[8:13]) &&
		tcp[13]&^uint8(header.TCPFlagPsh|header.TCPFlagFin) == ftcp[13] &&
		string(tcp[14:16]) == string(ftcp[14:16]) &&
		string(tcp[header.TCPMinimumSize:doff]) == string(ftcp[header.TCPMinimumSize:])
}

// flushRun delivers the run, if any: a run of one as any other packet,
// through gVisor's GRO; a longer one as one coalesced packet, after what
// gVisor's GRO holds, so that each flow stays in order.
func (e *Endpoint) flushRun() {
	r := &e.run
	switch r.n {
	case 0:
		return
	case 1:
		s := &r.segs[0]
		data, _ := rxData(s.frame, s.frame[r.ipOff:], &r.l4, s.buf, s.front)
		pkt := e.rxPacket(data, r.pktType, r.proto)
		pkt.RXChecksumValidated = true
		e.gro.Dispatcher = r.d
		e.gro.Enqueue(pkt)
		pkt.DecRef()
	default:
		e.stats.rxCoalesced.Add(uint64(r.n))
		e.gro.Flush()
		if !r.write() {
			pkt := r.packet(e)
			r.d.DeliverNetworkPacket(r.proto, pkt)
			pkt.DecRef()
		}
	}
	clear(r.segs[:r.n]) // keep no transport memory
	clear(r.pays[:r.n])
	r.n = 0
	r.d = nil
}

// write hands a run of two or more segments to a dispatcher that writes
// it out at once (link.SegmentWriter: a TAP or TUN device) straight from
// the transport's memory, and reports whether it took it.
func (r *rxRun) write() bool {
	sw, ok := r.d.(link.SegmentWriter)
	if !ok {
		return false
	}
	hdr := r.hdr[:copy(r.hdr[:], r.segs[0].frame[:r.hdrLen])]
	r.fixHeader(hdr)
	for i := range r.segs[:r.n] {
		r.pays[i] = r.segs[i].frame[r.hdrLen:]
	}
	return sw.WriteSegments(hdr, r.pays[:r.n], r.mss)
}

// fixHeader turns hdr, a copy of the first segment's headers, into the
// coalesced packet's: the IP length of the whole run (and the IPv4 header
// checksum), PSH or FIN of the last segment, and in the TCP checksum field
// the pseudo-header sum over the whole TCP length, which the packet's
// segmentation offload promises.
func (r *rxRun) fixHeader(hdr []byte) {
	ipHdr := hdr[r.ipOff:r.tcpOff]
	if ipHdr[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ipHdr[2:4], uint16(r.ipLen))
		link.SetIPv4Checksum(ipHdr)
	} else {
		binary.BigEndian.PutUint16(ipHdr[4:6], uint16(r.ipLen-header.IPv6MinimumSize))
	}
	tcp := hdr[r.tcpOff:]
	tcp[13] |= r.flags
	binary.BigEndian.PutUint16(tcp[link.TCPChecksumOffset:], link.PseudoHeaderSum(ipHdr, protoTCP, r.ipLen-len(ipHdr)))
}

// packet builds the coalesced packet of a run of two or more segments: the
// first segment's headers with the coalesced length (and PSH or FIN of
// the last segment), then every segment's payload. It is marked as a TCP
// segmentation job (stack.GSO with NeedsCsum), so its TCP checksum field
// holds what that promises: the pseudo-header sum over the whole TCP
// length, as a packet from a host-GSO stack carries it. Whoever segments
// it (a TAP device, the kernel's UDP-tunnel GSO after the overlay stack
// forwarded it, vmnet) then computes every segment's checksum from there.
func (r *rxRun) packet(e *Endpoint) *stack.PacketBuffer {
	// The headers are copied into a view of their own: gVisor copies a
	// whole chunk when it reads a header from a shared one (Buffer.PullUp,
	// see rxData), which would be 64 KiB here.
	hv := buffer.NewViewWithData(r.segs[0].frame[:r.hdrLen])
	hdr := hv.AsSlice()
	data := buffer.MakeWithView(hv)
	if r.bufs {
		// The transport lends its buffers: payloads referenced.
		for i := range r.segs[:r.n] {
			s := &r.segs[i]
			rest := lentRange(s.buf, s.front+r.hdrLen, len(s.frame)-r.hdrLen)
			data.Merge(&rest)
		}
	} else {
		// Memory that the transport reuses: the payloads copied into one
		// view after the headers'.
		pv := buffer.NewView(r.ipOff + r.ipLen - r.hdrLen)
		for i := range r.segs[:r.n] {
			pv.Write(r.segs[i].frame[r.hdrLen:])
		}
		data.Append(pv)
	}
	r.fixHeader(hdr)
	pkt := e.rxPacket(data, r.pktType, r.proto)
	pkt.RXChecksumValidated = true
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: link.TCPChecksumOffset, MSS: uint16(r.mss)}
	if hdr[r.ipOff]>>4 == 6 {
		pkt.GSOOptions.Type = stack.GSOTCPv6
	}
	return pkt
}

// rxData returns the buffer for a received inner frame: its headers
// copied into a view of their own, which the packet owns, and the rest
// referenced from buf when the transport lends one (front is where frame
// starts in it), else copied too. It also returns the copied bytes, which
// the caller may rewrite. gVisor copies a whole shared chunk when a header
// is consumed from it (Buffer.PullUp), so sharing the headers would copy
// every frame once more.
func rxData(frame, ip []byte, l4 *innerL4, buf *buffer.Buffer, front int) (buffer.Buffer, []byte) {
	head := len(frame)
	if buf != nil {
		head = headLen(frame, ip, l4)
	}
	v := buffer.NewViewWithData(frame[:head])
	data := buffer.MakeWithView(v)
	if head < len(frame) {
		rest := lentRange(buf, front+head, len(frame)-head)
		data.Merge(&rest)
	}
	return data, v.AsSlice()
}

// lentRange returns n bytes of buf, a transport's lent buffer, from off
// on: a reference of the caller's own, with no copy.
func lentRange(buf *buffer.Buffer, off, n int) buffer.Buffer {
	b := buf.Clone()
	b.TrimFront(int64(off))
	b.Truncate(int64(n))
	return b
}

// rxPacket makes the PacketBuffer that carries data, a received inner
// frame, to the overlay NIC.
func (e *Endpoint) rxPacket(data buffer.Buffer, pktType tcpip.PacketType, proto tcpip.NetworkProtocolNumber) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: data})
	if e.cfg.Mode == L2 {
		pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	}
	pkt.PktType = pktType
	pkt.NetworkProtocolNumber = proto
	return pkt
}
