//go:build linux

package tapnic

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tapTx is the writers' state, under wmu.
type tapTx struct {
	e       *Endpoint
	hdr     []byte // the virtio_net_hdr of the frame being written
	scratch []byte // a job's leading bytes, to parse its headers
	iovecs  []unix.Iovec
	errno   syscall.Errno
	writeFn func(fd uintptr) bool
}

func (tx *tapTx) init(e *Endpoint) {
	tx.e = e
	tx.hdr = make([]byte, e.vnetLen)
	tx.scratch = make([]byte, tapHdrScratch)
	tx.writeFn = tx.write
}

// WritePackets implements stack.LinkWriter: one write per frame (a TAP
// device takes no batches). Frames the kernel refuses are counted and
// dropped.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	for _, pkt := range pkts.AsSlice() {
		e.tx.writePacket(pkt)
	}
	return pkts.Len(), nil
}

// writePacket writes one frame with its offload hints.
func (tx *tapTx) writePacket(pkt *stack.PacketBuffer) {
	e := tx.e
	gso := pkt.GSOOptions
	var vh vnet.TunnelHdr
	job := gso.Type == link.GSOUDPTunnel
	switch {
	case job:
		n := copyPacketPrefix(tx.scratch, pkt)
		var ok bool
		vh, ok = tapTunnelHdr(tx.scratch[:n], gso.MSS, gso.NeedsCsum)
		if !ok || !e.tunnel.Load() {
			e.stats.txErrors.Add(1)
			return
		}
	case gso.NeedsCsum:
		vh.Flags = vnet.FNeedsCsum
		vh.CsumStart = uint16(header.EthernetMinimumSize) + gso.L3HdrLen
		vh.CsumOffset = gso.CsumOffset
	}
	if e.vnetLen == vnet.TunnelHdrLen {
		vh.Encode(tx.hdr)
	} else {
		vh.Hdr.Encode(tx.hdr)
	}
	tx.iovecs = append(tx.iovecs[:0], unix.Iovec{Base: &tx.hdr[0]})
	tx.iovecs[0].SetLen(len(tx.hdr))
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b = b[off:]
		off = 0
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		tx.iovecs = append(tx.iovecs, iov)
	}
	tx.errno = 0
	if err := e.Conn.Write(tx.writeFn); err != nil {
		e.stats.txErrors.Add(1)
		return
	}
	clear(tx.iovecs) // drop the references to the packet's memory
	switch {
	case tx.errno == 0:
		e.stats.txFrames.Add(1)
		if job {
			e.stats.txTunnelGSO.Add(1)
		}
	case job && tx.errno == unix.EINVAL:
		// The kernel does not take jobs after all: the Geneve endpoint
		// segments from now on; TCP retransmits this one.
		e.tunnel.Store(false)
		e.stats.txOffloadFallbacks.Add(1)
		e.stats.txErrors.Add(1)
	default:
		e.stats.txErrors.Add(1)
	}
}

// write is the syscall.RawConn write callback.
func (tx *tapTx) write(fd uintptr) bool {
	for {
		// Non-blocking descriptor: RawSyscall (see mmsg.SendAll).
		_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&tx.iovecs[0])), uintptr(len(tx.iovecs)))
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		tx.errno = errno
		return true
	}
}

// copyPacketPrefix copies the first bytes of pkt (from its link header on)
// into dst and returns how many.
func copyPacketPrefix(dst []byte, pkt *stack.PacketBuffer) int {
	n := 0
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
	return n
}

// tapTunnelHdr describes a UDP-tunnel segmentation job to the kernel.
// frame holds at least the job's headers: Ethernet, outer IP, UDP, Geneve
// with its options, then (L2) the inner Ethernet header with any VLAN tags,
// and the inner IP and TCP headers. mss is the inner segment size;
// outerCsum asks for outer UDP checksums. It reports false if the headers
// do not parse or the inner packet is not TCP.
func tapTunnelHdr(fr []byte, mss uint16, outerCsum bool) (vh vnet.TunnelHdr, ok bool) {
	l3, l4, proto, ok := frame.L3L4(fr)
	if !ok || proto != uint8(header.UDPProtocolNumber) {
		return vh, false
	}
	g := l4 + header.UDPMinimumSize
	if len(fr) < g+8 {
		return vh, false
	}
	nh := g + 8 + int(fr[g]&0x3f)*4
	switch binary.BigEndian.Uint16(fr[g+2:]) {
	case 0x6558: // Ethernet
		nh += header.EthernetMinimumSize
		if len(fr) < nh {
			return vh, false
		}
		et := binary.BigEndian.Uint16(fr[nh-2:])
		for et == 0x8100 || et == 0x88a8 {
			nh += 4
			if len(fr) < nh {
				return vh, false
			}
			et = binary.BigEndian.Uint16(fr[nh-2:])
		}
		if et != uint16(header.IPv4ProtocolNumber) && et != uint16(header.IPv6ProtocolNumber) {
			return vh, false
		}
	case uint16(header.IPv4ProtocolNumber), uint16(header.IPv6ProtocolNumber):
	default:
		return vh, false
	}
	if len(fr) < nh {
		return vh, false
	}
	ip, ok := frame.ParseIP(fr[nh:], 1<<16)
	if !ok || ip.Fragment || ip.Proto != frame.ProtoTCP || ip.L4Len == 0 {
		return vh, false
	}
	th := nh + ip.HdrLen
	vh.Flags = vnet.FNeedsCsum
	if outerCsum {
		vh.Flags |= vnet.FUDPTunnelCsum
	}
	vh.GSOType = vnet.GSOTCPv4
	if ip.Version == 6 {
		vh.GSOType = vnet.GSOTCPv6
	}
	if fr[l3]>>4 == 4 {
		vh.GSOType |= vnet.GSOUDPTunnelIPv4
	} else {
		vh.GSOType |= vnet.GSOUDPTunnelIPv6
	}
	if fr[th+13]&byte(header.TCPFlagCwr) != 0 {
		vh.GSOType |= vnet.GSOECN
	}
	vh.HdrLen = uint16(th + ip.L4Len)
	vh.GSOSize = mss
	vh.CsumStart = uint16(th)
	vh.CsumOffset = link.TCPChecksumOffset
	vh.OuterTransportOffset = uint16(l4)
	vh.InnerNetworkOffset = uint16(nh)
	return vh, true
}
