package kudp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
)

// portableRecv is a link.Receiver that hands a copy of every datagram to a
// channel.
type portableRecv chan link.Datagram

func (c portableRecv) Receive(batch []link.Datagram) {
	for _, d := range batch {
		d.Payload = bytes.Clone(d.Payload)
		c <- d
	}
}

// next returns the next datagram, failing the test after a while.
func (c portableRecv) next(t *testing.T) link.Datagram {
	t.Helper()
	select {
	case d := <-c:
		return d
	case <-time.After(20 * time.Second):
		t.Fatal("no datagram received")
		return link.Datagram{}
	}
}

// newPortable opens a Portable transport on the loopback address of fam
// and closes it when the test ends; it skips the test if the system has
// no such loopback.
func newPortable(t *testing.T, fam int, opts Options) *Portable {
	t.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	if fam == 6 {
		lo = netip.IPv6Loopback()
	}
	opts.Local = netip.AddrPortFrom(lo, 0)
	p, err := NewPortable(opts)
	if fam == 6 && err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// views makes a buffer of data in n views.
func views(data []byte, n int) buffer.Buffer {
	var b buffer.Buffer
	step := max(1, (len(data)+n-1)/n)
	for off := 0; off < len(data); off += step {
		if err := b.Append(buffer.NewViewWithData(data[off:min(off+step, len(data))])); err != nil {
			panic(err)
		}
	}
	return b
}

// TestPortableExchange sends datagrams between two Portable transports on
// loopback: payloads of one view and of several, from the bound port and
// from source-port sockets, with TOS and TTL set; each arrives whole, from
// the port WireSourcePort names, with the receiver's address as Dst, and
// the counters agree.
func TestPortableExchange(t *testing.T) {
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			a := newPortable(t, fam, Options{})
			b := newPortable(t, fam, Options{})
			if len(a.SourcePorts()) != DefaultSourcePorts {
				t.Errorf("%d source ports, want %d", len(a.SourcePorts()), DefaultSourcePorts)
			}
			rb := make(portableRecv, 16)
			if err := b.Start(rb); err != nil {
				t.Fatal(err)
			}
			var pkts []link.Packet
			total := 0
			for i, size := range []int{1, 100, 1400, 9000, 60000} {
				data := bytes.Repeat([]byte{byte(i + 1)}, size)
				pkts = append(pkts, link.Packet{Payload: views(data, 1+i%3), Dst: b.LocalAddr(),
					SrcPort: uint16(i * 7), TOS: uint8(i * 4), TTL: uint8(10 * i)})
				total += size
			}
			defer func() {
				for i := range pkts {
					pkts[i].Payload.Release()
				}
			}()
			if n, err := a.WriteBatch(pkts); n != len(pkts) || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for i := range pkts {
				d := rb.next(t)
				p := &pkts[i]
				if !bytes.Equal(d.Payload, p.Payload.Flatten()) {
					t.Errorf("datagram %d: %d bytes, want %d", i, len(d.Payload), p.Payload.Size())
				}
				src := netip.AddrPortFrom(a.LocalAddr().Addr(), a.WireSourcePort(p.SrcPort))
				if d.Src != src || d.Dst != b.LocalAddr().Addr() {
					t.Errorf("datagram %d: Src %v Dst %v, want %v %v", i, d.Src, d.Dst, src, b.LocalAddr().Addr())
				}
				if p.SrcPort != 0 && !slices.Contains(a.SourcePorts(), d.Src.Port()) {
					t.Errorf("datagram %d with SrcPort %d left from %d, not from the pool %v", i, p.SrcPort, d.Src.Port(), a.SourcePorts())
				}
			}
			n := uint64(len(pkts))
			if st := a.Stats(); st != (Stats{DatagramsSent: n, BytesSent: uint64(total)}) {
				t.Errorf("sender stats %+v", st)
			}
			if st := b.Stats(); st != (Stats{DatagramsReceived: n, BytesReceived: uint64(total)}) {
				t.Errorf("receiver stats %+v", st)
			}
		})
	}
}

