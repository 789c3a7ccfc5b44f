package stack

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// SharedUnderlay is an open underlay socket that several tunnels (VNIs) can
// share: each tunnel's Config names it as its Underlay. Closing a tunnel
// does not close a SharedUnderlay; Close it after its tunnels.
type SharedUnderlay struct {
	sock  *endpoint.Socket
	stack *tcpipstack.Stack // the underlay netstack, nil for kernel sockets
	owned bool              // created implicitly for one tunnel

	mu      sync.Mutex
	groups  map[netip.Addr]int
	closed  bool
	onClose []func()
}

// OnClose registers f to run after the underlay is closed (to close a
// capture file, for example).
func (s *SharedUnderlay) OnClose(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClose = append(s.onClose, f)
}

// Offloads describes the offloads the underlay uses, for a start-up line
// ("udp-gso udp-gro", ...); empty when none.
func (s *SharedUnderlay) Offloads() string {
	if r, ok := s.sock.Transport().(link.OffloadReporter); ok {
		if o := r.Offloads(); o != 0 {
			return o.String()
		}
	}
	return ""
}

func (s *SharedUnderlay) open(openOptions) (*SharedUnderlay, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("underlay: shared underlay is closed")
	}
	return s, nil
}

// validate has nothing to check: the underlay is open.
func (s *SharedUnderlay) validate() error { return nil }

func (s *SharedUnderlay) localAddr() netip.Addr { return s.sock.Transport().LocalAddr().Addr() }

// Socket returns the Geneve socket (for its drop counters).
func (s *SharedUnderlay) Socket() *endpoint.Socket { return s.sock }

// Stack returns the underlay netstack, or nil for a kernel socket.
func (s *SharedUnderlay) Stack() *tcpipstack.Stack { return s.stack }

// joinGroup joins g once, however many tunnels use it.
func (s *SharedUnderlay) joinGroup(g netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups == nil {
		s.groups = map[netip.Addr]int{}
	}
	if s.groups[g] == 0 {
		if err := s.sock.Transport().JoinGroup(g); err != nil {
			return err
		}
	}
	s.groups[g]++
	return nil
}

func (s *SharedUnderlay) leaveGroup(g netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[g]--; s.groups[g] <= 0 {
		delete(s.groups, g)
		if !s.closed {
			_ = s.sock.Transport().LeaveGroup(g)
		}
	}
}

// Close closes the socket and the underlay netstack.
func (s *SharedUnderlay) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	onClose := s.onClose
	s.mu.Unlock()
	err := s.sock.Close()
	if s.stack != nil {
		s.stack.Destroy()
	}
	for _, f := range onClose {
		f()
	}
	return err
}
