// Package l2switch is a learning Ethernet switch whose ports are gVisor link
// endpoints: the Geneve endpoint of an L2 tunnel (the uplink to the remote
// tunnel hosts), VMs attached over sockets (package vmnet), and at most one
// host port, the NIC of a netstack (or a TAP device) on this host.
//
//	      netstack NIC / TAP device
//	               │ HostPort (a stack.LinkEndpoint)
//	VM ─ vmnet ─ Switch ─ vmnet ─ VM
//	               │ Port (the switch is the endpoint's NetworkDispatcher)
//	        Geneve endpoint ─→ remote tunnel hosts
//
// A port's endpoint delivers received frames to the switch (the switch is
// its stack.NetworkDispatcher; the Ethernet header consumed, as an Ethernet
// NIC delivers them), and the switch writes frames to it with WritePackets.
// For every frame the switch learns the source MAC on the port it came from
// (entries age out after Options.AgingTime), then sends it to the port its
// destination MAC was learned on, or floods it to every other port when the
// destination is broadcast, multicast or unknown. A frame is never sent back
// where it came from, so traffic between local ports never leaves through
// the uplink once their MACs are learned; the uplink floods what it gets to
// the remote tunnel hosts itself (head-end replication or a group). The
// host port's own MAC is a static entry: no other port can claim it.
//
// Packet ownership: the switch borrows the packets delivered to it and the
// ones a host port's netstack writes; it gives a port's endpoint a clone of
// its own, with the IP and transport headers parsed as an outbound packet
// has them, and DecRefs it after WritePackets. Delivery to the host port
// comes last, since a netstack changes the packet's metadata.
//
// Checksums. A host port advertises receive checksum offload, so that a
// netstack on it skips the checks a link already made: the Geneve
// endpoint's GRO hands over coalesced TCP packets whose checksums were
// checked but not redone. A frame whose PacketBuffer does not say
// RXChecksumValidated is delivered with the offload withdrawn, so the
// netstack checks it, unless it comes from a port added with
// PortOptions.TrustChecksums: a VM over a local socket, whose frames cross
// no wire (gvisor-tap-vsock trusts them the same way). The withdrawal is
// per host port, not per packet, so frames that need it should come from
// one goroutine at a time (the Geneve endpoint delivers from its socket's
// receive goroutine); a frame from a trusted port that is checked anyway
// because of it costs only the check. Packets a host port's netstack sends
// with host GSO (TCP super-packets with partial checksums) go only to ports
// whose endpoints advertise host GSO (stack.HostGSOSupported); the Geneve
// endpoint and vmnet do.
package l2switch

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Defaults for Options.
const (
	// DefaultMaxMACs bounds the learned MAC addresses.
	DefaultMaxMACs = 4096
	// DefaultAgingTime is how long a learned MAC stays without traffic
	// from it (the Linux bridge default).
	DefaultAgingTime = 300 * time.Second
)

// Options configures a Switch.
type Options struct {
	// MaxMACs bounds the MAC table; 0 means DefaultMaxMACs. A full table
	// learns nothing new until entries age out (Stats.LearnFull); frames
	// for unlearned MACs are flooded.
	MaxMACs int
	// AgingTime is how long a MAC entry lives without a frame from it; 0
	// means DefaultAgingTime.
	AgingTime time.Duration
	// Clock measures ages; nil means the real clock.
	Clock tcpip.Clock
}

// DropReason says why the switch dropped a frame. Every drop is counted
// under exactly one reason.
type DropReason int

// Drop reasons.
const (
	// DropMalformed: the frame has no Ethernet header.
	DropMalformed DropReason = iota
	// DropSourceMulticast: the source MAC is a group address.
	DropSourceMulticast
	// DropSourceSpoofed: the source MAC is the host port's, from another
	// port.
	DropSourceSpoofed
	// DropGSO: a TCP super-packet for a port whose endpoint does not take
	// host GSO.
	DropGSO
	// DropClosed: the switch or the port it came from is closed.
	DropClosed

	// NumDropReasons is the number of drop reasons.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	DropMalformed:       "malformed",
	DropSourceMulticast: "source-multicast",
	DropSourceSpoofed:   "source-spoofed",
	DropGSO:             "gso",
	DropClosed:          "closed",
}

