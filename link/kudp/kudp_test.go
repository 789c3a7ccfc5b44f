//go:build linux

package kudp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
)

// waitTimeout bounds every wait in these tests. It only turns a hang into a
// failure; nothing asserts how long an operation took.
const waitTimeout = 20 * time.Second

// collector is a link.Receiver that copies what it gets.
type collector struct {
	mu    sync.Mutex
	got   []link.Datagram
	calls int
	ch    chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) Receive(batch []link.Datagram) {
	c.mu.Lock()
	for _, d := range batch {
		d.Payload = bytes.Clone(d.Payload)
		c.got = append(c.got, d)
	}
	c.calls++
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// wait waits until at least n datagrams arrived and returns them.
func (c *collector) wait(t testing.TB, n int) []link.Datagram {
	t.Helper()
	got, ok := c.tryWait(n, waitTimeout)
	if !ok {
		t.Fatalf("received %d datagrams, want %d", len(got), n)
	}
	return got
}

// tryWait waits until at least n datagrams arrived or the timeout passed,
// and returns what arrived.
func (c *collector) tryWait(n int, timeout time.Duration) ([]link.Datagram, bool) {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		got := append([]link.Datagram(nil), c.got...)
		c.mu.Unlock()
		if len(got) >= n {
			return got, true
		}
		select {
		case <-c.ch:
		case <-deadline:
			return got, false
		}
	}
}

func (c *collector) reset() {
	c.mu.Lock()
	c.got = nil
	c.mu.Unlock()
}

// counter is an allocation-free link.Receiver that counts datagrams and checks
// their length.
type counter struct {
	n     atomic.Int64
	bad   atomic.Int64
	size  int
	ch    chan struct{}
	timer *time.Timer // reused so that waitFor does not allocate
}

