package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// writerTestRecord is one record parsed back by hand from Writer output (the
// package's Reader may not exist when these tests are written).
type writerTestRecord struct {
	ts      time.Time
	origLen uint32
	data    []byte
}

// writerTestParse parses a classic little-endian microsecond pcap file.
func writerTestParse(t *testing.T, b []byte) (linkType, snapLen uint32, recs []writerTestRecord) {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("file is %d bytes, shorter than the 24-byte global header", len(b))
	}
	le := binary.LittleEndian
	if got := le.Uint32(b[0:]); got != 0xa1b2c3d4 {
		t.Fatalf("magic = %#x, want 0xa1b2c3d4 (little-endian, microseconds)", got)
	}
	if maj, minr := le.Uint16(b[4:]), le.Uint16(b[6:]); maj != 2 || minr != 4 {
		t.Fatalf("version = %d.%d, want 2.4", maj, minr)
	}
	if tz, sf := le.Uint32(b[8:]), le.Uint32(b[12:]); tz != 0 || sf != 0 {
		t.Fatalf("thiszone, sigfigs = %d, %d, want 0, 0", tz, sf)
	}
	snapLen, linkType = le.Uint32(b[16:]), le.Uint32(b[20:])
	b = b[24:]
	for len(b) > 0 {
		if len(b) < 16 {
			t.Fatalf("truncated record header: %d bytes left", len(b))
		}
		sec, usec, incl, orig := le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])
		if usec >= 1e6 {
			t.Fatalf("record %d: usec = %d", len(recs), usec)
		}
		if incl > orig || incl > snapLen {
			t.Fatalf("record %d: incl_len %d, orig_len %d, snaplen %d", len(recs), incl, orig, snapLen)
		}
		b = b[16:]
		if uint32(len(b)) < incl {
			t.Fatalf("record %d: %d data bytes, want %d", len(recs), len(b), incl)
		}
		recs = append(recs, writerTestRecord{
			ts:      time.Unix(int64(sec), int64(usec)*1000),
			origLen: orig,
			data:    append([]byte(nil), b[:incl]...),
		})
		b = b[incl:]
	}
	return linkType, snapLen, recs
}

func TestWriterRoundTrip(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, LinkTypeEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	ts1 := time.Unix(1700000000, 123456789) // sub-microsecond part is dropped
	ts2 := time.Unix(0, 0)
	if err := w.WritePacket(ts1, []byte{1, 2, 3}, nil, []byte{4, 5}); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(ts2); err != nil { // empty packet
		t.Fatal(err)
	}
	lt, snap, recs := writerTestParse(t, out.Bytes())
	if lt != LinkTypeEthernet || snap != 262144 || w.SnapLen() != 262144 {
		t.Fatalf("linktype, snaplen = %d, %d (SnapLen() %d), want 1, 262144", lt, snap, w.SnapLen())
	}
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	if want := time.Unix(1700000000, 123456000); !recs[0].ts.Equal(want) {
		t.Errorf("record 0 ts = %v, want %v", recs[0].ts, want)
	}
	if !bytes.Equal(recs[0].data, []byte{1, 2, 3, 4, 5}) || recs[0].origLen != 5 {
		t.Errorf("record 0 = %v (orig %d), want [1 2 3 4 5] (orig 5)", recs[0].data, recs[0].origLen)
	}
	if !recs[1].ts.Equal(ts2) || len(recs[1].data) != 0 || recs[1].origLen != 0 {
		t.Errorf("record 1 = %+v, want empty at Unix 0", recs[1])
	}
}

func TestWriterSnapLen(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, LinkTypeRaw, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, parts := range [][][]byte{
		{[]byte("ab"), []byte("cdef"), []byte("gh")}, // cut in the 2nd slice
		{[]byte("abcd"), []byte("ef")},               // cut exactly at a boundary
		{[]byte("xyz")},                              // shorter than snaplen
	} {
		if err := w.WritePacket(time.Unix(1, 0), parts...); err != nil {
			t.Fatal(err)
		}
	}
	lt, snap, recs := writerTestParse(t, out.Bytes())
	if lt != LinkTypeRaw || snap != 4 {
		t.Fatalf("linktype, snaplen = %d, %d, want 101, 4", lt, snap)
	}
	want := []struct {
		data string
		orig uint32
	}{{"abcd", 8}, {"abcd", 6}, {"xyz", 3}}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if string(r.data) != want[i].data || r.origLen != want[i].orig {
			t.Errorf("record %d = %q orig %d, want %q orig %d", i, r.data, r.origLen, want[i].data, want[i].orig)
		}
	}
}

