//go:build linux

package mmsg

import (
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

// TestWaitWritable checks that WaitWritable keeps waiting on a full socket
// (it asks stop again after a poll that found no room), returns once the
// socket has room, and returns once stop reports true while it is still
// full.
func TestWaitWritable(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	// Only a hang turns into a failure; no duration is asserted.
	const timeout = 20 * time.Second
	// wait runs WaitWritable with a stop that reports each call on asked
	// and answers what the test sends on answer.
	wait := func(asked chan<- struct{}, answer <-chan bool) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			WaitWritable(uintptr(fds[0]), func() bool {
				asked <- struct{}{}
				return <-answer
			})
			close(done)
		}()
		return done
	}
	recv := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(timeout):
			t.Fatal(what)
		}
	}
	pfd := []unix.PollFd{{Fd: int32(fds[0]), Events: unix.POLLOUT}}

	fill(t, fds[0])
	asked, answer := make(chan struct{}), make(chan bool)
	done := wait(asked, answer)
	// Two questions: the second comes only after a poll found no room.
	for range 2 {
		recv(asked, "WaitWritable did not ask stop")
		answer <- false
	}
	// The peer reads until the socket has room.
	buf := make([]byte, 2048)
	for {
		if _, err := unix.Read(fds[1], buf); err != nil {
			break
		}
	}
	// It may ask again before its poll sees the room.
	for {
		select {
		case <-asked:
			answer <- false
			continue
		case <-done:
		case <-time.After(timeout):
			t.Fatal("WaitWritable did not return when the socket had room")
		}
		break
	}
	if n, _ := unix.Poll(pfd, 0); n != 1 {
		t.Fatal("WaitWritable returned, but the socket is not writable")
	}

	fill(t, fds[0])
	done = wait(asked, answer)
	recv(asked, "WaitWritable did not ask stop")
	answer <- false
	recv(asked, "WaitWritable did not ask stop after a poll that found no room")
	answer <- true
	recv(done, "WaitWritable did not return once stop was true")
	if n, _ := unix.Poll(pfd, 0); n != 0 {
		t.Fatal("the socket has room: the stop case was not tested")
	}
}