// String returns the reason's short name.
func (r DropReason) String() string {
	if r >= 0 && r < NumDropReasons {
		return dropReasonNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", int(r))
}

// Stats is a snapshot of a switch's counters.
type Stats struct {
	// Frames counts frames received from ports.
	Frames uint64
	// Forwarded counts frames sent to the one port their destination was
	// learned on.
	Forwarded uint64
	// Flooded counts frames sent to every other port: broadcast,
	// multicast, or a destination not learned.
	Flooded uint64
	// Filtered counts frames whose destination was learned on the port
	// they came from: they are not sent back.
	Filtered uint64
	// Learned counts MACs learned, or moved to another port.
	Learned uint64
	// LearnFull counts source MACs not learned because the table was full.
	LearnFull uint64
	// MACs is the number of MAC entries now (aged ones included until
	// they are swept).
	MACs int
	// Drops counts dropped frames by reason.
	Drops [NumDropReasons]uint64
}

// TotalDrops returns the sum of Drops.
func (s Stats) TotalDrops() uint64 { return link.SumDrops(s.Drops[:]) }

// String formats the counters on one line.
func (s Stats) String() string {
	str := fmt.Sprintf("%d frames: %d forwarded, %d flooded, %d filtered; %d MACs, %d learned", s.Frames, s.Forwarded, s.Flooded, s.Filtered, s.MACs, s.Learned)
	if s.LearnFull != 0 {
		str += fmt.Sprintf(", %d not learned (table full)", s.LearnFull)
	}
	for r, n := range s.Drops {
		if n != 0 {
			str += fmt.Sprintf(", drop %s %d", DropReason(r), n)
		}
	}
	return str
}

type counters struct {
	frames, forwarded, flooded, filtered, learned, learnFull atomic.Uint64
	drops                                                    [NumDropReasons]atomic.Uint64
}

// macEntry is where a MAC was learned and when it was last seen (clock
// nanoseconds). A static entry (the host port's own MAC) never ages or
// moves.
type macEntry struct {
	port   *Port
	seen   atomic.Int64
	static bool
}

// Switch is a learning Ethernet switch. It is safe for concurrent use.
type Switch struct {
	clock   tcpip.Clock
	aging   int64 // nanoseconds
	maxMACs int

	mu     sync.Mutex // serialises port changes
	ports  atomic.Pointer[[]*Port]
	host   *HostPort
	nextID int
	closed atomic.Bool

	macMu sync.RWMutex
	macs  map[[6]byte]*macEntry

	lists sync.Pool // *stack.PacketBufferList
	stats counters
}

// New returns a switch with no ports.
func New(opts Options) (*Switch, error) {
	if opts.MaxMACs < 0 {
		return nil, fmt.Errorf("l2switch: max MACs %d: must not be negative", opts.MaxMACs)
	}
	if opts.AgingTime < 0 {
		return nil, fmt.Errorf("l2switch: aging time %s: must not be negative", opts.AgingTime)
	}
	if opts.MaxMACs == 0 {
		opts.MaxMACs = DefaultMaxMACs
	}
	if opts.AgingTime == 0 {
		opts.AgingTime = DefaultAgingTime
	}
	clock := opts.Clock
	if clock == nil {
		clock = tcpip.NewStdClock()
	}
	s := &Switch{
		clock:   clock,
		aging:   int64(opts.AgingTime),
		maxMACs: opts.MaxMACs,
		macs:    map[[6]byte]*macEntry{},
	}
	s.ports.Store(&[]*Port{})
	s.lists.New = func() any { return new(stack.PacketBufferList) }
	return s, nil
}

// PortOptions configures a port added with AddPort.
type PortOptions struct {
	// Name names the port in MAC listings and messages.
	Name string
	// TrustChecksums delivers the port's frames to the host port with
	// receive checksum offload claimed, checked or not (see the package
	// documentation): for a VM over a local socket.
	TrustChecksums bool
	// OnRemove, if set, runs once when the port leaves the switch
	// (Port.Remove, its endpoint's Close, or the switch's Close).
	OnRemove func()
}

// Port is one port of a Switch.
type Port struct {
	sw       *Switch
	id       int
	name     string
	ep       stack.LinkEndpoint // nil for the host port
	host     *HostPort
	gso      bool // ep takes host-GSO packets
	trusted  bool
	removed  atomic.Bool
	onRemove func()

	rxFrames, txFrames atomic.Uint64
}

// ErrClosed is returned when adding a port to a closed switch.
var ErrClosed = errors.New("l2switch: switch closed")

// AddPort makes ep a port of the switch: the switch becomes ep's
// NetworkDispatcher, and sets ep's on-close action to remove the port
// (so a VM endpoint whose peer went away leaves the switch by itself). ep
// must be an Ethernet endpoint (ARPHardwareEther) that delivers frames with
// their Ethernet header consumed. The switch does not own ep: closing ep
// removes the port, and Port.Remove detaches it without closing it.
func (s *Switch) AddPort(ep stack.LinkEndpoint, opts PortOptions) (*Port, error) {
	if ep == nil {
		return nil, errors.New("l2switch: nil endpoint")
	}
	if ep.ARPHardwareType() != header.ARPHardwareEther {
		return nil, fmt.Errorf("l2switch: port %q: not an Ethernet endpoint", opts.Name)
	}
	p := &Port{sw: s, name: opts.Name, ep: ep, trusted: opts.TrustChecksums, onRemove: opts.OnRemove}
	if g, ok := ep.(stack.GSOEndpoint); ok && g.SupportedGSO() == stack.HostGSOSupported && g.GSOMaxSize() > 0 {
		p.gso = true
	}
	if err := s.add(p); err != nil {
		return nil, err
	}
	ep.SetOnCloseAction(p.Remove)
	ep.Attach((*portDispatcher)(p))
	return p, nil
}

// add registers p in the flooding list.
func (s *Switch) add(p *Port) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	s.nextID++
	p.id = s.nextID
	if p.name == "" {
		p.name = fmt.Sprintf("port%d", p.id)
	}
	old := *s.ports.Load()
	ports := make([]*Port, 0, len(old)+1)
	ports = append(ports, old...)
	ports = append(ports, p)
	s.ports.Store(&ports)
	return nil
}

