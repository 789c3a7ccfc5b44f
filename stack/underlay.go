package stack

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/afpacket"
	"github.com/gnv-project/gnv/link/capture"
	"github.com/gnv-project/gnv/link/kudp"
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

// Underlay says how a tunnel's Geneve datagrams reach the network. The
// implementations are NetstackUnderlay, PacketUnderlay, TAPUnderlay,
// KernelUDPUnderlay and *SharedUnderlay.
type Underlay interface {
	// open creates (or, for a shared underlay, borrows) the socket.
	open(o openOptions) (*SharedUnderlay, error)
	// localAddr is the configured local underlay address, if any.
	localAddr() netip.Addr
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

// NetstackUnderlay runs the underlay IP/UDP in a gVisor netstack of its own,
// on a link endpoint: a port of the in-memory test fabric, an AF_PACKET
// endpoint on a host interface, or anything else that speaks Ethernet. The
// tunnel owns the link endpoint once created.
type NetstackUnderlay struct {
	// Link is the underlay NIC.
	Link tcpipstack.LinkEndpoint
	// Address is the underlay address and prefix on Link, like
	// 192.0.2.1/24.
	Address netip.Prefix
	// Gateway is the next hop for underlay destinations outside Address's
	// prefix; invalid means none.
	Gateway netip.Addr
	// MulticastTTL is the TTL of datagrams sent to a group; 0 means 64.
	MulticastTTL uint8
	// Pcap, if set, receives a capture of every underlay frame (Ethernet).
	Pcap io.Writer
	// Checksums is the outer UDP checksum policy.
	Checksums
}

func (u NetstackUnderlay) localAddr() netip.Addr { return u.Address.Addr() }

// KernelUDPUnderlay sends Geneve over an ordinary kernel UDP socket. It
// needs no privilege at all.
type KernelUDPUnderlay struct {
	// Local is the local address to bind; invalid means the wildcard
	// address of the remotes' family.
	Local netip.Addr
	// Device is the interface for multicast (joins and sends).
	Device string
	// MTU is the underlay IP MTU; 0 means the interface's.
	MTU int
	// Pcap, if set, receives a capture of every Geneve datagram sent or
	// received, with synthesised outer IP and UDP headers.
	Pcap io.Writer
	// Checksums is the outer UDP checksum policy.
	Checksums
	// MulticastTTL is the socket's TTL for datagrams to a group when a
	// packet does not set one; 0 means 1 (the kernel's default).
	MulticastTTL uint8
	// DisableOffloads turns off UDP GSO and GRO.
	DisableOffloads bool
	// SourcePorts is the number of extra send-only sockets that give
	// different flows different outer UDP source ports (ECMP entropy, RFC
	// 8926 §3.3); see kudp.Options.SourcePorts. 0 means the
	// default (16); negative sends everything from the Geneve port.
	SourcePorts int
}

func (u KernelUDPUnderlay) localAddr() netip.Addr { return u.Local }

// SharedUnderlay is an open underlay socket that several tunnels (VNIs) can
// share: each tunnel's Config names it as its Underlay. Closing a tunnel
// does not close a SharedUnderlay; Close it after its tunnels.
type SharedUnderlay struct {
	sock  *endpoint.Socket
	stack *tcpipstack.Stack // the underlay netstack, nil for kernel sockets
	owned bool              // created implicitly for one tunnel

	mu      sync.Mutex
	groups  map[netip.Addr]int
	closed  bool
	onClose []func()
}

// OnClose registers f to run after the underlay is closed (to close a
// capture file, for example).
func (s *SharedUnderlay) OnClose(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClose = append(s.onClose, f)
}

// Offloads describes the offloads the underlay uses, for a start-up line
// ("udp-gso udp-gro", ...); empty when none.
func (s *SharedUnderlay) Offloads() string {
	if r, ok := s.sock.Transport().(link.OffloadReporter); ok {
		if o := r.Offloads(); o != 0 {
			return o.String()
		}
	}
	return ""
}

// openOptions are what opening an underlay needs besides its own fields.
type openOptions struct {
	port      uint16      // local UDP port
	family    int         // 4 or 6: the family of the remotes or group
	clock     tcpip.Clock // for a netstack underlay
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
	// Multicast says that tunnels on this underlay use a multicast group.
	// A kernel socket then binds the wildcard address (a socket bound to
	// a unicast address never receives datagrams sent to a group); its
	// Local address still selects the family.
	Multicast bool
}

// OpenUnderlay opens u so that several tunnels can share it: pass the result
// as the Underlay of each tunnel's Config.
func OpenUnderlay(u Underlay, opts UnderlayOptions) (*SharedUnderlay, error) {
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
		return nil, fmt.Errorf("underlay family %d: want 4 or 6 (or a local address)", opts.Family)
	}
	return u.open(openOptions{port: opts.Port, family: opts.Family, clock: opts.Clock, multicast: opts.Multicast})
}

