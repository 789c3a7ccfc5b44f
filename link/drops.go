package link

import "sync/atomic"

// SumDrops returns the sum of the per-reason drop counters d (a Stats
// snapshot's Drops array, sliced).
func SumDrops(d []uint64) uint64 {
	var n uint64
	for _, v := range d {
		n += v
	}
	return n
}

// LoadDrops copies the live per-reason drop counters src into the
// snapshot dst, which is at least as long.
func LoadDrops(dst []uint64, src []atomic.Uint64) {
	for i := range src {
		dst[i] = src[i].Load()
	}
}
