package link

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Offload helpers for TAP/TUN devices opened with IFF_VNET_HDR: the
// virtio_net_hdr that prefixes every frame, partial checksums
// (CHECKSUM_PARTIAL), and TCP/UDP segmentation. They work on plain byte
// slices, never allocate, and are shared by the device's read path (kernel
// super-packets into the tunnel) and write path (GRO-coalesced packets out
// of the tunnel). The names carry a dev prefix: link/vnethdr.go has its own
// virtio_net_hdr codec for AF_PACKET.

// IP protocol numbers and TCP flags the helpers look at.
const (
	devProtoICMP   = 1
	devProtoTCP    = 6
	devProtoUDP    = 17
	devProtoICMPv6 = 58

	devTCPFlagFIN = 0x01
	devTCPFlagPSH = 0x08
	devTCPFlagCWR = 0x80

	devTCPCsumOffset = 16
	devUDPCsumOffset = 6
)

// devIP describes the IP and transport headers at the start of a packet.
type devIP struct {
	// version is 4 or 6.
	version int
	// hdrLen is the IP header length, IPv6 extension headers included
	// (hop-by-hop, routing and destination options are skipped; the
	// transport header follows them).
	hdrLen int
	// totalLen is the packet length the IP header announces.
	totalLen int
	// proto is the transport protocol after the extension headers.
	proto uint8
	// fragment is set for IPv4 fragments and IPv6 packets with a fragment
	// header: they have no (or only a partial) transport header.
	fragment bool
	// l4Len is the transport header length (the TCP data offset, 8 for
	// UDP) when it is complete in the buffer, else 0.
	l4Len int
}

// devParseIP parses the IP header at the start of b, a packet of size
// bytes of which b holds at least the headers (b may be the whole packet).
// ok is false when b does not start with a plausible IPv4 or IPv6 header,
// or the header announces more than size bytes. l4Len stays 0 when the
// transport header is not complete in b.
func devParseIP(b []byte, size int) (p devIP, ok bool) {
	if len(b) < 20 {
		return p, false
	}
	switch b[0] >> 4 {
	case 4:
		p.version = 4
		p.hdrLen = int(b[0]&0xf) * 4
		p.totalLen = int(binary.BigEndian.Uint16(b[2:4]))
		if p.hdrLen < 20 || p.hdrLen > len(b) || p.totalLen < p.hdrLen || p.totalLen > size {
			return p, false
		}
		p.proto = b[9]
		p.fragment = binary.BigEndian.Uint16(b[6:8])&0x3fff != 0
	case 6:
		if len(b) < 40 {
			return p, false
		}
		p.version = 6
		p.totalLen = 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if p.totalLen > size {
			return p, false
		}
		off, next := 40, b[6]
	ext:
		for {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > len(b) || off+8 > p.totalLen {
					return p, false
				}
				next, off = b[off], off+(int(b[off+1])+1)*8
			case 44: // fragment
				p.fragment = true
				break ext
			default:
				break ext
			}
		}
		if off > p.totalLen || off > len(b) {
			return p, false
		}
		p.hdrLen, p.proto = off, next
	default:
		return p, false
	}
	if p.fragment {
		return p, true
	}
	avail := min(len(b), p.totalLen) - p.hdrLen
	switch p.proto {
	case devProtoTCP:
		if avail >= 20 {
			if n := int(b[p.hdrLen+12]>>4) * 4; n >= 20 && n <= avail {
				p.l4Len = n
			}
		}
	case devProtoUDP:
		if avail >= 8 {
			p.l4Len = 8
		}
	}
	return p, true
}

// devPseudoSum returns the (folded, not complemented) checksum of the
// TCP/UDP pseudo-header of the IP header ip for a transport segment of
// l4Len bytes. That is what CHECKSUM_PARTIAL leaves in the checksum field.
func devPseudoSum(ip []byte, proto uint8, l4Len int) uint16 {
	var s uint16
	if ip[0]>>4 == 4 {
		s = checksum.Checksum(ip[12:20], uint16(proto))
	} else {
		s = checksum.Checksum(ip[8:40], uint16(proto))
	}
	return checksum.Combine(s, uint16(l4Len))
}