func newCounter(size int) *counter {
	return &counter{size: size, ch: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
}

func (c *counter) Receive(batch []link.Datagram) {
	for i := range batch {
		if c.size != 0 && len(batch[i].Payload) != c.size {
			c.bad.Add(1)
		}
	}
	c.n.Add(int64(len(batch)))
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until the count reaches n; false on timeout. Not for
// concurrent use.
func (c *counter) waitFor(n int64, timeout time.Duration) bool {
	armed := false
	defer func() {
		if armed {
			c.timer.Stop()
		}
	}()
	for c.n.Load() < n {
		if !armed {
			c.timer.Reset(timeout)
			armed = true
		}
		select {
		case <-c.ch:
		case <-c.timer.C:
			return c.n.Load() >= n
		}
	}
	return true
}

// payloadBytes is the deterministic content of datagram seq.
func payloadBytes(seq, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(seq*7 + i*13 + i>>8)
	}
	if size >= 4 {
		binary.BigEndian.PutUint32(b, uint32(seq))
	}
	return b
}

// multiView builds a buffer.Buffer holding data in (up to) nviews views.
func multiView(data []byte, nviews int) buffer.Buffer {
	var b buffer.Buffer
	step := (len(data) + nviews - 1) / nviews
	for off := 0; off < len(data); off += step {
		if err := b.Append(buffer.NewViewWithData(data[off:min(off+step, len(data))])); err != nil {
			panic(err)
		}
	}
	return b
}

func releaseAll(pkts []link.Packet) {
	for i := range pkts {
		pkts[i].Payload.Release()
	}
}

func loopback(family int, second bool) netip.Addr {
	switch {
	case family == 6:
		return netip.IPv6Loopback()
	case second:
		return netip.AddrFrom4([4]byte{127, 0, 0, 2})
	default:
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
}

// newKernelUDP opens a transport on loopback and closes it at cleanup.
func newKernelUDP(t testing.TB, family int, second bool, opts Options) *Transport {
	t.Helper()
	opts.Local = netip.AddrPortFrom(loopback(family, second), 0)
	k, err := New(opts)
	if err != nil {
		if family == 6 && isNoIPv6(err) {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatalf("New(%+v): %v", opts, err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func isNoIPv6(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

var families = []int{4, 6}

func TestKernelUDPOptions(t *testing.T) {
	for _, o := range []Options{
		{},          // no family
		{Family: 5}, // bad family
		{Family: 6, Local: netip.MustParseAddrPort("127.0.0.1:0")}, // mismatch
		{Family: 4, BatchSize: -1},
		{Family: 4, MulticastTTL: 256},
		{Family: 4, Device: "no-such-device-gnv"},
	} {
		if k, err := New(o); err == nil {
			k.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}

	// Wildcard by Family, port chosen by the kernel, loopback MTU 1500.
	k, err := New(Options{Family: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if la := k.LocalAddr(); !la.Addr().Is4() || !la.Addr().IsUnspecified() || la.Port() == 0 {
		t.Errorf("LocalAddr = %v, want 0.0.0.0:<port>", la)
	}
	if k.MTU() != DefaultMTU {
		t.Errorf("MTU = %d, want %d", k.MTU(), DefaultMTU)
	}

	lo := newKernelUDP(t, 4, false, Options{})
	if la := lo.LocalAddr(); la.Addr() != loopback(4, false) || la.Port() == 0 {
		t.Errorf("LocalAddr = %v", la)
	}
	if lo.MTU() != 1500 {
		t.Errorf("loopback MTU = %d, want 1500", lo.MTU())
	}
	lod := newKernelUDP(t, 4, false, Options{Device: "lo"})
	if lod.MTU() != 1500 {
		t.Errorf("Device lo MTU = %d, want 1500", lod.MTU())
	}
	m := newKernelUDP(t, 4, false, Options{MTU: 9000})
	if m.MTU() != 9000 {
		t.Errorf("MTU = %d, want 9000", m.MTU())
	}
	gso, gro := offloads(lo)
	t.Logf("offloads: gso=%v gro=%v", gso, gro)
	lo.rc.Control(func(fd uintptr) {
		rb, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		wb, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		t.Logf("effective buffers (uid %d): SO_RCVBUF=%d SO_SNDBUF=%d", os.Getuid(), rb, wb)
	})

	// A zero-checksum TX socket does not use GSO (the kernel refuses it).
	nc := newKernelUDP(t, 4, false, Options{NoChecksumTx4: true})
	if gso, _ := offloads(nc); gso {
		t.Error("GSO enabled with NoChecksumTx4")
	}
	dis := newKernelUDP(t, 4, false, Options{DisableGSO: true, DisableGRO: true})
	if gso, gro := offloads(dis); gso || gro {
		t.Errorf("Offloads = %v, %v with both disabled", gso, gro)
	}
}

// exchange sends n datagrams from a to b and checks what b got.
func exchange(t *testing.T, a, b *Transport, cb *collector, n, size, views int, tos, ttl uint8) []link.Datagram {
	t.Helper()
	pkts := make([]link.Packet, n)
	for i := range pkts {
		pkts[i] = link.Packet{Payload: multiView(payloadBytes(i, size), views), Dst: b.LocalAddr(), TOS: tos, TTL: ttl}
	}
	defer releaseAll(pkts)
	sent, err := a.WriteBatch(pkts)
	if err != nil || sent != n {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", sent, err, n)
	}
	got := cb.wait(t, n)
	if len(got) != n {
		t.Fatalf("got %d datagrams, want %d", len(got), n)
	}
	seen := make([]bool, n)
	for _, d := range got {
		if len(d.Payload) != size {
			t.Fatalf("datagram of %d bytes, want %d", len(d.Payload), size)
		}
		seq := int(binary.BigEndian.Uint32(d.Payload))
		if seq >= n || seen[seq] {
			t.Fatalf("bad or duplicate sequence %d", seq)
		}
		seen[seq] = true
		if !bytes.Equal(d.Payload, payloadBytes(seq, size)) {
			t.Fatalf("datagram %d corrupted", seq)
		}
		if d.Src != a.LocalAddr() {
			t.Errorf("Src = %v, want %v", d.Src, a.LocalAddr())
		}
		if d.Dst != b.LocalAddr().Addr() {
			t.Errorf("Dst = %v, want %v", d.Dst, b.LocalAddr().Addr())
		}
	}
	return got
}

func TestKernelUDPExchange(t *testing.T) {
	for _, fam := range families {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			a := newKernelUDP(t, fam, false, Options{})
			b := newKernelUDP(t, fam, true, Options{})
			ca, cb := newCollector(), newCollector()
			if err := a.Start(ca); err != nil {
				t.Fatal(err)
			}
			if err := b.Start(cb); err != nil {
				t.Fatal(err)
			}
			if err := b.Start(cb); err == nil {
				t.Error("second Start succeeded")
			}
			exchange(t, a, b, cb, 48, 1000, 5, 0, 0)
			exchange(t, b, a, ca, 48, 333, 3, 0, 0)

			sa, sb := a.Stats(), b.Stats()
			if sa.DatagramsSent != 48 || sa.BytesSent != 48*1000 || sb.DatagramsReceived != 48 || sb.BytesReceived != 48*1000 {
				t.Errorf("stats a=%+v b=%+v", sa, sb)
			}
			if sb.DatagramsSent != 48 || sa.DatagramsReceived != 48 || sa.SendErrors != 0 {
				t.Errorf("stats a=%+v b=%+v", sa, sb)
			}
		})
	}
}

func TestKernelUDPTOSTTL(t *testing.T) {
	for _, fam := range families {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			a := newKernelUDP(t, fam, false, Options{})
			b := newKernelUDP(t, fam, true, Options{})
			cb := newCollector()
			if err := b.Start(cb); err != nil {
				t.Fatal(err)
			}
			for i, d := range exchange(t, a, b, cb, 4, 100, 2, 0xb8, 7) {
				if d.TOS != 0xb8 || d.TTL != 7 {
					t.Errorf("datagram %d: TOS %#x TTL %d, want 0xb8 7", i, d.TOS, d.TTL)
				}
			}
			// Mixed per-packet values in one batch, ECN bits included; TTL 0
			// is the kernel default.
			cb.reset()
			pkts := []link.Packet{
				{Payload: multiView(payloadBytes(0, 64), 1), Dst: b.LocalAddr(), TOS: 0x03, TTL: 1},
				{Payload: multiView(payloadBytes(1, 64), 1), Dst: b.LocalAddr(), TOS: 0x2e << 2, TTL: 255},
				{Payload: multiView(payloadBytes(2, 64), 1), Dst: b.LocalAddr(), TOS: 0x01},
			}
			defer releaseAll(pkts)
			if n, err := a.WriteBatch(pkts); n != 3 || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for _, d := range cb.wait(t, 3) {
				p := pkts[binary.BigEndian.Uint32(d.Payload)]
				wantTTL := p.TTL
				if wantTTL == 0 {
					wantTTL = 64 // net.ipv4.ip_default_ttl / hop_limit default
				}
				if d.TOS != p.TOS || d.TTL != wantTTL {
					t.Errorf("got TOS %#x TTL %d, want %#x %d", d.TOS, d.TTL, p.TOS, wantTTL)
				}
			}
		})
	}
}

// TestKernelUDPGSOGRO sends GSO-eligible batches with GSO on and off to a
// receiver with GRO on and off; every combination must deliver each
// datagram once, intact.
func TestKernelUDPGSOGRO(t *testing.T) {
	probe := newKernelUDP(t, 4, false, Options{})
	gsoOK, groOK := offloads(probe)
	t.Logf("kernel offloads: gso=%v gro=%v", gsoOK, groOK)
	for _, fam := range families {
		for _, gso := range []bool{false, true} {
			for _, gro := range []bool{false, true} {
				t.Run(fmt.Sprintf("ipv%d/gso=%v/gro=%v", fam, gso, gro), func(t *testing.T) {
					if (gso && !gsoOK) || (gro && !groOK) {
						t.Skip("offload not supported by this kernel")
					}
					a := newKernelUDP(t, fam, false, Options{DisableGSO: !gso})
					b := newKernelUDP(t, fam, true, Options{DisableGRO: !gro})
					cb := newCollector()
					if err := b.Start(cb); err != nil {
						t.Fatal(err)
					}
					// 3 runs: 40 x 1200 (GSO group, then a new group after
					// the 64-segment / 65000-byte cap), then 10 x 1000 + a
					// short 500 tail (the short last segment ends a group).
					const size = 1200
					var pkts []link.Packet
					for i := 0; i < 100; i++ {
						pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(i, size), 1+i%3), Dst: b.LocalAddr(), TOS: 0x10})
					}
					for i := 100; i < 110; i++ {
						pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(i, 1000), 2), Dst: b.LocalAddr()})
					}
					pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(110, 500), 2), Dst: b.LocalAddr()})
					defer releaseAll(pkts)
					n, err := a.WriteBatch(pkts)
					if err != nil || n != len(pkts) {
						t.Fatalf("WriteBatch = %d, %v", n, err)
					}
					got := cb.wait(t, len(pkts))
					seen := make(map[int]bool)
					for _, d := range got {
						seq := int(binary.BigEndian.Uint32(d.Payload))
						if seq >= len(pkts) || seen[seq] {
							t.Fatalf("bad or duplicate sequence %d", seq)
						}
						seen[seq] = true
						want := pkts[seq].Payload.Flatten()
						if !bytes.Equal(d.Payload, want) {
							t.Fatalf("datagram %d: %d bytes, corrupted or wrong size (want %d)", seq, len(d.Payload), len(want))
						}
						if d.TOS != pkts[seq].TOS || d.Src != a.LocalAddr() || d.Dst != b.LocalAddr().Addr() {
							t.Errorf("datagram %d: TOS %#x Src %v Dst %v", seq, d.TOS, d.Src, d.Dst)
						}
					}
					if len(got) != len(pkts) {
						t.Errorf("got %d datagrams, want %d", len(got), len(pkts))
					}
					sa, sb := a.Stats(), b.Stats()
					t.Logf("sender %+v", sa)
					t.Logf("receiver %+v (Receive calls %d)", sb, cb.calls)
					if sa.DatagramsSent != uint64(len(pkts)) {
						t.Errorf("DatagramsSent = %d", sa.DatagramsSent)
					}
					if gso && sa.GSOSends < 3 {
						t.Errorf("GSOSends = %d, want >= 3", sa.GSOSends)
					}
					if !gso && sa.GSOSends != 0 {
						t.Errorf("GSOSends = %d with GSO off", sa.GSOSends)
					}
					if gso && gro && sb.GROSplits == 0 {
						t.Errorf("GROSplits = 0: the GRO split path was not exercised")
					}
					if !gro && sb.GROSplits != 0 {
						t.Errorf("GROSplits = %d with GRO off", sb.GROSplits)
					}
				})
			}
		}
	}
}

