package testutil

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Port is one port of a Fabric. It implements stack.LinkEndpoint as an
// Ethernet NIC: create the stack's NIC with it (stack.CreateNIC); the stack
// needs arp.NewProtocol for IPv4 (IPv6 uses NDP, built into ipv6).
//
// Outbound, Port borrows the packets passed to WritePackets and switches
// them synchronously. Inbound, each port has a bounded queue drained by its
// own goroutine, which hands frames to the attached stack in batches; frames
// are never delivered on the sender's goroutine, so a stack is never
// re-entered from its own send path.
//
// A port accepts unicast frames only for its own MAC unless it is
// promiscuous (SetPromiscuous), plus all broadcast and multicast frames.
type Port struct {
	fabric *Fabric
	index  int

	mtu     atomic.Uint32
	promisc atomic.Bool
	closed  atomic.Bool // mirrors closedLocked for lock-free reads

	mu           sync.Mutex
	mac          [6]byte
	dispatcher   stack.NetworkDispatcher
	onClose      func()
	closedLocked bool
	faults       Faults
	rng          *rand.Rand
	ring         []*stack.PacketBuffer // receive queue
	head, n      int
	held         *stack.PacketBuffer // frame held back by Faults.Reorder
	heldTimer    tcpip.Timer
	delayed      map[*delayedFrame]struct{}

	wake chan struct{} // capacity 1: there is work in ring
	stop chan struct{} // closed by Close
	done chan struct{} // closed when run returns
}

var _ stack.LinkEndpoint = (*Port)(nil)

// Index returns the port's index in its fabric: 0 for the first port
// created, 1 for the next, and so on.
func (p *Port) Index() int { return p.index }

// Fabric returns the fabric p belongs to.
func (p *Port) Fabric() *Fabric { return p.fabric }

// SetPromiscuous sets whether p accepts unicast frames addressed to other
// MACs. They are delivered with PktType tcpip.PacketOtherHost.
func (p *Port) SetPromiscuous(on bool) { p.promisc.Store(on) }

// Promiscuous reports whether p is promiscuous.
func (p *Port) Promiscuous() bool { return p.promisc.Load() }

// MTU implements stack.LinkEndpoint. It is the IP MTU, FabricOptions.MTU
// unless changed with SetMTU.
func (p *Port) MTU() uint32 { return p.mtu.Load() }

// SetMTU implements stack.LinkEndpoint. Frames larger than the sending
// port's MTU plus the Ethernet header are dropped by the switch.
func (p *Port) SetMTU(mtu uint32) { p.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: the 14-byte Ethernet
// header.
func (*Port) MaxHeaderLength() uint16 { return ethHeaderLen }

// LinkAddress implements stack.LinkEndpoint. It returns the port's MAC.
func (p *Port) LinkAddress() tcpip.LinkAddress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return tcpip.LinkAddress(p.mac[:])
}

// SetLinkAddress implements stack.LinkEndpoint. addr must be 6 bytes;
// anything else is ignored.
func (p *Port) SetLinkAddress(addr tcpip.LinkAddress) {
	if len(addr) != 6 {
		return
	}
	p.mu.Lock()
	copy(p.mac[:], addr)
	p.mu.Unlock()
}

// Capabilities implements stack.LinkEndpoint:
// stack.CapabilityResolutionRequired (the stack runs ARP and NDP).
func (*Port) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}

// ARPHardwareType implements stack.LinkEndpoint: header.ARPHardwareEther.
func (*Port) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint. It pushes the Ethernet header:
// source pkt.EgressRoute.LocalLinkAddress (the port's MAC if empty),
// destination pkt.EgressRoute.RemoteLinkAddress, type
// pkt.NetworkProtocolNumber.
func (p *Port) AddHeader(pkt *stack.PacketBuffer) {
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = p.LinkAddress()
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(ethHeaderLen))
	eth.Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint. It consumes the Ethernet
// header.
func (*Port) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(ethHeaderLen)
	return ok
}

// Attach implements stack.LinkEndpoint. Frames received while no stack is
// attached are dropped (FabricStats.DroppedClosed). Attach(nil) does not
// wait for a delivery in progress; the stack copes, as its NIC is disabled
// by then.
func (p *Port) Attach(d stack.NetworkDispatcher) {
	p.mu.Lock()
	p.dispatcher = d
	p.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.
func (p *Port) IsAttached() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dispatcher != nil
}

