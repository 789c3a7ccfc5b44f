package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
)

// The overlay's resolver: names given to the net-style dials (and so to
// the SOCKS5 and HTTP proxies and the forwards built on them) are looked
// up with DNS servers in the overlay, over the overlay, as wireproxy and
// tailscale's userspace mode do. Without servers a dial takes IP literals
// only.

// dnsConfig is a Net's resolver.
type dnsConfig struct {
	servers  []netip.AddrPort
	next     atomic.Uint32 // the server the next query goes to
	resolver *net.Resolver
}

// SetDNS makes the dials look names up with the DNS servers (port 0 means
// 53), reached over this netstack; nil or empty turns that off. Go's own
// resolver does the lookups: /etc/hosts first, then the servers in turn
// (UDP, TCP for truncated answers), with the search domains and options
// of /etc/resolv.conf. It may be called at any time.
func (t *Net) SetDNS(servers []netip.AddrPort) error {
	if t == nil {
		return errNoOverlay
	}
	if len(servers) == 0 {
		t.dns.Store(nil)
		return nil
	}
	d := &dnsConfig{}
	for _, s := range servers {
		if !s.Addr().IsValid() || s.Addr().IsUnspecified() || s.Addr().IsMulticast() {
			return errors.New("DNS server " + s.String() + ": want a unicast address")
		}
		if s.Port() == 0 {
			s = netip.AddrPortFrom(s.Addr(), 53)
		}
		d.servers = append(d.servers, netip.AddrPortFrom(s.Addr().Unmap(), s.Port()))
	}
	d.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		// The address is the host's resolver (resolv.conf): go to ours
		// instead, the next one on each try.
		s := d.servers[int(d.next.Add(1)-1)%len(d.servers)]
		return t.dial(ctx, network, s.String(), nil)
	}}
	t.dns.Store(d)
	return nil
}

// DNS returns the servers set with SetDNS.
func (t *Net) DNS() []netip.AddrPort {
	if t == nil {
		return nil
	}
	if d := t.dns.Load(); d != nil {
		return append([]netip.AddrPort(nil), d.servers...)
	}
	return nil
}

// LookupNetIP looks host up with the DNS servers set with SetDNS, as
// net.Resolver's LookupNetIP does (network "ip", "ip4" or "ip6"). Without
// servers it fails with a *net.DNSError that says so.
func (t *Net) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var d *dnsConfig
	if t != nil {
		d = t.dns.Load()
	}
	if d == nil {
		return nil, &net.DNSError{Err: "the overlay has no resolver (set DNS servers: Config.DNS, --dns)", Name: host}
	}
	return d.resolver.LookupNetIP(ctx, network, host)
}

// dialName dials host (not an IP literal) on port: its addresses of the
// network's family, in the order the resolver gives them, until one
// connects. A failed lookup is a *net.DNSError in the *net.OpError.
func (t *Net) dialName(ctx context.Context, d *dnsConfig, network, host, port string, mark *uint32) (net.Conn, error) {
	family := "ip"
	switch network[len(network)-1] {
	case '4':
		family = "ip4"
	case '6':
		family = "ip6"
	}
	addrs, err := d.resolver.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for _, a := range addrs {
		c, err := t.dial(ctx, network, net.JoinHostPort(a.Unmap().String(), port), mark)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if first == nil {
		first = &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no address of the network's family", Name: host, IsNotFound: true}}
	}
	return nil, first
}
