package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Classic libpcap file format constants used by Writer (microsecond
// resolution). The names carry a writer prefix so that they cannot clash with
// the reader's declarations in this package.
const (
	writerMagicMicros     = 0xa1b2c3d4
	writerVersionMajor    = 2
	writerVersionMinor    = 4
	writerFileHeaderLen   = 24
	writerRecordHeaderLen = 16
	writerDefaultSnapLen  = 262144 // tcpdump's default snapshot length
)

// Writer writes a classic little-endian, microsecond-resolution libpcap
// capture file. It is safe for concurrent use: each packet is written to the
// underlying io.Writer with exactly one Write call while the Writer's mutex is
// held, so records never interleave.
//
// Writer does not buffer; wrap the destination in a bufio.Writer (and flush
// it yourself) if the destination is slow. After a write to the underlying
// io.Writer fails, the file is truncated mid-record, so every later call
// returns that first error.
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	snapLen uint32
	buf     []byte // record header + captured bytes, reused under mu
	err     error  // sticky write error
}

// NewWriter writes the pcap global header for linkType (for example
// LinkTypeEthernet) to w and returns a Writer for the packet records.
// Packets longer than snapLen bytes are truncated to snapLen in the file (the
// record still carries the original length); snapLen 0 means 262144, tcpdump's default.
func NewWriter(w io.Writer, linkType uint32, snapLen uint32) (*Writer, error) {
	if w == nil {
		return nil, errors.New("pcap: NewWriter: nil io.Writer")
	}
	if snapLen == 0 {
		snapLen = writerDefaultSnapLen
	}
	var hdr [writerFileHeaderLen]byte
	binary.LittleEndian.PutUint32(hdr[0:], writerMagicMicros)
	binary.LittleEndian.PutUint16(hdr[4:], writerVersionMajor)
	binary.LittleEndian.PutUint16(hdr[6:], writerVersionMinor)
	// thiszone (int32) and sigfigs (uint32) stay 0.
	binary.LittleEndian.PutUint32(hdr[16:], snapLen)
	binary.LittleEndian.PutUint32(hdr[20:], linkType)
	if _, err := w.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("pcap: writing file header: %w", err)
	}
	// Start with room for a typical Ethernet frame; grows up to
	// writerRecordHeaderLen+snapLen on demand and is then reused.
	initial := writerRecordHeaderLen + min(1518, int(snapLen))
	return &Writer{
		w:       w,
		snapLen: snapLen,
		buf:     make([]byte, 0, initial),
	}, nil
}

// SnapLen returns the snapshot length written in the file header.
func (w *Writer) SnapLen() uint32 { return w.snapLen }

// WritePacket writes one packet record whose contents are the concatenation
// of data, captured at ts. It makes one Write call on the underlying writer
// and does not allocate once its internal buffer has grown to the largest
// packet seen.
func (w *Writer) WritePacket(ts time.Time, data ...[]byte) error {
	total := 0
	for _, d := range data {
		total += len(d)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.beginLocked(ts, total); err != nil {
		return err
	}
	for _, d := range data {
		if !w.appendLocked(d) {
			break
		}
	}
	return w.flushLocked()
}

// WritePacketBuffer writes pkt, from its first pushed header (normally the
// link header) to the end of its payload, as one packet record captured at
// ts. It reads pkt's views in place: it neither copies nor clones the
// PacketBuffer and does not change its reference count. The caller must hold
// a reference to pkt for the duration of the call.
func (w *Writer) WritePacketBuffer(ts time.Time, pkt *stack.PacketBuffer) error {
	if pkt == nil {
		return errors.New("pcap: WritePacketBuffer: nil packet")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.beginLocked(ts, pkt.Size()); err != nil {
		return err
	}
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		s = s[off:]
		off = 0
		if !w.appendLocked(s) {
			break
		}
	}
	return w.flushLocked()
}

// beginLocked resets the record buffer and encodes the record header for a
// packet of origLen bytes.
func (w *Writer) beginLocked(ts time.Time, origLen int) error {
	if w.err != nil {
		return w.err
	}
	sec := ts.Unix()
	if sec < 0 || sec > math.MaxUint32 {
		return fmt.Errorf("pcap: timestamp %v outside the classic pcap range (1970..2106)", ts)
	}
	if origLen < 0 || uint64(origLen) > math.MaxUint32 {
		return fmt.Errorf("pcap: packet length %d too large", origLen)
	}
	incl := min(uint32(origLen), w.snapLen)
	if need := writerRecordHeaderLen + int(incl); cap(w.buf) < need {
		w.buf = make([]byte, 0, need)
	}
	b := w.buf[:writerRecordHeaderLen]
	binary.LittleEndian.PutUint32(b[0:], uint32(sec))
	binary.LittleEndian.PutUint32(b[4:], uint32(ts.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(b[8:], incl)
	binary.LittleEndian.PutUint32(b[12:], uint32(origLen))
	w.buf = b
	return nil
}

// appendLocked appends as much of s as the snapshot length allows and
// reports whether there is room for more.
func (w *Writer) appendLocked(s []byte) bool {
	room := writerRecordHeaderLen + int(w.snapLen) - len(w.buf)
	if len(s) > room {
		s = s[:room]
	}
	w.buf = append(w.buf, s...)
	return len(s) < room
}

func (w *Writer) flushLocked() error {
	n, err := w.w.Write(w.buf)
	if err == nil && n != len(w.buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("pcap: writing packet record: %w", err)
		return w.err
	}
	return nil
}
