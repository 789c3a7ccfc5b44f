package testutil

import (
	"fmt"
	"math"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultReorderTimeout is how long a frame held back by Faults.Reorder waits
// for the next frame on its link when Faults.ReorderTimeout is zero.
const DefaultReorderTimeout = 5 * time.Millisecond

// Faults describes the impairments of the link into one fabric port. They
// apply to every frame the port accepts (frames its MAC filter rejects are
// not counted), in this order: Loss, Duplicate, then for each copy Delay and
// Jitter, then Reorder when the copy reaches the port.
//
// Random decisions come from a source private to the port and seeded from
// FabricOptions.Seed and the port's index, so the same sequence of frames
// into a port meets the same faults on every run. The zero value is a
// perfect link.
type Faults struct {
	// Loss is the probability, in [0, 1], that a frame is dropped.
	Loss float64

	// Duplicate is the probability, in [0, 1], that a frame is delivered
	// twice.
	Duplicate float64

	// Reorder is the probability, in [0, 1], that a frame is held back and
	// released right after the next frame on the same link, or after
	// ReorderTimeout if no frame follows. At most one frame per link is
	// held at a time.
	Reorder float64

	// ReorderTimeout bounds how long a frame held back by Reorder waits,
	// on the fabric's clock. Zero means DefaultReorderTimeout. Negative
	// values are invalid.
	ReorderTimeout time.Duration

	// Delay is added to every frame, using the fabric clock's AfterFunc:
	// with a faketime.ManualClock a delayed frame arrives only when the
	// test advances the clock. Negative values are invalid.
	Delay time.Duration

	// Jitter adds a uniformly distributed offset in [-Jitter, +Jitter] to
	// Delay (the result is clamped at zero). As with netem, jitter
	// reorders frames. Negative values are invalid.
	Jitter time.Duration
}

// Validate reports whether f is valid. The error names the offending field
// and its valid range.
func (f Faults) Validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"Loss", f.Loss}, {"Duplicate", f.Duplicate}, {"Reorder", f.Reorder}} {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return fmt.Errorf("testutil: Faults.%s = %v, want a probability in [0, 1]", p.name, p.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ReorderTimeout", f.ReorderTimeout}, {"Delay", f.Delay}, {"Jitter", f.Jitter}} {
		if d.v < 0 {
			return fmt.Errorf("testutil: Faults.%s = %v, want a duration >= 0", d.name, d.v)
		}
	}
	return nil
}

// SetFaults replaces the impairments of the link into p. It is safe to call
// at any time, concurrently with traffic; frames already delayed or held
// back keep the fate they were given. It returns an error, and changes
// nothing, if f is invalid.
func (p *Port) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
	return nil
}

// Faults returns the current impairments of the link into p.
func (p *Port) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// receive runs on the sender's goroutine for every frame the switch sends to
// p. It applies p's MAC filter and faults and queues inbound copies of pkt;
// pkt itself is only borrowed.
func (p *Port) receive(pkt *stack.PacketBuffer, dst *[6]byte) {
	st := &p.fabric.stats
	p.mu.Lock()
	if p.closedLocked {
		p.mu.Unlock()
		st.droppedClosed.Add(1)
		return
	}
	var typ tcpip.PacketType
	switch {
	case *dst == broadcastMAC:
		typ = tcpip.PacketBroadcast
	case dst[0]&1 != 0:
		typ = tcpip.PacketMulticast
	case *dst == p.mac:
		typ = tcpip.PacketHost
	case p.promisc.Load():
		typ = tcpip.PacketOtherHost
	default:
		p.mu.Unlock()
		st.filtered.Add(1)
		return
	}
	f := &p.faults
	if f.Loss > 0 && p.rng.Float64() < f.Loss {
		p.mu.Unlock()
		st.droppedLoss.Add(1)
		return
	}
	copies := 1
	if f.Duplicate > 0 && p.rng.Float64() < f.Duplicate {
		copies = 2
		st.duplicated.Add(1)
	}
	for range copies {
		c := newInbound(pkt, typ)
		if f.Delay > 0 || f.Jitter > 0 {
			d := f.Delay
			if f.Jitter > 0 {
				d += time.Duration(p.rng.Int64N(2*int64(f.Jitter)+1)) - f.Jitter
			}
			st.delayed.Add(1)
			p.delayLocked(c, max(d, 0))
		} else {
			p.arriveLocked(c)
		}
	}
	p.mu.Unlock()
}

// newInbound makes the inbound copy of an outbound frame, as a NIC would:
// the frame's bytes in one fresh contiguous buffer (a wire serialises the
// frame; the receiver must never share memory with the sender, which may
// still hold those bytes for retransmission), with the Ethernet header
// consumed. The buffer comes from gVisor's pool: nothing is allocated.
func newInbound(pkt *stack.PacketBuffer, typ tcpip.PacketType) *stack.PacketBuffer {
	v := buffer.NewView(pkt.Size())
	views, off := pkt.AsViewList()
	for sv := views.Front(); sv != nil; sv = sv.Next() {
		b := sv.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		v.Write(b[off:])
		off = 0
	}
	c := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	c.LinkHeader().Consume(ethHeaderLen) // the switch checked the length
	c.PktType = typ
	return c
}

// delayedFrame is a frame waiting on the fabric clock.
type delayedFrame struct {
	p     *Port
	pkt   *stack.PacketBuffer
	timer tcpip.Timer
}

// delayLocked makes c arrive at p after d on the fabric clock.
// p.mu must be held.
func (p *Port) delayLocked(c *stack.PacketBuffer, d time.Duration) {
	df := &delayedFrame{p: p, pkt: c}
	if p.delayed == nil {
		p.delayed = make(map[*delayedFrame]struct{})
	}
	p.delayed[df] = struct{}{}
	// The callback may run at once on another goroutine; it blocks on p.mu
	// until we are done, and does not read df.timer.
	df.timer = p.fabric.clock.AfterFunc(d, df.fire)
}

func (df *delayedFrame) fire() {
	p := df.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.delayed[df]; !ok {
		return // Close released it.
	}
	delete(p.delayed, df)
	p.arriveLocked(df.pkt)
}

// arriveLocked applies Reorder to c, which has reached the end of the link,
// and queues what is due.
// p.mu must be held.
func (p *Port) arriveLocked(c *stack.PacketBuffer) {
	if h := p.held; h != nil {
		// The frame held back is released right behind this one.
		p.held = nil
		p.heldTimer.Stop()
		p.enqueueLocked(c)
		p.enqueueLocked(h)
		return
	}
	if f := &p.faults; f.Reorder > 0 && p.rng.Float64() < f.Reorder {
		p.fabric.stats.reordered.Add(1)
		p.held = c
		timeout := f.ReorderTimeout
		if timeout == 0 {
			timeout = DefaultReorderTimeout
		}
		if p.heldTimer == nil {
			p.heldTimer = p.fabric.clock.AfterFunc(timeout, p.releaseHeld)
		} else {
			p.heldTimer.Reset(timeout)
		}
		return
	}
	p.enqueueLocked(c)
}

// releaseHeld is the ReorderTimeout callback.
func (p *Port) releaseHeld() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.held; h != nil {
		p.held = nil
		p.enqueueLocked(h)
	}
}
