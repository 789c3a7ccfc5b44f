package stack

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/afpacket"
	"github.com/gnv-project/gnv/link/capture"
	"github.com/gnv-project/gnv/link/nsudp"
	"github.com/gnv-project/gnv/link/qdisc"
	"github.com/gnv-project/gnv/link/tapnic"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// NetstackUnderlay runs the underlay IP/UDP in a gVisor netstack of its own,
// on a link endpoint: a port of the in-memory test fabric, an AF_PACKET
// endpoint on a host interface, or anything else that speaks Ethernet. The
// tunnel owns the link endpoint once created.
type NetstackUnderlay struct {
	// Link is the underlay NIC.
	Link tcpipstack.LinkEndpoint
	NetstackOptions
}

// NetstackOptions are the settings of an underlay netstack that every
// underlay running one shares (NetstackUnderlay, TAPUnderlay,
// PacketUnderlay).
type NetstackOptions struct {
	// Address is netstack's underlay address and prefix, like
	// 192.0.2.1/24. The host kernel must not have it on the same link.
	Address netip.Prefix
	// Gateway is the next hop for underlay destinations outside Address's
	// prefix; invalid means none.
	Gateway netip.Addr
	// MulticastTTL is the TTL of datagrams sent to a group; 0 means 64.
	MulticastTTL uint8
	// Pcap, if set, receives a capture of every underlay frame (Ethernet).
	// Segmentation jobs appear as the one large frame written.
	Pcap io.Writer
	// Checksums is the outer UDP checksum policy.
	Checksums
}

func (u NetstackUnderlay) localAddr() netip.Addr { return u.Address.Addr() }

func (u NetstackUnderlay) validate() error {
	if u.Link == nil {
		return &endpoint.FieldError{Field: "Underlay.Link", Valid: "required: the underlay NIC"}
	}
	return u.NetstackOptions.validate()
}

// validate checks the options of every netstack underlay.
func (o NetstackOptions) validate() error {
	if !o.Address.IsValid() {
		return &endpoint.FieldError{Field: "Underlay.Address", Valid: "required, like 192.0.2.1/24"}
	}
	addr := o.Address.Addr().Unmap()
	if !addr.IsGlobalUnicast() && !addr.IsPrivate() && !addr.IsLinkLocalUnicast() {
		return &endpoint.FieldError{Field: "Underlay.Address", Value: o.Address, Valid: "want a unicast address"}
	}
	if o.Gateway.IsValid() && family(o.Gateway) != family(addr) {
		return &endpoint.FieldError{Field: "Underlay.Gateway", Value: o.Gateway,
			Problem: fmt.Sprintf("is IPv%d but {Underlay.Address} is IPv%d", family(o.Gateway), family(addr)), Valid: "the underlay uses one address family"}
	}
	return nil
}

