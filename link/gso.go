package link

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/internal/csum"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Segmentation jobs. A job is one outbound PacketBuffer (or Packet) that
// stands for several packets which the kernel, a NIC or the endpoint below
// cuts apart, as Linux GSO does. Every implementation cuts with
// SegmentHeader and finishes checksums with FinishChecksum, so that a
// segment looks the same whoever made it.

// GSOUDPL4 is the stack.GSOType of a UDP segmentation job: one outbound
// PacketBuffer that stands for a run of datagrams with the same addresses,
// ports, TOS, TTL and DF and equal payload sizes (the last may be
// shorter). The netstack UDP transport builds such jobs when the underlay
// NIC's link endpoint implements UDPSegmenter and says it accepts them:
//
//   - the IP header is that of the whole job (its length covers all
//     datagrams);
//   - the UDP header is that of the first datagram except that its length
//     is 8 + all payload bytes and its checksum field holds the
//     pseudo-header sum over that length (GSOOptions.NeedsCsum,
//     CsumOffset UDPChecksumOffset);
//   - GSOOptions.MSS is the UDP payload size of each datagram but the
//     last.
//
// gVisor defines no UDP segmentation type; this value lies outside those it
// defines. Its IPv4 and IPv6 layers pass it through: they only compare the
// type with GSONone, which also keeps them from fragmenting the job.
const GSOUDPL4 stack.GSOType = 0x75

// GSOUDPTunnel is the stack.GSOType of a UDP-tunnel segmentation job on the
// underlay NIC, built by the netstack UDP transport from a Packet with
// InnerMSS: one outbound UDP datagram whose payload is a Geneve header and
// an inner TCP super-packet with a partial checksum. GSOOptions.MSS is the
// inner TCP segment size; NeedsCsum says that the outer UDP checksum is
// wanted (its field holds the pseudo-header sum over the whole job), else
// it is zero; L3HdrLen is the outer IP header length. Like GSOUDPL4 it lies
// outside the types gVisor defines, and its IP layers pass it through
// unfragmented.
const GSOUDPTunnel stack.GSOType = 0x76

// UDPSegmenter is implemented by link endpoints that accept UDP
// segmentation jobs (GSOUDPL4 packets) in WritePackets and send them as
// separate datagrams, with the kernel's or NIC's segmentation offload or
// in software.
type UDPSegmenter interface {
	// UDPSegmentation reports whether jobs are worth building now (the
	// offload is on) and the most datagrams per job.
	UDPSegmentation() (maxSegments int, ok bool)
}

// TunnelSegmenter is implemented by transports and link endpoints that take
// UDP-tunnel segmentation jobs (Packet.InnerMSS, GSOUDPTunnel): the Geneve
// endpoint then hands TCP super-packets down whole, and the kernel or NIC
// segments them after encapsulation, as it does for its own VXLAN or
// Geneve devices.
type TunnelSegmenter interface {
	// TunnelSegmentation reports whether jobs are taken now, and the
	// largest UDP payload of one (the outer IP length field bounds it).
	TunnelSegmentation() (maxPayload int, ok bool)
}

// Receive marks. A link endpoint that sees the kernel's offload metadata
// marks a received frame that was handed over with a partial checksum
// (VIRTIO_NET_HDR_F_NEEDS_CSUM: built on this host, never crossed a wire)
// with SetReceiveMarks; for a UDP-tunnel super-frame it also records the
// inner segment size. The netstack UDP transport reads them back with
// ReceiveMarks into Datagram.Local and Datagram.InnerMSS. They live in
// GSOOptions, which netstack leaves alone on the way in.

// SetReceiveMarks marks the inbound pkt: local says that its checksums were
// left partial by this host's kernel, innerMSS (when not zero) that it is
// a UDP-tunnel super-frame with inner TCP segments of that size.
func SetReceiveMarks(pkt *stack.PacketBuffer, local bool, innerMSS uint16) {
	pkt.GSOOptions.NeedsCsum = local
	pkt.GSOOptions.MSS = innerMSS
}

