//go:build linux

package tapnic

import (
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link/internal/ethnic"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tapRx is the receive goroutine's state: one frame per read, scattered
// into [virtio_net_hdr | a head view of split bytes | a 64 KiB view]. split
// is where the UDP payload began in the last UDP frame (42 bytes into an
// IPv4 frame): the Ethernet, IP and UDP headers then sit in the head view
// and the Geneve datagram in the big one, whole. That layout costs no copy
// anywhere: gVisor's IP layer copies the chunk it reads the IP header from
// (it holds a reference while parsing, and a shared chunk is copied when
// read again), which is only the small head chunk, and the transport finds
// the UDP payload contiguous. A frame of at most tapCopyBreak bytes is
// copied into a view of its own instead and the views are kept for the
// next read, so that small frames do not pin (and clear) 64 KiB each.
type tapRx struct {
	e         *Endpoint
	hdr       []byte
	split     int
	head, big *buffer.View
	iov       [3]unix.Iovec
	flat      []byte // a frame made contiguous for checking or copying
}

// tapDefaultSplit is the offset of the UDP payload in an IPv4 frame
// without options: Ethernet, IPv4 and UDP headers.
const tapDefaultSplit = header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize

func (r *tapRx) init(e *Endpoint) {
	r.e = e
	r.hdr = make([]byte, e.vnetLen)
	r.iov[0].Base = &r.hdr[0]
	r.iov[0].SetLen(e.vnetLen)
	r.split = tapDefaultSplit
	r.newHead()
	r.newBig()
}

func (r *tapRx) newHead() {
	r.head = buffer.NewViewSize(r.split)
	r.iov[1].Base = &r.head.AsSlice()[0]
	r.iov[1].SetLen(r.split)
}

func (r *tapRx) newBig() {
	r.big = buffer.NewViewSize(tapBigView)
	r.iov[2].Base = &r.big.AsSlice()[0]
	r.iov[2].SetLen(tapBigView)
}

func (r *tapRx) release() {
	if r.head != nil {
		r.head.Release()
		r.head = nil
	}
	if r.big != nil {
		r.big.Release()
		r.big = nil
	}
	r.iov[1], r.iov[2] = unix.Iovec{}, unix.Iovec{}
}

// readv reads one frame (ethnic.NIC.ReadSyscall).
func (r *tapRx) readv(fd uintptr) (uintptr, syscall.Errno) {
	// Non-blocking descriptor: RawSyscall (see mmsg.SendAll).
	n, _, errno := unix.RawSyscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(len(r.iov)))
	return n, errno
}

// prefix returns the first n bytes of the frame just read, of size bytes,
// as one slice: copied out of the two views into r.flat.
func (r *tapRx) prefix(n, size int) []byte {
	n = min(n, size)
	h := r.head.AsSlice()
	r.flat = append(r.flat[:0], h[:min(n, len(h))]...)
	if n > len(h) {
		r.flat = append(r.flat, r.big.AsSlice()[:n-len(h)]...)
	}
	return r.flat
}

// copyOut returns the frame just read, of n bytes, copied out of the two
// views into a view of its own, which is cleared only up to the next
// power of two of n.
func (r *tapRx) copyOut(n int) *buffer.View {
	v := buffer.NewView(n)
	h := r.head.AsSlice()
	v.Write(h[:min(n, len(h))])
	if n > len(h) {
		v.Write(r.big.AsSlice()[:n-len(h)])
	}
	return v
}

// take hands over the views holding the frame just read, of n bytes, and
// puts fresh ones in their place; the head view is resized to the next
// split.
func (r *tapRx) take(n, split int) buffer.Buffer {
	h := r.head
	payload := buffer.MakeWithView(h)
	if n > h.Size() {
		r.big.CapLength(n - h.Size())
		rest := buffer.MakeWithView(r.big)
		payload.Merge(&rest) // not Append, which would fill the head chunk
		r.newBig()
	} else {
		h.CapLength(n)
	}
	r.split = split
	r.newHead()
	return payload
}

// frame checks the frame just read, of got bytes with the virtio_net_hdr,
// and delivers it (ethnic.NIC.Deliver).
func (r *tapRx) frame(d stack.NetworkDispatcher, got int) {
	e := r.e
	n := got - e.vnetLen
	if n < header.EthernetMinimumSize {
		e.stats.rxMalformed.Add(1)
		return
	}
	var vh vnet.TunnelHdr
	if e.vnetLen == vnet.TunnelHdrLen {
		vh.Decode(r.hdr)
	} else {
		vh.Hdr.Decode(r.hdr)
	}
	split := r.head.Size()
	first := r.prefix(n, max(split+128, header.EthernetMinimumSize))
	if dst := first[:6]; dst[0]&1 == 0 && string(dst) != string(e.LinkAddress()) {
		e.stats.rxOtherHost.Add(1)
		return
	}
	tunnel := false
	switch vh.GSOType &^ (vnet.GSOECN | vnet.GSOUDPTunnelIPv4 | vnet.GSOUDPTunnelIPv6) {
	case vnet.GSONone:
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		// A TCP super-frame, in a UDP tunnel (ours) or not (TCP to the
		// underlay stack, which takes large segments as they are).
		tunnel = vh.GSOType&(vnet.GSOUDPTunnelIPv4|vnet.GSOUDPTunnelIPv6) != 0
	default:
		e.stats.rxMalformed.Add(1) // UDP segmentation was not negotiated
		return
	}
	if vh.Flags&(vnet.FNeedsCsum|vnet.FDataValid) == 0 {
		fr := first
		if len(fr) < n {
			fr = r.prefix(n, n)
		}
		if !frame.RxChecksumOK(fr) {
			e.stats.rxChecksumErrors.Add(1)
			return
		}
		first = fr
	}
	// Where the next frame's UDP payload likely begins.
	next := split
	if _, l4, proto, ok := frame.L3L4(first); ok && proto == uint8(header.UDPProtocolNumber) && l4+header.UDPMinimumSize <= tapMaxSplit {
		next = l4 + header.UDPMinimumSize
	}

	var payload buffer.Buffer
	if n <= tapCopyBreak {
		payload = buffer.MakeWithView(r.copyOut(n))
		if next != split {
			r.head.Release()
			r.split = next
			r.newHead()
		}
	} else {
		payload = r.take(n, next)
	}
	local := vh.Flags&vnet.FNeedsCsum != 0
	var mss uint16
	if local && tunnel {
		mss = vh.GSOSize
		e.stats.rxTunnelGSO.Add(1)
	}
	ethnic.DeliverFrame(d, payload, local, mss, 0) // n is at least an Ethernet header
	e.stats.rxFrames.Add(1)
}
