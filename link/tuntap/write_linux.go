//go:build linux

package tuntap

import (
	"encoding/binary"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// writePacket writes one packet the endpoint delivered to the device. It
// runs on the endpoint's receive goroutine; pkt is borrowed.
func (d *Device) writePacket(pkt *stack.PacketBuffer) {
	s := &d.sys
	st := &d.stats
	s.wmu.Lock()
	defer s.wmu.Unlock()

	// The packet from its link header (consumed by the endpoint, still in
	// the buffer) onwards, as the views that hold it.
	vl, off := pkt.AsViewList()
	s.wslices = s.wslices[:0].AppendViews(vl, off)
	total := s.wslices.Size()
	linkLen := 0
	if d.opts.Mode == ModeTAP {
		linkLen = header.EthernetMinimumSize
	}
	if total <= linkLen {
		st.writeDrops.Add(1)
		return
	}
	hasVnet := d.offloads.Has(link.OffloadVnetHdr)
	h := s.whdr[vnet.HdrLen:]
	hn := s.wslices.CopyOut(h)
	var vh vnet.Hdr
	if pkt.RXChecksumValidated {
		ip, isIP := parseTxIP(h[:hn], linkLen, total)
		switch {
		case !isIP || ip.Fragment:
		case ip.Proto == frame.ProtoTCP && ip.L4Len > 0 && linkLen+ip.TotalLen == total:
			d.writeTCP(pkt, linkLen, ip, total)
			return
		case ip.Version == 6 && ip.HdrLen != 40:
			// The endpoint does not look past IPv6 extension headers.
		case ip.Proto == frame.ProtoUDP && ip.L4Len == 8,
			ip.Version == 4 && ip.Proto == frame.ProtoICMP && ip.TotalLen-ip.HdrLen >= 4,
			ip.Version == 6 && ip.Proto == frame.ProtoICMPv6 && ip.TotalLen-ip.HdrLen >= 4:
			// The endpoint validated these checksums (that is what its
			// receive checksum offload promises); spare the kernel.
			vh.Flags = vnet.FDataValid
		}
	}
	s.wiov = s.wiov[:0]
	if hasVnet {
		vh.Encode(s.whdr)
		s.wiov = append(s.wiov, s.whdr[:vnet.HdrLen])
	}
	s.wiov = append(s.wiov, s.wslices...)
	d.writev()
}

// writeTCP writes a TCP packet whose checksums the endpoint validated and
// which GRO may have coalesced: its IPv4 header checksum and its TCP
// checksum are stale then, and it may be larger than the MTU. With a vnet
// header it goes out as one packet with a partial checksum (and GSO when
// larger than one segment); without one it is checksummed, and split into
// segments, in software.
func (d *Device) writeTCP(pkt *stack.PacketBuffer, linkLen int, ip frame.IP, total int) {
	s := &d.sys
	hl := linkLen + ip.HdrLen + ip.L4Len
	h := s.whdr[vnet.HdrLen:]
	hdr := h[:hl]
	ipb := hdr[linkLen : linkLen+ip.HdrLen]
	tcp := hdr[linkLen+ip.HdrLen:]
	payLen := total - hl
	mtu := int(d.mtu.Load())
	segSize := mtu - ip.HdrLen - ip.L4Len // what gso_size must not exceed
	if m := int(pkt.GSOOptions.MSS); m > 0 && m < segSize {
		segSize = m // the sender's segment size, known for a tunnel job
	}

	if d.offloads.Has(link.OffloadVnetHdr) {
		if ip.Version == 4 {
			link.SetIPv4Checksum(ipb)
		}
		binary.BigEndian.PutUint16(tcp[link.TCPChecksumOffset:], link.PseudoHeaderSum(ipb, frame.ProtoTCP, ip.TotalLen-ip.HdrLen))
		vh := d.tcpVnetHdr(hdr, linkLen, ip, payLen, segSize)
		vh.Encode(s.whdr)
		s.wiov = append(s.wiov[:0], s.whdr[:vnet.HdrLen+hl])
		s.wiov = s.wslices.AppendRange(s.wiov, hl, payLen)
		d.writev()
		return
	}
	if ip.TotalLen <= mtu || segSize <= 0 {
		segment(hdr, linkLen, ip.HdrLen, frame.ProtoTCP, 0, 0, payLen, true, s.wslices.Checksum(hl, payLen))
		s.wiov = append(s.wiov[:0], hdr)
		s.wiov = s.wslices.AppendRange(s.wiov, hl, payLen)
		d.writev()
		return
	}
	d.stats.writtenSplit.Add(1)
	seg := s.wseg[:hl]
	for idx, off := 0, 0; off < payLen; idx, off = idx+1, off+segSize {
		n := min(segSize, payLen-off)
		copy(seg, hdr)
		segment(seg, linkLen, ip.HdrLen, frame.ProtoTCP, idx, off, n, off+n >= payLen, s.wslices.Checksum(hl+off, n))
		s.wiov = append(s.wiov[:0], seg)
		s.wiov = s.wslices.AppendRange(s.wiov, hl+off, n)
		d.writev()
	}
}

// writeSegments writes a TCP packet given as its headers and payload
// slices (see link.SegmentWriter) as one GSO frame, or reports false.
func (d *Device) writeSegments(hdr []byte, payloads [][]byte, mss int) bool {
	linkLen := 0
	if d.opts.Mode == ModeTAP {
		linkLen = header.EthernetMinimumSize
	}
	if len(hdr) > devHdrScratch || len(hdr) <= linkLen || len(payloads) >= devMaxIovecs {
		return false
	}
	total := len(hdr)
	for _, p := range payloads {
		total += len(p)
	}
	ip, isIP := parseTxIP(hdr, linkLen, total)
	if !isIP || ip.Fragment || ip.Proto != frame.ProtoTCP || ip.L4Len == 0 ||
		linkLen+ip.TotalLen != total || linkLen+ip.HdrLen+ip.L4Len != len(hdr) {
		return false
	}
	if mss <= 0 || mss > int(d.mtu.Load())-ip.HdrLen-ip.L4Len {
		return false
	}
	s := &d.sys
	s.wmu.Lock()
	defer s.wmu.Unlock()
	vh := d.tcpVnetHdr(hdr, linkLen, ip, total-len(hdr), mss)
	vh.Encode(s.whdr)
	n := copy(s.whdr[vnet.HdrLen:], hdr)
	s.wiov = append(append(s.wiov[:0], s.whdr[:vnet.HdrLen+n]), payloads...)
	d.writev()
	return true
}

// tcpVnetHdr returns the virtio-net header of a TCP packet with a partial
// checksum whose headers are hdr (link, IP and TCP) and which carries
// payLen payload bytes: a segmentation job of segSize segments (counted
// in WrittenGSO) when the payload exceeds one.
func (d *Device) tcpVnetHdr(hdr []byte, linkLen int, ip frame.IP, payLen, segSize int) vnet.Hdr {
	vh := vnet.Hdr{
		Flags:      vnet.FNeedsCsum,
		HdrLen:     uint16(len(hdr)),
		CsumStart:  uint16(linkLen + ip.HdrLen),
		CsumOffset: link.TCPChecksumOffset,
	}
	if segSize > 0 && payLen > segSize {
		vh.GSOType = vnet.GSOTCPv4
		if ip.Version == 6 {
			vh.GSOType = vnet.GSOTCPv6
		}
		if hdr[linkLen+ip.HdrLen+13]&byte(header.TCPFlagCwr) != 0 {
			vh.GSOType |= vnet.GSOECN
		}
		vh.GSOSize = uint16(segSize)
		d.stats.writtenGSO.Add(1)
	}
	return vh
}

// writev writes s.wiov to the device as one packet.
func (d *Device) writev() {
	s := &d.sys
	st := &d.stats
	n := 0
	s.iovecs = s.iovecs[:0]
	for _, b := range s.wiov {
		if len(b) == 0 {
			continue
		}
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		s.iovecs = append(s.iovecs, iov)
		n += len(b)
	}
	if len(s.iovecs) > devMaxIovecs {
		// Pathologically fragmented: flatten.
		if cap(s.wflat) < n {
			s.wflat = make([]byte, n)
		}
		flat := s.wflat[:0]
		for _, b := range s.wiov {
			flat = append(flat, b...)
		}
		s.iovecs = s.iovecs[:1]
		s.iovecs[0] = unix.Iovec{Base: &flat[0]}
		s.iovecs[0].SetLen(len(flat))
	}
	s.werr = nil
	err := s.rc.Write(s.writeFn)
	for i := range s.iovecs {
		s.iovecs[i] = unix.Iovec{} // keep no packet memory alive
	}
	clear(s.wiov)
	switch {
	case err != nil:
		st.writeDrops.Add(1) // closed
	case s.werr != nil:
		st.writeErrors.Add(1)
	default:
		if d.offloads.Has(link.OffloadVnetHdr) {
			n -= vnet.HdrLen
		}
		st.writtenPackets.Add(1)
		st.writtenBytes.Add(uint64(n))
	}
}

// writeIovecs is the syscall.RawConn write callback.
func (d *Device) writeIovecs(fd uintptr) bool {
	s := &d.sys
	for {
		// Non-blocking descriptor: RawSyscall (see mmsg.SendAll).
		_, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iovecs[0])), uintptr(len(s.iovecs)))
		switch e {
		case 0:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.werr = e
		return true
	}
}

// segment rewrites hdr, a copy of the link, IP and transport headers of a
// super-packet, into those of its segment idx (see link.SegmentHeader) and
// finishes its checksum, given the checksum of its n payload bytes.
func segment(hdr []byte, linkLen, ipLen int, proto uint8, idx, off, n int, last bool, paySum uint16) {
	l4 := linkLen + ipLen
	pseudo := link.SegmentHeader(hdr, linkLen, l4, proto, idx, off, n, last)
	link.FinishChecksum(hdr[l4:], proto, pseudo, paySum)
}
