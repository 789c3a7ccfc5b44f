// Package csum computes the Internet checksum (RFC 1071) of the payloads
// gnv checks and fills in itself: the inner TCP and UDP segments it
// decapsulates, and the segments it cuts from UDP-tunnel jobs. Over a
// kernel UDP underlay, every byte of a bulk transfer passes through it once
// on each side.
//
// The results are bit-identical to gVisor's checksum package (the tests
// and the fuzzer compare them): Checksum(b, initial) is
// checksum.Checksum(b, initial), and a Checksumer is a
// checksum.Checksumer. On amd64 with AVX2 it sums 64 bytes per loop
// iteration in vector registers, 1.8x gVisor's speed on a 1448-byte
// segment and 2.4-2.7x on 9000 bytes and more; below 256 bytes, elsewhere,
// and with the purego build tag, it is gVisor's code.
package csum

import (
	"encoding/binary"
	"math/bits"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Checksum returns the ones' complement sum (RFC 1071), folded to 16 bits
// and not complemented, of b, added to initial. It is
// checksum.Checksum(b, initial).
func Checksum(b []byte, initial uint16) uint16 {
	if len(b) < vectorMin || !vector {
		return checksum.Checksum(b, initial)
	}
	return checksum.Combine(fold(sumWords(b)), initial)
}

// Combine adds two ones' complement sums (checksum.Combine).
func Combine(a, b uint16) uint16 { return checksum.Combine(a, b) }

// Checksumer computes the checksum of bytes that arrive in pieces, of any
// length: a piece that starts at an odd offset of the whole has its
// bytes in the other halves of their 16-bit words, so its sum is added
// byte-swapped (RFC 1071 §2(B)). The zero value is ready to use.
type Checksumer struct {
	sum uint16
	odd bool
}

// Add adds the bytes of b.
func (c *Checksumer) Add(b []byte) {
	s := Checksum(b, 0)
	if c.odd {
		s = bits.ReverseBytes16(s)
	}
	c.sum = checksum.Combine(c.sum, s)
	if len(b)&1 != 0 {
		c.odd = !c.odd
	}
}

// Checksum returns the sum of all bytes added so far.
func (c *Checksumer) Checksum() uint16 { return c.sum }

// fold reduces a sum of little-endian 16-bit words held in 64 bits (the
// end-around carries already added back) to 16 bits, and returns it in
// network byte order, as gVisor does.
func fold(s uint64) uint16 {
	s = s>>32 + s&0xffffffff
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return bits.ReverseBytes16(uint16(s))
}

// sumTail adds b to s as little-endian words of 64 bits and less, with
// end-around carries, the last byte of an odd length padded with a zero
// byte after it. Words of any width fold to the same 16-bit sum, and the
// byte swap in fold turns the little-endian sum into the network-order
// one (RFC 1071 §2(B)).
func sumTail(s uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), 0)
		s += c
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint32(b)), 0)
		s += c
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint16(b)), 0)
		s += c
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(b[0]), 0)
		s += c
	}
	return s
}
