//go:build linux

package tuntap

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
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
	for s.batch.Len() < devReadBatch {
		n, err := unix.Read(int(fd), s.rbuf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return s.batch.Len() > 0
		case err != nil:
			s.readErr = err
			return true
		case n == 0:
			s.readErr = io.EOF
			return true
		}
		d.readFrame(s.rbuf[:n])
	}
	return true
}

// readFrame turns one frame read from the device into outbound packets in
// the batch.
func (d *Device) readFrame(b []byte) {
	st := &d.stats
	st.readFrames.Add(1)
	var vh vnet.Hdr
	if d.offloads.Has(link.OffloadVnetHdr) {
		if !vh.Decode(b) {
			st.readDrops.Add(1)
			return
		}
		b = b[vnet.HdrLen:]
	}
	st.readBytes.Add(uint64(len(b)))
	linkLen := 0
	var proto tcpip.NetworkProtocolNumber
	if d.opts.Mode == ModeTAP {
		if len(b) < header.EthernetMinimumSize {
			st.readDrops.Add(1)
			return
		}
		linkLen = header.EthernetMinimumSize
		et := binary.BigEndian.Uint16(b[12:14])
		if et == 0x8100 && len(b) >= linkLen+4 { // one 802.1Q tag
			linkLen += 4
			et = binary.BigEndian.Uint16(b[16:18])
		}
		proto = tcpip.NetworkProtocolNumber(et)
	} else {
		switch {
		case len(b) > 0 && b[0]>>4 == 4:
			proto = header.IPv4ProtocolNumber
		case len(b) > 0 && b[0]>>4 == 6:
			proto = header.IPv6ProtocolNumber
		default:
			st.readDrops.Add(1)
			return
		}
	}
	var ip frame.IP
	isIP := false
	if proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber {
		ip, isIP = frame.ParseIP(b[linkLen:], len(b)-linkLen)
		if isIP && (ip.Version == 4) != (proto == header.IPv4ProtocolNumber) {
			isIP = false
		}
		if isIP {
			b = b[:linkLen+ip.TotalLen] // drop Ethernet padding
		}
	}
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
		if vh.Flags&vnet.FNeedsCsum != 0 {
			if !frame.FinishPartial(b, int(vh.CsumStart), int(vh.CsumOffset)) {
				st.readDrops.Add(1)
				return
			}
			st.readChecksums.Add(1)
		}
		d.queue(b, linkLen, proto, ip, isIP, stack.GSO{})
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
		d.queue(b, linkLen, proto, ip, true, stack.GSO{
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
		d.splitUDP(b, linkLen, proto, ip, int(vh.GSOSize))
	default:
		st.readDrops.Add(1)
	}
}

// queue copies one packet into pooled gVisor memory, marks its headers and
// appends it to the batch.
func (d *Device) queue(b []byte, linkLen int, proto tcpip.NetworkProtocolNumber, ip frame.IP, isIP bool, gso stack.GSO) {
	var buf buffer.Buffer
	if len(b) <= buffer.MaxChunkSize {
		buf = buffer.MakeWithView(buffer.NewViewWithData(b))
	} else {
		// Pooled chunks stop at 64 KiB; a full-size TAP super-packet is a
		// few bytes more.
		buf = buffer.MakeWithView(buffer.NewViewWithData(b[:buffer.MaxChunkSize]))
		_ = buf.Append(buffer.NewViewWithData(b[buffer.MaxChunkSize:]))
	}
	d.push(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf}), linkLen, proto, ip, isIP, gso)
}

// push sets pkt's headers and metadata and appends it to the batch.
func (d *Device) push(pkt *stack.PacketBuffer, linkLen int, proto tcpip.NetworkProtocolNumber, ip frame.IP, isIP bool, gso stack.GSO) {
	if linkLen > 0 {
		pkt.LinkHeader().Consume(linkLen)
	}
	if isIP {
		pkt.NetworkHeader().Consume(ip.HdrLen)
		if !ip.Fragment && ip.L4Len > 0 {
			pkt.TransportHeader().Consume(ip.L4Len)
			pkt.TransportProtocolNumber = tcpip.TransportProtocolNumber(ip.Proto)
		}
	}
	pkt.NetworkProtocolNumber = proto
	pkt.GSOOptions = gso
	d.sys.batch.PushBack(pkt)
	d.stats.readPackets.Add(1)
}

// splitUDP splits a UDP super-packet (USO) into datagrams of gsoSize bytes
// of payload, each with complete headers and checksum: the endpoint only
// segments TCP.
func (d *Device) splitUDP(b []byte, linkLen int, proto tcpip.NetworkProtocolNumber, ip frame.IP, gsoSize int) {
	hl := linkLen + ip.HdrLen + ip.L4Len
	payload := b[hl:]
	for idx, off := 0, 0; off < len(payload) || idx == 0; idx, off = idx+1, off+gsoSize {
		n := min(gsoSize, len(payload)-off)
		v := buffer.NewViewSize(hl + n)
		seg := v.AsSlice()
		copy(seg, b[:hl])
		copy(seg[hl:], payload[off:off+n])
		segment(seg[:hl], linkLen, ip.HdrLen, frame.ProtoUDP, idx, off, n, off+n >= len(payload), checksum.Checksum(seg[hl:], 0))
		d.push(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)}), linkLen, proto, ip, true, stack.GSO{})
	}
}
