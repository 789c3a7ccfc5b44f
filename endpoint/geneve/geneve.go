// Package geneve is a strict wire codec for the Geneve tunnel header of
// RFC 8926 (https://www.rfc-editor.org/rfc/rfc8926).
//
// Base header (RFC 8926 §3.4), followed by Opt Len 4-byte words of option
// TLVs (§3.5) and then the payload:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	|Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//	|        Virtual Network Identifier (VNI)       |    Reserved   |
//	|                    Variable-Length Options                    |
//
// Decode checks only the structure of the header: the version, the lengths
// and the option framing. It makes no policy: it reports the O bit (control
// packet), the C bit, each option's critical bit and the protocol type, and
// the caller decides what to do with them (RFC 8926 §3.4 and §3.5.1: a
// tunnel endpoint must not forward the payload of an O packet, and must drop
// a packet carrying a critical option it does not understand). Reserved
// fields are ignored on receipt and written as zero on transmit (§3.4,
// §3.5).
//
// Unlike gopacket's layers.Geneve, Opt Len and the option Length fields are
// counted in 4-byte words, the maximum 260-byte header decodes, the option
// lengths must add up to exactly Opt Len, and option data is never silently
// truncated on encode.
package geneve

import (
	"encoding/binary"
	"errors"
)

// Wire constants (RFC 8926 §3.3, §3.4, §3.5).
const (
	// Port is the IANA-assigned UDP destination port for Geneve (§3.3).
	Port = 6081
	// HeaderLen is the length of the fixed base header (§3.4).
	HeaderLen = 8
	// MaxOptionsLen is the largest options area: Opt Len is a 6-bit count
	// of 4-byte words (§3.4).
	MaxOptionsLen = 252
	// MaxHeaderLen is the largest Geneve header, base header plus options.
	MaxHeaderLen = HeaderLen + MaxOptionsLen
	// MaxOptionDataLen is the largest option data: an option's Length is a
	// 5-bit count of 4-byte words, excluding its 4-byte header (§3.5).
	MaxOptionDataLen = 124
	// OptionHeaderLen is the length of an option's Class, Type and Length
	// fields (§3.5).
	OptionHeaderLen = 4
	// MaxVNI is the largest 24-bit Virtual Network Identifier (§3.4).
	MaxVNI = 1<<24 - 1
	// OptionCritical is the critical bit of an option's Type (§3.5): a
	// receiving endpoint must drop a packet with an unrecognised critical
	// option, and the sender must then also set the C bit.
	OptionCritical = 0x80

	// ProtoEthernet is the Protocol Type of an Ethernet payload
	// (Transparent Ethernet Bridging, §3.4).
	ProtoEthernet uint16 = 0x6558
	// ProtoIPv4 is the Protocol Type of a bare IPv4 payload.
	ProtoIPv4 uint16 = 0x0800
	// ProtoIPv6 is the Protocol Type of a bare IPv6 payload.
	ProtoIPv6 uint16 = 0x86DD
)

// Bits of the first two header bytes.
const (
	versionShift = 6
	optLenMask   = 0x3f
	flagOAM      = 0x80
	flagCritical = 0x40
	optLenMask5  = 0x1f // option Length: low 5 bits of the option's 4th byte
)

// Decode errors. Each is a distinct sentinel, comparable with == or
// errors.Is, so that a receiver can count drops by cause.
var (
	// ErrTruncated: the packet is shorter than the 8-byte base header.
	ErrTruncated = errors.New("geneve: packet shorter than the 8-byte base header")
	// ErrVersion: the Ver field is not 0. RFC 8926 §3.4: a tunnel endpoint
	// must drop packets with an unknown version.
	ErrVersion = errors.New("geneve: unknown version")
	// ErrOptionsTruncated: 8 + Opt Len*4 is beyond the end of the packet.
	ErrOptionsTruncated = errors.New("geneve: options extend beyond the packet")
	// ErrOptionLength: an option overruns the options area declared by Opt
	// Len, or the option lengths do not add up exactly to Opt Len (§3.5).
	ErrOptionLength = errors.New("geneve: option lengths do not match Opt Len")
)

// Encode errors.
var (
	// ErrShortBuffer: the destination is shorter than Header.Len().
	ErrShortBuffer = errors.New("geneve: buffer too short for the header")
	// ErrVNI: the VNI does not fit in 24 bits.
	ErrVNI = errors.New("geneve: VNI exceeds 24 bits")
	// ErrOptionsSize: the options are not a multiple of 4 bytes long, or
	// longer than MaxOptionsLen.
	ErrOptionsSize = errors.New("geneve: options length not a multiple of 4 or above 252 bytes")
	// ErrOptionDataSize: option data is not a multiple of 4 bytes long, or
	// longer than MaxOptionDataLen.
	ErrOptionDataSize = errors.New("geneve: option data length not a multiple of 4 or above 124 bytes")
)

