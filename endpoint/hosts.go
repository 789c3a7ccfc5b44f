package endpoint

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
)

// HostRoute is an L3 endpoint's route for one overlay address: packets for
// IP go to Remote only. A control plane adds them (BGP EVPN MAC/IP routes
// with an address); packets for other addresses go to the flood list.
type HostRoute struct {
	IP     netip.Addr
	Remote netip.AddrPort
	Origin string
}

// String formats the route like a line of "gnv fdb show".
func (h HostRoute) String() string {
	s := fmt.Sprintf("%s via %s", h.IP, h.Remote)
	if h.Origin != "" {
		s += " " + h.Origin
	}
	return s
}

type hostRoute struct {
	remote netip.AddrPort
	origin string
}

// hostTable holds an L3 endpoint's host routes.
type hostTable struct {
	mu sync.RWMutex
	m  map[netip.Addr]hostRoute
	// remotes counts routes per remote address, for source validation.
	remotes map[netip.Addr]int
	n       atomic.Int32 // len(m), read without the lock
}

// lookup returns the route of the destination of the IP packet ip.
func (t *hostTable) lookup(ip []byte) (netip.AddrPort, bool) {
	var dst netip.Addr
	switch {
	case len(ip) >= 20 && ip[0]>>4 == 4:
		dst = netip.AddrFrom4([4]byte(ip[16:20]))
	case len(ip) >= 40 && ip[0]>>4 == 6:
		dst = netip.AddrFrom16([16]byte(ip[24:40]))
	default:
		return netip.AddrPort{}, false
	}
	t.mu.RLock()
	r, ok := t.m[dst]
	t.mu.RUnlock()
	return r.remote, ok
}

func (t *hostTable) isRemote(a netip.Addr) bool {
	if t.n.Load() == 0 {
		return false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.remotes[a] > 0
}

// AddHostRoute adds or replaces the route of the overlay address ip on an
// L3 endpoint: its packets go to remote (port 0: the endpoint's remote
// port). origin marks the route (see FDB.AddStaticFrom).
func (e *Endpoint) AddHostRoute(ip netip.Addr, remote netip.AddrPort, origin string) error {
	if e.cfg.Mode != L3 {
		return fmt.Errorf("host route %s: only l3 endpoints have host routes (l2 ones use the forwarding table)", ip)
	}
	ip = ip.Unmap()
	ra := remote.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("host route %s: want a unicast address", ip)
	}
	if err := checkRemote(ra, e.family); err != nil {
		return fmt.Errorf("host route %s: remote %s: %w", ip, ra, err)
	}
	port := remote.Port()
	if port == 0 {
		port = e.cfg.RemotePort
	}
	t := &e.hosts
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[netip.Addr]hostRoute)
		t.remotes = make(map[netip.Addr]int)
	}
	if old, ok := t.m[ip]; ok {
		t.dropRemoteLocked(old.remote.Addr())
	}
	t.m[ip] = hostRoute{remote: netip.AddrPortFrom(ra, port), origin: origin}
	t.remotes[ra]++
	t.n.Store(int32(len(t.m)))
	return nil
}

func (t *hostTable) dropRemoteLocked(a netip.Addr) {
	if t.remotes[a]--; t.remotes[a] <= 0 {
		delete(t.remotes, a)
	}
}

// RemoveHostRoute removes ip's route if origin added it, and reports
// whether it did.
func (e *Endpoint) RemoveHostRoute(ip netip.Addr, origin string) bool {
	ip = ip.Unmap()
	t := &e.hosts
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.m[ip]
	if !ok || r.origin != origin {
		return false
	}
	t.dropRemoteLocked(r.remote.Addr())
	delete(t.m, ip)
	t.n.Store(int32(len(t.m)))
	return true
}

// HostRoutes returns the host routes sorted by address.
func (e *Endpoint) HostRoutes() []HostRoute {
	t := &e.hosts
	t.mu.RLock()
	out := make([]HostRoute, 0, len(t.m))
	for ip, r := range t.m {
		out = append(out, HostRoute{IP: ip, Remote: r.remote, Origin: r.origin})
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}
