// Package frame inspects the IP packets and Ethernet frames that gnv's link
// endpoints exchange with the kernel: where the IP and transport headers
// are, partial checksums (CHECKSUM_PARTIAL) to finish, and checksums to
// verify when the kernel did not. The functions work on plain byte slices
// and never allocate. Segmenting and the per-segment header rewrite live in
// package link (link.SegmentHeader), shared with the Geneve endpoint.
package frame

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/internal/csum"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// IP protocol numbers the helpers look at.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IP describes the IP and transport headers at the start of a packet.
type IP struct {
	// Version is 4 or 6.
	Version int
	// HdrLen is the IP header length, IPv6 extension headers included
	// (hop-by-hop, routing and destination options are skipped; the
	// transport header follows them).
	HdrLen int
	// TotalLen is the packet length the IP header announces.
	TotalLen int
	// Proto is the transport protocol after the extension headers.
	Proto uint8
	// Fragment is set for IPv4 fragments and IPv6 packets with a fragment
	// header: they have no (or only a partial) transport header.
	Fragment bool
	// L4Len is the transport header length (the TCP data offset, 8 for
	// UDP) when it is complete in the buffer, else 0.
	L4Len int
}

// ParseIP parses the IP header at the start of b, a packet of size
// bytes of which b holds at least the headers (b may be the whole packet).
// ok is false when b does not start with a plausible IPv4 or IPv6 header,
// or the header announces more than size bytes. l4Len stays 0 when the
// transport header is not complete in b.
func ParseIP(b []byte, size int) (p IP, ok bool) {
	if len(b) < 20 {
		return p, false
	}
	switch b[0] >> 4 {
	case 4:
		p.Version = 4
		p.HdrLen = int(b[0]&0xf) * 4
		p.TotalLen = int(binary.BigEndian.Uint16(b[2:4]))
		if p.HdrLen < 20 || p.HdrLen > len(b) || p.TotalLen < p.HdrLen || p.TotalLen > size {
			return p, false
		}
		p.Proto = b[9]
		p.Fragment = binary.BigEndian.Uint16(b[6:8])&0x3fff != 0
	case 6:
		if len(b) < 40 {
			return p, false
		}
		p.Version = 6
		p.TotalLen = 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if p.TotalLen > size {
			return p, false
		}
		off, next := 40, b[6]
	ext:
		for {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > len(b) || off+8 > p.TotalLen {
					return p, false
				}
				next, off = b[off], off+(int(b[off+1])+1)*8
			case 44: // fragment
				p.Fragment = true
				break ext
			default:
				break ext
			}
		}
		if off > p.TotalLen || off > len(b) {
			return p, false
		}
		p.HdrLen, p.Proto = off, next
	default:
		return p, false
	}
	if p.Fragment {
		return p, true
	}
	avail := min(len(b), p.TotalLen) - p.HdrLen
	switch p.Proto {
	case ProtoTCP:
		if avail >= 20 {
			if n := int(b[p.HdrLen+12]>>4) * 4; n >= 20 && n <= avail {
				p.L4Len = n
			}
		}
	case ProtoUDP:
		if avail >= 8 {
			p.L4Len = 8
		}
	}
	return p, true
}

// FinishPartial completes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM,
// CHECKSUM_PARTIAL): the field at start+off holds the pseudo-header sum; the
// final checksum covers everything from start to the end of b. A result of
// zero is sent as 0xffff (its one's-complement twin), which UDP requires
// and TCP and ICMP accept. It reports false when the offsets are out of
// range.
func FinishPartial(b []byte, start, off int) bool {
	at := start + off
	if start < 0 || off < 0 || at+2 > len(b) {
		return false
	}
	s := ^csum.Checksum(b[start:], 0)
	if s == 0 {
		s = 0xffff
	}
	binary.BigEndian.PutUint16(b[at:], s)
	return true
}

// L3L4 finds the IP and UDP headers of an Ethernet frame: the offsets of
// the IP and transport headers and the IP protocol (next header) number.
// ok is false for frames that are not IPv4 or IPv6, or too short.
func L3L4(frame []byte) (l3, l4 int, proto uint8, ok bool) {
	if len(frame) < header.EthernetMinimumSize {
		return 0, 0, 0, false
	}
	l3 = header.EthernetMinimumSize
	ip := frame[l3:]
	switch header.Ethernet(frame).Type() {
	case header.IPv4ProtocolNumber:
		if len(ip) < header.IPv4MinimumSize || ip[0]>>4 != 4 {
			return 0, 0, 0, false
		}
		ihl := int(ip[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || len(ip) < ihl {
			return 0, 0, 0, false
		}
		return l3, l3 + ihl, ip[9], true
	case header.IPv6ProtocolNumber:
		if len(ip) < header.IPv6MinimumSize || ip[0]>>4 != 6 {
			return 0, 0, 0, false
		}
		return l3, l3 + header.IPv6MinimumSize, ip[6], true
	}
	return 0, 0, 0, false
}

// RxChecksumOK verifies what netstack will not, on a NIC with RX checksum
// offload: the IPv4 header checksum and the UDP checksum of a received
// frame whose checksums the kernel has neither verified nor left partial.
// Frames it cannot judge (not IP, fragments, IPv6 extension headers,
// malformed lengths) pass: netstack checks their structure. A zero UDP
// checksum passes too: on IPv4 it means none, and on IPv6 the transport
// decides (NetstackUDPOptions.ZeroChecksumRx6).
func RxChecksumOK(frame []byte) bool {
	l3, l4, proto, ok := L3L4(frame)
	if !ok {
		return true
	}
	ip := frame[l3:]
	var end int
	if ip[0]>>4 == 4 {
		h := header.IPv4(ip)
		if csum.Checksum(ip[:l4-l3], 0) != 0xffff {
			return false
		}
		end = l3 + int(h.TotalLength())
		if h.FragmentOffset() != 0 || h.Flags()&header.IPv4FlagMoreFragments != 0 {
			return true
		}
	} else {
		end = l4 + int(header.IPv6(ip).PayloadLength())
	}
	if proto != uint8(header.UDPProtocolNumber) || end > len(frame) || end < l4+header.UDPMinimumSize {
		return true
	}
	u := header.UDP(frame[l4:end])
	if u.Checksum() == 0 || int(u.Length()) != len(u) {
		return true
	}
	var src, dst tcpip.Address
	if ip[0]>>4 == 4 {
		src, dst = header.IPv4(ip).SourceAddress(), header.IPv4(ip).DestinationAddress()
	} else {
		src, dst = header.IPv6(ip).SourceAddress(), header.IPv6(ip).DestinationAddress()
	}
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u)))
	return csum.Checksum(u, sum) == 0xffff
}
