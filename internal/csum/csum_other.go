//go:build !amd64 || purego

package csum

// Without a vector sum, Checksum is gVisor's.
const (
	vector    = false
	vectorMin = 0
)

func sumWords(b []byte) uint64 { return sumTail(0, b) }