// devFinishChecksum completes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM,
// CHECKSUM_PARTIAL): the field at start+off holds the pseudo-header sum; the
// final checksum covers everything from start to the end of b. A result of
// zero is sent as 0xffff (its one's-complement twin), which UDP requires
// and TCP and ICMP accept. It reports false when the offsets are out of
// range.
func devFinishChecksum(b []byte, start, off int) bool {
	at := start + off
	if start < 0 || off < 0 || at+2 > len(b) {
		return false
	}
	s := ^checksum.Checksum(b[start:], 0)
	if s == 0 {
		s = 0xffff
	}
	binary.BigEndian.PutUint16(b[at:], s)
	return true
}

// devSetIPv4Checksum recomputes the header checksum of the IPv4 header ip
// (exactly the header, options included).
func devSetIPv4Checksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], ^checksum.Checksum(ip, 0))
}

// devSetIPLength sets the length fields of the IP header ip (hdrLen bytes,
// IPv6 extension headers included) for a packet whose transport part is
// l4Len bytes, and the IPv4 header checksum.
func devSetIPLength(ip []byte, l4Len int) {
	if ip[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)+l4Len))
		devSetIPv4Checksum(ip)
		return
	}
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(ip)-40+l4Len))
}

// devSegment rewrites hdr, a copy of the link, IP and transport headers of
// a TCP or UDP super-packet, into the headers of its segment number idx,
// which starts off bytes into the super-packet's payload and carries n
// bytes whose checksum (checksum.Checksum of the payload bytes) is paySum.
// linkLen and ipLen are the link and IP header lengths in hdr; the
// transport header is the rest of hdr.
//
// It follows what the kernel's GSO does: IPv4 IDs increase by one per
// segment and every length and checksum is recomputed; for TCP the sequence
// number advances by off, FIN and PSH stay only on the last segment and CWR
// only on the first.
func devSegment(hdr []byte, linkLen, ipLen int, proto uint8, idx, off, n int, last bool, paySum uint16) {
	ip := hdr[linkLen : linkLen+ipLen]
	l4 := hdr[linkLen+ipLen:]
	l4Len := len(l4) + n
	if ip[0]>>4 == 4 && idx > 0 {
		binary.BigEndian.PutUint16(ip[4:6], binary.BigEndian.Uint16(ip[4:6])+uint16(idx))
	}
	devSetIPLength(ip, l4Len)
	csumAt := devUDPCsumOffset
	if proto == devProtoTCP {
		csumAt = devTCPCsumOffset
		binary.BigEndian.PutUint32(l4[4:8], binary.BigEndian.Uint32(l4[4:8])+uint32(off))
		if !last {
			l4[13] &^= devTCPFlagFIN | devTCPFlagPSH
		}
		if idx > 0 {
			l4[13] &^= devTCPFlagCWR
		}
	} else {
		binary.BigEndian.PutUint16(l4[4:6], uint16(l4Len))
	}
	l4[csumAt], l4[csumAt+1] = 0, 0
	s := checksum.Combine(checksum.Checksum(l4, devPseudoSum(ip, proto, l4Len)), paySum)
	s = ^s
	if s == 0 && proto == devProtoUDP {
		s = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumAt:], s)
}

// devSlices is a packet held as a list of byte slices (the views of a
// PacketBuffer), addressed by offsets from the start of the first one.
type devSlices [][]byte

// size returns the total length.
func (s devSlices) size() int {
	n := 0
	for _, b := range s {
		n += len(b)
	}
	return n
}

// copyOut copies bytes from offset 0 into dst and returns how many.
func (s devSlices) copyOut(dst []byte) int {
	n := 0
	for _, b := range s {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b)
	}
	return n
}

// appendRange appends the slices covering [off, off+n) to dst.
func (s devSlices) appendRange(dst [][]byte, off, n int) [][]byte {
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
		dst = append(dst, b)
		n -= len(b)
	}
	return dst
}

// checksum returns the checksum (checksum.Checksum) of [off, off+n).
func (s devSlices) checksum(off, n int) uint16 {
	var c checksum.Checksumer
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
		c.Add(b)
		n -= len(b)
	}
	return c.Checksum()
}