// ReceiveMarks returns the marks SetReceiveMarks put on the inbound pkt.
// innerMSS is zero for a UDP super-frame (SetReceiveUDPSegments).
func ReceiveMarks(pkt *stack.PacketBuffer) (local bool, innerMSS uint16) {
	if pkt.GSOOptions.Type == GSOUDPL4 {
		return pkt.GSOOptions.NeedsCsum, 0
	}
	return pkt.GSOOptions.NeedsCsum, pkt.GSOOptions.MSS
}

// SetReceiveUDPSegments marks the inbound pkt, a UDP super-frame that the
// host's kernel handed over unsegmented (UDP GSO that crossed a veth whole,
// VIRTIO_NET_HDR_GSO_UDP_L4), as standing for datagrams of segSize payload
// bytes each (the last may be shorter): the netstack UDP transport hands
// them to the receiver one by one, out of the one packet, so that netstack
// parses the headers once for them all. Its UDP length is that of the
// whole frame and its checksum partial (call SetReceiveMarks with local
// first).
func SetReceiveUDPSegments(pkt *stack.PacketBuffer, segSize uint16) {
	pkt.GSOOptions.Type = GSOUDPL4
	pkt.GSOOptions.MSS = segSize
}

// ReceiveUDPSegments returns the segment size SetReceiveUDPSegments put on
// the inbound pkt, or 0 if it is an ordinary datagram.
func ReceiveUDPSegments(pkt *stack.PacketBuffer) uint16 {
	if pkt.GSOOptions.Type == GSOUDPL4 {
		return pkt.GSOOptions.MSS
	}
	return 0
}

// IP protocol numbers, TCP flags and checksum field offsets that segment
// rewriting looks at.
const (
	ProtoTCP = 6
	ProtoUDP = 17

	TCPChecksumOffset = 16
	UDPChecksumOffset = 6

	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
)

// SegmentHeader rewrites hdr, a copy of the IP header (at l3) and the TCP
// or UDP header (from l4 to the end of hdr) of a super-packet, into the
// headers of its segment number idx, which starts off bytes into the
// super-packet's payload and carries n bytes; last says it is the final
// segment. Bytes before l3 (a link header) are left alone.
//
// It does what Linux GSO does: every length is recomputed, the IPv4 ID
// grows by one per segment and the IPv4 header checksum is redone; for TCP
// the sequence number advances by off, FIN and PSH stay only on the last
// segment and CWR only on the first. It returns the transport
// pseudo-header sum of the segment (folded, not complemented) and leaves
// the transport checksum field alone: FinishChecksum completes it, or a
// NIC does from the pseudo-header sum.
func SegmentHeader(hdr []byte, l3, l4 int, proto uint8, idx, off, n int, last bool) (pseudo uint16) {
	ip := hdr[l3:l4]
	th := hdr[l4:]
	l4Len := len(th) + n
	if ip[0]>>4 == 4 {
		if idx > 0 {
			binary.BigEndian.PutUint16(ip[4:6], binary.BigEndian.Uint16(ip[4:6])+uint16(idx))
		}
		binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)+l4Len))
		SetIPv4Checksum(ip)
	} else {
		binary.BigEndian.PutUint16(ip[4:6], uint16(len(ip)-40+l4Len))
	}
	if proto == ProtoTCP {
		binary.BigEndian.PutUint32(th[4:8], binary.BigEndian.Uint32(th[4:8])+uint32(off))
		th[13] = SegmentTCPFlags(th[13], idx, last)
	} else {
		binary.BigEndian.PutUint16(th[4:6], uint16(l4Len))
	}
	return PseudoHeaderSum(ip, proto, l4Len)
}

// SegmentTCPFlags returns the TCP flags of segment idx of a super-packet
// whose flags are flags, as Linux GSO sets them: FIN and PSH stay only on
// the last segment, CWR only on the first.
func SegmentTCPFlags(flags uint8, idx int, last bool) uint8 {
	if !last {
		flags &^= tcpFlagFIN | tcpFlagPSH
	}
	if idx > 0 {
		flags &^= tcpFlagCWR
	}
	return flags
}