// TestKernelUDPGSOFallback makes the kernel refuse GSO (a zero-checksum
// socket gets EINVAL) and checks that the batch is resent without GSO and
// GSO is switched off.
func TestKernelUDPGSOFallback(t *testing.T) {
	a := newKernelUDP(t, 4, false, Options{NoChecksumTx4: true, forceGSO: true})
	if gso, _ := offloads(a); !gso {
		t.Skip("kernel has no UDP GSO")
	}
	b := newKernelUDP(t, 4, true, Options{})
	cb := newCollector()
	if err := b.Start(cb); err != nil {
		t.Fatal(err)
	}
	// Three single datagrams, then a GSO group the kernel refuses: the
	// fallback must resume after the datagrams already sent.
	var pkts []link.Packet
	for i, size := range []int{100, 200, 300} {
		pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(i, size), 2), Dst: b.LocalAddr()})
	}
	for i := 3; i < 23; i++ {
		pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(i, 700), 2), Dst: b.LocalAddr()})
	}
	defer releaseAll(pkts)
	if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := cb.wait(t, len(pkts))
	seen := make(map[int]bool)
	for _, d := range got {
		seq := int(binary.BigEndian.Uint32(d.Payload))
		if seq >= len(pkts) || seen[seq] || !bytes.Equal(d.Payload, pkts[seq].Payload.Flatten()) {
			t.Fatalf("bad, duplicate or corrupted datagram %d", seq)
		}
		seen[seq] = true
	}
	if len(got) != len(pkts) {
		t.Errorf("got %d datagrams, want %d", len(got), len(pkts))
	}
	st := a.Stats()
	if gso, _ := offloads(a); gso {
		t.Error("GSO still on after the kernel refused it")
	}
	if st.GSOFallbacks != 1 || st.GSOSends != 0 || st.SendErrors != 0 || st.DatagramsSent != uint64(len(pkts)) {
		t.Errorf("stats %+v", st)
	}
}

