//go:build linux

package tuntap

import (
	"errors"
	"io"
	"unsafe"

	"github.com/gnv-project/gnv/internal/csum"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// readLoop moves frames from the device to the endpoint until the device
// is closed or fails.
func (d *Device) readLoop() {
	s := &d.sys
	defer s.wg.Done()
	for {
		err := s.rc.Read(s.readFn)
		if s.batch.Len() > 0 {
			d.ep.WritePackets(s.batch)
			s.batch.Reset() // the endpoint borrowed them
		}
		s.batchDone()
		if err != nil {
			return // closed
		}
		if e := s.readErr; e != nil {
			s.readErr = nil
			d.stats.readErrors.Add(1)
			if errors.Is(e, unix.EBADFD) || errors.Is(e, unix.EBADF) || errors.Is(e, unix.EIO) || e == io.EOF {
				return // the interface was deleted under us
			}
		}
	}
}

// readFrames is the syscall.RawConn read callback: it reads frames until
// the batch is full or the device has nothing more, and reports false
// (wait for readiness) only when it read nothing.
func (d *Device) readFrames(fd uintptr) bool {
	s := &d.sys
	for s.batch.Len() < devReadBatch && s.rbigNext < devReadBigViews {
		// Non-blocking descriptor: RawSyscall (see mmsg.SendAll).
		r, _, errno := unix.RawSyscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&s.riov[s.riovFirst])), uintptr(len(s.riov)-s.riovFirst))
		n := int(r)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return s.batch.Len() > 0
		case errno != 0:
			s.readErr = errno
			return true
		case n == 0:
			s.readErr = io.EOF
			return true
		}
		d.readFrame(n)
	}
	return true
}

// newReadSmall replaces the small receive view handed over with a frame.
// It holds an ordinary frame and the headers of a super-frame: packets are
// read straight into the memory they are sent from.
func (s *devSys) newReadSmall() {
	s.rsmall = buffer.NewViewSize(s.rcap)
	s.riov[1].Base = &s.rsmall.AsSlice()[0]
	s.riov[1].SetLen(s.rcap)
}

// nextReadBig points the last iovec at the next view of the big ring,
// which holds the rest of a super-frame. The ring's views are reused: the
// packets made of them are released when the batch is written (WritePackets
// borrows, and the underlays send before returning), so a view is normally
// exclusive again by the time it comes round, and a new one would only
// cost a clear of 64 KiB. Should a packet still hold the memory (queued
// for neighbour resolution, say), the view's chunk is copied (View.WriteAt
// copies a shared chunk) and the packet keeps the old one.
func (s *devSys) nextReadBig() {
	if s.rbigNext == len(s.rbigs) {
		s.rbigs = append(s.rbigs, buffer.NewViewSize(devReadBigView))
	}
	v := s.rbigs[s.rbigNext]
	_, _ = v.WriteAt(nil, 0) // exclusive from here on
	s.riov[2].Base = &v.AsSlice()[0]
	s.riov[2].SetLen(devReadBigView)
}

// batchDone starts the big ring over once a batch is written.
func (s *devSys) batchDone() {
	if s.rbigNext > 0 {
		s.rbigNext = 0
		s.nextReadBig()
	}
}

// releaseRead frees the receive views (the read goroutine has stopped).
func (s *devSys) releaseRead() {
	if s.rsmall != nil {
		s.rsmall.Release()
		s.rsmall = nil
	}
	for _, v := range s.rbigs {
		v.Release()
	}
	s.rbigs = nil
	s.riov[1], s.riov[2] = unix.Iovec{}, unix.Iovec{}
}

// takeFrame hands over the receive views holding the n-byte frame just
// read, as a buffer of its first size bytes (dropping Ethernet padding),
// and puts fresh views in their place.
func (s *devSys) takeFrame(n, size int) buffer.Buffer {
	var buf buffer.Buffer
	if n <= s.rcap {
		s.rsmall.CapLength(size)
		buf = buffer.MakeWithView(s.rsmall)
		s.newReadSmall()
		return buf
	}
	buf = buffer.MakeWithView(s.rsmall)
	big := s.rbigs[s.rbigNext].Clone()
	big.CapLength(n - s.rcap)
	_ = buf.Append(big) // the small view is full: appended as it is
	buf.Truncate(int64(size))
	s.newReadSmall()
	s.rbigNext++
	if s.rbigNext < devReadBigViews {
		s.nextReadBig()
	}
	return buf
}

