package tuntap

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The water backend (BackendWater). github.com/songgao/water opens the
// device and hands back an io.ReadWriteCloser that moves one plain packet
// (TUN) or frame (TAP) per call; the platform part (water_GOOS.go) opens
// it, configures MTU and addresses with the system's tools and undoes that
// on Close. This file is the rest, the same on every system: a goroutine
// that reads packets and writes them to the endpoint, and the write path
// for the packets the endpoint delivers, which checksums and splits in
// software what the endpoint's GRO coalesced, as the ioctl backend does
// without a vnet header.

// waterReadBufSize holds the largest frame a device hands over: a 64 KiB
// IP packet behind an Ethernet header with a VLAN tag.
const waterReadBufSize = 1<<16 + 64

// waterDev is the water backend's part of a Device.
type waterDev struct {
	rw   io.ReadWriteCloser // the device, from water.New
	host waterHost          // the platform's configuration of it
	wg   sync.WaitGroup

	// Read side: the read goroutine only.
	rbuf  []byte
	batch stack.PacketBufferList

	// Write side: under wmu.
	wmu     sync.Mutex
	wslices link.Slices
	whdr    []byte // headers of the packet, patched
	wbuf    []byte // the packet as written
}

// waterHost is the platform's side of a water device: what water leaves
// to the system's tools.
type waterHost interface {
	// setMTU sets the interface MTU.
	setMTU(mtu uint32) error
	// close undoes, after the device is closed, the configuration that
	// outlives it (addresses on a device that stays).
	close() error
}

// newWaterDevice returns the Device for rw, a device of the given name
// and MAC (TAP only) that the platform part opened and configured with
// host, of MTU mtu; created says whether it goes away when rw is closed.
func newWaterDevice(opts Options, rw io.ReadWriteCloser, host waterHost, name string, mac net.HardwareAddr, mtu uint32, created bool) *Device {
	d := &Device{opts: opts, name: name, created: created, water: &waterDev{rw: rw, host: host}}
	if opts.Mode == ModeTAP {
		d.mac = mac
	}
	d.mtu.Store(mtu)
	return d
}

// waterSetMTU sets the interface MTU (called by Attach with d.mu held).
func (d *Device) waterSetMTU(mtu uint32) error {
	if mtu == d.mtu.Load() {
		return nil
	}
	if err := d.water.host.setMTU(mtu); err != nil {
		return err
	}
	d.mtu.Store(mtu)
	return nil
}

// waterStart allocates the buffers and starts the read goroutine.
func (d *Device) waterStart() {
	w := d.water
	w.rbuf = make([]byte, waterReadBufSize)
	w.whdr = make([]byte, 512)
	w.wg.Add(1)
	go d.waterReadLoop()
}

// waterClose closes the device, waits for the read goroutine and undoes
// the platform's configuration.
func (d *Device) waterClose() error {
	w := d.water
	w.wmu.Lock() // no write in flight
	err := w.rw.Close()
	w.wmu.Unlock()
	w.wg.Wait()
	return errors.Join(err, w.host.close())
}

// waterReadLoop moves packets from the device to the endpoint, one at a
// time (water reads one per call and cannot say whether more are
// waiting), until the device is closed or fails.
func (d *Device) waterReadLoop() {
	w := d.water
	defer w.wg.Done()
	for {
		n, err := w.rw.Read(w.rbuf)
		if err != nil {
			if d.closed.Load() {
				return
			}
			d.stats.readErrors.Add(1)
			if waterGone(err) {
				return
			}
			time.Sleep(10 * time.Millisecond) // never spin on a failing device
			continue
		}
		if n <= 0 || n > len(w.rbuf) {
			continue
		}
		d.waterReadFrame(w.rbuf[:n])
		if w.batch.Len() > 0 {
			d.ep.WritePackets(w.batch)
			w.batch.Reset() // the endpoint borrowed them
		}
	}
}

// waterGone reports whether a read error means the device is gone.
func waterGone(err error) bool {
	return err == io.EOF || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADF) || errors.Is(err, syscall.EIO) || waterDeleted(err)
}

// waterReadFrame turns one plain frame (TAP) or packet (TUN) read from the
// device into an outbound packet in the batch.
func (d *Device) waterReadFrame(b []byte) {
	st := &d.stats
	st.readFrames.Add(1)
	st.readBytes.Add(uint64(len(b)))
	f, ok := parseRxFrame(b, len(b), d.opts.Mode == ModeTAP)
	if !ok {
		st.readDrops.Add(1)
		return
	}
	b = b[:f.size]
	var buf buffer.Buffer
	if len(b) <= buffer.MaxChunkSize {
		buf = buffer.MakeWithView(buffer.NewViewWithData(b))
	} else {
		buf = buffer.MakeWithView(buffer.NewViewWithData(b[:buffer.MaxChunkSize]))
		_ = buf.Append(buffer.NewViewWithData(b[buffer.MaxChunkSize:]))
	}
	d.water.batch.PushBack(newRxPacket(buf, &f, stack.GSO{}))
	st.readPackets.Add(1)
}

