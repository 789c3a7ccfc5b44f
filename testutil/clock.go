package testutil

import (
	"container/heap"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// ManualClock is a tcpip.Clock that moves only when told to, and fires its
// timers in a reproducible order: by due time, then in the order they were
// scheduled (or last reset). Every callback runs on the goroutine that
// advances the clock, one at a time; a timer scheduled with a delay of zero
// or less is due at once and runs at the next Advance, AdvanceToNext or
// RunDue (a stepped Fabric calls RunDue after every frame it delivers).
//
// gVisor's faketime.ManualClock is not reproducible in this sense: it fires
// the timers due at the same instant in Go map order, and runs zero-delay
// timers at once on fresh goroutines. Either clock can drive a Fabric, but
// only this one makes a stepped fabric's trace a function of the seed.
//
// The clock starts at the Unix epoch. It is safe for concurrent use.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers timerHeap
}

var _ tcpip.Clock = (*ManualClock)(nil)

// NewManualClock returns a clock set to the Unix epoch with no timers.
func NewManualClock() *ManualClock {
	return &ManualClock{now: time.Unix(0, 0)}
}

// Now implements tcpip.Clock.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NowMonotonic implements tcpip.Clock: the time elapsed since the epoch.
func (c *ManualClock) NowMonotonic() tcpip.MonotonicTime {
	var mt tcpip.MonotonicTime
	return mt.Add(c.Now().Sub(time.Unix(0, 0)))
}

// AfterFunc implements tcpip.Clock. f runs on the goroutine that advances
// the clock past now+d.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) tcpip.Timer {
	t := &manualTimer{clock: c, f: f, index: -1}
	c.mu.Lock()
	c.scheduleLocked(t, d)
	c.mu.Unlock()
	return t
}

func (c *ManualClock) scheduleLocked(t *manualTimer, d time.Duration) {
	t.when = c.now.Add(max(d, 0))
	c.seq++
	t.seq = c.seq
	heap.Push(&c.timers, t)
}

// Pending returns the number of scheduled timers.
func (c *ManualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Next returns when the next timer is due; ok is false if none is
// scheduled.
func (c *ManualClock) Next() (when time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.timers[0].when, true
}

// Advance moves the clock forward by d, firing every timer that falls due
// on the way (including those the callbacks schedule) in order, each with
// the clock set to its due time.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	until := c.now.Add(max(d, 0))
	c.mu.Unlock()
	c.runUntil(until)
}

// RunDue fires the timers that are due now, without moving the clock.
func (c *ManualClock) RunDue() { c.Advance(0) }

// AdvanceToNext moves the clock to the next timer's due time and fires the
// timers due then. It reports false, and does nothing, if no timer is
// scheduled.
func (c *ManualClock) AdvanceToNext() bool {
	when, ok := c.Next()
	if !ok {
		return false
	}
	c.runUntil(when)
	return true
}

func (c *ManualClock) runUntil(until time.Time) {
	for {
		c.mu.Lock()
		if len(c.timers) == 0 || c.timers[0].when.After(until) {
			if c.now.Before(until) {
				c.now = until
			}
			c.mu.Unlock()
			return
		}
		t := heap.Pop(&c.timers).(*manualTimer)
		if t.when.After(c.now) {
			c.now = t.when
		}
		c.mu.Unlock()
		t.f()
	}
}

// manualTimer is a ManualClock timer. index is its position in the heap, -1
// when not scheduled.
type manualTimer struct {
	clock *ManualClock
	f     func()
	when  time.Time
	seq   uint64
	index int
}

// Stop implements tcpip.Timer. It reports whether the timer was stopped
// before it fired.
func (t *manualTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&c.timers, t.index)
	return true
}

// Reset implements tcpip.Timer: the timer fires d from now, whether or not
// it had fired or been stopped.
func (t *manualTimer) Reset(d time.Duration) {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.index >= 0 {
		heap.Remove(&c.timers, t.index)
	}
	c.scheduleLocked(t, d)
}

// timerHeap orders timers by due time, then by scheduling order.
type timerHeap []*manualTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].when.Equal(h[j].when) {
		return h[i].when.Before(h[j].when)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*manualTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