func TestWriterTimestampRange(t *testing.T) {
	w, err := NewWriter(&bytes.Buffer{}, LinkTypeEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(time.Unix(-1, 0), []byte{1}); err == nil {
		t.Error("WritePacket with a pre-1970 timestamp: got nil error")
	}
	// A range error is not a write error: the writer keeps working.
	if err := w.WritePacket(time.Unix(5, 0), []byte{1}); err != nil {
		t.Errorf("WritePacket after a range error: %v", err)
	}
}

// writerTestFailing fails every Write after the first n.
type writerTestFailing struct{ n int }

var errWriterTest = errors.New("disk full")

func (f *writerTestFailing) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errWriterTest
	}
	f.n--
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	if _, err := NewWriter(&writerTestFailing{}, LinkTypeEthernet, 0); !errors.Is(err, errWriterTest) {
		t.Fatalf("NewWriter on a failing writer: err = %v, want %v", err, errWriterTest)
	}
	fw := &writerTestFailing{n: 2} // header + one record
	w, err := NewWriter(fw, LinkTypeEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(time.Unix(1, 0), []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(time.Unix(1, 0), []byte{1}); !errors.Is(err, errWriterTest) {
		t.Fatalf("err = %v, want %v", err, errWriterTest)
	}
	fw.n = 100 // the destination recovers, but the file is already corrupt
	if err := w.WritePacket(time.Unix(1, 0), []byte{1}); !errors.Is(err, errWriterTest) {
		t.Fatalf("err after a failed write = %v, want the sticky %v", err, errWriterTest)
	}
}

// writerTestCountingWriter records the size of every Write call.
type writerTestCountingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []int
}

func (c *writerTestCountingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, len(p))
	return c.buf.Write(p)
}

func TestWriterConcurrent(t *testing.T) {
	cw := &writerTestCountingWriter{}
	w, err := NewWriter(cw, LinkTypeRaw, 0)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, perG = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				// Each packet is g repeated, then i as two bytes: split in
				// three slices to exercise concatenation.
				body := bytes.Repeat([]byte{byte(g)}, 10+g)
				if err := w.WritePacket(time.Unix(int64(i), 0), body[:3], body[3:], []byte{byte(i >> 8), byte(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	_, _, recs := writerTestParse(t, cw.buf.Bytes())
	if len(recs) != goroutines*perG {
		t.Fatalf("got %d records, want %d", len(recs), goroutines*perG)
	}
	if len(cw.writes) != 1+goroutines*perG {
		t.Fatalf("got %d Write calls, want one for the header and one per packet (%d)", len(cw.writes), 1+goroutines*perG)
	}
	next := make([]int, goroutines) // per-goroutine order must be preserved
	for _, r := range recs {
		g := int(r.data[0])
		if g >= goroutines || len(r.data) != 12+g || !bytes.Equal(r.data[:10+g], bytes.Repeat([]byte{byte(g)}, 10+g)) {
			t.Fatalf("corrupt record %v", r.data)
		}
		i := int(r.data[10+g])<<8 | int(r.data[11+g])
		if i != next[g] || r.ts.Unix() != int64(i) {
			t.Fatalf("goroutine %d: got packet %d (ts %v), want %d", g, i, r.ts, next[g])
		}
		next[g]++
	}
}

// writerTestFrame builds an Ethernet/IPv4/UDP frame as an outbound
// PacketBuffer the way netstack does: payload plus pushed headers, with the
// headers in a separate view from the payload.
func writerTestFrame(payload []byte) *stack.PacketBuffer {
	const hdrLen = header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hdrLen + 10, // some slack that must not be written
		Payload:            buffer.MakeWithData(payload),
	})
	src, dst := tcpip.AddrFrom4([4]byte{192, 0, 2, 1}), tcpip.AddrFrom4([4]byte{192, 0, 2, 2})
	udp := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	udp.Encode(&header.UDPFields{SrcPort: 40000, DstPort: 6081, Length: uint16(header.UDPMinimumSize + len(payload))})
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(header.UDPMinimumSize+len(payload)))
	xsum = checksum.Checksum(payload, xsum)
	udp.SetChecksum(^udp.CalculateChecksum(xsum))
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + header.UDPMinimumSize + len(payload)),
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     src,
		DstAddr:     dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01"),
		DstAddr: tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02"),
		Type:    header.IPv4ProtocolNumber,
	})
	return pkt
}

