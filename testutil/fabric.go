// Package testutil provides helpers for deterministic, in-process tests of gnv
// and of other programs built on gVisor's netstack.
//
// The main piece is Fabric, an in-memory Ethernet underlay: a learning switch
// whose ports are gVisor link endpoints (stack.LinkEndpoint). Give each
// netstack a Port as its NIC, and the stacks talk to each other through the
// switch, with optional per-link loss, duplication, reordering and delay
// (Faults) and an optional pcap capture of everything the switch forwards.
//
// Leak checking for gVisor's reference-counted packets is in
// EnableLeakCheck, CheckLeaks and RunWithLeakCheck.
//
// # Reproducible runs
//
// Same seed, same trace: a stepped fabric (FabricOptions.Stepped, or
// HostsOptions.Stepped) on a ManualClock, with hosts from NewHosts and the
// applications driven from Fabric.Run's callback with non-blocking endpoint
// calls, captures the same pcap, byte for byte and timestamps included, on
// every run with the same seed, whatever GOMAXPROCS or the race detector
// (TestSameSeedSameTrace checks it). The seed sets the fault decisions of
// each port, every host's port and overlay MACs (HostMAC) and the random
// source of every overlay and underlay netstack (HostRand: TCP initial
// sequence numbers, timestamp offsets, ephemeral ports, IPv4 IDs inside and
// outside, IGMP/MLD and neighbour timer jitter, DAD nonces). Goroutines still run (the
// netstacks' TCP processors, gnv's underlay receive goroutine); order comes
// from giving the stacks one input at a time and waiting until they are
// quiet (see Fabric.Step), and from the ManualClock firing timers in a
// fixed order on the stepping goroutine.
//
// Not reproducible: a fabric that is not stepped (port goroutines and TCP
// processors race; only the faults met by a given sequence of frames into
// a port repeat); applications on their own goroutines (net-style
// connections, TransferTCP, gonet), whose blocking calls race with the
// fabric; gVisor's faketime.ManualClock (same-instant timers fire in map
// order, zero-delay ones on new goroutines); a SharedUnderlay opened
// without UnderlayOptions.Rand; kernel, AF_PACKET and TAP underlays; and any run in which Step gave up
// waiting for a stack to release a frame (FabricStats.SettleTimeouts).
// Stepped transmission takes no fabric time: only Faults.Delay and Jitter
// and the stacks' timers move the clock, so every round trip without a
// delay is zero.
package testutil

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/gnv-project/gnv/internal/pcap"
)

const (
	ethHeaderLen = header.EthernetMinimumSize

	// DefaultMTU is the port MTU (the IP MTU, without the Ethernet header)
	// used when FabricOptions.MTU is zero.
	DefaultMTU = 1500

	// DefaultQueueLen is the per-port receive queue length used when
	// FabricOptions.QueueLen is zero.
	DefaultQueueLen = 4096

	// deliverBatch is the most frames a port's goroutine takes off its
	// queue at once.
	deliverBatch = 64
)

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ErrClosed is returned by Fabric.NewPort once the fabric is closed.
var ErrClosed = errors.New("testutil: fabric is closed")

// FabricOptions configures a Fabric. The zero value is usable.
type FabricOptions struct {
	// Seed seeds the random fault decisions of every port (combined with
	// the port's index), so that runs are reproducible.
	Seed int64

	// Clock times Faults.Delay, Faults.Jitter and Faults.ReorderTimeout
	// and timestamps the capture. Nil means the real clock
	// (tcpip.NewStdClock). A *faketime.ManualClock makes delays advance
	// only when the test calls Advance; it is usually the same clock the
	// stacks use (stack.Options.Clock).
	Clock tcpip.Clock

	// Pcap, if not nil, receives a libpcap capture (Ethernet link type) of
	// every frame the switch forwards, written once per frame before any
	// link fault applies. Each frame is written with one Write call.
	// Write errors stop the capture; see Fabric.PcapError. Frames are
	// written on the senders' goroutines, so read the capture only once
	// the stacks are destroyed (or otherwise quiet).
	Pcap io.Writer

	// MTU is the initial MTU of each port: the largest IP packet, not
	// counting the 14-byte Ethernet header. Zero means DefaultMTU.
	MTU uint32

	// QueueLen is the number of frames each port's receive queue holds;
	// frames arriving at a full queue are dropped and counted in
	// FabricStats.DroppedQueueFull. Zero means DefaultQueueLen.
	QueueLen int

	// Stepped turns off the ports' delivery goroutines: frames wait in
	// one fabric-wide queue, in the order they reached their ports, until
	// the test delivers them one at a time with Step (or Run), each to
	// completion, so that the stacks see one input at a time in a
	// reproducible order. See Step for what "to completion" means, and
	// the package documentation for what is and is not reproducible.
	Stepped bool
}

