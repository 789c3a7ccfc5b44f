//go:build linux

// Package mmsg sends batches of messages with sendmmsg(2), for the kernel
// UDP socket and the AF_PACKET socket.
package mmsg

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SendAll runs sendmmsg on msgs[*i:] until every message is sent
// (done), one fails (errno, with *i at the failed message), or the socket
// buffer is full. When full it returns done=false if the caller may wait
// for writability (RawConn.Write calls it again), else blocked=true. It is
// shared by the kernel UDP and AF_PACKET senders.
//
// It uses RawSyscall, as every data-path system call on gnv's non-blocking
// descriptors does: such a call never waits, it only copies and runs the
// kernel's network stack, often for tens of microseconds. Entered as an
// ordinary system call, the runtime's sysmon takes the P away from it
// after 20 µs and hands it to another thread, waking threads (and itself,
// every 20 µs) to no purpose: 7% of the CPU samples of gnv on the TAP
// overlay over TAP underlay path, and gnv's CPU time per GB went from 1.64
// to 1.21 s without it. The descriptor must be non-blocking.
func SendAll(fd uintptr, msgs []unix.Mmsghdr, i *int, canWait bool) (done, blocked bool, errno syscall.Errno) {
	for *i < len(msgs) {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[*i])), uintptr(len(msgs)-*i), 0, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN || (e == 0 && r == 0):
			if canWait {
				return false, false, 0
			}
			return true, true, 0
		case e != 0:
			return true, false, e
		}
		*i += int(r)
	}
	return true, false, 0
}

// WaitWritable waits until the non-blocking descriptor fd, which is not in
// the runtime poller, has room to send, or stop reports true: it polls fd
// with poll(2) in steps of 10 ms, so that a closing owner is noticed. A
// sender whose socket is kept out of the poller (see the AF_PACKET
// endpoint's send socket and the kernel UDP transport's source-port
// sockets) calls it when SendAll reports the socket full, then sends
// again.
func WaitWritable(fd uintptr, stop func() bool) {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for !stop() {
		n, err := unix.Poll(pfd[:], 10)
		if n > 0 || err != nil && err != unix.EINTR {
			return
		}
	}
}