// TestPortableSendErrors checks that unusable destinations are counted and
// reported and do not stop the rest of the batch.
func TestPortableSendErrors(t *testing.T) {
	a := newPortable(t, 4, Options{SourcePorts: -1})
	b := newPortable(t, 4, Options{})
	rb := make(portableRecv, 16)
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	dsts := []netip.AddrPort{
		{},
		netip.AddrPortFrom(netip.IPv4Unspecified(), 6081),
		netip.AddrPortFrom(b.LocalAddr().Addr(), 0),
		netip.AddrPortFrom(netip.IPv6Loopback(), b.LocalAddr().Port()),
		b.LocalAddr(),
		netip.AddrPortFrom(netip.AddrFrom16(b.LocalAddr().Addr().As16()), b.LocalAddr().Port()), // mapped: fine
	}
	pkts := make([]link.Packet, len(dsts))
	for i, d := range dsts {
		pkts[i] = link.Packet{Payload: views([]byte{byte(i)}, 1), Dst: d}
	}
	defer func() {
		for i := range pkts {
			pkts[i].Payload.Release()
		}
	}()
	n, err := a.WriteBatch(pkts)
	if n != 2 || !errors.Is(err, errBadDst) {
		t.Fatalf("WriteBatch = %d, %v; want 2, %v", n, err, errBadDst)
	}
	for _, want := range []byte{4, 5} {
		if d := rb.next(t); !bytes.Equal(d.Payload, []byte{want}) || d.Src != a.LocalAddr() {
			t.Errorf("got %v from %v, want [%d] from %v", d.Payload, d.Src, want, a.LocalAddr())
		}
	}
	if st := a.Stats(); st.SendErrors != 4 || st.DatagramsSent != 2 {
		t.Errorf("sender stats %+v", st)
	}
	if a.WireSourcePort(99) != a.LocalAddr().Port() || len(a.SourcePorts()) != 0 {
		t.Errorf("without a pool: WireSourcePort(99) = %d, SourcePorts %v", a.WireSourcePort(99), a.SourcePorts())
	}
}

// TestPortableOptions checks what NewPortable refuses and what it sets.
func TestPortableOptions(t *testing.T) {
	lo4 := netip.MustParseAddrPort("127.0.0.1:0")
	for _, o := range []Options{
		{Local: lo4, NoChecksumTx4: true},
		{Family: 6, ZeroChecksumTx6: true},
		{Family: 6, ZeroChecksumRx6: true},
		{Local: lo4, Family: 6},
		{Local: lo4, Device: "no-such-device0"},
		{Local: lo4, MulticastTTL: 300},
	} {
		if p, err := NewPortable(o); err == nil {
			p.Close()
			t.Errorf("NewPortable(%+v) succeeded", o)
		}
	}
	// Zero-checksum options of the other family do not apply.
	p := newPortable(t, 4, Options{ZeroChecksumTx6: true, ZeroChecksumRx6: true, MTU: 1400})
	if p.MTU() != 1400 {
		t.Errorf("MTU %d, want 1400", p.MTU())
	}
	if q := newPortable(t, 4, Options{}); q.MTU() != DefaultMTU {
		t.Errorf("loopback MTU %d, want %d", q.MTU(), DefaultMTU)
	}
	for _, fam := range []int{4, 6} {
		q := newPortable(t, fam, Options{DontFragment: true, SourcePorts: 2})
		for _, on := range []bool{false, true} {
			if err := q.SetDontFragment(on); err != nil {
				t.Errorf("IPv%d SetDontFragment(%v): %v", fam, on, err)
			}
		}
	}
}

