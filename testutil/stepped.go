package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// releaseTimeout bounds how long Step waits for a stack to let go of a
// delivered frame. A frame still held after that (an IP fragment waiting
// for reassembly, say) is counted in FabricStats.SettleTimeouts and Step
// moves on: the run is then no longer guaranteed to be reproducible.
const releaseTimeout = 5 * time.Second

// AddSettler registers settle, which a stepped fabric calls after each frame
// it delivers and each batch of timers it fires, and which must return only
// once the stacks on the fabric have finished the work that gave them:
// every frame they will send in response has been sent. For a gVisor
// netstack that is SettleStack. NewHosts registers one per host. The
// returned function unregisters settle.
func (f *Fabric) AddSettler(settle func()) (remove func()) {
	key := &settle
	f.stepMu.Lock()
	if f.settlers == nil {
		f.settlers = make(map[*func()]struct{})
	}
	f.settlers[key] = struct{}{}
	f.stepMu.Unlock()
	return func() {
		f.stepMu.Lock()
		delete(f.settlers, key)
		f.stepMu.Unlock()
	}
}

// SettleStack returns a settle function (see Fabric.AddSettler) for a gVisor
// netstack: it pauses and resumes the stack's transport protocols, which
// returns once the TCP processor goroutines have handled every segment
// queued to them (and sent what that made them send).
func SettleStack(s *stack.Stack) func() {
	return func() {
		s.Pause()
		s.Resume()
	}
}

// settle runs every registered settle function. Their order does not
// matter: each waits for work already queued; none starts any.
func (f *Fabric) settle() {
	f.stepMu.Lock()
	fns := make([]func(), 0, len(f.settlers))
	for k := range f.settlers {
		fns = append(fns, *k)
	}
	f.stepMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Queued returns the number of frames a stepped fabric holds for delivery
// (not counting frames delayed or held back on the clock).
func (f *Fabric) Queued() int {
	f.stepMu.Lock()
	defer f.stepMu.Unlock()
	return len(f.stepQ)
}

// Step delivers the oldest queued frame of a stepped fabric (see
// FabricOptions.Stepped) to its port's stack, on the calling goroutine, and
// waits until the system is quiet again:
//
//   - until the receiving stack has released the frame: its own goroutines
//     (such as gnv's underlay receive goroutine) are done with it;
//   - then for the settle functions (AddSettler): the stacks' TCP
//     processors are idle;
//   - then it fires the timers that are due now (a zero-delay timer, such
//     as a netstack's "send what waited for ARP", runs here), if the clock
//     is a ManualClock, and settles again, until none is due.
//
// Every frame sent in response is therefore queued before Step returns, in
// a reproducible order. Step reports false, doing nothing, when no frame is
// queued. It panics if the fabric is not stepped.
func (f *Fabric) Step() bool {
	if !f.stepped {
		panic("testutil: Step on a fabric that is not stepped")
	}
	for {
		f.stepMu.Lock()
		if len(f.stepQ) == 0 {
			f.stepMu.Unlock()
			return false
		}
		p := f.stepQ[0]
		f.stepQ[0] = nil
		f.stepQ = f.stepQ[1:]
		if len(f.stepQ) == 0 {
			f.stepQ = f.stepQ[:0:0] // let the array go
		}
		f.stepMu.Unlock()
		if p.deliverOne() {
			f.quiesce()
			return true
		}
		// The port was closed and its frames released: next.
	}
}

// quiesce settles the stacks and fires due timers until nothing is left to
// do at the current instant.
func (f *Fabric) quiesce() {
	f.settle()
	mc, ok := f.clock.(*ManualClock)
	if !ok {
		return
	}
	for {
		when, ok := mc.Next()
		if !ok || when.After(mc.Now()) {
			return
		}
		mc.RunDue()
		f.settle()
	}
}

// deliverOne hands p's oldest queued frame to its stack and waits for the
// stack to release it. It reports false if p had no frame (it was closed).
func (p *Port) deliverOne() bool {
	st := &p.fabric.stats
	p.mu.Lock()
	if p.n == 0 {
		p.mu.Unlock()
		return false
	}
	pkt := p.ring[p.head]
	p.ring[p.head] = nil
	p.head = (p.head + 1) % len(p.ring)
	p.n--
	d := p.dispatcher
	p.mu.Unlock()
	if d == nil {
		st.droppedClosed.Add(1)
		pkt.DecRef()
		return true
	}
	st.delivered.Add(1)
	d.DeliverNetworkPacket(header.Ethernet(pkt.LinkHeader().Slice()).Type(), pkt)
	// Our reference is the last one once every goroutine the stack handed
	// the frame to is done with it.
	if pkt.ReadRefs() > 1 {
		deadline := time.Now().Add(releaseTimeout)
		for spins := 0; pkt.ReadRefs() > 1; spins++ {
			if spins < 100 {
				runtime.Gosched()
				continue
			}
			if time.Now().After(deadline) {
				st.settleTimeouts.Add(1)
				break
			}
			time.Sleep(10 * time.Microsecond)
		}
	}
	pkt.DecRef()
	return true
}

// ErrStuck is returned by Fabric.Run when nothing is left to happen: no
// frame is queued and the clock has no timer, yet the run is not done.
var ErrStuck = errors.New("testutil: stepped fabric is idle with no timer left")

// Run drives a stepped fabric whose clock is a ManualClock: it calls done,
// and unless that reports true, delivers the next frame (Step) or, when
// none is queued, advances the clock to its next timer (firing the timers
// due then and settling the stacks), and starts again. done runs on the
// calling goroutine between steps, when the stacks are quiet: it is the
// place to feed the sockets (non-blocking writes and reads) so that the
// application's actions, too, happen in a reproducible order.
//
// Run returns nil once done reports true, an error if the clock would pass
// limit (measured from when Run started) first, and ErrStuck if nothing is
// left to happen.
func (f *Fabric) Run(limit time.Duration, done func() bool) error {
	if !f.stepped {
		return errors.New("testutil: Run needs a stepped fabric (FabricOptions.Stepped)")
	}
	mc, ok := f.clock.(*ManualClock)
	if !ok {
		return fmt.Errorf("testutil: Run needs a *testutil.ManualClock, the fabric has a %T", f.clock)
	}
	end := mc.Now().Add(limit)
	f.quiesce()
	for !done() {
		if f.Step() {
			continue
		}
		when, ok := mc.Next()
		if !ok {
			return ErrStuck
		}
		if when.After(end) {
			return fmt.Errorf("testutil: stepped run not done after %v of fabric time", limit)
		}
		mc.AdvanceToNext()
		f.quiesce()
	}
	return nil
}
