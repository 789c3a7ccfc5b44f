//go:build linux

package mmsg

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fill sends datagrams on the non-blocking fd until it is full.
func fill(t *testing.T, fd int) {
	t.Helper()
	for i := 0; ; i++ {
		if _, err := unix.Write(fd, make([]byte, 1024)); err == unix.EAGAIN {
			if i == 0 {
				t.Fatal("the socket was full before the first send")
			}
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestWaitWritable checks that WaitWritable returns once a full socket has
// room again, and once stop reports true while it is still full.
func TestWaitWritable(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var stop atomic.Bool
	wait := func() <-chan struct{} {
		done := make(chan struct{})
		go func() {
			WaitWritable(uintptr(fds[0]), stop.Load)
			close(done)
		}()
		return done
	}
	// Only a hang turns into a failure; no duration is asserted.
	const timeout = 20 * time.Second

	fill(t, fds[0])
	done := wait()
	// The peer reads until the socket has room.
	buf := make([]byte, 2048)
	for {
		if _, err := unix.Read(fds[1], buf); err != nil {
			break
		}
	}
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatal("WaitWritable did not return when the socket had room")
	}
	var pfd = []unix.PollFd{{Fd: int32(fds[0]), Events: unix.POLLOUT}}
	if n, _ := unix.Poll(pfd, 0); n != 1 {
		t.Fatal("WaitWritable returned, but the socket is not writable")
	}

	fill(t, fds[0])
	done = wait()
	stop.Store(true)
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatal("WaitWritable did not return once stop was true")
	}
	if n, _ := unix.Poll(pfd, 0); n != 0 {
		t.Fatal("the socket has room: the stop case was not tested")
	}
}