// TestKernelUDPPartialErrors checks that refused datagrams are skipped and
// counted while the rest of the batch goes out.
func TestKernelUDPPartialErrors(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			a := newKernelUDP(t, 4, false, Options{DisableGSO: !gso})
			b := newKernelUDP(t, 4, true, Options{})
			cb := newCollector()
			if err := b.Start(cb); err != nil {
				t.Fatal(err)
			}
			var pkts []link.Packet
			add := func(seq, size int, dst netip.AddrPort) {
				pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(seq, size), 2), Dst: dst})
			}
			for i := 0; i < 5; i++ {
				add(i, 800, b.LocalAddr())
			}
			add(5, 70000, b.LocalAddr())                               // EMSGSIZE: larger than any UDP datagram
			add(6, 800, netip.MustParseAddrPort("[2001:db8::1]:6081")) // wrong family
			add(7, 800, netip.AddrPort{})                              // no destination
			for i := 8; i < 13; i++ {
				add(i, 800, b.LocalAddr())
			}
			defer releaseAll(pkts)
			n, err := a.WriteBatch(pkts)
			if n != 10 || err == nil {
				t.Fatalf("WriteBatch = %d, %v; want 10 and an error", n, err)
			}
			t.Logf("first error: %v", err)
			got := cb.wait(t, 10)
			if len(got) != 10 {
				t.Errorf("got %d datagrams, want 10", len(got))
			}
			if st := a.Stats(); st.SendErrors != 3 || st.DatagramsSent != 10 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestKernelUDPConcurrentWrites runs WriteBatch from several goroutines,
// with a small BatchSize so that every call needs several sendmmsg calls.
func TestKernelUDPConcurrentWrites(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			a := newKernelUDP(t, 6, false, Options{DisableGSO: !gso, BatchSize: 4})
			b := newKernelUDP(t, 6, true, Options{BatchSize: 8})
			const writers, batches, per, size = 4, 10, 20, 512
			c := newCounter(size)
			if err := b.Start(c); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pkts := make([]link.Packet, per)
					for i := range pkts {
						// Writers 0 and 3 share the main socket, 1 and 2
						// use source-port sockets.
						pkts[i] = link.Packet{Payload: multiView(payloadBytes(w*per+i, size), 2), Dst: b.LocalAddr(), TOS: uint8(w), SrcPort: uint16(w % 3)}
					}
					defer releaseAll(pkts)
					for i := 0; i < batches; i++ {
						if n, err := a.WriteBatch(pkts); n != per || err != nil {
							t.Errorf("WriteBatch = %d, %v", n, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			const total = writers * batches * per
			if !c.waitFor(total, waitTimeout) {
				t.Fatalf("received %d of %d", c.n.Load(), total)
			}
			if c.bad.Load() != 0 {
				t.Errorf("%d datagrams of the wrong size", c.bad.Load())
			}
			if st := a.Stats(); st.DatagramsSent != total || (gso && st.GSOSends == 0) {
				t.Errorf("sender stats %+v", st)
			}
		})
	}
}