// flatFrame returns the n-byte frame just read as one slice: the small
// view, or a copy of both views for a frame that spans them (only UDP
// super-frames, which are split here, need that).
func (s *devSys) flatFrame(n int) []byte {
	if n <= s.rcap {
		return s.rsmall.AsSlice()[:n]
	}
	s.rflat = append(s.rflat[:0], s.rsmall.AsSlice()...)
	s.rflat = append(s.rflat, s.rbigs[s.rbigNext].AsSlice()[:n-s.rcap]...)
	return s.rflat
}

// readFrame turns the frame just read (got bytes with the virtio_net_hdr)
// into outbound packets in the batch.
func (d *Device) readFrame(got int) {
	s := &d.sys
	st := &d.stats
	st.readFrames.Add(1)
	var vh vnet.Hdr
	n := got
	if d.offloads.Has(link.OffloadVnetHdr) {
		if !vh.Decode(s.rhdr[:min(got, vnet.HdrLen)]) {
			st.readDrops.Add(1)
			return
		}
		n -= vnet.HdrLen
	}
	st.readBytes.Add(uint64(n))
	// b holds the headers (and all of an ordinary frame).
	b := s.rsmall.AsSlice()[:min(n, s.rcap)]
	f, ok := parseRxFrame(b, n, d.opts.Mode == ModeTAP)
	if !ok {
		st.readDrops.Add(1)
		return
	}
	ip, isIP, size := f.ip, f.isIP, f.size
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
		if vh.Flags&vnet.FNeedsCsum != 0 {
			if n > s.rcap {
				// Larger than the MTU the views were sized for (it
				// was raised under us): finished in a copy.
				fr := s.flatFrame(n)[:size]
				if !frame.FinishPartial(fr, int(vh.CsumStart), int(vh.CsumOffset)) {
					st.readDrops.Add(1)
					return
				}
				st.readChecksums.Add(1)
				d.push(buffer.MakeWithData(fr), &f, stack.GSO{})
				return
			}
			if !frame.FinishPartial(b[:size], int(vh.CsumStart), int(vh.CsumOffset)) {
				st.readDrops.Add(1)
				return
			}
			st.readChecksums.Add(1)
		}
		d.push(s.takeFrame(n, size), &f, stack.GSO{})
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		v := 4
		typ := stack.GSOTCPv4
		if vh.GSOType&^vnet.GSOECN == vnet.GSOTCPv6 {
			v, typ = 6, stack.GSOTCPv6
		}
		// hdr_len is not trusted (on the forwarding path the kernel
		// reports the whole first fragment); the parsed headers are.
		if !isIP || ip.Version != v || ip.Fragment || ip.Proto != frame.ProtoTCP || ip.L4Len == 0 || vh.GSOSize == 0 {
			st.readDrops.Add(1)
			return
		}
		st.readTSO.Add(1)
		d.push(s.takeFrame(n, size), &f, stack.GSO{
			Type:       typ,
			NeedsCsum:  true,
			CsumOffset: link.TCPChecksumOffset,
			MSS:        vh.GSOSize,
			L3HdrLen:   uint16(ip.HdrLen),
			MaxSize:    1 << 16,
		})
	case vnet.GSOUDPL4:
		if !isIP || ip.Fragment || ip.Proto != frame.ProtoUDP || ip.L4Len == 0 || vh.GSOSize == 0 {
			st.readDrops.Add(1)
			return
		}
		st.readUSO.Add(1)
		d.splitUDP(s.flatFrame(n)[:size], &f, int(vh.GSOSize))
	default:
		st.readDrops.Add(1)
	}
}

// push makes buf, the frame f describes, a packet and appends it to the
// batch.
func (d *Device) push(buf buffer.Buffer, f *rxFrame, gso stack.GSO) {
	d.sys.batch.PushBack(newRxPacket(buf, f, gso))
	d.stats.readPackets.Add(1)
}

// splitUDP splits a UDP super-packet (USO) into datagrams of gsoSize bytes
// of payload, each with complete headers and checksum: the endpoint only
// segments TCP.
func (d *Device) splitUDP(b []byte, f *rxFrame, gsoSize int) {
	linkLen, ip := f.linkLen, f.ip
	hl := linkLen + ip.HdrLen + ip.L4Len
	payload := b[hl:]
	for idx, off := 0, 0; off < len(payload) || idx == 0; idx, off = idx+1, off+gsoSize {
		n := min(gsoSize, len(payload)-off)
		v := buffer.NewViewSize(hl + n)
		seg := v.AsSlice()
		copy(seg, b[:hl])
		copy(seg[hl:], payload[off:off+n])
		segment(seg[:hl], linkLen, ip.HdrLen, frame.ProtoUDP, idx, off, n, off+n >= len(payload), csum.Checksum(seg[hl:], 0))
		d.push(buffer.MakeWithView(v), f, stack.GSO{})
	}
}
