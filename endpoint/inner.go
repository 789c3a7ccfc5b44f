package endpoint

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/internal/csum"
)

// Helpers that look at the inner (tenant) IP packet. They work on plain byte
// slices that start at the inner IP header and never allocate.

const (
	ecnMask   = 0x03
	ecnNotECT = 0x00
	ecnECT1   = 0x01
	ecnECT0   = 0x02
	ecnCE     = 0x03

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86DD
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88A8

	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// innerTOS returns the TOS / traffic class byte of an IP packet and whether
// ip holds a complete enough IPv4 or IPv6 header.
func innerTOS(ip []byte) (uint8, bool) {
	if len(ip) < 20 {
		return 0, false
	}
	switch ip[0] >> 4 {
	case 4:
		return ip[1], true
	case 6:
		if len(ip) < 40 {
			return 0, false
		}
		return ip[0]<<4 | ip[1]>>4, true
	}
	return 0, false
}

// setInnerECN rewrites only the two ECN bits of ip's TOS / traffic class
// byte, fixing the IPv4 header checksum incrementally (RFC 1624).
func setInnerECN(ip []byte, ecn uint8) {
	switch ip[0] >> 4 {
	case 4:
		old := binary.BigEndian.Uint16(ip[0:2])
		ip[1] = ip[1]&^ecnMask | ecn
		fixChecksum16(ip[10:12], old, binary.BigEndian.Uint16(ip[0:2]))
	case 6:
		// Traffic class spans ip[0] low nibble and ip[1] high nibble; the
		// ECN bits are bits 4-5 of ip[1].
		ip[1] = ip[1]&^(ecnMask<<4) | ecn<<4
	}
}

// innerTTL returns the TTL / hop limit of an IP header (innerTOS said ok).
func innerTTL(ip []byte) uint8 {
	if ip[0]>>4 == 4 {
		return ip[8]
	}
	return ip[7]
}

// setInnerTTL rewrites the TTL / hop limit, fixing the IPv4 header checksum
// incrementally.
func setInnerTTL(ip []byte, ttl uint8) {
	if ip[0]>>4 != 4 {
		ip[7] = ttl
		return
	}
	old := binary.BigEndian.Uint16(ip[8:10])
	ip[8] = ttl
	fixChecksum16(ip[10:12], old, binary.BigEndian.Uint16(ip[8:10]))
}

// fixChecksum16 updates the checksum at xsum for one 16-bit word changing
// from old to nw: HC' = ~(~HC + ~m + m') (RFC 1624).
func fixChecksum16(xsum []byte, old, nw uint16) {
	s := uint32(^binary.BigEndian.Uint16(xsum)) + uint32(^old) + uint32(nw)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	binary.BigEndian.PutUint16(xsum, ^uint16(s))
}

// decapECN applies RFC 6040 §4.2 (Figure 4): given the arriving inner and
// outer ECN codepoints it returns the departing inner codepoint, or ok=false
// for the one combination that must be dropped (inner Not-ECT, outer CE).
func decapECN(inner, outer uint8) (uint8, bool) {
	switch {
	case inner == ecnNotECT:
		if outer == ecnCE {
			return 0, false
		}
		return ecnNotECT, true
	case outer == ecnCE:
		return ecnCE, true
	case inner == ecnECT0 && outer == ecnECT1:
		return ecnECT1, true
	default:
		return inner, true
	}
}

// flowHash hashes the inner flow: addresses, protocol and ports where there
// are ports. ip is the IP header; l4 the transport header, which may be
// empty or may be nil with the transport header following ip in the same
// slice. It returns 0 when ip is not a parseable IP header.
func flowHash(ip, l4 []byte, seed uint32) uint32 {
	if len(ip) < 20 {
		return 0
	}
	h := seed
	var proto uint8
	var first = true
	switch ip[0] >> 4 {
	case 4:
		ihl := int(ip[0]&0xf) * 4
		if ihl < 20 || len(ip) < ihl {
			return 0
		}
		h = mix(h, binary.BigEndian.Uint32(ip[12:16]))
		h = mix(h, binary.BigEndian.Uint32(ip[16:20]))
		proto = ip[9]
		// Only the first fragment has ports; hash all fragments the same.
		first = binary.BigEndian.Uint16(ip[6:8])&0x3fff == 0
		if l4 == nil {
			l4 = ip[ihl:]
		}
	case 6:
		if len(ip) < 40 {
			return 0
		}
		for i := 8; i < 40; i += 4 {
			h = mix(h, binary.BigEndian.Uint32(ip[i:i+4]))
		}
		h = mix(h, binary.BigEndian.Uint32(ip[0:4])&0xfffff) // flow label
		proto = ip[6]
		if l4 == nil {
			l4 = ip[40:]
		}
	default:
		return 0
	}
	h = mix(h, uint32(proto))
	if first && (proto == protoTCP || proto == protoUDP) && len(l4) >= 4 {
		h = mix(h, binary.BigEndian.Uint32(l4[0:4]))
	}
	return final(h)
}

// bytesHash hashes a short byte string (an Ethernet header when the payload
// is not IP).
func bytesHash(b []byte, seed uint32) uint32 {
	h := seed
	for len(b) >= 4 {
		h = mix(h, binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	var tail uint32
	for _, c := range b {
		tail = tail<<8 | uint32(c)
	}
	return final(mix(h, tail))
}

// mix and final are the murmur3 32-bit round and finaliser.
func mix(h, k uint32) uint32 {
	k *= 0xcc9e2d51
	k = k<<15 | k>>17
	k *= 0x1b873593
	h ^= k
	h = h<<13 | h>>19
	return h*5 + 0xe6546b64
}

func final(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// Where parseInner found the transport header (innerL4.status).
const (
	// l4Found: the transport header starts at innerL4.off.
	l4Found = iota
	// l4None: there is no transport header to look at: a fragment, no
	// next header (59), or an IP header the overlay stack rejects itself
	// (a bad length, say).
	l4None
	// l4BadExt: IPv6 extension headers run past the payload.
	l4BadExt
)

// innerL4 locates the transport header of an inner IP packet: where the
// overlay stack's parser (gVisor's header/parse) will find it.
type innerL4 struct {
	status uint8
	// proto is the transport protocol (l4Found).
	proto uint8
	// off and end bound the transport segment: ip[off:end]. end is where
	// the IPv4 total length or the IPv6 payload length ends the packet.
	off, end int
	// direct: the transport header follows a 20-byte IPv4 header or the
	// fixed IPv6 header, and the packet has no bytes after end.
	direct bool
	// routing: an IPv6 routing header precedes the transport header.
	routing bool
}

// parseInner walks an inner IP packet's header chain to its transport
// header. ip is a whole IPv4 (at least 20 bytes) or IPv6 (at least 40)
// packet whose version nibble matches its protocol. IPv6 extension headers
// are skipped as gVisor skips them (hop-by-hop, routing, destination
// options, atomic fragments, experiment) plus the authentication header;
// each must end within the payload.
func parseInner(ip []byte) innerL4 {
	r := innerL4{status: l4None}
	if ip[0]>>4 == 4 {
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || tot < ihl || tot > len(ip) {
			return r
		}
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return r // a fragment: no transport header before reassembly
		}
		return innerL4{status: l4Found, proto: ip[9], off: ihl, end: tot, direct: ihl == 20 && tot == len(ip)}
	}
	end := 40 + int(binary.BigEndian.Uint16(ip[4:6]))
	if end > len(ip) {
		return r
	}
	proto, off := ip[6], 40
	routing := false
	for {
		n := 8
		switch proto {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if end-off >= 2 {
				n = (int(ip[off+1]) + 1) * 8
			}
			routing = routing || proto == 43
		case 51: // authentication header
			if end-off >= 2 {
				n = (int(ip[off+1]) + 2) * 4
			}
		case 44: // fragment: 8 bytes; only an atomic one has headers after it
			if end-off >= 4 && binary.BigEndian.Uint16(ip[off+2:off+4])&0xfff9 != 0 {
				return r
			}
		case 253: // experiment: 8 bytes (gVisor ignores its length field)
		case 59: // no next header
			return r
		default:
			return innerL4{status: l4Found, proto: proto, off: off, end: end, direct: off == 40 && end == len(ip), routing: routing}
		}
		if n > end-off {
			r.status = l4BadExt
			return r
		}
		proto, off = ip[off], off+n
	}
}

// transportOK reports whether the transport header found by parseInner fits
// its segment: a TCP header of at least 20 bytes whose data offset is at
// least 20 and within the segment, a UDP header whose length field is at
// least 8 and within the segment. The overlay stack trusts these fields in
// places (gVisor's forwarding path slices the TCP header by its data
// offset), so they are checked even when checksums are trusted.
func (r *innerL4) transportOK(ip []byte) bool {
	if r.status != l4Found {
		return true
	}
	seg := ip[r.off:r.end]
	switch r.proto {
	case protoTCP:
		if len(seg) < 20 {
			return false
		}
		doff := int(seg[12]>>4) * 4
		return doff >= 20 && doff <= len(seg)
	case protoUDP:
		if len(seg) < 8 {
			return false
		}
		n := int(binary.BigEndian.Uint16(seg[4:6]))
		return n >= 8 && n <= len(seg)
	}
	return true
}

// groable reports whether GRO may see the packet: TCP right after a
// 20-byte IPv4 header (not a fragment) or right after the fixed IPv6
// header, with no trailing bytes. That is all gVisor's GRO coalesces, and
// its IPv6 parser leaks a buffer on anything else that reaches it (a
// Fragment header, no next header, a truncated extension header), so
// nothing else goes there.
func (r *innerL4) groable() bool {
	return r.status == l4Found && r.proto == protoTCP && r.direct
}

// Results of checkInner.
const (
	// innerValid: every checksum of the packet was checked and is right.
	innerValid = iota
	// innerInvalid: a checksum is wrong.
	innerInvalid
	// innerUnchecked: the packet's transport checksum cannot be checked
	// here (a fragment, a protocol without one, a routing header, a
	// malformed header); the overlay stack must check it.
	innerUnchecked
)

// checkInner checks the IPv4 header checksum and the TCP, UDP, ICMP and
// ICMPv6 checksums of an inner packet whose transport header parseInner
// located (as r) and transportOK accepted. The endpoint uses it to tell the
// overlay stack that checksums were validated (receive offload, which GRO
// requires) only for packets it really checked.
func checkInner(ip []byte, r *innerL4) int {
	v4 := ip[0]>>4 == 4
	if v4 {
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || tot < ihl || tot > len(ip) {
			return innerUnchecked
		}
		if csum.Checksum(ip[:ihl], 0) != 0xffff {
			return innerInvalid
		}
	}
	// The IPv6 pseudo-header uses the final destination; with a routing
	// header that is not the destination field, so leave those packets
	// (rare inside tunnels) to the stack.
	if r.status != l4Found || r.routing {
		return innerUnchecked
	}
	l4 := ip[r.off:r.end]
	switch r.proto {
	case protoTCP:
	case protoUDP:
		l4 = l4[:binary.BigEndian.Uint16(l4[4:6])] // transportOK checked the length
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			if v4 {
				return innerValid // zero means "no checksum" on IPv4
			}
			return innerUnchecked // the stack refuses it on IPv6 itself
		}
	case protoICMP:
		if !v4 || len(l4) < 4 {
			return innerUnchecked
		}
		if csum.Checksum(l4, 0) != 0xffff {
			return innerInvalid
		}
		return innerValid
	case protoICMPv6:
		if v4 || len(l4) < 4 {
			return innerUnchecked
		}
	default:
		return innerUnchecked
	}
	var pseudo uint16
	if v4 {
		pseudo = csum.Checksum(ip[12:20], uint16(r.proto))
	} else {
		pseudo = csum.Checksum(ip[8:40], uint16(r.proto))
	}
	pseudo = csum.Combine(pseudo, uint16(len(l4)))
	if csum.Checksum(l4, pseudo) != 0xffff {
		return innerInvalid
	}
	return innerValid
}

// partialTCP reports whether an inner packet is TCP with a partial checksum
// (CHECKSUM_PARTIAL): its checksum field holds the pseudo-header sum, not
// complemented, as a host's kernel leaves it for a device that finishes it
// (and a veth never does). Such a packet was built on this host.
func partialTCP(ip []byte) bool {
	var l4 []byte
	var pseudo uint16
	switch {
	case len(ip) >= 20 && ip[0]>>4 == 4:
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if ip[9] != protoTCP || ihl < 20 || tot < ihl || tot > len(ip) || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return false
		}
		l4 = ip[ihl:tot]
		pseudo = csum.Checksum(ip[12:20], protoTCP)
	case len(ip) >= 40 && ip[0]>>4 == 6:
		pl := int(binary.BigEndian.Uint16(ip[4:6]))
		if ip[6] != protoTCP || 40+pl > len(ip) {
			return false
		}
		l4 = ip[40 : 40+pl]
		pseudo = csum.Checksum(ip[8:40], protoTCP)
	default:
		return false
	}
	if len(l4) < 20 {
		return false
	}
	pseudo = csum.Combine(pseudo, uint16(len(l4)))
	return binary.BigEndian.Uint16(l4[16:18]) == pseudo
}