// TestKernelUDPLargeBatch sends 1000 datagrams in one WriteBatch with the
// default (8 MiB) buffers: none may be lost on loopback.
func TestKernelUDPLargeBatch(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			a := newKernelUDP(t, 4, false, Options{DisableGSO: !gso})
			b := newKernelUDP(t, 4, true, Options{})
			const n, size = 1000, 1400
			c := newCounter(size)
			if err := b.Start(c); err != nil {
				t.Fatal(err)
			}
			pkts := make([]link.Packet, n)
			for i := range pkts {
				pkts[i] = link.Packet{Payload: multiView(payloadBytes(i, size), 2), Dst: b.LocalAddr()}
			}
			defer releaseAll(pkts)
			if sent, err := a.WriteBatch(pkts); sent != n || err != nil {
				t.Fatalf("WriteBatch = %d, %v", sent, err)
			}
			if !c.waitFor(n, waitTimeout) {
				t.Fatalf("received %d of %d datagrams (receiver stats %+v)", c.n.Load(), n, b.Stats())
			}
			if c.bad.Load() != 0 {
				t.Errorf("%d datagrams of the wrong size", c.bad.Load())
			}
			if st := b.Stats(); st.DatagramsReceived != n || st.BytesReceived != n*size || st.Truncated != 0 {
				t.Errorf("receiver stats %+v", st)
			}
		})
	}
}

func TestKernelUDPMulticast(t *testing.T) {
	for _, fam := range families {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			group := netip.MustParseAddr("239.255.77.1")
			if fam == 6 {
				group = netip.MustParseAddr("ff12::6081:1")
			}
			r, err := New(Options{Family: fam, Device: "lo"})
			if err != nil {
				t.Skipf("no multicast on lo: %v", err)
			}
			defer r.Close()
			if err := r.JoinGroup(group); err != nil {
				t.Skipf("the kernel refuses to join %v on lo: %v", group, err)
			}
			if err := r.JoinGroup(netip.MustParseAddr("10.0.0.1")); err == nil {
				t.Error("JoinGroup of a unicast address succeeded")
			}
			cr := newCollector()
			if err := r.Start(cr); err != nil {
				t.Fatal(err)
			}
			s := newKernelUDP(t, fam, false, Options{Device: "lo", MulticastLoop: true, MulticastTTL: 3})
			dst := netip.AddrPortFrom(group, r.LocalAddr().Port())
			// The third packet leaves from a source-port socket, which
			// must have the same multicast options.
			pkts := []link.Packet{
				{Payload: multiView(payloadBytes(0, 200), 2), Dst: dst},
				{Payload: multiView(payloadBytes(1, 200), 2), Dst: dst},
				{Payload: multiView(payloadBytes(2, 200), 2), Dst: dst, SrcPort: 9},
			}
			defer releaseAll(pkts)
			if n, err := s.WriteBatch(pkts); n != 3 || err != nil {
				t.Skipf("the kernel refuses multicast sends on lo: %d, %v", n, err)
			}
			got, ok := cr.tryWait(3, 5*time.Second)
			time.Sleep(50 * time.Millisecond) // let duplicates, if any, arrive
			got, _ = cr.tryWait(3, 0)
			if !ok {
				t.Skipf("no multicast delivery on lo (got %d datagrams; sender %+v)", len(got), s.Stats())
			}
			if len(got) != 3 {
				t.Errorf("got %d datagrams, want 3", len(got))
			}
			for _, d := range got {
				seq := binary.BigEndian.Uint32(d.Payload)
				src := netip.AddrPortFrom(s.LocalAddr().Addr(), srcPortOf(s, s.SourcePorts(), pkts[seq%3].SrcPort))
				if d.Dst != group || d.Src != src || d.TTL != 3 {
					t.Errorf("got Src %v Dst %v TTL %d, want %v %v 3", d.Src, d.Dst, d.TTL, src, group)
				}
			}
			if err := r.LeaveGroup(group); err != nil {
				t.Errorf("LeaveGroup: %v", err)
			}
		})
	}
}

