//go:build linux

package afpacket

import (
	"syscall"
	"unsafe"

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
// of a recvmmsg batch, each an iovec list [virtio_net_hdr | head view of
// split bytes | 64 KiB view]. split is where the UDP payload began in the
// last UDP frame (42 bytes into an IPv4 frame), so that the Ethernet, IP and
// UDP headers sit in the head view and a Geneve datagram, or the run of
// them in a UDP super-frame, lies whole in the big view: netstack's IP
// layer then copies only the head chunk (it copies the chunk it reads the
// IP header from), and the transport hands the datagrams over in place. A
// frame of at most frameCap bytes is copied into a view of its own and the
// slot's views are kept, so that small frames do not pin (and clear) 64 KiB
// each; so is the rest of a frame of at most afpCopyBreak bytes (after the
// head view, which goes with it).
type afpRx struct {
	e     *Endpoint
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrLinklayer
	vnet  []byte
	heads []*buffer.View
	bigs  []*buffer.View
	split int
	flat  []byte // a frame made contiguous for checking or copying
}

// afpDefaultSplit is the offset of the UDP payload in an IPv4 frame
// without options; afpMaxSplit bounds the head view.
const (
	afpDefaultSplit = header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize
	afpMaxSplit     = 128
	afpBigView      = 1 << 16

	// afpCopyBreak is the largest frame whose bytes after the head view
	// are copied into a view of their own, the slot keeping its big view:
	// copying them, and clearing a view of their size rounded up to a
	// power of two, costs less than clearing a new 64 KiB view (gVisor
	// clears every view it hands out). With a 1500-byte underlay MTU, a
	// 64 KB TCP super-packet of a TAP overlay (46 segments) leaves a gnv
	// peer as UDP super-frames of 44 and 2 datagrams: the second is one of
	// these.
	afpCopyBreak = 16 << 10
)

func newAFPRx(e *Endpoint) *afpRx {
	b := e.cfg.BatchSize
	per := 2
	if e.vnetLen != 0 {
		per = 3
	}
	r := &afpRx{
		e:     e,
		msgs:  make([]unix.Mmsghdr, b),
		iovs:  make([]unix.Iovec, b*per),
		names: make([]unix.RawSockaddrLinklayer, b),
		vnet:  make([]byte, b*vnet.HdrLen),
		heads: make([]*buffer.View, b),
		bigs:  make([]*buffer.View, b),
		split: afpDefaultSplit,
	}
	for i := range r.msgs {
		iov := r.iovs[i*per : (i+1)*per]
		if e.vnetLen != 0 {
			iov[0].Base = &r.vnet[i*vnet.HdrLen]
			iov[0].SetLen(vnet.HdrLen)
		}
		r.newHead(i)
		r.newBig(i)
		h := &r.msgs[i].Hdr
		h.Iov = &iov[0]
		h.SetIovlen(per)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	return r
}

// slotIovs returns slot i's iovecs for the head and big views.
func (r *afpRx) slotIovs(i int) []unix.Iovec {
	per := len(r.iovs) / len(r.msgs)
	return r.iovs[i*per+per-2 : (i+1)*per]
}

// newHead gives slot i a fresh head view of r.split bytes.
func (r *afpRx) newHead(i int) {
	v := buffer.NewViewSize(r.split)
	r.heads[i] = v
	iov := r.slotIovs(i)
	iov[0].Base = &v.AsSlice()[0]
	iov[0].SetLen(r.split)
}

// newBig gives slot i a fresh big view.
func (r *afpRx) newBig(i int) {
	v := buffer.NewViewSize(afpBigView)
	r.bigs[i] = v
	iov := r.slotIovs(i)
	iov[1].Base = &v.AsSlice()[0]
	iov[1].SetLen(afpBigView)
}

// release frees the frame buffers.
func (r *afpRx) release() {
	for i := range r.heads {
		if r.heads[i] != nil {
			r.heads[i].Release()
			r.heads[i] = nil
		}
		if r.bigs[i] != nil {
			r.bigs[i].Release()
			r.bigs[i] = nil
		}
	}
	clear(r.iovs)
}

// prefix returns the first min(n, size) bytes of the frame of n bytes in
// slot i as one slice, copied into r.flat.
func (r *afpRx) prefix(i, n, size int) []byte {
	n = min(n, size)
	h := r.heads[i].AsSlice()
	r.flat = append(r.flat[:0], h[:min(n, len(h))]...)
	if n > len(h) {
		r.flat = append(r.flat, r.bigs[i].AsSlice()[:n-len(h)]...)
	}
	return r.flat
}

// take hands over slot i's views holding its frame of n bytes as a buffer,
// and gives the slot fresh ones (the head sized for the next split).
func (r *afpRx) take(i, n int) buffer.Buffer {
	h := r.heads[i]
	payload := buffer.MakeWithView(h)
	if n > h.Size() {
		r.bigs[i].CapLength(n - h.Size())
		rest := buffer.MakeWithView(r.bigs[i])
		payload.Merge(&rest) // not Append, which would fill the head chunk
		r.newBig(i)
	} else {
		h.CapLength(n)
	}
	r.newHead(i)
	return payload
}

// takeCopy hands over slot i's head view and a copy of the rest of its
// frame of n bytes (more than the head holds), and gives the slot a fresh
// head; the big view stays.
func (r *afpRx) takeCopy(i, n int) buffer.Buffer {
	h := r.heads[i]
	payload := buffer.MakeWithView(h)
	v := buffer.NewView(n - h.Size())
	v.Write(r.bigs[i].AsSlice()[:n-h.Size()])
	rest := buffer.MakeWithView(v)
	payload.Merge(&rest)
	r.newHead(i)
	return payload
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
	split := r.heads[i].Size()
	first := r.prefix(i, n, split+afpMaxSplit)
	if dst := first[:6]; dst[0]&1 == 0 && string(dst) != string(mac) {
		e.stats.rxOtherHost.Add(1)
		return
	}
	local := vh.Flags&vnet.FNeedsCsum != 0
	var udpSeg, mss uint16
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
		if n > e.frameCap {
			e.stats.rxTruncated.Add(1)
			return
		}
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		// A TCP super-frame, delivered as it is: a UDP-tunnel
		// segmentation job from this host (a TAP underlay's, or a kernel
		// tunnel's) that crossed a veth unsegmented. AF_PACKET's header
		// does not say that it is tunnelled, only that it is TCP with a
		// partial checksum; netstack takes it as one large UDP datagram,
		// and the Geneve endpoint the inner super-packet.
		if !local {
			e.stats.rxGSODropped.Add(1)
			return
		}
		mss = vh.GSOSize
		e.stats.rxGSOWhole.Add(1)
	case vnet.GSOUDPL4:
		// A UDP super-frame (the local kernel hands over UDP GSO
		// datagrams unsegmented): netstack takes it as one datagram, and
		// the transport hands over its datagrams one by one, in place.
		// Their checksums are partial, which the NIC's receive checksum
		// offload covers.
		if !local || vh.GSOSize == 0 {
			e.stats.rxGSODropped.Add(1)
			return
		}
		udpSeg = vh.GSOSize
		e.stats.rxGSOSplit.Add(1)
	default:
		e.stats.rxGSODropped.Add(1)
		return
	}
	small := n <= e.frameCap
	// first holds the whole frame already when it is no longer than the
	// prefix copied above: do not copy it again.
	if small && len(first) < n {
		first = r.prefix(i, n, n)
	}
	if e.vnetLen != 0 && vh.Flags&(vnet.FNeedsCsum|vnet.FDataValid) == 0 {
		if len(first) < n {
			first = r.prefix(i, n, n)
		}
		if !frame.RxChecksumOK(first) {
			e.stats.rxChecksumErrors.Add(1)
			return
		}
	}
	// Where the next frame's UDP payload likely begins.
	if _, l4, proto, ok := frame.L3L4(first); ok && proto == uint8(header.UDPProtocolNumber) && l4+header.UDPMinimumSize <= afpMaxSplit {
		r.split = l4 + header.UDPMinimumSize
	}
	var payload buffer.Buffer
	switch {
	case small:
		payload = buffer.MakeWithView(buffer.NewViewWithData(first[:n]))
		if r.heads[i].Size() != r.split {
			r.heads[i].Release()
			r.newHead(i)
		}
	case n <= afpCopyBreak:
		payload = r.takeCopy(i, n)
	default:
		payload = r.take(i, n)
	}
	if !ethnic.DeliverFrame(d, payload, local, mss, udpSeg) {
		e.stats.rxMalformed.Add(1)
		return
	}
	e.stats.rxFrames.Add(1)
}