// waterWritePacket writes one packet the endpoint delivered to the device.
// It runs on the endpoint's receive goroutine; pkt is borrowed. A TCP
// packet whose checksums the endpoint validated may have been coalesced by
// GRO (stale checksums, longer than the MTU): it is checksummed, and split
// into segments, here. Everything else is written as it came.
func (d *Device) waterWritePacket(pkt *stack.PacketBuffer) {
	w := d.water
	w.wmu.Lock()
	defer w.wmu.Unlock()
	vl, off := pkt.AsViewList()
	w.wslices = w.wslices[:0].AppendViews(vl, off)
	total := w.wslices.Size()
	linkLen := 0
	if d.opts.Mode == ModeTAP {
		linkLen = header.EthernetMinimumSize
	}
	if total <= linkLen {
		d.stats.writeDrops.Add(1)
		return
	}
	if pkt.RXChecksumValidated {
		h := w.whdr[:w.wslices.CopyOut(w.whdr)]
		ip, isIP := parseTxIP(h, linkLen, total)
		if isIP && !ip.Fragment && ip.Proto == frame.ProtoTCP && ip.L4Len > 0 && linkLen+ip.TotalLen == total {
			d.waterWriteTCP(pkt, h[:linkLen+ip.HdrLen+ip.L4Len], linkLen, ip, total)
			return
		}
	}
	w.wbuf = w.wbuf[:0]
	w.wslices.Each(0, total, func(b []byte) { w.wbuf = append(w.wbuf, b...) })
	d.waterWrite(w.wbuf)
}

// waterWriteTCP writes a validated TCP packet, hdr being a copy of its
// headers, as segments that fit the MTU, each with fresh checksums.
func (d *Device) waterWriteTCP(pkt *stack.PacketBuffer, hdr []byte, linkLen int, ip frame.IP, total int) {
	w := d.water
	hl := len(hdr)
	l4 := linkLen + ip.HdrLen
	payLen := total - hl
	segSize := payLen // one packet, unless it is larger than the MTU
	if ip.TotalLen > int(d.mtu.Load()) {
		segSize = int(d.mtu.Load()) - ip.HdrLen - ip.L4Len
		if m := int(pkt.GSOOptions.MSS); m > 0 && m < segSize {
			segSize = m // the sender's segment size, known for a tunnel job
		}
		if segSize <= 0 {
			d.stats.writeDrops.Add(1)
			return
		}
		d.stats.writtenSplit.Add(1)
	}
	for idx, off := 0, 0; idx == 0 || off < payLen; idx, off = idx+1, off+segSize {
		n := min(segSize, payLen-off)
		w.wbuf = append(w.wbuf[:0], hdr...)
		seg := w.wbuf[:hl]
		pseudo := link.SegmentHeader(seg, linkLen, l4, frame.ProtoTCP, idx, off, n, off+n >= payLen)
		link.FinishChecksum(seg[l4:], frame.ProtoTCP, pseudo, w.wslices.Checksum(hl+off, n))
		w.wslices.Each(hl+off, n, func(b []byte) { w.wbuf = append(w.wbuf, b...) })
		d.waterWrite(w.wbuf)
	}
}

// waterWrite writes one packet to the device and counts it.
func (d *Device) waterWrite(b []byte) {
	st := &d.stats
	if _, err := d.water.rw.Write(b); err != nil {
		if d.closed.Load() {
			st.writeDrops.Add(1)
		} else {
			st.writeErrors.Add(1)
		}
		return
	}
	st.writtenPackets.Add(1)
	st.writtenBytes.Add(uint64(len(b)))
}

// deviceLabel returns "TUN device NAME", or "TUN device" for a device the
// system is to name.
func deviceLabel(kind, name string) string {
	if name == "" {
		return kind + " device"
	}
	return kind + " device " + name
}

// noDriverError is the error of New when the system lacks the driver a
// device needs (the Windows analogue of a missing /dev/net/tun): it
// matches ErrNoTUN, and says what to install instead of repeating
// ErrNoTUN's Linux advice.
type noDriverError struct {
	msg string
	err error
}

func (e *noDriverError) Error() string { return e.msg + ": " + e.err.Error() }

// Unwrap returns the underlying error.
func (e *noDriverError) Unwrap() error { return e.err }

// Is matches ErrNoTUN.
func (e *noDriverError) Is(target error) bool { return target == ErrNoTUN }
