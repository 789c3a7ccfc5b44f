package l2switch

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// HostPortOptions configures a host port.
type HostPortOptions struct {
	// Name names the port; empty means "host".
	Name string
	// MTU is the link's IP MTU; 0 means 1500. Give it the smallest MTU of
	// the other ports (the tunnel's), so that the netstack never sends
	// what a port cannot carry.
	MTU uint32
	// MAC is the host's MAC address; nil means a random locally
	// administered one. A TAP device sets its own (SetLinkAddress).
	MAC net.HardwareAddr
	// GSOMaxSize, if not zero, advertises host GSO of that size: the
	// netstack then hands over TCP super-packets with partial checksums,
	// which only ports that take host GSO receive (the Geneve endpoint
	// segments them, vmnet too).
	GSOMaxSize uint32
	// Promiscuous delivers unicast frames for any MAC, not only the host
	// port's own (a TAP device with a bridge behind it).
	Promiscuous bool
}

// HostPort is the switch port of a netstack (or of anything that attaches
// to a link endpoint, like a TAP device): a stack.LinkEndpoint whose
// WritePackets feeds the switch and whose dispatcher gets the frames for
// the host. Create the netstack's NIC with it.
type HostPort struct {
	port    *Port
	mtu     atomic.Uint32
	gsoMax  uint32
	promisc bool

	mu      sync.RWMutex
	mac     tcpip.LinkAddress
	d       stack.NetworkDispatcher
	onClose func()

	// unchecked counts deliveries in progress that the netstack must check
	// (receive checksum offload withdrawn).
	unchecked atomic.Int32
}

var (
	_ stack.LinkEndpoint = (*HostPort)(nil)
	_ stack.GSOEndpoint  = (*HostPort)(nil)
)

// NewHostPort adds the switch's host port. A switch has at most one: frames
// between two netstacks would need their partial checksums and
// super-packets turned into received ones, which the switch does not do.
func (s *Switch) NewHostPort(opts HostPortOptions) (*HostPort, error) {
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	if opts.MTU < 68 || opts.MTU > 65535 {
		return nil, fmt.Errorf("l2switch: host port mtu %d out of range: valid MTUs are 68..65535", opts.MTU)
	}
	mac := tcpip.LinkAddress(opts.MAC)
	switch {
	case opts.MAC == nil:
		var b [6]byte
		_, _ = rand.Read(b[:])
		b[0] = b[0]&^1 | 2
		mac = tcpip.LinkAddress(b[:])
	case len(opts.MAC) != 6 || opts.MAC[0]&1 != 0:
		return nil, fmt.Errorf("l2switch: host port mac %s: want a 6-byte unicast MAC", opts.MAC)
	}
	if opts.Name == "" {
		opts.Name = "host"
	}
	h := &HostPort{gsoMax: opts.GSOMaxSize, promisc: opts.Promiscuous, mac: mac}
	h.mtu.Store(opts.MTU)
	h.port = &Port{sw: s, name: opts.Name, host: h, trusted: true}
	s.mu.Lock()
	if s.host != nil {
		s.mu.Unlock()
		return nil, errors.New("l2switch: the switch already has a host port")
	}
	s.host = h
	s.mu.Unlock()
	if err := s.add(h.port); err != nil {
		s.mu.Lock()
		s.host = nil
		s.mu.Unlock()
		return nil, err
	}
	return h, nil
}

// Port returns the host port as a port of the switch.
func (h *HostPort) Port() *Port { return h.port }

// deliver hands a frame for the host to the netstack: its own unicast,
// broadcast and multicast (any unicast if promiscuous). pkt is borrowed.
func (h *HostPort) deliver(in *Port, pkt *stack.PacketBuffer) {
	h.mu.RLock()
	d, mac := h.d, h.mac
	h.mu.RUnlock()
	if d == nil {
		return
	}
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	dst := eth.DestinationAddress()
	switch {
	case dst == mac:
		pkt.PktType = tcpip.PacketHost
	case dst == header.EthernetBroadcastAddress:
		pkt.PktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pkt.PktType = tcpip.PacketMulticast
	case h.promisc:
		pkt.PktType = tcpip.PacketOtherHost
	default:
		return // flooded unknown unicast for someone else
	}
	check := !in.trusted && !pkt.RXChecksumValidated
	if check {
		h.unchecked.Add(1)
	}
	h.port.txFrames.Add(1)
	d.DeliverNetworkPacket(eth.Type(), pkt)
	if check {
		h.unchecked.Add(-1)
	}
}

// WritePackets implements stack.LinkWriter: the netstack's frames enter
// the switch. The packets are borrowed.
func (h *HostPort) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if h.port.removed.Load() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	for _, pkt := range pkts.AsSlice() {
		h.port.sw.input(h.port, pkt)
	}
	return pkts.Len(), nil
}

// MTU implements stack.LinkEndpoint.
func (h *HostPort) MTU() uint32 { return h.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (h *HostPort) SetMTU(mtu uint32) { h.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (h *HostPort) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (h *HostPort) LinkAddress() tcpip.LinkAddress {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.mac
}

// SetLinkAddress implements stack.LinkEndpoint.
func (h *HostPort) SetLinkAddress(mac tcpip.LinkAddress) {
	h.mu.Lock()
	h.mac = mac
	h.mu.Unlock()
}

// Capabilities implements stack.LinkEndpoint: an Ethernet NIC with receive
// checksum offload, withdrawn while a frame that needs checking is being
// delivered (see the package documentation).
func (h *HostPort) Capabilities() stack.LinkEndpointCapabilities {
	c := stack.CapabilityResolutionRequired
	if h.unchecked.Load() == 0 {
		c |= stack.CapabilityRXChecksumOffload
	}
	return c
}

// GSOMaxSize implements stack.GSOEndpoint.
func (h *HostPort) GSOMaxSize() uint32 { return h.gsoMax }

// SupportedGSO implements stack.GSOEndpoint.
func (h *HostPort) SupportedGSO() stack.SupportedGSO {
	if h.gsoMax == 0 {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

// ARPHardwareType implements stack.LinkEndpoint.
func (h *HostPort) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint: it pushes the Ethernet header.
func (h *HostPort) AddHeader(pkt *stack.PacketBuffer) {
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = h.LinkAddress()
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (h *HostPort) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// Attach implements stack.LinkEndpoint.
func (h *HostPort) Attach(d stack.NetworkDispatcher) {
	h.mu.Lock()
	h.d = d
	h.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.
func (h *HostPort) IsAttached() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.d != nil
}

// Wait implements stack.LinkEndpoint; the host port has no goroutines.
func (h *HostPort) Wait() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (h *HostPort) SetOnCloseAction(f func()) {
	h.mu.Lock()
	h.onClose = f
	h.mu.Unlock()
}

// Close implements stack.LinkEndpoint: it runs the on-close action and
// takes the host port out of the switch.
func (h *HostPort) Close() {
	h.mu.Lock()
	action := h.onClose
	h.onClose = nil
	h.d = nil
	h.mu.Unlock()
	if action != nil {
		action()
	}
	h.port.Remove()
}
