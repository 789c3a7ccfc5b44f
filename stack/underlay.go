package stack

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Underlay says how a tunnel's Geneve datagrams reach the network. The
// implementations are NetstackUnderlay, PacketUnderlay, TAPUnderlay,
// KernelUDPUnderlay, TransportUnderlay and *SharedUnderlay.
type Underlay interface {
	// open creates (or, for a shared underlay, borrows) the socket.
	open(o openOptions) (*SharedUnderlay, error)
	// localAddr is the configured local underlay address, if any.
	localAddr() netip.Addr
	// validate checks the underlay's own fields, before anything is
	// opened; its errors are *endpoint.FieldError with "Underlay." paths.
	validate() error
}

// Checksums is the outer UDP checksum policy (RFC 8926 §4.3): checksums
// are sent and checked by default; zero checksums are accepted on IPv4
// always, and on IPv6 only when configured.
type Checksums struct {
	// NoChecksumTx4 sends IPv4 datagrams with a zero UDP checksum.
	NoChecksumTx4 bool
	// ZeroChecksumTx6 sends IPv6 datagrams with a zero UDP checksum, and
	// ZeroChecksumRx6 accepts them (RFC 8926 §4.3.1: only when configured,
	// in a controlled network).
	ZeroChecksumTx6, ZeroChecksumRx6 bool
}

// openOptions are what opening an underlay needs besides its own fields.
type openOptions struct {
	port      uint16      // local UDP port
	family    int         // 4 or 6: the family of the remotes or group
	clock     tcpip.Clock // for a netstack underlay
	rand      io.Reader   // a netstack underlay's random source; nil: crypto/rand
	multicast bool        // tunnels on it use a group
}

// UnderlayOptions configure OpenUnderlay.
type UnderlayOptions struct {
	// Port is the local UDP port; 0 means 6081.
	Port uint16
	// EphemeralPort binds a port the system picks instead (kernel UDP
	// underlays only); read it back from Socket().Transport().LocalAddr().
	// Peers must then send to that port (Config.Port).
	EphemeralPort bool
	// Family is 4 or 6; it is needed only when the underlay has no local
	// address to take it from (a KernelUDPUnderlay bound to the wildcard).
	Family int
	// Clock drives a netstack underlay's timers; nil means the real clock.
	Clock tcpip.Clock
	// Rand is a netstack underlay's random source (IPv4 IDs, IGMP/MLD and
	// neighbour timer jitter, DAD nonces), as Config.Rand is the overlay's;
	// nil means crypto/rand. Only tests set it.
	Rand io.Reader
	// Multicast says that tunnels on this underlay use a multicast group.
	// A kernel socket then binds the wildcard address (a socket bound to
	// a unicast address never receives datagrams sent to a group); its
	// Local address still selects the family.
	Multicast bool
}

// OpenUnderlay opens u so that several tunnels can share it: pass the result
// as the Underlay of each tunnel's Config.
func OpenUnderlay(u Underlay, opts UnderlayOptions) (*SharedUnderlay, error) {
	if err := u.validate(); err != nil {
		return nil, err
	}
	if opts.Port == 0 && !opts.EphemeralPort {
		opts.Port = geneve.Port
	}
	if la := u.localAddr(); la.IsValid() {
		opts.Family = 6
		if la.Unmap().Is4() {
			opts.Family = 4
		}
	}
	if opts.Family != 4 && opts.Family != 6 {
		return nil, &endpoint.FieldError{Field: "UnderlayOptions.Family", Value: opts.Family, Valid: "want 4 or 6 (or an underlay with a local address)"}
	}
	return u.open(openOptions{port: opts.Port, family: opts.Family, clock: opts.Clock, rand: opts.Rand, multicast: opts.Multicast})
}

// subnet converts a prefix to a netstack subnet (host bits cleared).
func subnet(p netip.Prefix) tcpip.Subnet {
	p = p.Masked()
	a := p.Addr().Unmap()
	bits := p.Bits()
	if p.Addr().Is4In6() {
		bits -= 96
	}
	n := a.BitLen()
	mask := make([]byte, n/8)
	for i := 0; i < bits; i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	s, err := tcpip.NewSubnet(tcpip.AddrFromSlice(a.AsSlice()), tcpip.MaskFromBytes(mask))
	if err != nil {
		panic(fmt.Sprintf("subnet %s: %v", p, err)) // p was masked: cannot happen
	}
	return s
}