// Wait implements stack.LinkEndpoint. It returns at once: the stack calls it
// while holding its own lock, which the delivery goroutine may need, so the
// goroutine is instead waited for by Close (which the stack calls next when
// it removes the NIC or is destroyed).
func (*Port) Wait() {}

// SetOnCloseAction implements stack.LinkEndpoint. The stack uses it to
// remove its NIC when the port is closed.
func (p *Port) SetOnCloseAction(action func()) {
	p.mu.Lock()
	p.onClose = action
	p.mu.Unlock()
}

// Close implements stack.LinkEndpoint. It runs the on-close action (the
// owning stack removes its NIC), takes the port out of the fabric, stops its
// goroutine and releases every frame still queued, delayed or held back
// (counted in FabricStats.DroppedClosed). When Close returns the port's
// goroutine has exited. Close is idempotent; a closed port cannot be
// reopened.
//
// Do not call Close from the port's own delivery goroutine (inside the
// stack's receive path): it would wait for itself.
func (p *Port) Close() {
	p.mu.Lock()
	action := p.onClose
	p.onClose = nil
	p.mu.Unlock()
	if action != nil {
		// Typically stack.RemoveNIC, which calls back into Attach(nil),
		// Wait and Close; the nested Close does the work below.
		action()
	}

	p.mu.Lock()
	if p.closedLocked {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.closedLocked = true
	p.closed.Store(true)
	var release []*stack.PacketBuffer
	for ; p.n > 0; p.n-- {
		release = append(release, p.ring[p.head])
		p.ring[p.head] = nil
		p.head = (p.head + 1) % len(p.ring)
	}
	if p.held != nil {
		release = append(release, p.held)
		p.held = nil
		p.heldTimer.Stop()
	}
	for df := range p.delayed {
		df.timer.Stop() // if it already fired, fire() finds df gone
		release = append(release, df.pkt)
	}
	p.delayed = nil
	p.dispatcher = nil
	close(p.stop)
	p.mu.Unlock()

	for _, pkt := range release {
		pkt.DecRef()
	}
	p.fabric.stats.droppedClosed.Add(uint64(len(release)))
	p.fabric.removePort(p)
	<-p.done
}

// WritePackets implements stack.LinkEndpoint. It switches each frame
// synchronously (learning its source MAC, then forwarding or flooding it)
// and queues copies on the receiving ports. The packets are borrowed, never
// released. It returns tcpip.ErrClosedForSend once the port is closed.
func (p *Port) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if p.closed.Load() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		p.fabric.switchFrame(p, pkt)
		n++
	}
	return n, nil
}

// enqueueLocked appends c to the receive queue, taking over its reference.
// p.mu must be held.
func (p *Port) enqueueLocked(c *stack.PacketBuffer) {
	if p.n == len(p.ring) {
		c.DecRef()
		p.fabric.stats.droppedQueueFull.Add(1)
		return
	}
	p.ring[(p.head+p.n)%len(p.ring)] = c
	p.n++
	if f := p.fabric; f.stepped {
		f.stepMu.Lock()
		f.stepQ = append(f.stepQ, p)
		f.stepMu.Unlock()
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run is the port's delivery goroutine.
func (p *Port) run() {
	defer close(p.done)
	st := &p.fabric.stats
	batch := make([]*stack.PacketBuffer, 0, deliverBatch)
	for {
		select {
		case <-p.wake:
		case <-p.stop:
			return
		}
		for {
			p.mu.Lock()
			if p.closedLocked {
				p.mu.Unlock()
				return
			}
			for p.n > 0 && len(batch) < cap(batch) {
				batch = append(batch, p.ring[p.head])
				p.ring[p.head] = nil
				p.head = (p.head + 1) % len(p.ring)
				p.n--
			}
			d := p.dispatcher
			p.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, pkt := range batch {
				if d == nil {
					st.droppedClosed.Add(1)
				} else {
					st.delivered.Add(1)
					d.DeliverNetworkPacket(header.Ethernet(pkt.LinkHeader().Slice()).Type(), pkt)
				}
				pkt.DecRef()
				batch[i] = nil
			}
			batch = batch[:0]
		}
	}
}
