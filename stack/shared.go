package stack

import (
	"errors"
	"fmt"
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

	// dontFragment sets DF on a kernel socket, which does so for all its
	// datagrams; nil for underlays that set DF per packet.
	dontFragment func(on bool) error

	mu      sync.Mutex
	groups  map[netip.Addr]int
	dfUsers int  // tunnels that set the socket's DF (dontFragment)
	dfOn    bool // the socket's DF while dfUsers > 0
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

// holdDF applies a tunnel's outer DF policy to a kernel socket, which
// sets DF for all its datagrams: DF set for endpoint.DFSet, clear for
// DFUnset and for DFInherit (a kernel socket has no per-packet DF, so
// inherit falls back to clear: the endpoint still refuses inner packets
// with DF that exceed the tunnel MTU, and lets larger ones without DF
// through for the outer packet to be fragmented, which DF set would
// refuse). Tunnels sharing the socket must agree. It reports whether it
// holds the setting, for releaseDF; underlays that set DF per packet
// (netstack) need nothing.
func (s *SharedUnderlay) holdDF(mode endpoint.DFMode) (bool, error) {
	if s.dontFragment == nil {
		return false, nil
	}
	on := mode == endpoint.DFSet
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dfUsers > 0 && s.dfOn != on {
		state := "clear"
		if s.dfOn {
			state = "set"
		}
		return false, fmt.Errorf("df %s: another tunnel on this kernel UDP underlay sends with DF %s, and a kernel socket sets DF for all its datagrams (give the tunnels the same DF policy, or use a netstack underlay)", mode, state)
	}
	if s.dfUsers == 0 {
		if err := s.dontFragment(on); err != nil {
			return false, fmt.Errorf("df %s: %w", mode, err)
		}
		s.dfOn = on
	}
	s.dfUsers++
	return true, nil
}

// releaseDF undoes a successful holdDF.
func (s *SharedUnderlay) releaseDF() {
	s.mu.Lock()
	s.dfUsers--
	s.mu.Unlock()
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