func (s *SharedUnderlay) open(openOptions) (*SharedUnderlay, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("underlay: shared underlay is closed")
	}
	return s, nil
}

func (s *SharedUnderlay) localAddr() netip.Addr { return s.sock.Transport().LocalAddr().Addr() }

// Socket returns the Geneve socket (for its drop counters).
func (s *SharedUnderlay) Socket() *endpoint.Socket { return s.sock }

// Stack returns the underlay netstack, or nil for a kernel socket.
func (s *SharedUnderlay) Stack() *tcpipstack.Stack { return s.stack }

// joinGroup joins g once, however many tunnels use it.
func (s *SharedUnderlay) joinGroup(g netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups == nil {
		s.groups = map[netip.Addr]int{}
	}
	if s.groups[g] == 0 {
		if err := s.sock.Transport().JoinGroup(g); err != nil {
			return err
		}
	}
	s.groups[g]++
	return nil
}

func (s *SharedUnderlay) leaveGroup(g netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[g]--; s.groups[g] <= 0 {
		delete(s.groups, g)
		if !s.closed {
			_ = s.sock.Transport().LeaveGroup(g)
		}
	}
}

// Close closes the socket and the underlay netstack.
func (s *SharedUnderlay) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	onClose := s.onClose
	s.mu.Unlock()
	err := s.sock.Close()
	if s.stack != nil {
		s.stack.Destroy()
	}
	for _, f := range onClose {
		f()
	}
	return err
}

func (u NetstackUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	if u.Link == nil {
		return nil, errors.New("underlay: netstack underlay needs a link endpoint")
	}
	if !u.Address.IsValid() {
		return nil, errors.New("underlay address: required, like 192.0.2.1/24")
	}
	addr := u.Address.Addr().Unmap()
	if !addr.IsGlobalUnicast() && !addr.IsPrivate() && !addr.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("underlay address %s: want a unicast address", u.Address)
	}
	if u.Gateway.IsValid() && u.Gateway.Unmap().Is4() != addr.Is4() {
		return nil, fmt.Errorf("gateway %s: not the same address family as the underlay address %s", u.Gateway, u.Address)
	}
	s := tcpipstack.New(tcpipstack.Options{
		NetworkProtocols: []tcpipstack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}),
			ipv6.NewProtocolWithOptions(ipv6.Options{MLD: ipv6.MLDOptions{Enabled: true}}),
			arp.NewProtocol,
		},
		TransportProtocols: []tcpipstack.TransportProtocolFactory{
			udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
		Clock: o.clock,
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
	// Address is netstack's underlay address and prefix, like
	// 192.0.2.1/24. The host kernel must not have it.
	Address netip.Prefix
	// Gateway is the next hop for underlay destinations outside Address's
	// prefix; invalid means none.
	Gateway netip.Addr
	// MulticastTTL is the TTL of datagrams sent to a group; 0 means 64.
	MulticastTTL uint8
	// Pcap, if set, receives a capture of every underlay frame (Ethernet).
	// Segmentation jobs appear as the one large frame written.
	Pcap io.Writer
	// Options tunes the TAP endpoint (MAC, MTU, NoTunnelGSO); its Name
	// and Bridge fields are ignored.
	Options tapnic.Options
	// Checksums is the outer UDP checksum policy.
	Checksums
}

