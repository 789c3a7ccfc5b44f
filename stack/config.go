package stack

import (
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Config describes one Geneve tunnel: its virtual network, its peers, the
// underlay it runs on and the overlay addresses of its netstack NIC.
type Config struct {
	// VNI is the virtual network identifier, 0..16777215.
	VNI uint32

	// Mode is endpoint.L2 (Ethernet inside, the default) or endpoint.L3.
	Mode endpoint.Mode

	// Remotes are the unicast underlay peers. Exclusive with Group.
	Remotes []netip.Addr

	// Group is an underlay multicast group (IPv4 224.0.0.0/4 or IPv6
	// ff00::/8) that carries the tunnel instead of unicast peers.
	Group netip.Addr

	// DynamicPeers says that a control plane (stack/evpn) adds the peers
	// at run time, so Remotes and Group may both be empty.
	DynamicPeers bool

	// Port is the remote Geneve UDP port (the destination port of every
	// datagram); 0 means 6081.
	Port uint16

	// LocalPort is the UDP port to receive on; 0 means Port. It is ignored
	// when Underlay is a SharedUnderlay, which is already bound.
	LocalPort uint16

	// Underlay says how Geneve datagrams reach the network: a netstack
	// underlay on a link endpoint (NetstackUnderlay), a kernel UDP socket
	// (KernelUDPUnderlay) or a socket shared with other tunnels
	// (*SharedUnderlay). Required.
	Underlay Underlay

	// Addresses are the overlay NIC's addresses, with prefix lengths.
	Addresses []netip.Prefix

	// MTU is the overlay IP MTU; 0 derives it from the underlay MTU.
	MTU uint32

	// DNS are DNS servers in the overlay (port 0 means 53): with them the
	// tunnel's dials, and the proxies and forwards built on them, take
	// names too (Net.SetDNS). Netstack overlays only.
	DNS []netip.AddrPort

	// MAC is the overlay NIC's MAC address (L2); nil means random.
	MAC net.HardwareAddr

	// Clock drives the overlay and underlay netstacks' timers; nil means
	// the real clock. Tests pass a faketime.ManualClock.
	Clock tcpip.Clock

	// Rand, if set, is the random source of the tunnel's overlay netstack,
	// and of its underlay netstack when the tunnel opens one itself
	// (gVisor's stack.Options.SecureRNG; the stack also seeds its
	// non-cryptographic generator from it): TCP initial sequence numbers
	// and timestamp offsets, ephemeral ports, IPv4 IDs, SYN cookies,
	// neighbour timer jitter. It must be safe for concurrent use. Nil means
	// crypto/rand. Tests pass a seeded reader (testutil.SeededReader) so
	// that a run can be repeated exactly; a predictable source makes
	// sequence numbers guessable, so never set it in production.
	Rand io.Reader

	// Device, when set, patches the tunnel to a TAP (L2) or TUN (L3)
	// device instead of an overlay netstack: host programs then use the
	// tunnel like a kernel interface, and the Tunnel's net-style methods
	// are not available. Creating a device needs CAP_NET_ADMIN.
	Device *DeviceConfig

	// Switch, when set, puts an L2 learning switch between the Geneve
	// endpoint and the overlay (netstack or TAP device), so that virtual
	// machines join the overlay as ports of their own, without a TAP
	// device or privileges: Tunnel.AttachVM, ServeVM, ListenVM. L2 tunnels
	// only.
	Switch *SwitchConfig

	// Endpoint holds the less common Geneve endpoint settings (TTL, TOS,
	// DF, options, source port range, GSO/GRO, control hook). Its VNI,
	// Mode, Remotes, Group, RemotePort, MAC and MTU fields are ignored:
	// the fields above set them.
	Endpoint endpoint.Config
}

// DeviceConfig configures a TAP or TUN overlay device.
type DeviceConfig struct {
	// Name is the interface name; empty lets the kernel choose.
	Name string
	// DisableOffloads opens the device without virtio-net headers (no
	// TSO/checksum offload between the kernel and gnv).
	DisableOffloads bool
}

// Validate reports the first invalid field of c as an
// *endpoint.FieldError (see there for how fields are named), as New would,
// without opening anything: the Underlay need not be open yet, and is
// checked as given.
func (c *Config) Validate() error {
	if c.Underlay == nil {
		return &endpoint.FieldError{Field: "Underlay", Valid: "required (NetstackUnderlay, KernelUDPUnderlay or a SharedUnderlay)"}
	}
	if err := c.Underlay.validate(); err != nil {
		return err
	}
	// The endpoint checks the fields it shares with c (VNI, Mode, Remotes,
	// Group, MAC) and those of c.Endpoint; the local address sets the
	// family the peers must have.
	fam := 0
	if la := c.Underlay.localAddr(); la.IsValid() {
		fam = family(la)
	}
	if err := c.endpointConfig().Validate(fam); err != nil {
		return endpointError(err)
	}
	if len(c.Remotes) == 0 && !c.Group.IsValid() && !c.DynamicPeers {
		return &endpoint.FieldError{Field: "Remotes", Problem: "or {Group}", Valid: "one is required (or DynamicPeers, with a control plane)"}
	}
	for _, p := range c.Addresses {
		if !p.IsValid() {
			return &endpoint.FieldError{Field: "Addresses", Value: p, Valid: "want an address with a prefix length, like 10.0.0.1/24"}
		}
	}
	for _, d := range c.DNS {
		if !d.Addr().IsValid() || d.Addr().IsUnspecified() || d.Addr().IsMulticast() {
			return &endpoint.FieldError{Field: "DNS", Value: d, Valid: "want a unicast address with an optional port, like 10.0.0.53:53"}
		}
	}
	if len(c.DNS) > 0 && c.Device != nil {
		return &endpoint.FieldError{Field: "DNS", Valid: "a tunnel patched to a TAP/TUN device has no in-process overlay to resolve for (the host's resolver serves the device)"}
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return &endpoint.FieldError{Field: "MTU", Value: c.MTU, Problem: "out of range", Valid: "valid MTUs are 68..65535"}
	}
	if c.MAC != nil && c.Mode == endpoint.L3 {
		return &endpoint.FieldError{Field: "MAC", Valid: "an l3 tunnel has no link-layer address"}
	}
	return nil
}

// family is 4 or 6.
func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// endpointError reports an error of the endpoint configuration that
// endpointConfig built with the paths of Config: the fields Config sets
// keep their names (RemotePort is Port), the others are in Endpoint.
func endpointError(err error) error {
	var fe *endpoint.FieldError
	if !errors.As(err, &fe) || error(fe) != err {
		return err
	}
	return fe.Rename(func(f string) string {
		switch f {
		case "VNI", "Mode", "Remotes", "Group", "MAC", "MTU":
			return f
		case "RemotePort":
			return "Port"
		}
		return "Endpoint." + f
	})
}

// endpointConfig merges c into the endpoint configuration.
func (c *Config) endpointConfig() endpoint.Config {
	ec := c.Endpoint
	ec.VNI = c.VNI
	ec.Mode = c.Mode
	ec.Remotes = c.Remotes
	ec.Group = c.Group
	ec.RemotePort = c.Port
	ec.MTU = c.MTU
	if ec.Clock == nil {
		ec.Clock = c.Clock
	}
	ec.MAC = ""
	if c.MAC != nil {
		ec.MAC = tcpip.LinkAddress(c.MAC)
	}
	return ec
}
