package endpoint

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
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

// Results of checkInner.
const (
	// innerValid: every checksum of the packet was checked and is right.
	innerValid = iota
	// innerInvalid: a checksum is wrong.
	innerInvalid
	// innerUnchecked: the packet's transport checksum cannot be checked
	// here (a fragment, a protocol without one, an unknown extension
	// header, a malformed header); the overlay stack must check it.
	innerUnchecked
)

// checkInner checks the IPv4 header checksum and the TCP, UDP, ICMP and
// ICMPv6 checksums of an inner packet, walking IPv6 extension headers. The
// endpoint uses it to tell the overlay stack that checksums were validated
// (receive offload, which GRO requires) only for packets it really checked.
func checkInner(ip []byte) int {
	if len(ip) < 20 {
		return innerUnchecked
	}
	var proto uint8
	var l4 []byte
	var pseudo uint16
	switch ip[0] >> 4 {
	case 4:
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || tot < ihl || tot > len(ip) {
			return innerUnchecked
		}
		if checksum.Checksum(ip[:ihl], 0) != 0xffff {
			return innerInvalid
		}
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return innerUnchecked // a fragment: checked after reassembly
		}
		proto = ip[9]
		l4 = ip[ihl:tot]
		if proto != protoICMP {
			pseudo = checksum.Checksum(ip[12:20], uint16(proto))
			pseudo = checksum.Combine(pseudo, uint16(len(l4)))
		}
	case 6:
		if len(ip) < 40 {
			return innerUnchecked
		}
		pl := int(binary.BigEndian.Uint16(ip[4:6]))
		if pl == 0 || 40+pl > len(ip) {
			return innerUnchecked // jumbogram or truncated
		}
		proto = ip[6]
		l4 = ip[40 : 40+pl]
		for hops := 0; ; hops++ {
			var n int
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(l4) < 8 {
					return innerUnchecked
				}
				n = (int(l4[1]) + 1) * 8
			case 51: // authentication header
				if len(l4) < 8 {
					return innerUnchecked
				}
				n = (int(l4[1]) + 2) * 4
			default:
				n = -1
			}
			if n < 0 {
				break
			}
			if n > len(l4) || hops > 8 {
				return innerUnchecked
			}
			proto, l4 = l4[0], l4[n:]
		}
		if proto == 43 || proto == 0 {
			return innerUnchecked
		}
		// The pseudo-header uses the final destination; with a routing
		// header that is not the IPv6 destination field, so leave those
		// packets (rare inside tunnels) to the stack.
		if hasRoutingHeader(ip) {
			return innerUnchecked
		}
		pseudo = checksum.Checksum(ip[8:40], uint16(proto))
		pseudo = checksum.Combine(pseudo, uint16(len(l4)))
	default:
		return innerUnchecked
	}
	switch proto {
	case protoTCP:
		if len(l4) < 20 {
			return innerUnchecked
		}
	case protoUDP:
		if len(l4) < 8 {
			return innerUnchecked
		}
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			if ip[0]>>4 == 4 {
				return innerValid // zero means "no checksum" on IPv4
			}
			return innerUnchecked // the stack refuses it on IPv6 itself
		}
	case protoICMP, protoICMPv6:
		if len(l4) < 4 {
			return innerUnchecked
		}
	default:
		return innerUnchecked
	}
	if checksum.Checksum(l4, pseudo) != 0xffff {
		return innerInvalid
	}
	return innerValid
}

// hasRoutingHeader reports whether an IPv6 packet's extension header chain
// includes a routing header.
func hasRoutingHeader(ip []byte) bool {
	proto, rest := ip[6], ip[40:]
	for i := 0; i < 8 && len(rest) >= 8; i++ {
		switch proto {
		case 43:
			return true
		case 0, 60:
			n := (int(rest[1]) + 1) * 8
			if n > len(rest) {
				return false
			}
			proto, rest = rest[0], rest[n:]
		default:
			return false
		}
	}
	return false
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
		pseudo = checksum.Checksum(ip[12:20], protoTCP)
	case len(ip) >= 40 && ip[0]>>4 == 6:
		pl := int(binary.BigEndian.Uint16(ip[4:6]))
		if ip[6] != protoTCP || 40+pl > len(ip) {
			return false
		}
		l4 = ip[40 : 40+pl]
		pseudo = checksum.Checksum(ip[8:40], protoTCP)
	default:
		return false
	}
	if len(l4) < 20 {
		return false
	}
	pseudo = checksum.Combine(pseudo, uint16(len(l4)))
	return binary.BigEndian.Uint16(l4[16:18]) == pseudo
}
