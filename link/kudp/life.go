package kudp

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
)

// life is a transport's start and close state: one receive goroutine,
// started once, that Close stops and waits for.
type life struct {
	mu        sync.Mutex
	started   bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by the receive goroutine as it ends
}

// start runs loop(r) on its own goroutine, which must close l.done as it
// ends, unless the transport is closed or already started.
func (l *life) start(r link.Receiver, loop func(link.Receiver)) error {
	if r == nil {
		return errNilReceiver
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return net.ErrClosed
	}
	if l.started {
		return errAlreadyStarted
	}
	l.started = true
	go loop(r)
	return nil
}

// close marks the transport closed, calls release (which must make the
// receive goroutine return) and waits for the goroutine. Later calls return
// the first result.
func (l *life) close(release func() error) error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed.Store(true)
		started := l.started
		l.mu.Unlock()
		l.closeErr = release()
		if started {
			<-l.done
		}
	})
	return l.closeErr
}

// checkGroup validates a multicast group for JoinGroup and LeaveGroup on a
// socket of the family of v6, unmapping an IPv4 group.
func checkGroup(group netip.Addr, v6 bool) (netip.Addr, error) {
	if !v6 {
		group = group.Unmap()
	}
	if !group.IsMulticast() {
		return group, errNotMulticast
	}
	if group.Is6() != v6 || group.Is4In6() {
		return group, errFamilyMismatch
	}
	return group, nil
}