func TestKernelUDPCloseUnblocks(t *testing.T) {
	before := runtime.NumGoroutine()
	k, err := New(Options{Local: netip.AddrPortFrom(loopback(4, false), 0)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	if err := k.Start(c); err != nil {
		t.Fatal(err)
	}
	// One round trip so the receive goroutine is surely back in recvmmsg.
	exchange(t, k, k, c, 1, 10, 1, 0, 0)

	done := make(chan error, 2)
	go func() { done <- k.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close did not return")
	}
	if err := k.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	pkts := []link.Packet{{Payload: multiView([]byte("x"), 1), Dst: k.LocalAddr()}}
	if _, err := k.WriteBatch(pkts); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v", err)
	}
	releaseAll(pkts)
	if err := k.Start(c); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := k.JoinGroup(netip.MustParseAddr("239.1.1.1")); err == nil {
		t.Error("JoinGroup after Close succeeded")
	}
	n := runtime.NumGoroutine()
	for i := 0; i < 200 && n > before; i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

// TestKernelUDPZeroChecksum6 runs IPv6 with zero UDP checksums on both ends.
func TestKernelUDPZeroChecksum6(t *testing.T) {
	a := newKernelUDP(t, 6, false, Options{ZeroChecksumTx6: true, ZeroChecksumRx6: true})
	b := newKernelUDP(t, 6, true, Options{ZeroChecksumTx6: true, ZeroChecksumRx6: true})
	if gso, _ := offloads(a); gso {
		t.Error("GSO enabled with ZeroChecksumTx6")
	}
	cb := newCollector()
	if err := b.Start(cb); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, cb, 10, 500, 2, 0, 0)
}

// allocPair returns a started sender/receiver pair and a 16-packet batch.
func allocPair(t testing.TB, gso bool, size int) (*Transport, *Transport, *counter, []link.Packet) {
	a := newKernelUDP(t, 4, false, Options{DisableGSO: !gso})
	b := newKernelUDP(t, 4, true, Options{})
	c := newCounter(size)
	if err := b.Start(c); err != nil {
		t.Fatal(err)
	}
	pkts := make([]link.Packet, 16)
	for i := range pkts {
		pkts[i] = link.Packet{Payload: multiView(payloadBytes(i, size), 3), Dst: b.LocalAddr(), TOS: 0xb8, TTL: 9}
	}
	t.Cleanup(func() { releaseAll(pkts) })
	return a, b, c, pkts
}

func TestKernelUDPAllocs(t *testing.T) {
	for _, gso := range []bool{false, true} {
		for _, srcPorts := range []bool{false, true} {
			t.Run(fmt.Sprintf("gso=%v/srcports=%v", gso, srcPorts), func(t *testing.T) {
				testKernelUDPAllocs(t, gso, srcPorts)
			})
		}
	}
}

func testKernelUDPAllocs(t *testing.T, gso, srcPorts bool) {
	a, _, c, pkts := allocPair(t, gso, 1000)
	if srcPorts {
		// Four runs of four packets, on four different sockets
		// (the main one included).
		for i := range pkts {
			pkts[i].SrcPort = uint16(i / 4 * 1001)
		}
	}
	// WriteBatch alone.
	if allocs := testing.AllocsPerRun(100, func() {
		if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
			panic(fmt.Sprint(n, err))
		}
	}); allocs != 0 {
		t.Errorf("WriteBatch of %d packets: %v allocations, want 0", len(pkts), allocs)
	}
	// Send and receive: counts every goroutine's allocations,
	// the receive loop included.
	c.waitFor(101*16, waitTimeout)
	want := c.n.Load()
	if allocs := testing.AllocsPerRun(100, func() {
		if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
			panic(fmt.Sprint(n, err))
		}
		want += int64(len(pkts))
		if !c.waitFor(want, waitTimeout) {
			panic("datagrams lost")
		}
	}); allocs != 0 {
		t.Errorf("send+receive of %d packets: %v allocations, want 0", len(pkts), allocs)
	}
	if c.bad.Load() != 0 {
		t.Errorf("%d datagrams of the wrong size", c.bad.Load())
	}
}