func (u TAPUnderlay) localAddr() netip.Addr { return u.Address.Addr() }

func (u TAPUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	if !u.Address.IsValid() {
		return nil, errors.New("underlay address: required, like 192.0.2.1/24")
	}
	opts := u.Options
	opts.Name, opts.Bridge = u.Name, u.Bridge
	ep, err := tapnic.New(opts)
	if err != nil {
		return nil, err
	}
	return NetstackUnderlay{
		Link:         ep,
		Address:      u.Address,
		Gateway:      u.Gateway,
		MulticastTTL: u.MulticastTTL,
		Pcap:         u.Pcap,
		Checksums:    u.Checksums,
	}.openOwned(o)
}

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
	// Address is netstack's underlay address and prefix on Device, like
	// 192.0.2.1/24.
	Address netip.Prefix
	// Gateway is the next hop for underlay destinations outside Address's
	// prefix; invalid means none.
	Gateway netip.Addr
	// MulticastTTL is the TTL of datagrams sent to a group; 0 means 64.
	MulticastTTL uint8
	// Pcap, if set, receives a capture of every underlay frame (Ethernet).
	// Runs sent as one UDP GSO frame appear as that one large frame.
	Pcap io.Writer
	// Options tunes the AF_PACKET endpoint (MAC, UseInterfaceMAC, MTU,
	// NoVnetHdr, NoTxChecksumOffload, NoUDPGSO, buffer sizes); its Device
	// field is ignored.
	Options afpacket.Options
	// SkipHostCheck opens the underlay even if afpacket.CheckHost finds
	// problems (they are passed to Warn instead).
	SkipHostCheck bool
	// Warn, if set, receives the host check's warnings, one line each.
	Warn func(msg string)
	// Checksums is the outer UDP checksum policy.
	Checksums
}

func (u PacketUnderlay) localAddr() netip.Addr { return u.Address.Addr() }

func (u PacketUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	if u.Device == "" {
		return nil, errors.New("underlay: AF_PACKET underlay needs a device")
	}
	if !u.Address.IsValid() {
		return nil, errors.New("underlay address: required, like 192.0.2.1/24")
	}
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
	return NetstackUnderlay{
		Link:         ep,
		Address:      u.Address,
		Gateway:      u.Gateway,
		MulticastTTL: u.MulticastTTL,
		Pcap:         u.Pcap,
		Checksums:    u.Checksums,
	}.openOwned(o)
}

func (u KernelUDPUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	local := u.Local
	if o.multicast {
		local = netip.Addr{}
	}
	k, err := kudp.New(kudp.Options{
		Local:           netip.AddrPortFrom(local, o.port),
		Family:          o.family,
		Device:          u.Device,
		MTU:             u.MTU,
		NoChecksumTx4:   u.NoChecksumTx4,
		ZeroChecksumTx6: u.ZeroChecksumTx6,
		ZeroChecksumRx6: u.ZeroChecksumRx6,
		MulticastTTL:    int(u.MulticastTTL),
		DisableGSO:      u.DisableOffloads,
		DisableGRO:      u.DisableOffloads,
		SourcePorts:     u.SourcePorts,
	})
	if err != nil {
		return nil, fmt.Errorf("underlay: kernel udp: %w", err)
	}
	var t link.Transport = k
	if u.Pcap != nil {
		if t, err = capture.NewTransport(k, u.Pcap); err != nil {
			k.Close()
			return nil, fmt.Errorf("underlay pcap: %w", err)
		}
	}
	sock, err := endpoint.NewSocket(t)
	if err != nil {
		t.Close()
		return nil, err
	}
	return &SharedUnderlay{sock: sock}, nil
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