// TestPortableMulticast joins a group on the loopback interface and
// receives what a second transport sends to it, where the system allows
// multicast on loopback.
func TestPortableMulticast(t *testing.T) {
	lo := loopbackInterface(t)
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			group := netip.MustParseAddr("239.255.77.2")
			if fam == 6 {
				group = netip.MustParseAddr("ff12::6081:2")
			}
			r, err := NewPortable(Options{Family: fam, Device: lo})
			if err != nil {
				t.Skipf("no multicast on %s: %v", lo, err)
			}
			defer r.Close()
			if err := r.JoinGroup(netip.MustParseAddr("10.0.0.1")); !errors.Is(err, errNotMulticast) {
				t.Errorf("JoinGroup of a unicast address: %v", err)
			}
			other := netip.MustParseAddr("ff12::1")
			if fam == 6 {
				other = netip.MustParseAddr("239.1.1.1")
			}
			if err := r.JoinGroup(other); !errors.Is(err, errFamilyMismatch) {
				t.Errorf("JoinGroup of %v: %v", other, err)
			}
			if err := r.JoinGroup(group); err != nil {
				t.Skipf("the system refuses to join %v on %s: %v", group, lo, err)
			}
			rr := make(portableRecv, 16)
			if err := r.Start(rr); err != nil {
				t.Fatal(err)
			}
			s := newPortable(t, fam, Options{Device: lo, MulticastLoop: true, MulticastTTL: 3})
			pkts := []link.Packet{
				{Payload: views([]byte("to the group"), 2), Dst: netip.AddrPortFrom(group, r.LocalAddr().Port())},
				{Payload: views([]byte("to the group, ttl 5"), 1), Dst: netip.AddrPortFrom(group, r.LocalAddr().Port()), TTL: 5, SrcPort: 3},
			}
			defer func() {
				for i := range pkts {
					pkts[i].Payload.Release()
				}
			}()
			if n, err := s.WriteBatch(pkts); n != 2 || err != nil {
				t.Skipf("the system refuses multicast sends on %s: %d, %v", lo, n, err)
			}
			for i := range pkts {
				select {
				case d := <-rr:
					if want := pkts[i].Payload.Flatten(); !bytes.Equal(d.Payload, want) {
						t.Errorf("got %q, want %q", d.Payload, want)
					}
				case <-time.After(5 * time.Second):
					t.Skipf("no multicast delivery on %s", lo)
				}
			}
			if err := r.LeaveGroup(group); err != nil {
				t.Errorf("LeaveGroup: %v", err)
			}
		})
	}
}

// loopbackInterface names the system's loopback interface (lo, lo0, …).
func loopbackInterface(t *testing.T) string {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Skip(err)
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			return ifi.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}

// TestPortableClose checks the life cycle: Start once, Close stops the
// receive goroutine and is idempotent, and nothing works afterwards.
func TestPortableClose(t *testing.T) {
	p := newPortable(t, 4, Options{})
	if err := p.Start(nil); !errors.Is(err, errNilReceiver) {
		t.Errorf("Start(nil): %v", err)
	}
	rp := make(portableRecv, 1)
	if err := p.Start(rp); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(rp); !errors.Is(err, errAlreadyStarted) {
		t.Errorf("second Start: %v", err)
	}
	pkts := []link.Packet{{Payload: views([]byte("self"), 1), Dst: p.LocalAddr()}}
	defer pkts[0].Payload.Release()
	if n, err := p.WriteBatch(pkts); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	rp.next(t) // the receive goroutine is running
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-p.done:
	default:
		t.Error("Close returned before the receive goroutine ended")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.WriteBatch(pkts); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v", err)
	}
	if err := p.Start(rp); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if err := p.JoinGroup(netip.MustParseAddr("239.1.1.1")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("JoinGroup after Close: %v", err)
	}
	if err := p.SetDontFragment(true); err == nil {
		t.Error("SetDontFragment after Close succeeded")
	}
	// A transport closed before Start.
	q, err := NewPortable(Options{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
}

// TestPortableWriteAllocs checks that sending allocates nothing per packet
// once the socket options are set (one view or several).
func TestPortableWriteAllocs(t *testing.T) {
	a := newPortable(t, 4, Options{})
	b := newPortable(t, 4, Options{ReadBuffer: -1})
	pkts := make([]link.Packet, 16)
	for i := range pkts {
		pkts[i] = link.Packet{Payload: views(bytes.Repeat([]byte{1}, 1000), 1+i%2), Dst: b.LocalAddr(), SrcPort: uint16(i), TOS: 4, TTL: 64}
	}
	defer func() {
		for i := range pkts {
			pkts[i].Payload.Release()
		}
	}()
	if _, err := a.WriteBatch(pkts); err != nil { // sets TOS and TTL
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { a.WriteBatch(pkts) }); n != 0 {
		t.Errorf("%.1f allocations per WriteBatch of %d packets", n, len(pkts))
	}
}