// BenchmarkKernelUDPWriteBatch measures WriteBatch of 16 x 1400-byte
// datagrams over loopback to a draining receiver.
func BenchmarkKernelUDPWriteBatch(b *testing.B) {
	for _, gso := range []bool{false, true} {
		b.Run(fmt.Sprintf("gso=%v", gso), func(b *testing.B) {
			const size = 1400
			a, _, _, pkts := allocPair(b, gso, size)
			if g, _ := offloads(a); g != gso {
				b.Skip("GSO not supported")
			}
			b.SetBytes(int64(len(pkts) * size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// BenchmarkKernelUDPLoopback measures one-way loopback throughput in
// datagrams per second as seen by the receiver, with and without GSO (and
// with GRO on the receiver when available), 64 x 1400-byte batches.
func BenchmarkKernelUDPLoopback(b *testing.B) {
	for _, gso := range []bool{false, true} {
		b.Run(fmt.Sprintf("gso=%v", gso), func(b *testing.B) {
			const size, batch = 1400, 64
			a := newKernelUDP(b, 4, false, Options{DisableGSO: !gso})
			if g, _ := offloads(a); g != gso {
				b.Skip("GSO not supported")
			}
			r := newKernelUDP(b, 4, true, Options{})
			c := newCounter(size)
			if err := r.Start(c); err != nil {
				b.Fatal(err)
			}
			pkts := make([]link.Packet, batch)
			for i := range pkts {
				pkts[i] = link.Packet{Payload: multiView(payloadBytes(i, size), 2), Dst: r.LocalAddr()}
			}
			defer releaseAll(pkts)
			b.SetBytes(batch * size)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if n, err := a.WriteBatch(pkts); n != batch || err != nil {
					b.Fatal(n, err)
				}
			}
			sent := int64(b.N * batch)
			c.waitFor(sent, time.Second) // drain what is still queued
			elapsed := time.Since(start)
			b.StopTimer()
			got := c.n.Load()
			b.ReportMetric(float64(got)/elapsed.Seconds(), "rxdgrams/s")
			b.ReportMetric(100*float64(sent-got)/float64(sent), "loss%")
			st := r.Stats()
			if st.DatagramsReceived > 0 {
				b.ReportMetric(float64(st.GROSplits), "grosplits")
			}
		})
	}
}

// srcPortOf is the source port a datagram with Packet.SrcPort sp should
// come from.
func srcPortOf(k *Transport, ports []uint16, sp uint16) uint16 {
	if sp == 0 || len(ports) == 0 {
		return k.LocalAddr().Port()
	}
	return ports[int(sp)%len(ports)]
}

// TestKernelUDPSourcePorts checks that Packet.SrcPort picks a source-port
// socket: different flows leave from different ports, the same flow always
// from the same one, and SrcPort 0 from the bound port.
func TestKernelUDPSourcePorts(t *testing.T) {
	for _, fam := range families {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			a := newKernelUDP(t, fam, false, Options{})
			b := newKernelUDP(t, fam, true, Options{})
			ports := a.SourcePorts()
			if len(ports) != DefaultSourcePorts {
				t.Fatalf("SourcePorts() = %v, want %d ports", ports, DefaultSourcePorts)
			}
			seen := map[uint16]bool{a.LocalAddr().Port(): true}
			for _, p := range ports {
				if p == 0 || seen[p] {
					t.Fatalf("SourcePorts() = %v: zero or repeated port (bound %d)", ports, a.LocalAddr().Port())
				}
				seen[p] = true
			}
			cb := newCollector()
			if err := b.Start(cb); err != nil {
				t.Fatal(err)
			}
			// Flows 40001 and 40002 interleaved in runs, flow 40001+16
			// (same socket as 40001), and SrcPort 0; sizes vary so some
			// runs are GSO messages and some are not.
			flows := []uint16{40001, 40001, 40001, 40002, 40002, 0, 40001, 40001 + 16, 40002, 0, 0, 40002}
			const rounds = 3
			for r := 0; r < rounds; r++ {
				pkts := make([]link.Packet, len(flows))
				for i, sp := range flows {
					pkts[i] = link.Packet{Payload: multiView(payloadBytes(i, 200+i%2*100), 2), Dst: b.LocalAddr(), SrcPort: sp, TOS: 0x28, TTL: 33}
				}
				n, err := a.WriteBatch(pkts)
				releaseAll(pkts)
				if n != len(pkts) || err != nil {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
			}
			got := cb.wait(t, rounds*len(flows))
			flowPort := make(map[uint16]uint16)
			for _, d := range got {
				seq := int(binary.BigEndian.Uint32(d.Payload))
				if seq >= len(flows) || len(d.Payload) != 200+seq%2*100 {
					t.Fatalf("bad datagram: seq %d, %d bytes", seq, len(d.Payload))
				}
				sp := flows[seq]
				if d.Src.Addr() != a.LocalAddr().Addr() {
					t.Errorf("datagram %d from %v, want address %v", seq, d.Src, a.LocalAddr().Addr())
				}
				if want := srcPortOf(a, ports, sp); d.Src.Port() != want {
					t.Errorf("datagram %d (SrcPort %d) from port %d, want %d", seq, sp, d.Src.Port(), want)
				}
				if p, ok := flowPort[sp]; ok && p != d.Src.Port() {
					t.Errorf("SrcPort %d came from ports %d and %d", sp, p, d.Src.Port())
				}
				flowPort[sp] = d.Src.Port()
				if d.TOS != 0x28 || d.TTL != 33 {
					t.Errorf("datagram %d: TOS %#x TTL %d, want 0x28 33", seq, d.TOS, d.TTL)
				}
			}
			if flowPort[40001] == flowPort[40002] {
				t.Errorf("flows 40001 and 40002 both from port %d", flowPort[40001])
			}
			if flowPort[40001] != flowPort[40001+16] {
				t.Errorf("SrcPort 40001 from %d, 40017 from %d: want the same socket", flowPort[40001], flowPort[40001+16])
			}
			if flowPort[0] != a.LocalAddr().Port() {
				t.Errorf("SrcPort 0 from port %d, want the bound port %d", flowPort[0], a.LocalAddr().Port())
			}
			if st := a.Stats(); st.DatagramsSent != rounds*uint64(len(flows)) || st.SendErrors != 0 {
				t.Errorf("sender stats %+v", st)
			}
		})
	}
}

// TestKernelUDPSourcePortsGSO sends GSO runs on source-port sockets: each
// run of one flow is one UDP_SEGMENT message and arrives whole, from the
// flow's port; a run is split where the flow changes.
func TestKernelUDPSourcePortsGSO(t *testing.T) {
	for _, fam := range families {
		for _, gro := range []bool{false, true} {
			t.Run(fmt.Sprintf("ipv%d/gro=%v", fam, gro), func(t *testing.T) {
				a := newKernelUDP(t, fam, false, Options{})
				if gso, _ := offloads(a); !gso {
					t.Skip("GSO not supported by this kernel")
				}
				b := newKernelUDP(t, fam, true, Options{DisableGRO: !gro})
				ports := a.SourcePorts()
				cb := newCollector()
				if err := b.Start(cb); err != nil {
					t.Fatal(err)
				}
				const size = 1000
				// 20 x flow 7, then 10 x flow 8: two GSO messages on two
				// sockets, although all 30 packets could share one.
				var pkts []link.Packet
				for i := 0; i < 30; i++ {
					sp := uint16(7)
					if i >= 20 {
						sp = 8
					}
					pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(i, size), 1+i%3), Dst: b.LocalAddr(), SrcPort: sp})
				}
				defer releaseAll(pkts)
				if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
				got := cb.wait(t, len(pkts))
				seen := make(map[int]bool)
				for _, d := range got {
					seq := int(binary.BigEndian.Uint32(d.Payload))
					if seq >= len(pkts) || seen[seq] {
						t.Fatalf("bad or duplicate sequence %d", seq)
					}
					seen[seq] = true
					if !bytes.Equal(d.Payload, pkts[seq].Payload.Flatten()) {
						t.Fatalf("datagram %d: %d bytes, corrupted or wrong size", seq, len(d.Payload))
					}
					if want := srcPortOf(a, ports, pkts[seq].SrcPort); d.Src.Port() != want {
						t.Errorf("datagram %d from port %d, want %d", seq, d.Src.Port(), want)
					}
				}
				if st := a.Stats(); st.GSOSends != 2 || st.DatagramsSent != uint64(len(pkts)) || st.GSOFallbacks != 0 {
					t.Errorf("sender stats %+v, want 2 GSO sends of %d datagrams", st, len(pkts))
				}
			})
		}
	}
}

// TestKernelUDPSourcePortsDisabled checks SourcePorts: -1: no pool, and
// every datagram leaves from the bound port whatever its SrcPort.
func TestKernelUDPSourcePortsDisabled(t *testing.T) {
	a := newKernelUDP(t, 4, false, Options{SourcePorts: -1})
	if p := a.SourcePorts(); len(p) != 0 {
		t.Fatalf("SourcePorts() = %v with SourcePorts: -1", p)
	}
	b := newKernelUDP(t, 4, true, Options{})
	cb := newCollector()
	if err := b.Start(cb); err != nil {
		t.Fatal(err)
	}
	var pkts []link.Packet
	for i := 0; i < 8; i++ {
		pkts = append(pkts, link.Packet{Payload: multiView(payloadBytes(i, 100), 1), Dst: b.LocalAddr(), SrcPort: uint16(1000 + i)})
	}
	defer releaseAll(pkts)
	if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	for _, d := range cb.wait(t, len(pkts)) {
		if d.Src != a.LocalAddr() {
			t.Errorf("datagram from %v, want %v", d.Src, a.LocalAddr())
		}
	}

	// A custom pool size.
	c := newKernelUDP(t, 4, false, Options{SourcePorts: 3})
	if p := c.SourcePorts(); len(p) != 3 {
		t.Errorf("SourcePorts() = %v, want 3 ports", p)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list file descriptors: %v", err)
	}
	return len(ents)
}

// TestKernelUDPSourcePortsClose checks that Close closes the source-port
// sockets too and leaves no goroutine, and that WriteBatch then fails.
func TestKernelUDPSourcePortsClose(t *testing.T) {
	// Open and close one transport first so that the runtime poller's own
	// descriptors exist before counting.
	warm := newKernelUDP(t, 4, false, Options{})
	warm.Close()
	beforeG := runtime.NumGoroutine()
	beforeFD := openFDs(t)

	k, err := New(Options{Local: netip.AddrPortFrom(loopback(4, false), 0)})
	if err != nil {
		t.Fatal(err)
	}
	if fds := openFDs(t) - beforeFD; fds != 1+len(k.SourcePorts()) || len(k.SourcePorts()) != DefaultSourcePorts {
		t.Errorf("%d descriptors for a transport with %d source ports", fds, len(k.SourcePorts()))
	}
	c := newCollector()
	if err := k.Start(c); err != nil {
		t.Fatal(err)
	}
	pkts := []link.Packet{{Payload: multiView([]byte("hello"), 1), Dst: k.LocalAddr(), SrcPort: 5}}
	defer releaseAll(pkts)
	if n, err := k.WriteBatch(pkts); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if d := c.wait(t, 1)[0]; d.Src.Port() != srcPortOf(k, k.SourcePorts(), 5) {
		t.Errorf("datagram from %v, want port %d", d.Src, srcPortOf(k, k.SourcePorts(), 5))
	}
	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := k.WriteBatch(pkts); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v", err)
	}
	if fds := openFDs(t); fds != beforeFD {
		t.Errorf("%d descriptors open after Close, %d before", fds, beforeFD)
	}
	n := runtime.NumGoroutine()
	for i := 0; i < 200 && n > beforeG; i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > beforeG {
		t.Errorf("%d goroutines after Close, %d before", n, beforeG)
	}
}

// offloads splits t's offloads into UDP GSO and UDP GRO.
func offloads(t *Transport) (gso, gro bool) {
	o := t.Offloads()
	return o.Has(link.OffloadUDPGSO), o.Has(link.OffloadUDPGRO)
}
