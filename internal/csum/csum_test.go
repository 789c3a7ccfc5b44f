package csum

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// fill writes one of the patterns that reach the corners of ones'
// complement arithmetic into b: random bytes, all ones (sums that fold to
// 0xffff), all zeros.
func fill(r *rand.Rand, b []byte, pattern int) {
	for i := range b {
		switch pattern {
		case 0:
			b[i] = byte(r.Int())
		case 1:
			b[i] = 0xff
		default:
			b[i] = 0
		}
	}
}

// check compares Checksum, the vector and portable sums and a Checksumer
// fed b in two pieces split at cut with gVisor's results.
func check(t testing.TB, b []byte, initial uint16, cut int) {
	t.Helper()
	want := checksum.Checksum(b, initial)
	if got := Checksum(b, initial); got != want {
		t.Fatalf("Checksum(%d bytes, %#04x) = %#04x, gVisor %#04x", len(b), initial, got, want)
	}
	// Both sums at any length, whatever vectorMin says.
	if got := Combine(fold(sumWords(b)), initial); got != want {
		t.Fatalf("word sum of %d bytes, %#04x = %#04x, gVisor %#04x", len(b), initial, got, want)
	}
	if got := Combine(fold(sumTail(0, b)), initial); got != want {
		t.Fatalf("portable sum of %d bytes, %#04x = %#04x, gVisor %#04x", len(b), initial, got, want)
	}
	cut = min(cut, len(b))
	var c Checksumer
	var g checksum.Checksumer
	c.Add(b[:cut])
	c.Add(b[cut:])
	g.Add(b[:cut])
	g.Add(b[cut:])
	if c.Checksum() != g.Checksum() || c.Checksum() != Checksum(b, 0) {
		t.Fatalf("Checksumer over %d bytes cut at %d = %#04x, gVisor %#04x, whole %#04x", len(b), cut, c.Checksum(), g.Checksum(), Checksum(b, 0))
	}
}

func TestMatchesGVisor(t *testing.T) {
	if vector {
		t.Log("vector sum in use")
	}
	r := rand.New(rand.NewSource(1))
	buf := make([]byte, 70000+8)
	// Every length up to 600 (every split between the vector loop and
	// the tail), at every alignment, in every pattern; then random
	// lengths up to 70000.
	for n := 0; n <= 600; n++ {
		for off := 0; off < 8; off++ {
			for pattern := 0; pattern < 3; pattern++ {
				b := buf[off : off+n]
				fill(r, b, pattern)
				check(t, b, uint16(r.Int()), r.Intn(n+1))
				check(t, b, 0, r.Intn(n+1))
				check(t, b, 0xffff, r.Intn(n+1))
			}
		}
	}
	for i := 0; i < 500; i++ {
		n := r.Intn(70000)
		b := buf[i%8 : i%8+n]
		fill(r, b, i%3)
		check(t, b, uint16(r.Int()), r.Intn(n+1))
	}
}

// TestChecksumerPieces feeds a Checksumer many pieces of random, often
// odd, lengths, as a packet's views arrive.
func TestChecksumerPieces(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	buf := make([]byte, 20000)
	for i := 0; i < 300; i++ {
		b := buf[:r.Intn(len(buf))]
		fill(r, b, 0)
		var c Checksumer
		for rest := b; len(rest) > 0; {
			k := min(len(rest), r.Intn(200))
			c.Add(rest[:k])
			rest = rest[k:]
		}
		if got, want := c.Checksum(), checksum.Checksum(b, 0); got != want {
			t.Fatalf("%d bytes in pieces: %#04x, want %#04x", len(b), got, want)
		}
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint(0))
	f.Add([]byte{0xff}, uint16(0xffff), uint(1))
	f.Add(make([]byte, 130), uint16(1), uint(63))
	ones := make([]byte, 257)
	for i := range ones {
		ones[i] = 0xff
	}
	f.Add(ones, uint16(0), uint(65))
	f.Fuzz(func(t *testing.T, b []byte, initial uint16, cut uint) {
		check(t, b, initial, int(cut%uint(len(b)+1)))
	})
}

var sink uint16

// BenchmarkChecksum times Checksum and gVisor's checksum.Checksum on the
// same buffer, interleaved in rounds, and reports their ratio (speedup).
func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{64, 256, 1448, 9000, 65536} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			buf := make([]byte, n)
			fill(rand.New(rand.NewSource(3)), buf, 0)
			var mine, theirs time.Duration
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for done := 0; done < b.N; {
				k := min(1000, b.N-done)
				t0 := time.Now()
				for i := 0; i < k; i++ {
					sink = Checksum(buf, 0)
				}
				t1 := time.Now()
				for i := 0; i < k; i++ {
					sink = checksum.Checksum(buf, 0)
				}
				t2 := time.Now()
				mine += t1.Sub(t0)
				theirs += t2.Sub(t1)
				done += k
			}
			b.ReportMetric(float64(mine.Nanoseconds())/float64(b.N), "ns/csum")
			b.ReportMetric(float64(theirs.Nanoseconds())/float64(b.N), "ns/gvisor")
			b.ReportMetric(float64(theirs)/float64(mine), "speedup")
		})
	}
}
