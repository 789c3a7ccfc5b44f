//go:build linux

package kudp

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"golang.org/x/sys/unix"
)

// Start starts the receive goroutine, which delivers batches to r until
// Close. It may be called once. r.Receive must not call Close.
func (t *Transport) Start(r link.Receiver) error {
	return t.start(r, func(r link.Receiver) { t.recvLoop(newUDPReceiver(t.cfg.BatchSize), r) })
}

// udpReceiver holds the receive goroutine's preallocated state.
type udpReceiver struct {
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
	addrs  []unix.RawSockaddrInet6
	ctrl   []byte
	bufs   []byte
	dgrams []link.Datagram
	used   int // slots the last recvmmsg filled

	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func newUDPReceiver(b int) *udpReceiver {
	r := &udpReceiver{
		msgs:   make([]unix.Mmsghdr, b),
		iovs:   make([]unix.Iovec, b),
		addrs:  make([]unix.RawSockaddrInet6, b),
		ctrl:   alignedBytes(b * recvCtrlSize),
		bufs:   make([]byte, b*recvSlotSize),
		dgrams: make([]link.Datagram, 0, b),
	}
	for j := range r.msgs {
		r.iovs[j].Base = &r.bufs[j*recvSlotSize]
		r.iovs[j].SetLen(recvSlotSize)
		h := &r.msgs[j].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.addrs[j]))
		h.Iov = &r.iovs[j]
		h.SetIovlen(1)
		h.Control = &r.ctrl[j*recvCtrlSize]
	}
	r.used = b
	r.readFn = func(fd uintptr) bool {
		for {
			// Non-blocking descriptor: RawSyscall (see mmsg.SendAll).
			n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd,
				uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			r.n, r.errno = int(n), e
			return true
		}
	}
	return r
}

// reset restores the in/out fields of the slots the last call used.
func (r *udpReceiver) reset() {
	for j := 0; j < r.used; j++ {
		h := &r.msgs[j].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(recvCtrlSize)
		h.Flags = 0
		r.msgs[j].Len = 0
	}
	r.n, r.errno = 0, 0
}

func (t *Transport) recvLoop(rs *udpReceiver, r link.Receiver) {
	defer close(t.done)
	for {
		rs.reset()
		if err := t.rc.Read(rs.readFn); err != nil {
			return // closed
		}
		if rs.errno != 0 {
			rs.used = 0
			t.stats.recvErrs.Add(1)
			if isFatalSockErr(rs.errno) || rs.errno == unix.EINVAL {
				return
			}
			continue
		}
		rs.used = rs.n
		if batch := t.parse(rs); len(batch) > 0 {
			r.Receive(batch)
		}
	}
}

// parse turns the received messages into Datagrams, splitting GRO messages.
func (t *Transport) parse(rs *udpReceiver) []link.Datagram {
	dg := rs.dgrams[:0]
	var bytes, trunc, splits int
	for j := 0; j < rs.n; j++ {
		m := &rs.msgs[j]
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			trunc++
			continue
		}
		l := int(m.Len)
		payload := rs.bufs[j*recvSlotSize : j*recvSlotSize+l]

		var d link.Datagram
		sa := &rs.addrs[j]
		if sa.Family == unix.AF_INET {
			s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
			d.Src = netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), getPort(&s4.Port))
		} else {
			a := netip.AddrFrom16(sa.Addr)
			if sa.Scope_id != 0 {
				a = a.WithZone(t.indexToZone(sa.Scope_id))
			}
			d.Src = netip.AddrPortFrom(a, getPort(&sa.Port))
		}

		gsoSize := 0
		ctrl := rs.ctrl[j*recvCtrlSize : j*recvCtrlSize+min(int(m.Hdr.Controllen), recvCtrlSize)]
		for len(ctrl) >= unix.SizeofCmsghdr {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
			hl := int(h.Len)
			if hl < unix.CmsgLen(0) || hl > len(ctrl) {
				break
			}
			data := ctrl[unix.CmsgLen(0):hl]
			switch {
			case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(data) >= 1:
				d.TOS = data[0]
			case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && len(data) >= 4:
				d.TTL = uint8(binary.NativeEndian.Uint32(data))
			case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
				pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
				d.Dst = netip.AddrFrom4(pi.Addr)
			case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_TCLASS && len(data) >= 4:
				d.TOS = uint8(binary.NativeEndian.Uint32(data))
			case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
				d.TTL = uint8(binary.NativeEndian.Uint32(data))
			case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
				pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
				d.Dst = netip.AddrFrom16(pi.Addr)
			case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO:
				if len(data) >= 4 {
					gsoSize = int(binary.NativeEndian.Uint32(data))
				} else if len(data) >= 2 {
					gsoSize = int(binary.NativeEndian.Uint16(data))
				}
			}
			sp := unix.CmsgSpace(hl - unix.CmsgLen(0))
			if sp >= len(ctrl) {
				break
			}
			ctrl = ctrl[sp:]
		}

		bytes += l
		if gsoSize <= 0 || gsoSize >= l {
			d.Payload = payload
			dg = append(dg, d)
			continue
		}
		splits++
		for off := 0; off < l; off += gsoSize {
			d.Payload = payload[off:min(off+gsoSize, l)]
			dg = append(dg, d)
		}
	}
	rs.dgrams = dg[:0]
	st := &t.stats
	if len(dg) > 0 {
		st.recv.Add(uint64(len(dg)))
		st.bytesRecv.Add(uint64(bytes))
	}
	if trunc > 0 {
		st.trunc.Add(uint64(trunc))
	}
	if splits > 0 {
		st.groSplits.Add(uint64(splits))
	}
	return dg
}