// FabricStats counts what a Fabric did with frames. Counters that concern
// copies (one per receiving port, after duplication) are marked as such.
type FabricStats struct {
	// Frames is the number of frames the ports' stacks sent into the
	// switch.
	Frames uint64
	// Forwarded is the number of frames sent to the single port where the
	// destination MAC was learned.
	Forwarded uint64
	// Flooded is the number of frames sent to every port but the sender:
	// broadcast, multicast and unknown unicast destinations.
	Flooded uint64
	// DroppedInvalid is the number of frames the switch dropped because
	// they were shorter than an Ethernet header or longer than the
	// sending port's MTU plus the header.
	DroppedInvalid uint64
	// Filtered is the number of copies that a port's MAC filter rejected
	// (unicast to another MAC on a port that is not promiscuous), plus
	// frames whose destination was learned on the sending port itself.
	Filtered uint64
	// Delivered is the number of copies handed to a stack.
	Delivered uint64
	// DroppedLoss is the number of copies dropped by Faults.Loss.
	DroppedLoss uint64
	// Duplicated is the number of extra copies made by Faults.Duplicate.
	Duplicated uint64
	// Reordered is the number of copies held back by Faults.Reorder.
	Reordered uint64
	// Delayed is the number of copies scheduled on the clock by
	// Faults.Delay or Faults.Jitter.
	Delayed uint64
	// DroppedClosed is the number of copies dropped because the receiving
	// port was closed, or had no stack attached, when they were due.
	DroppedClosed uint64
	// DroppedQueueFull is the number of copies dropped because the
	// receiving port's queue was full.
	DroppedQueueFull uint64
	// SettleTimeouts is the number of frames a stepped fabric delivered
	// that their stack had not released after a few seconds; each makes
	// the run's reproducibility doubtful.
	SettleTimeouts uint64
}

type fabricCounters struct {
	frames, forwarded, flooded, droppedInvalid, filtered, delivered,
	droppedLoss, duplicated, reordered, delayed, droppedClosed,
	droppedQueueFull, settleTimeouts atomic.Uint64
}

// Fabric is an in-memory learning Ethernet switch. Create it with NewFabric,
// add ports with NewPort, and give each Port to a netstack as its NIC. A
// Fabric is safe for concurrent use.
//
// The switch learns which port each source MAC lives behind (entries never
// age; a MAC that moves is relearned from its next frame, and a closed
// port's entries are forgotten). Unicast frames to a learned MAC go to that
// port only; broadcast, multicast and unknown-unicast frames are flooded to
// every other port.
type Fabric struct {
	seed     int64
	clock    tcpip.Clock
	mtu      uint32
	queueLen int
	stepped  bool

	stepMu   sync.Mutex // guards stepQ and settlers; taken after Port.mu
	stepQ    []*Port    // stepped mode: one entry per queued frame, in arrival order
	settlers map[*func()]struct{}

	pcap       *pcap.Writer // nil if no capture
	pcapFailed atomic.Bool
	pcapErr    atomic.Pointer[error]

	mu     sync.Mutex // serializes port creation, removal and Close
	closed bool
	nextID int
	all    []*Port // every port ever created, for Close
	// ports is the copy-on-write list of open ports, read without a lock
	// when flooding.
	ports atomic.Pointer[[]*Port]

	macMu sync.RWMutex
	macs  map[[6]byte]*Port // learned source MAC -> port

	stats fabricCounters
}

