package stack

import (
	"net/netip"

	"github.com/gnv-project/gnv/link/tapnic"
)

// TAPUnderlay runs the underlay netstack on a TAP device of its own
// (tapnic.Endpoint), plugged into the host's network like a virtual
// machine: usually a port of a Linux bridge that also holds the uplink.
// Netstack, not the host kernel, does the underlay's IP, UDP, ARP, ND, IGMP
// and MLD, with its own MAC and Address. On Linux 6.17 and later TCP
// super-packets cross the TAP device whole and the kernel segments them
// after encapsulation (UDP-tunnel GSO), or, on a veth or bridge, never. It
// needs CAP_NET_ADMIN.
type TAPUnderlay struct {
	// Name is the TAP interface name; empty lets the kernel choose.
	Name string
	// Bridge, if set, is the Linux bridge to make the TAP device a port of.
	Bridge string
	// NetstackOptions are the underlay netstack's address and policies.
	NetstackOptions
	// Options tunes the TAP endpoint (MAC, MTU, NoTunnelGSO); its Name
	// and Bridge fields are ignored.
	Options tapnic.Options
}

func (u TAPUnderlay) localAddr() netip.Addr { return u.Address.Addr() }

func (u TAPUnderlay) validate() error { return u.NetstackOptions.validate() }

func (u TAPUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	opts := u.Options
	opts.Name, opts.Bridge = u.Name, u.Bridge
	ep, err := tapnic.New(opts)
	if err != nil {
		return nil, err
	}
	return NetstackUnderlay{Link: ep, NetstackOptions: u.NetstackOptions}.openOwned(o)
}
