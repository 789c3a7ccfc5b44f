package stack

import (
	"net/netip"
	"slices"
)

// What a control plane (stack/evpn) reads of a tunnel.

// Addresses returns the overlay addresses the tunnel was configured with
// (Config.Addresses).
func (t *Tunnel) Addresses() []netip.Prefix { return slices.Clone(t.cfg.Addresses) }

// VTEP returns the tunnel's underlay address: the local address of its
// socket, which is the unspecified address for a kernel UDP socket bound to
// the wildcard address.
func (t *Tunnel) VTEP() netip.Addr { return t.underlay.sock.Transport().LocalAddr().Addr().Unmap() }