// NewFabric returns an empty fabric. If writing the pcap file header to
// opts.Pcap fails, the fabric works without a capture and PcapError reports
// the error.
func NewFabric(opts FabricOptions) *Fabric {
	f := &Fabric{
		seed:     opts.Seed,
		clock:    opts.Clock,
		mtu:      opts.MTU,
		queueLen: opts.QueueLen,
		stepped:  opts.Stepped,
		macs:     make(map[[6]byte]*Port),
	}
	if f.clock == nil {
		f.clock = tcpip.NewStdClock()
	}
	if f.mtu == 0 {
		f.mtu = DefaultMTU
	}
	if f.queueLen <= 0 {
		f.queueLen = DefaultQueueLen
	}
	f.ports.Store(new([]*Port))
	if opts.Pcap != nil {
		w, err := pcap.NewWriter(opts.Pcap, pcap.LinkTypeEthernet, 0)
		if err != nil {
			f.setPcapErr(err)
		} else {
			f.pcap = w
		}
	}
	return f
}

// PcapError returns the first error writing the capture, or nil. The capture
// stops at the first error.
func (f *Fabric) PcapError() error {
	if p := f.pcapErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *Fabric) setPcapErr(err error) {
	if f.pcapFailed.CompareAndSwap(false, true) {
		f.pcapErr.Store(&err)
	}
}

// Clock returns the clock the fabric uses for delays and timestamps.
func (f *Fabric) Clock() tcpip.Clock { return f.clock }

// Stats returns a snapshot of the fabric's counters. Counters are read one
// at a time while traffic may be flowing, so they are only mutually
// consistent when the fabric is idle.
func (f *Fabric) Stats() FabricStats {
	s := &f.stats
	return FabricStats{
		Frames:           s.frames.Load(),
		Forwarded:        s.forwarded.Load(),
		Flooded:          s.flooded.Load(),
		DroppedInvalid:   s.droppedInvalid.Load(),
		Filtered:         s.filtered.Load(),
		Delivered:        s.delivered.Load(),
		DroppedLoss:      s.droppedLoss.Load(),
		Duplicated:       s.duplicated.Load(),
		Reordered:        s.reordered.Load(),
		Delayed:          s.delayed.Load(),
		DroppedClosed:    s.droppedClosed.Load(),
		DroppedQueueFull: s.droppedQueueFull.Load(),
		SettleTimeouts:   s.settleTimeouts.Load(),
	}
}