// Remove takes the port out of the switch and forgets the MACs learned on
// it; its endpoint is detached (Attach(nil)) but not closed. Then it runs
// PortOptions.OnRemove. It is safe to call more than once, and from the
// endpoint's Close.
func (p *Port) Remove() {
	if p.removed.Swap(true) {
		return
	}
	s := p.sw
	s.mu.Lock()
	old := *s.ports.Load()
	ports := make([]*Port, 0, len(old))
	for _, q := range old {
		if q != p {
			ports = append(ports, q)
		}
	}
	s.ports.Store(&ports)
	if p.host != nil && s.host == p.host {
		s.host = nil
	}
	s.mu.Unlock()
	s.forget(p)
	if p.ep != nil {
		p.ep.SetOnCloseAction(nil)
		p.ep.Attach(nil)
	}
	if p.onRemove != nil {
		p.onRemove()
	}
}

// pin makes mac a static entry of the host port h, replacing old.
func (s *Switch) pin(h *Port, old, mac tcpip.LinkAddress) {
	s.macMu.Lock()
	defer s.macMu.Unlock()
	if len(old) == 6 {
		if k := [6]byte([]byte(old)); s.macs[k] != nil && s.macs[k].port == h {
			delete(s.macs, k)
		}
	}
	if len(mac) == 6 && !h.removed.Load() {
		s.macs[[6]byte([]byte(mac))] = &macEntry{port: h, static: true}
	}
}

