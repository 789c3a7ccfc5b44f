package l2switch

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link/internal/ether"
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
	ether.NIC // the MAC and the Ethernet header methods

	port    *Port
	mtu     atomic.Uint32
	gsoMax  uint32
	promisc bool

	att ether.Attachment // the dispatcher and the on-close action

	// unchecked counts deliveries in progress that the netstack must check
	// (receive checksum offload withdrawn).
	unchecked atomic.Int32

	macMu sync.Mutex // serialises SetLinkAddress
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
	mac, err := ether.MAC(opts.MAC, "l2switch: host port mac")
	if err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "host"
	}
	h := &HostPort{gsoMax: opts.GSOMaxSize, promisc: opts.Promiscuous}
	h.NIC.SetLinkAddress(mac)
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
	s.pin(h.port, "", mac)
	return h, nil
}

// SetLinkAddress implements stack.LinkEndpoint: the host's MAC, a static
// entry of the switch (a TAP device sets its own when it attaches).
func (h *HostPort) SetLinkAddress(mac tcpip.LinkAddress) {
	h.macMu.Lock()
	defer h.macMu.Unlock()
	old := h.LinkAddress()
	h.NIC.SetLinkAddress(mac)
	h.port.sw.pin(h.port, old, mac)
}

// Port returns the host port as a port of the switch.
func (h *HostPort) Port() *Port { return h.port }

// deliver hands a frame for the host to the netstack: its own unicast,
// broadcast and multicast (any unicast if promiscuous). pkt is borrowed.
func (h *HostPort) deliver(in *Port, pkt *stack.PacketBuffer) {
	d := h.att.Dispatcher()
	if d == nil {
		return
	}
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	typ := ether.Classify(eth.DestinationAddress(), h.LinkAddress())
	if typ == tcpip.PacketOtherHost && !h.promisc {
		return // flooded unknown unicast for someone else
	}
	pkt.PktType = typ
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
func (h *HostPort) SupportedGSO() stack.SupportedGSO { return ether.SupportedGSO(h.gsoMax) }

// Attach implements stack.LinkEndpoint.
func (h *HostPort) Attach(d stack.NetworkDispatcher) { h.att.SetDispatcher(d, nil) }

// IsAttached implements stack.LinkEndpoint.
func (h *HostPort) IsAttached() bool { return h.att.IsAttached() }

// Wait implements stack.LinkEndpoint; the host port has no goroutines.
func (h *HostPort) Wait() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (h *HostPort) SetOnCloseAction(f func()) { h.att.SetOnCloseAction(f) }

// Close implements stack.LinkEndpoint: it runs the on-close action and
// takes the host port out of the switch.
func (h *HostPort) Close() {
	if action := h.att.TakeOnClose(true); action != nil {
		action()
	}
	h.port.Remove()
}
