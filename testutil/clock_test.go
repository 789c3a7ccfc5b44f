package testutil_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/gnv-project/gnv/testutil"
)

// TestManualClockOrder checks what makes the clock reproducible: timers due
// at the same instant fire in the order they were scheduled, zero-delay
// timers wait for the next RunDue, and Stop and Reset reorder nothing else.
func TestManualClockOrder(t *testing.T) {
	c := testutil.NewManualClock()
	var got []string
	add := func(name string, d time.Duration) func() bool {
		tm := c.AfterFunc(d, func() { got = append(got, name) })
		return tm.Stop
	}
	add("a10", 10*time.Millisecond)
	add("b5", 5*time.Millisecond)
	add("c10", 10*time.Millisecond)
	stopD := add("d10", 10*time.Millisecond)
	add("e10", 10*time.Millisecond)
	add("now", 0)
	if len(got) != 0 {
		t.Fatalf("a zero-delay timer ran before RunDue: %v", got)
	}
	c.RunDue()
	if !reflect.DeepEqual(got, []string{"now"}) {
		t.Fatalf("after RunDue: %v", got)
	}
	if !stopD() {
		t.Fatal("Stop of a pending timer reported false")
	}
	// A timer that a callback schedules for a time within the advance runs
	// in the same Advance.
	c.AfterFunc(5*time.Millisecond, func() {
		got = append(got, "f5")
		c.AfterFunc(2*time.Millisecond, func() { got = append(got, "g7") })
	})
	if when, ok := c.Next(); !ok || when != time.Unix(0, int64(5*time.Millisecond)) {
		t.Fatalf("Next = %v, %v", when, ok)
	}
	c.Advance(10 * time.Millisecond)
	want := []string{"now", "b5", "f5", "g7", "a10", "c10", "e10"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if now := c.Now(); now != time.Unix(0, int64(10*time.Millisecond)) {
		t.Fatalf("Now = %v", now)
	}
	tm := c.AfterFunc(time.Second, func() { got = append(got, "h") })
	tm.Reset(time.Millisecond)
	if !c.AdvanceToNext() || got[len(got)-1] != "h" || c.Now() != time.Unix(0, int64(11*time.Millisecond)) {
		t.Fatalf("Reset timer: fired %v at %v", got, c.Now())
	}
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
	if c.AdvanceToNext() || c.Pending() != 0 {
		t.Fatal("AdvanceToNext with no timer")
	}
}

// TestHostMACs checks that the derived MACs are unicast, locally
// administered, distinct per host and role, and depend on the seed.
func TestHostMACs(t *testing.T) {
	seen := map[string]bool{}
	for _, under := range []bool{false, true} {
		for i := 0; i < 200; i++ {
			m := testutil.HostMAC(3, i, under)
			if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
				t.Fatalf("host %d: %v is not a locally administered unicast MAC", i, m)
			}
			if seen[string(m)] {
				t.Fatalf("host %d: %v repeats", i, m)
			}
			seen[string(m)] = true
		}
	}
	if testutil.HostMAC(3, 0, false) == testutil.HostMAC(4, 0, false) {
		t.Error("seeds 3 and 4 give the same MAC")
	}
}
