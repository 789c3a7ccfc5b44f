package stack

import (
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/afpacket"
)

// PacketUnderlay runs the underlay netstack on a host interface through an
// AF_PACKET socket (afpacket.Endpoint): netstack, not the host kernel,
// does the underlay's IP, UDP, ARP, ND, IGMP and MLD on Device, with its
// own MAC address by default. It needs root (CAP_NET_RAW, CAP_NET_ADMIN).
//
// Give it an interface the kernel does not use for the same addresses (a
// veth end or a macvlan, up, without Address or any address of its subnet,
// IPv6 disabled): opening checks this with afpacket.CheckHost and fails
// on problems; its warnings go to Warn. See afpacket.Endpoint for the
// offloads (virtio_net_hdr checksum offload and UDP GSO, probed at
// start); SharedUnderlay.Offloads reports the active ones.
type PacketUnderlay struct {
	// Device is the host interface, like "veth-gnv0". It is opened in the
	// calling goroutine's network namespace.
	Device string
	// NetstackOptions are the underlay netstack's address on Device and
	// its policies.
	NetstackOptions
	// Options tunes the AF_PACKET endpoint (MAC, UseInterfaceMAC, MTU,
	// NoVnetHdr, NoTxChecksumOffload, NoUDPGSO, buffer sizes); its Device
	// field is ignored.
	Options afpacket.Options
	// SkipHostCheck opens the underlay even if afpacket.CheckHost finds
	// problems (they are passed to Warn instead).
	SkipHostCheck bool
	// Warn, if set, receives the host check's warnings, one line each.
	Warn func(msg string)
}

func (u PacketUnderlay) localAddr() netip.Addr { return u.Address.Addr() }

func (u PacketUnderlay) validate() error {
	if u.Device == "" {
		return &endpoint.FieldError{Field: "Underlay.Device", Valid: "required: the interface of the AF_PACKET socket"}
	}
	return u.NetstackOptions.validate()
}

func (u PacketUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	warn := u.Warn
	if warn == nil {
		warn = func(string) {}
	}
	warnings, err := afpacket.CheckHost(u.Device, u.Address.Addr())
	for _, w := range warnings {
		warn(w)
	}
	if err != nil {
		if !u.SkipHostCheck {
			return nil, err
		}
		warn(err.Error())
	}
	opts := u.Options
	opts.Device = u.Device
	ep, err := afpacket.New(opts)
	if err != nil {
		return nil, err
	}
	return NetstackUnderlay{Link: ep, NetstackOptions: u.NetstackOptions}.openOwned(o)
}