// FinishChecksum writes the checksum of a TCP or UDP segment whose
// transport header is th (its checksum field is ignored), given the
// pseudo-header sum and the checksum of its payload (csum.Checksum of
// the payload bytes). A UDP result of zero is sent as 0xffff (RFC 768:
// zero means no checksum).
func FinishChecksum(th []byte, proto uint8, pseudo, payload uint16) {
	at := UDPChecksumOffset
	if proto == ProtoTCP {
		at = TCPChecksumOffset
	}
	th[at], th[at+1] = 0, 0
	s := ^csum.Combine(csum.Checksum(th, pseudo), payload)
	if s == 0 && proto == ProtoUDP {
		s = 0xffff
	}
	binary.BigEndian.PutUint16(th[at:], s)
}

// PseudoHeaderSum returns the (folded, not complemented) checksum of the
// TCP/UDP pseudo-header of the IP header ip for a transport segment of
// l4Len bytes. That is what CHECKSUM_PARTIAL leaves in the checksum field.
func PseudoHeaderSum(ip []byte, proto uint8, l4Len int) uint16 {
	var s uint16
	if ip[0]>>4 == 4 {
		s = csum.Checksum(ip[12:20], uint16(proto))
	} else {
		s = csum.Checksum(ip[8:40], uint16(proto))
	}
	return csum.Combine(s, uint16(l4Len))
}

// SetIPv4Checksum recomputes the header checksum of the IPv4 header ip
// (exactly the header, options included).
func SetIPv4Checksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], ^csum.Checksum(ip, 0))
}

// Slices is a packet held as a list of byte slices (the views of a
// PacketBuffer, say), addressed by offsets from the start of the first.
// Segmenting code uses it to checksum and gather byte ranges without
// copying them.
type Slices [][]byte

// AppendViews appends the views of vl from byte offset off (as
// PacketBuffer.AsViewList returns them) and returns the extended s.
func (s Slices) AppendViews(vl buffer.ViewList, off int) Slices {
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		s = append(s, b[off:])
		off = 0
	}
	return s
}

// Size returns the total length.
func (s Slices) Size() int {
	n := 0
	for _, b := range s {
		n += len(b)
	}
	return n
}

// CopyOut copies bytes from offset 0 into dst and returns how many.
func (s Slices) CopyOut(dst []byte) int {
	n := 0
	for _, b := range s {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b)
	}
	return n
}

// Each calls f with the slices covering [off, off+n), in order; none of
// them is empty.
func (s Slices) Each(off, n int, f func(b []byte)) {
	for _, b := range s {
		if n == 0 {
			break
		}
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b = b[off:]
		off = 0
		if len(b) > n {
			b = b[:n]
		}
		f(b)
		n -= len(b)
	}
}

// AppendRange appends the slices covering [off, off+n) to dst.
func (s Slices) AppendRange(dst [][]byte, off, n int) [][]byte {
	s.Each(off, n, func(b []byte) { dst = append(dst, b) })
	return dst
}

// Checksum returns the checksum (csum.Checksum) of [off, off+n).
func (s Slices) Checksum(off, n int) uint16 {
	var c csum.Checksumer
	s.Each(off, n, c.Add)
	return c.Checksum()
}

// SegmentWriter is implemented by a stack.NetworkDispatcher that writes
// what it is given out at once and keeps nothing: a host TAP or TUN
// device. The Geneve endpoint hands it a run of TCP segments it coalesced
// on receive as slices of the underlay's receive memory, with no
// PacketBuffer and no copy, so that the bytes are copied by the underlay
// read and the device write only.
type SegmentWriter interface {
	// WriteSegments writes one TCP packet as a segmentation job (a GSO
	// frame) of segments with mss payload bytes each, the last one
	// possibly shorter: hdr holds its link header (for a TAP device), IP
	// and TCP headers, with the IP length of the whole packet, a valid
	// IPv4 header checksum and, in the TCP checksum field, the
	// pseudo-header sum over the whole TCP length; payloads are its
	// payload bytes, in order. Both are only valid during the call. It
	// reports false, having written nothing, when it cannot write the
	// packet so (no virtio-net header, an mss above what the device's MTU
	// allows, headers it does not parse); the caller then delivers it as a
	// PacketBuffer. A write that fails is counted by the writer and
	// reported as true.
	WriteSegments(hdr []byte, payloads [][]byte, mss int) bool
}
