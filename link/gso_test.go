package link

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// testBytes returns n bytes of a fixed pattern.
func testBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// split cuts b into slices of uneven sizes, some odd.
func split(b []byte) Slices {
	var s Slices
	for i, cut := 0, 1; len(b) > 0; i++ {
		cut = min(len(b), 1+(i*7919)%1501)
		s = append(s, b[:cut])
		b = b[cut:]
	}
	return s
}

func TestSlices(t *testing.T) {
	b := testBytes(5000)
	s := split(b)
	if s.Size() != len(b) {
		t.Fatalf("size %d", s.Size())
	}
	for _, r := range [][2]int{{0, 5000}, {1, 1}, {3, 2000}, {4999, 1}, {1500, 0}, {2, 4998}} {
		var got []byte
		for _, x := range s.AppendRange(nil, r[0], r[1]) {
			got = append(got, x...)
		}
		if want := b[r[0] : r[0]+r[1]]; !bytes.Equal(got, want) {
			t.Errorf("appendRange%v wrong", r)
		}
		if c, want := s.Checksum(r[0], r[1]), checksum.Checksum(b[r[0]:r[0]+r[1]], 0); c != want {
			t.Errorf("checksum%v = %#x, want %#x", r, c, want)
		}
	}
	dst := make([]byte, 100)
	if n := s.CopyOut(dst); n != 100 || !bytes.Equal(dst, b[:100]) {
		t.Errorf("copyOut = %d", n)
	}
}