// NewPort adds a port to the fabric. mac is the port's MAC address; empty
// means a fresh locally administered unicast MAC derived from the port's
// index (02:fa:b1:xx:xx:xx, the same on every run). faults are the
// impairments of the link into the port; the zero Faults is a perfect link.
//
// It returns an error if mac is not a 6-byte unicast address or is already
// used by an open port, if faults are invalid, or (ErrClosed) if the fabric
// is closed.
//
// Each port runs one goroutine that delivers received frames to its stack;
// it stops when the port or the fabric is closed. A stepped fabric's ports
// have no goroutine.
func (f *Fabric) NewPort(mac tcpip.LinkAddress, faults Faults) (*Port, error) {
	if err := faults.Validate(); err != nil {
		return nil, err
	}
	if mac != "" {
		if len(mac) != 6 {
			return nil, fmt.Errorf("testutil: NewPort: MAC %q is %d bytes, want 6", mac, len(mac))
		}
		if mac[0]&1 != 0 {
			return nil, fmt.Errorf("testutil: NewPort: MAC %v is a group (multicast) address, want unicast", mac)
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	inUse := func(m [6]byte) bool {
		for _, q := range *f.ports.Load() {
			q.mu.Lock()
			same := q.mac == m
			q.mu.Unlock()
			if same {
				return true
			}
		}
		return false
	}
	id := f.nextID
	var m [6]byte
	if mac != "" {
		copy(m[:], mac)
		if inUse(m) {
			return nil, fmt.Errorf("testutil: NewPort: MAC %v is already used by another port", mac)
		}
	} else {
		for n := id + 1; ; n++ {
			m = [6]byte{0x02, 0xfa, 0xb1, byte(n >> 16), byte(n >> 8), byte(n)}
			if !inUse(m) {
				break
			}
		}
	}
	f.nextID++

	p := &Port{
		fabric: f,
		index:  id,
		mac:    m,
		rng:    rand.New(rand.NewPCG(uint64(f.seed), uint64(id))),
		faults: faults,
		ring:   make([]*stack.PacketBuffer, f.queueLen),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	p.mtu.Store(f.mtu)
	f.all = append(f.all, p)
	old := *f.ports.Load()
	ports := make([]*Port, len(old), len(old)+1)
	copy(ports, old)
	ports = append(ports, p)
	f.ports.Store(&ports)
	if f.stepped {
		close(p.done)
	} else {
		go p.run()
	}
	return p, nil
}

// Close closes every port (see Port.Close) and the fabric: frames still
// queued, delayed or held back are released, every port goroutine has
// exited when Close returns, and NewPort fails from then on. Close does not
// close FabricOptions.Pcap. It is safe to call more than once.
//
// Do not call Close from a callback that runs on a port's delivery
// goroutine (for example inside a stack's packet processing).
func (f *Fabric) Close() {
	f.mu.Lock()
	f.closed = true
	all := f.all
	f.all = nil
	f.mu.Unlock()
	for _, p := range all {
		p.Close()
	}
}

// removePort takes p out of the flooding list and forgets the MACs learned
// on it.
func (f *Fabric) removePort(p *Port) {
	f.mu.Lock()
	old := *f.ports.Load()
	ports := make([]*Port, 0, len(old))
	for _, q := range old {
		if q != p {
			ports = append(ports, q)
		}
	}
	f.ports.Store(&ports)
	f.mu.Unlock()

	f.macMu.Lock()
	for m, q := range f.macs {
		if q == p {
			delete(f.macs, m)
		}
	}
	f.macMu.Unlock()
}

// switchFrame forwards one outbound frame from port in. pkt is borrowed.
func (f *Fabric) switchFrame(in *Port, pkt *stack.PacketBuffer) {
	st := &f.stats
	st.frames.Add(1)
	size := pkt.Size()
	if size < ethHeaderLen || size > int(in.mtu.Load())+ethHeaderLen {
		st.droppedInvalid.Add(1)
		return
	}
	var eth [ethHeaderLen]byte
	copyFrameHead(pkt, eth[:])
	dst := [6]byte(eth[0:6])
	src := [6]byte(eth[6:12])

	learn := src[0]&1 == 0 // never learn a group address
	var out *Port
	f.macMu.RLock()
	if learn && f.macs[src] == in {
		learn = false
	}
	if dst[0]&1 == 0 {
		out = f.macs[dst]
	}
	f.macMu.RUnlock()
	if learn {
		f.macMu.Lock()
		// Checked under macMu: Close marks the port closed before
		// removePort takes macMu, so a closed port is never learned.
		if !in.closed.Load() {
			f.macs[src] = in
		}
		f.macMu.Unlock()
	}

	if f.pcap != nil && !f.pcapFailed.Load() {
		if err := f.pcap.WritePacketBuffer(f.clock.Now(), pkt); err != nil {
			f.setPcapErr(err)
		}
	}

	switch {
	case out == in:
		st.filtered.Add(1) // a real switch does not send a frame back where it came from
	case out != nil:
		st.forwarded.Add(1)
		out.receive(pkt, &dst)
	default:
		st.flooded.Add(1)
		for _, p := range *f.ports.Load() {
			if p != in {
				p.receive(pkt, &dst)
			}
		}
	}
}

// copyFrameHead copies the first len(b) bytes of pkt, starting at its first
// pushed header, into b without allocating. pkt must be at least that long.
func copyFrameHead(pkt *stack.PacketBuffer, b []byte) {
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil && len(b) > 0; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n := copy(b, s[off:])
		off = 0
		b = b[n:]
	}
}
