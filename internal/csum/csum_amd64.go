//go:build !purego

package csum

import (
	"math/bits"

	"golang.org/x/sys/cpu"
)

// vector says that sumAVX2 may run (the CPU has AVX2 and the OS saves
// its registers). vectorMin is the shortest buffer worth it: below 256
// bytes the vector setup costs what it saves (BenchmarkChecksum).
var vector = cpu.X86.HasAVX2

const vectorMin = 256

// sumAVX2 returns the sum of the little-endian 32-bit words of b, whose
// length must be a multiple of 64, without folding. Each of its sixteen
// 64-bit lanes adds one 32-bit word per 64 bytes, so their total cannot
// overflow below 2^34 bytes; sumWords passes at most 2^30 at a time.
//
//go:noescape
func sumAVX2(b []byte) uint64

// sumWords returns the sum of b as little-endian words, with end-around
// carries (see sumTail).
func sumWords(b []byte) uint64 {
	var s, c uint64
	for len(b) >= 64 {
		n := min(len(b), 1<<30) &^ 63
		s, c = bits.Add64(s, sumAVX2(b[:n]), 0)
		s += c
		b = b[n:]
	}
	return sumTail(s, b)
}
