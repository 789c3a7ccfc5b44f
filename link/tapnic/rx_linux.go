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
// into [virtio_net_hdr | a view of frameCap bytes | a 64 KiB view], so that
// ordinary frames use a small buffer and super-frames need no copy.
type tapRx struct {
	e          *Endpoint
	hdr        []byte
	small, big *buffer.View
	iov        [3]unix.Iovec
	flat       []byte // a multi-view frame made contiguous for checking
}

func (r *tapRx) init(e *Endpoint) {
	r.e = e
	r.hdr = make([]byte, e.vnetLen)
	r.iov[0].Base = &r.hdr[0]
	r.iov[0].SetLen(e.vnetLen)
	r.newSmall()
	r.newBig()
}

func (r *tapRx) newSmall() {
	r.small = buffer.NewViewSize(r.e.frameCap)
	r.iov[1].Base = &r.small.AsSlice()[0]
	r.iov[1].SetLen(r.e.frameCap)
}

func (r *tapRx) newBig() {
	r.big = buffer.NewViewSize(tapBigView)
	r.iov[2].Base = &r.big.AsSlice()[0]
	r.iov[2].SetLen(tapBigView)
}

func (r *tapRx) release() {
	if r.small != nil {
		r.small.Release()
		r.small = nil
	}
	if r.big != nil {
		r.big.Release()
		r.big = nil
	}
	r.iov[1], r.iov[2] = unix.Iovec{}, unix.Iovec{}
}

// readv reads one frame (ethnic.NIC.ReadSyscall).
func (r *tapRx) readv(fd uintptr) (uintptr, syscall.Errno) {
	n, _, errno := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(len(r.iov)))
	return n, errno
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
	first := r.small.AsSlice()[:min(n, e.frameCap)]
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
		if n > len(first) {
			r.flat = append(r.flat[:0], first...)
			r.flat = append(r.flat, r.big.AsSlice()[:n-len(first)]...)
			fr = r.flat
		}
		if !frame.RxChecksumOK(fr) {
			e.stats.rxChecksumErrors.Add(1)
			return
		}
	}

	var payload buffer.Buffer
	if n <= e.frameCap {
		r.small.CapLength(n)
		payload = buffer.MakeWithView(r.small)
		r.newSmall()
	} else {
		r.big.CapLength(n - e.frameCap)
		payload = buffer.MakeWithView(r.small)
		payload.Append(r.big)
		r.newSmall()
		r.newBig()
	}
	local := vh.Flags&vnet.FNeedsCsum != 0
	var mss uint16
	if local && tunnel {
		mss = vh.GSOSize
		e.stats.rxTunnelGSO.Add(1)
	}
	ethnic.DeliverFrame(d, payload, local, mss) // n is at least an Ethernet header
	e.stats.rxFrames.Add(1)
}