// forget removes the MACs learned on p.
func (s *Switch) forget(p *Port) {
	s.macMu.Lock()
	for m, e := range s.macs {
		if e.port == p {
			delete(s.macs, m)
		}
	}
	s.macMu.Unlock()
}

// Name returns the port's name.
func (p *Port) Name() string { return p.name }

// String returns the port's name.
func (p *Port) String() string { return p.name }

// Endpoint returns the port's link endpoint (nil for the host port).
func (p *Port) Endpoint() stack.LinkEndpoint { return p.ep }

// Removed reports whether the port left the switch.
func (p *Port) Removed() bool { return p.removed.Load() }

// PortStats counts one port's frames.
type PortStats struct {
	// RxFrames counts frames the port handed to the switch.
	RxFrames uint64
	// TxFrames counts frames the switch sent out of the port.
	TxFrames uint64
}

// Stats returns the port's counters.
func (p *Port) Stats() PortStats {
	return PortStats{RxFrames: p.rxFrames.Load(), TxFrames: p.txFrames.Load()}
}

// MACs returns the MAC addresses learned on the port and not aged out.
func (p *Port) MACs() []net.HardwareAddr {
	var out []net.HardwareAddr
	for _, e := range p.sw.MACs() {
		if e.Port == p {
			out = append(out, e.MAC)
		}
	}
	return out
}

// MACEntry is one learned MAC address.
type MACEntry struct {
	MAC  net.HardwareAddr
	Port *Port
	// Age is the time since the last frame from the MAC (0 for a static
	// entry).
	Age time.Duration
	// Static says the entry is the host port's own MAC: it never ages, and
	// frames from other ports with it as their source are dropped.
	Static bool
}

// MACs returns the learned MAC addresses that have not aged out, sorted by
// address.
func (s *Switch) MACs() []MACEntry {
	now := s.now()
	s.macMu.RLock()
	out := make([]MACEntry, 0, len(s.macs))
	for m, e := range s.macs {
		age := now - e.seen.Load()
		if e.static {
			age = 0
		} else if age > s.aging {
			continue
		}
		out = append(out, MACEntry{MAC: net.HardwareAddr(append([]byte(nil), m[:]...)), Port: e.port, Age: time.Duration(age), Static: e.static})
	}
	s.macMu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return string(out[i].MAC) < string(out[j].MAC) })
	return out
}

// Ports returns the switch's ports.
func (s *Switch) Ports() []*Port { return append([]*Port(nil), *s.ports.Load()...) }

// Stats returns a snapshot of the switch's counters.
func (s *Switch) Stats() Stats {
	c := &s.stats
	st := Stats{
		Frames:    c.frames.Load(),
		Forwarded: c.forwarded.Load(),
		Flooded:   c.flooded.Load(),
		Filtered:  c.filtered.Load(),
		Learned:   c.learned.Load(),
		LearnFull: c.learnFull.Load(),
	}
	s.macMu.RLock()
	st.MACs = len(s.macs)
	s.macMu.RUnlock()
	link.LoadDrops(st.Drops[:], c.drops[:])
	return st
}

// Close removes every port (detaching, not closing, their endpoints) and
// refuses new ones. Frames still arriving are dropped.
func (s *Switch) Close() {
	s.mu.Lock()
	s.closed.Store(true)
	ports := *s.ports.Load()
	s.mu.Unlock()
	for _, p := range ports {
		p.Remove()
	}
}

// now returns the clock's monotonic time in nanoseconds.
func (s *Switch) now() int64 {
	return int64(s.clock.NowMonotonic().Sub(tcpip.MonotonicTime{}))
}

// portDispatcher is a Port seen as its endpoint's NetworkDispatcher.
type portDispatcher Port

// DeliverNetworkPacket implements stack.NetworkDispatcher: a frame from the
// port's endpoint. pkt is borrowed.
func (d *portDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	p := (*Port)(d)
	p.sw.input(p, pkt)
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (d *portDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
