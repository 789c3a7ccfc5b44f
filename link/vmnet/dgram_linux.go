//go:build linux

package vmnet

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawDgram drives an unconnected unix datagram socket with recvfrom(2) and
// sendto(2) on its descriptor, with socket addresses kept in raw form: the
// net package's ReadFrom and WriteTo allocate an address per datagram, and
// telling a datagram's sender from the peer took its String. The reader
// goroutine owns the receive half, the writer goroutine the send half.
type rawDgram struct {
	rc syscall.RawConn

	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	from  rawAddr
	readF func(fd uintptr) bool

	wbuf   []byte
	wto    *rawAddr
	werr   syscall.Errno
	writeF func(fd uintptr) bool
}

// rawAddr is a unix socket address as the kernel has it.
type rawAddr struct {
	sa unix.RawSockaddrUnix
	n  uint32 // its length; 0: not set
}

// newRawDgram returns the raw form of c, or nil when c is not a unix
// datagram socket.
func newRawDgram(c net.PacketConn) *rawDgram {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawDgram{rc: rc}
	r.readF, r.writeF = r.doRecv, r.doSend // method values made once
	return r
}

// recv reads a datagram into buf; r.from is its sender.
func (r *rawDgram) recv(buf []byte) (int, error) {
	r.rbuf = buf
	err := r.rc.Read(r.readF)
	r.rbuf = nil
	if err != nil {
		return 0, err
	}
	if r.rerr != 0 {
		return 0, r.rerr
	}
	return r.rn, nil
}

func (r *rawDgram) doRecv(fd uintptr) bool {
	r.from.n = uint32(unsafe.Sizeof(r.from.sa))
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)), 0,
		uintptr(unsafe.Pointer(&r.from.sa)), uintptr(unsafe.Pointer(&r.from.n)))
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.rn, r.rerr = int(n), e
	return true
}

// send writes b as one datagram to to.
func (r *rawDgram) send(b []byte, to *rawAddr) error {
	r.wbuf, r.wto = b, to
	err := r.rc.Write(r.writeF)
	r.wbuf, r.wto = nil, nil
	if err != nil {
		return err
	}
	if r.werr != 0 {
		return r.werr
	}
	return nil
}

func (r *rawDgram) doSend(fd uintptr) bool {
	var p unsafe.Pointer
	if len(r.wbuf) > 0 {
		p = unsafe.Pointer(&r.wbuf[0])
	}
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(r.wbuf)), 0,
		uintptr(unsafe.Pointer(&r.wto.sa)), uintptr(r.wto.n))
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.werr = e
	return true
}

// named reports whether the sender has a path (an unbound or autobound
// socket has none, or an abstract name, which is kept raw too).
func (a *rawAddr) named() bool { return a.n > uint32(unsafe.Offsetof(a.sa.Path)) }

// equal reports whether a and b are the same address.
func (a *rawAddr) equal(b *rawAddr) bool {
	if a.n != b.n || a.n == 0 {
		return false
	}
	off := unsafe.Offsetof(a.sa.Path)
	for i := 0; i < int(a.n)-int(off); i++ {
		if a.sa.Path[i] != b.sa.Path[i] {
			return false
		}
	}
	return true
}

// addr returns a as a *net.UnixAddr (allocating: for a new peer only).
func (a *rawAddr) addr() net.Addr {
	off := int(unsafe.Offsetof(a.sa.Path))
	n := int(a.n) - off
	b := make([]byte, 0, n)
	for i := 0; i < n; i++ {
		b = append(b, byte(a.sa.Path[i]))
	}
	if n > 0 && b[0] != 0 { // a path: up to its NUL
		for i, c := range b {
			if c == 0 {
				b = b[:i]
				break
			}
		}
	} else if n > 0 {
		b[0] = '@' // abstract, as the net package writes it
	}
	return &net.UnixAddr{Name: string(b), Net: "unixgram"}
}

// rawAddrOf returns the raw form of a unix socket address, and false for
// anything else.
func rawAddrOf(addr net.Addr) (rawAddr, bool) {
	ua, ok := addr.(*net.UnixAddr)
	if !ok || ua.Name == "" {
		return rawAddr{}, false
	}
	var a rawAddr
	name := ua.Name
	if len(name) > len(a.sa.Path) {
		return rawAddr{}, false
	}
	a.sa.Family = unix.AF_UNIX
	for i := 0; i < len(name); i++ {
		a.sa.Path[i] = int8(name[i])
	}
	n := len(name)
	if name[0] == '@' { // abstract: a leading NUL, no trailing one
		a.sa.Path[0] = 0
	} else if n < len(a.sa.Path) {
		n++ // the trailing NUL, as the net package passes it
	}
	a.n = uint32(unsafe.Offsetof(a.sa.Path)) + uint32(n)
	return a, true
}
