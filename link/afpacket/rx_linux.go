//go:build linux

package afpacket

import (
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ethnic"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// afpRx is the receive goroutine's preallocated state: one slot per frame
// of a recvmmsg batch, each an iovec list [virtio_net_hdr | pooled view of
// frameCap bytes | spill-over].
type afpRx struct {
	e        *Endpoint
	msgs     []unix.Mmsghdr
	iovs     []unix.Iovec
	names    []unix.RawSockaddrLinklayer
	vnet     []byte
	views    []*buffer.View
	overflow []byte
	scratch  []byte // a super-frame made contiguous
}

func newAFPRx(e *Endpoint) *afpRx {
	b := e.cfg.BatchSize
	per := 2
	if e.vnetLen != 0 {
		per = 3
	}
	r := &afpRx{
		e:        e,
		msgs:     make([]unix.Mmsghdr, b),
		iovs:     make([]unix.Iovec, b*per),
		names:    make([]unix.RawSockaddrLinklayer, b),
		vnet:     make([]byte, b*vnet.HdrLen),
		views:    make([]*buffer.View, b),
		overflow: make([]byte, b*afpOverflow),
		scratch:  make([]byte, afpOverflow+e.frameCap),
	}
	for i := range r.msgs {
		iov := r.iovs[i*per : (i+1)*per]
		k := 0
		if e.vnetLen != 0 {
			iov[0].Base = &r.vnet[i*vnet.HdrLen]
			iov[0].SetLen(vnet.HdrLen)
			k++
		}
		r.views[i] = buffer.NewViewSize(e.frameCap)
		iov[k].Base = &r.views[i].AsSlice()[0]
		iov[k].SetLen(e.frameCap)
		iov[k+1].Base = &r.overflow[i*afpOverflow]
		iov[k+1].SetLen(afpOverflow)
		h := &r.msgs[i].Hdr
		h.Iov = &iov[0]
		h.SetIovlen(per)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	return r
}

// newView gives slot i a fresh frame buffer after its old one became a
// packet.
func (r *afpRx) newView(i int) {
	v := buffer.NewViewSize(r.e.frameCap)
	r.views[i] = v
	k := 0
	if r.e.vnetLen != 0 {
		k = 1
	}
	per := len(r.iovs) / len(r.msgs)
	r.iovs[i*per+k].Base = &v.AsSlice()[0]
}

// release frees the frame buffers.
func (r *afpRx) release() {
	for i, v := range r.views {
		if v != nil {
			v.Release()
			r.views[i] = nil
		}
	}
	clear(r.iovs)
}

// recvmmsg reads a batch of frames (ethnic.NIC.ReadSyscall).
func (r *afpRx) recvmmsg(fd uintptr) (uintptr, syscall.Errno) {
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Flags = 0
		r.msgs[i].Len = 0
	}
	// Non-blocking descriptor: RawSyscall (see mmsg.SendAll).
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)), unix.MSG_DONTWAIT, 0, 0)
	return n, errno
}

// deliverBatch delivers the n frames read last (ethnic.NIC.Deliver).
func (e *Endpoint) deliverBatch(d stack.NetworkDispatcher, n int) {
	mac := e.LinkAddress()
	for i := 0; i < n; i++ {
		e.rx.frame(d, i, mac)
	}
}