func (u NetstackUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	addr := u.Address.Addr().Unmap()
	s := tcpipstack.New(tcpipstack.Options{
		NetworkProtocols: []tcpipstack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}),
			ipv6.NewProtocolWithOptions(ipv6.Options{MLD: ipv6.MLDOptions{Enabled: true}}),
			arp.NewProtocol,
		},
		TransportProtocols: []tcpipstack.TransportProtocolFactory{
			udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
		Clock:     o.clock,
		SecureRNG: o.rand,
	})
	fail := func(err error) (*SharedUnderlay, error) {
		s.Destroy()
		return nil, err
	}
	_ = s.SetOption(tcpip.ReceiveBufferSizeOption{Min: 4 << 10, Default: 4 << 20, Max: 16 << 20})
	_ = s.SetOption(tcpip.SendBufferSizeOption{Min: 4 << 10, Default: 4 << 20, Max: 16 << 20})
	const nic = 1
	var lep tcpipstack.LinkEndpoint = u.Link
	if u.Pcap != nil {
		c, err := capture.NewEndpoint(u.Link, u.Pcap)
		if err != nil {
			return fail(fmt.Errorf("underlay pcap: %w", err))
		}
		lep = c
	}
	if terr := s.CreateNICWithOptions(nic, lep, tcpipstack.NICOptions{Name: "underlay", QDisc: underlayQDisc(u.Link, lep)}); terr != nil {
		return fail(fmt.Errorf("underlay: create NIC: %s", terr))
	}
	proto := ipv4.ProtocolNumber
	if !addr.Is4() {
		proto = ipv6.ProtocolNumber
	}
	if terr := s.AddProtocolAddress(nic, tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(addr.AsSlice()), PrefixLen: u.Address.Bits()},
	}, tcpipstack.AddressProperties{}); terr != nil {
		return fail(fmt.Errorf("underlay address %s: %s", u.Address, terr))
	}
	routes := []tcpip.Route{{Destination: subnet(u.Address), NIC: nic}}
	if u.Gateway.IsValid() {
		def := header.IPv4EmptySubnet
		if !addr.Is4() {
			def = header.IPv6EmptySubnet
		}
		routes = append(routes, tcpip.Route{Destination: def, Gateway: tcpip.AddrFromSlice(u.Gateway.Unmap().AsSlice()), NIC: nic})
	}
	// Multicast groups are reached on the NIC directly.
	if addr.Is4() {
		routes = append(routes, tcpip.Route{Destination: subnet(netip.MustParsePrefix("224.0.0.0/4")), NIC: nic})
	} else {
		routes = append(routes, tcpip.Route{Destination: subnet(netip.MustParsePrefix("ff00::/8")), NIC: nic})
	}
	s.SetRouteTable(routes)
	t, err := nsudp.New(nsudp.Options{
		Stack:           s,
		NIC:             nic,
		Local:           netip.AddrPortFrom(addr, o.port),
		MulticastTTL:    u.MulticastTTL,
		Segmenter:       underlaySegmenter(u.Link),
		TunnelSegmenter: underlayTunnelSegmenter(u.Link),
		NoChecksum4:     u.NoChecksumTx4,
		ZeroChecksumTx6: u.ZeroChecksumTx6,
		ZeroChecksumRx6: u.ZeroChecksumRx6,
	})
	if err != nil {
		return fail(err)
	}
	sock, err := endpoint.NewSocket(t)
	if err != nil {
		t.Close()
		return fail(err)
	}
	return &SharedUnderlay{sock: sock, stack: s}, nil
}

// openOwned opens u for an underlay that created u.Link itself: the link
// is closed if opening fails.
func (u NetstackUnderlay) openOwned(o openOptions) (*SharedUnderlay, error) {
	sh, err := u.open(o)
	if err != nil {
		u.Link.Close() // a no-op if the stack got to close it
		return nil, err
	}
	return sh, nil
}

// underlayQDisc returns the NIC's queueing discipline for link (wrapped in
// lep): for an AF_PACKET or TAP endpoint one that allocates nothing per packet,
// else nil (the stack's default).
func underlayQDisc(l tcpipstack.LinkEndpoint, lep tcpipstack.LinkEndpoint) tcpipstack.QueueingDiscipline {
	switch l.(type) {
	case *afpacket.Endpoint, *tapnic.Endpoint:
		return qdisc.NewDirect(lep)
	}
	return nil
}

// underlaySegmenter returns link if it takes UDP segmentation jobs: the
// transport cannot find it itself behind a capture wrapper.
func underlaySegmenter(l tcpipstack.LinkEndpoint) link.UDPSegmenter {
	if sg, ok := l.(link.UDPSegmenter); ok {
		return sg
	}
	return nil
}

// underlayTunnelSegmenter returns link if it takes UDP-tunnel segmentation
// jobs, for the same reason.
func underlayTunnelSegmenter(l tcpipstack.LinkEndpoint) link.TunnelSegmenter {
	if sg, ok := l.(link.TunnelSegmenter); ok {
		return sg
	}
	return nil
}