// Header is a decoded or to-be-encoded Geneve header (RFC 8926 §3.4).
type Header struct {
	// OAM is the O bit: the packet is a control packet, whose payload a
	// tunnel endpoint must not forward.
	OAM bool
	// Critical is the C bit as received. On Encode it is OR-ed with "some
	// option has the critical bit set", as §3.5 requires.
	Critical bool
	// Protocol is the EtherType of the payload, e.g. ProtoEthernet.
	Protocol uint16
	// VNI is the 24-bit Virtual Network Identifier.
	VNI uint32
	// Options holds the raw option TLVs (§3.5). Decode makes it alias the
	// input (nil when Opt Len is 0), with its capacity cut at its length so
	// that an append cannot overwrite the payload. For Encode its length
	// must be a multiple of 4 and at most MaxOptionsLen, and it must be a
	// well-formed sequence of options (see ValidateOptions).
	Options []byte
}

// Len returns the encoded length of h: HeaderLen + len(h.Options).
func (h *Header) Len() int { return HeaderLen + len(h.Options) }

// Encode writes the h.Len() bytes of h to the start of b and returns that
// length. It writes version 0 and zero reserved fields (the base header's 6
// Rsvd bits and last byte, and the 3 R bits of each option, RFC 8926 §3.4,
// §3.5), and sets the C bit if h.Critical is set or any option is critical.
// b may alias h.Options at the same offset (re-encoding a decoded header in
// place). Errors: ErrVNI, ErrOptionsSize, ErrOptionLength for malformed
// option TLVs, ErrShortBuffer; b is not modified on error.
func (h *Header) Encode(b []byte) (int, error) {
	if h.VNI > MaxVNI {
		return 0, ErrVNI
	}
	critical, err := scanOptions(h.Options)
	if err != nil {
		return 0, err
	}
	n := h.Len()
	if len(b) < n {
		return 0, ErrShortBuffer
	}
	PutBase(b, h.Protocol, h.VNI, len(h.Options), h.OAM, h.Critical || critical)
	opts := b[HeaderLen:n]
	copy(opts, h.Options)
	for i := 0; i < len(opts); i += OptionHeaderLen + int(opts[i+3]&optLenMask5)*4 {
		opts[i+3] &= optLenMask5 // R bits 0
	}
	return n, nil
}

// PutBase writes the 8-byte base header to b[:HeaderLen]: version 0, Opt
// Len for optLen bytes of options (a multiple of 4, at most
// MaxOptionsLen), the O and C bits, the protocol type and the VNI (at most
// MaxVNI), with every reserved field zero. It is Encode without the
// options, for a sender that writes option TLVs it has validated once
// (ValidateOptions) right after the base header; such a sender must set
// critical when any of them is critical (RFC 8926 §3.5). It panics if b is
// shorter than HeaderLen.
func PutBase(b []byte, protocol uint16, vni uint32, optLen int, oam, critical bool) {
	_ = b[HeaderLen-1]
	b[0] = byte(optLen / 4) // version 0
	b[1] = 0
	if oam {
		b[1] |= flagOAM
	}
	if critical {
		b[1] |= flagCritical
	}
	binary.BigEndian.PutUint16(b[2:4], protocol)
	binary.BigEndian.PutUint32(b[4:8], vni<<8) // reserved byte 0
}

// Decode parses the Geneve header at the start of b (the UDP payload) and
// returns it with the offset of the payload, 8 + Opt Len*4.
//
// Decode enforces only the structural rules of RFC 8926 §3.4 and §3.5: Ver
// must be 0 (ErrVersion); b must hold the base header (ErrTruncated) and
// the Opt Len words of options (ErrOptionsTruncated); each option needs its
// 4-byte header plus Length words of data inside Opt Len, and the options
// must fill Opt Len exactly (ErrOptionLength). Reserved fields (the 6 Rsvd
// flag bits, the byte after the VNI, the R bits of each option) are ignored,
// never a cause for an error. Decode makes no policy about the O bit, the C
// bit, critical options or the protocol type: it reports them in h and the
// caller must apply RFC 8926's rules (drop or punt O packets; drop packets
// with critical options it does not implement; accept only the protocol
// types it is configured for).
//
// h.Options aliases b. Decode does not allocate, never panics, and never
// reads outside b. On error it returns the zero Header and offset 0.
func Decode(b []byte) (h Header, payloadOffset int, err error) {
	if len(b) < HeaderLen {
		return Header{}, 0, ErrTruncated
	}
	if b[0]>>versionShift != 0 {
		return Header{}, 0, ErrVersion
	}
	end := HeaderLen + int(b[0]&optLenMask)*4
	if end > len(b) {
		return Header{}, 0, ErrOptionsTruncated
	}
	if end > HeaderLen {
		h.Options = b[HeaderLen:end:end]
		if _, err := scanOptions(h.Options); err != nil {
			return Header{}, 0, err
		}
	}
	h.OAM = b[1]&flagOAM != 0
	h.Critical = b[1]&flagCritical != 0
	h.Protocol = binary.BigEndian.Uint16(b[2:4])
	h.VNI = binary.BigEndian.Uint32(b[4:8]) >> 8
	return h, end, nil
}