// frame handles the frame in slot i.
func (r *afpRx) frame(d stack.NetworkDispatcher, i int, mac tcpip.LinkAddress) {
	e := r.e
	m := &r.msgs[i]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		e.stats.rxTruncated.Add(1)
		return
	}
	if t := r.names[i].Pkttype; t == unix.PACKET_OUTGOING || t == packetLoopback {
		return
	}
	n := int(m.Len) - e.vnetLen
	if n < header.EthernetMinimumSize {
		e.stats.rxMalformed.Add(1)
		return
	}
	var vh vnet.Hdr
	if e.vnetLen != 0 {
		vh.Decode(r.vnet[i*vnet.HdrLen:])
	}
	v := r.views[i]
	fr := v.AsSlice()
	if n < len(fr) {
		fr = fr[:n]
	}
	if dst := fr[:6]; dst[0]&1 == 0 && string(dst) != string(mac) {
		e.stats.rxOtherHost.Add(1)
		return
	}
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		r.whole(d, i, n, &vh)
		return
	default:
		r.split(d, i, n, &vh)
		return
	}
	if n > len(fr) {
		e.stats.rxTruncated.Add(1)
		return
	}
	if e.vnetLen != 0 && vh.Flags&(vnet.FNeedsCsum|vnet.FDataValid) == 0 && !frame.RxChecksumOK(fr) {
		e.stats.rxChecksumErrors.Add(1)
		return
	}
	v.CapLength(n)
	r.newView(i)
	e.deliver(d, buffer.MakeWithView(v), vh.Flags&vnet.FNeedsCsum != 0, 0)
}

// whole delivers a TCP super-frame as it is: a UDP-tunnel segmentation job
// from this host (a TAP underlay's, or a kernel tunnel's) that crossed a
// veth unsegmented. AF_PACKET's header does not say that it is tunnelled,
// only that it is TCP with a partial checksum; netstack takes it as one
// large UDP datagram, and the Geneve endpoint the inner super-packet.
func (r *afpRx) whole(d stack.NetworkDispatcher, i, n int, vh *vnet.Hdr) {
	e := r.e
	if vh.Flags&vnet.FNeedsCsum == 0 || n > e.frameCap+afpOverflow {
		e.stats.rxGSODropped.Add(1)
		return
	}
	v := r.views[i]
	payload := buffer.MakeWithView(v)
	r.newView(i)
	if n > e.frameCap {
		payload.Append(buffer.NewViewWithData(r.overflow[i*afpOverflow : i*afpOverflow+n-e.frameCap]))
	} else {
		v.CapLength(n)
	}
	e.stats.rxGSOWhole.Add(1)
	e.deliver(d, payload, true, vh.GSOSize)
}

// deliver hands one frame to netstack; it takes ownership of payload.
// local and mss are the receive marks (see link.GSOUDPTunnel): the kernel left
// the frame's checksum partial, and the inner segment size of a tunnel
// job.
func (e *Endpoint) deliver(d stack.NetworkDispatcher, payload buffer.Buffer, local bool, mss uint16) {
	if !ethnic.DeliverFrame(d, payload, local, mss) {
		e.stats.rxMalformed.Add(1)
		return
	}
	e.stats.rxFrames.Add(1)
}

// split cuts a UDP super-frame (the local kernel hands over UDP GSO
// datagrams unsegmented) into its datagrams. Their checksums are partial
// (NEEDS_CSUM), which the NIC's RX checksum offload covers.
func (r *afpRx) split(d stack.NetworkDispatcher, i, n int, vh *vnet.Hdr) {
	e := r.e
	if vh.GSOType&^vnet.GSOECN != vnet.GSOUDPL4 || vh.GSOSize == 0 || n > len(r.scratch) {
		e.stats.rxGSODropped.Add(1)
		return
	}
	buf := r.scratch[:n]
	k := copy(buf, r.views[i].AsSlice())
	copy(buf[k:], r.overflow[i*afpOverflow:])
	l3, l4, proto, ok := frame.L3L4(buf)
	hl := l4 + header.UDPMinimumSize
	if !ok || proto != uint8(header.UDPProtocolNumber) || len(buf) < hl {
		e.stats.rxMalformed.Add(1)
		return
	}
	payload := buf[hl:]
	mss := int(vh.GSOSize)
	for idx, off := 0, 0; off < len(payload); idx, off = idx+1, off+mss {
		m := min(mss, len(payload)-off)
		v := buffer.NewViewSize(hl + m)
		s := v.AsSlice()
		copy(s, buf[:hl])
		copy(s[hl:], payload[off:off+m])
		link.SegmentHeader(s[:hl], l3, l4, link.ProtoUDP, idx, off, m, off+m >= len(payload))
		e.deliver(d, buffer.MakeWithView(v), true, 0)
	}
	e.stats.rxGSOSplit.Add(1)
}
