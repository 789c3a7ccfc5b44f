package endpoint

import (
	"fmt"
	"net/netip"
	"slices"
)

// floodList is the set of underlay destinations for flooded traffic
// (broadcast, multicast and unknown unicast in L2 mode; every packet
// without a host route in L3 mode): the group or the configured remotes
// (the static part), then the remotes added at run time by a control plane
// (head-end replication, RFC 8365 §8.3). It is immutable: changes build a
// new list, which the transmit and receive paths load atomically.
type floodList struct {
	dsts []netip.AddrPort
	// static is how many of dsts come from the configuration.
	static int
	// set holds the addresses of dsts when there are many, for source
	// validation without a scan.
	set map[netip.Addr]struct{}
}

// floodSetMin is the list length from which source validation uses a map.
const floodSetMin = 8

func newFloodList(dsts []netip.AddrPort, static int) *floodList {
	l := &floodList{dsts: dsts, static: static}
	if len(dsts) >= floodSetMin {
		l.set = make(map[netip.Addr]struct{}, len(dsts))
		for _, d := range dsts {
			l.set[d.Addr()] = struct{}{}
		}
	}
	return l
}

// has reports whether addr is one of the destinations.
func (l *floodList) has(addr netip.Addr) bool {
	if l.set != nil {
		_, ok := l.set[addr]
		return ok
	}
	for _, d := range l.dsts {
		if d.Addr() == addr {
			return true
		}
	}
	return false
}

// AddFloodRemote adds addr to the flood list at run time (a control plane
// learned that the VTEP addr takes part in this VNI, from a BGP EVPN
// Inclusive Multicast route, say): broadcast, multicast and unknown unicast
// frames are then replicated to it as well, all copies of a frame in one
// batched send, and packets from it pass source validation. Adding an
// address that is already in the list does nothing. An endpoint with a
// multicast group takes no remotes.
func (e *Endpoint) AddFloodRemote(addr netip.Addr) error {
	addr = addr.Unmap()
	if err := checkRemote(addr, e.family); err != nil {
		return fmt.Errorf("flood remote %s: %w", addr, err)
	}
	if e.cfg.Group.IsValid() {
		return fmt.Errorf("flood remote %s: the endpoint floods to the group %s", addr, e.cfg.Group)
	}
	e.floodMu.Lock()
	defer e.floodMu.Unlock()
	old := e.flood.Load()
	if old.has(addr) {
		return nil
	}
	dsts := make([]netip.AddrPort, len(old.dsts), len(old.dsts)+1)
	copy(dsts, old.dsts)
	dsts = append(dsts, netip.AddrPortFrom(addr, e.cfg.RemotePort))
	e.flood.Store(newFloodList(dsts, old.static))
	return nil
}

// RemoveFloodRemote removes an address added with AddFloodRemote and
// reports whether it was there. The configured remotes stay.
func (e *Endpoint) RemoveFloodRemote(addr netip.Addr) bool {
	addr = addr.Unmap()
	e.floodMu.Lock()
	defer e.floodMu.Unlock()
	old := e.flood.Load()
	i := slices.IndexFunc(old.dsts[old.static:], func(d netip.AddrPort) bool { return d.Addr() == addr })
	if i < 0 {
		return false
	}
	i += old.static
	dsts := make([]netip.AddrPort, 0, len(old.dsts)-1)
	dsts = append(dsts, old.dsts[:i]...)
	dsts = append(dsts, old.dsts[i+1:]...)
	e.flood.Store(newFloodList(dsts, old.static))
	return true
}

// FloodRemotes returns the flood list: the group or the configured remotes
// first, then those added at run time.
func (e *Endpoint) FloodRemotes() []netip.AddrPort {
	return slices.Clone(e.flood.Load().dsts)
}

// checkRemote checks that a, an outer destination given at run time, is a
// unicast address of the underlay's family (4 or 6).
func checkRemote(a netip.Addr, family int) error {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("want a unicast address")
	}
	if (family == 4) != a.Is4() {
		return fmt.Errorf("the underlay is IPv%d", family)
	}
	return nil
}