func TestWriterPacketBuffer(t *testing.T) {
	payload := []byte("hello, geneve")
	pkt := writerTestFrame(payload)
	defer pkt.DecRef()
	want := pkt.ToView()
	defer want.Release()

	var out bytes.Buffer
	w, err := NewWriter(&out, LinkTypeEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	refs := pkt.ReadRefs()
	if err := w.WritePacketBuffer(time.Unix(2, 5000), pkt); err != nil {
		t.Fatal(err)
	}
	if got := pkt.ReadRefs(); got != refs {
		t.Errorf("refcount changed from %d to %d", refs, got)
	}
	_, _, recs := writerTestParse(t, out.Bytes())
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	if !bytes.Equal(recs[0].data, want.AsSlice()) || int(recs[0].origLen) != pkt.Size() {
		t.Fatalf("record = %x (orig %d)\nwant     %x (orig %d)", recs[0].data, recs[0].origLen, want.AsSlice(), pkt.Size())
	}
	if !recs[0].ts.Equal(time.Unix(2, 5000)) {
		t.Errorf("ts = %v", recs[0].ts)
	}

	// Truncation also works across views.
	out.Reset()
	w, err = NewWriter(&out, LinkTypeEthernet, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacketBuffer(time.Unix(2, 0), pkt); err != nil {
		t.Fatal(err)
	}
	_, _, recs = writerTestParse(t, out.Bytes())
	if len(recs) != 1 || !bytes.Equal(recs[0].data, want.AsSlice()[:20]) || int(recs[0].origLen) != pkt.Size() {
		t.Fatalf("truncated record = %+v", recs)
	}
}

func TestWriterNoAllocs(t *testing.T) {
	w, err := NewWriter(writerTestDiscard{}, LinkTypeEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	pkt := writerTestFrame(make([]byte, 1000))
	defer pkt.DecRef()
	a, b := make([]byte, 700), make([]byte, 800)
	ts := time.Unix(3, 0)
	if n := testing.AllocsPerRun(100, func() {
		if err := w.WritePacket(ts, a, b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("WritePacket: %v allocations per packet, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := w.WritePacketBuffer(ts, pkt); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("WritePacketBuffer: %v allocations per packet, want 0", n)
	}
}

type writerTestDiscard struct{}

func (writerTestDiscard) Write(p []byte) (int, error) { return len(p), nil }

// TestWriterTshark checks that tshark reads an Ethernet capture written by
// Writer and decodes the frames as IPv4/UDP.
func TestWriterTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not found on PATH; skipping the interoperability check (install wireshark-common/tshark to run it)")
	}
	path := filepath.Join(t.TempDir(), "eth.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, LinkTypeEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		pkt := writerTestFrame([]byte(fmt.Sprintf("packet %d", i)))
		err := w.WritePacketBuffer(time.Unix(1700000000+int64(i), 250000), pkt)
		pkt.DecRef()
		if err != nil {
			t.Fatal(err)
		}
	}
	// And one frame from plain slices.
	pkt := writerTestFrame([]byte("slices"))
	v := pkt.ToView()
	pkt.DecRef()
	err = w.WritePacket(time.Unix(1700000010, 0), v.AsSlice()[:14], v.AsSlice()[14:])
	v.Release()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-n", "-r", path, "-T", "fields",
		"-e", "frame.time_epoch", "-e", "eth.src", "-e", "eth.dst", "-e", "ip.src", "-e", "ip.dst",
		"-e", "udp.dstport", "-e", "ip.checksum.status",
		"-o", "ip.check_checksum:TRUE")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // keep tshark away from the real profile
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tshark failed: %v\n%s", err, outb)
	}
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(string(outb)), "\n") {
		if strings.Contains(l, "\t") { // skip warnings such as "running as root"
			lines = append(lines, l)
		}
	}
	if len(lines) != 4 {
		t.Fatalf("tshark printed %d frames, want 4:\n%s", len(lines), outb)
	}
	for i, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("line %d: %q", i, l)
		}
		if !strings.HasPrefix(f[0], "17000000") {
			t.Errorf("frame %d time %q", i, f[0])
		}
		if f[1] != "02:00:00:00:00:01" || f[2] != "02:00:00:00:00:02" || f[3] != "192.0.2.1" || f[4] != "192.0.2.2" || f[5] != "6081" {
			t.Errorf("frame %d decoded as %q", i, f)
		}
		if f[6] != "1" { // 0 = bad, 1 = good, 2 = unverified
			t.Errorf("frame %d IPv4 checksum status %q", i, f[6])
		}
	}
}
