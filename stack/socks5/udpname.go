package socks5

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// UDP datagrams to a name. A client may name a UDP destination rather than
// give its address. The relay looks the name up with the destination
// network when that can (Resolver: a stack.Tunnel with DNS servers), on a
// goroutine of its own so that the relay loop never waits, and remembers
// the answer for a while; datagrams to the name wait meanwhile, up to a
// few. Without a resolver, such datagrams are dropped and counted.

// Resolver is what a destination network may also do: look a name up, as
// net.Resolver.LookupNetIP does ("ip", "ip4" or "ip6"). stack.Net does.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

const (
	// udpNameTTL is how long a looked-up name is remembered, and
	// udpNameFailTTL a name that does not exist.
	udpNameTTL, udpNameFailTTL = 60 * time.Second, 5 * time.Second
	// udpNamePending is how many datagrams may wait for a name.
	udpNamePending = 16
	// udpNamesMax bounds the names an association remembers.
	udpNamesMax = 256
)

// udpName is a name an association's client sent datagrams to.
type udpName struct {
	addr      netip.Addr // invalid: not found, or not yet
	expires   time.Time
	resolving bool
	pending   []udpPending
}

// udpPending is a datagram waiting for its name.
type udpPending struct {
	payload []byte
	port    uint16
}

// lookup returns the address of name, if known: an IP literal, or a name
// looked up before. Otherwise it keeps a copy of payload, to be sent to
// port once the name is known, starts the lookup if none runs, and returns
// false; so it does, counting a drop, when the datagram cannot wait or the
// name cannot be looked up.
func (a *association) lookup(name string, port uint16, payload []byte) (netip.Addr, bool) {
	s := a.s
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip, true
	}
	r, ok := s.network.(Resolver)
	if !ok {
		s.udpDropped.Add(1)
		s.log.Debug("socks5: UDP destination is a name, and the network has no resolver", "target", name)
		return netip.Addr{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.names[name]
	if e != nil && !e.resolving && time.Now().Before(e.expires) {
		if !e.addr.IsValid() {
			s.udpDropped.Add(1)
			return netip.Addr{}, false
		}
		return e.addr, true
	}
	if e == nil || !e.resolving {
		if a.closed {
			s.udpDropped.Add(1)
			return netip.Addr{}, false
		}
		if a.names == nil || len(a.names) >= udpNamesMax {
			a.names = map[string]*udpName{}
		}
		e = &udpName{resolving: true}
		a.names[name] = e
		a.startLocked(func() { a.resolve(r, name, e) })
	}
	if len(e.pending) >= udpNamePending {
		s.udpDropped.Add(1)
		return netip.Addr{}, false
	}
	e.pending = append(e.pending, udpPending{payload: bytes.Clone(payload), port: port})
	return netip.Addr{}, false
}

// resolve looks name up for e, then sends what waited for it. (A datagram
// the relay loop sends to the name meanwhile may overtake them: UDP
// allows it.)
func (a *association) resolve(r Resolver, name string, e *udpName) {
	defer a.wg.Done()
	s := a.s
	ctx, cancel := context.WithTimeout(a.ctx, s.opts.DialTimeout)
	addrs, err := r.LookupNetIP(ctx, "ip", name)
	cancel()
	a.mu.Lock()
	e.resolving = false
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(addrs) > 0:
		e.addr, e.expires = addrs[0].Unmap(), time.Now().Add(udpNameTTL)
	case err == nil || errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		e.expires = time.Now().Add(udpNameFailTTL) // no such name: for a while
	default:
		e.expires = time.Now() // a failed lookup (no resolver, no answer): the next datagram tries again
	}
	pending := e.pending
	e.pending = nil
	a.mu.Unlock()
	if !e.addr.IsValid() {
		s.udpDropped.Add(uint64(len(pending)))
		s.log.Debug("socks5: UDP destination name not found", "target", name, "err", err)
		return
	}
	for _, d := range pending {
		a.send(netip.AddrPortFrom(e.addr, d.port), d.payload)
	}
}
