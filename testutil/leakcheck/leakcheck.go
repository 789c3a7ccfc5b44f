// Package leakcheck runs tests under gVisor's reference leak checker
// (gvisor.dev/gvisor/pkg/refs), so that a leaked stack.PacketBuffer or buffer
// chunk fails the test binary. It imports nothing of gnv, so every gnv
// package can use it in its TestMain; testutil re-exports it.
package leakcheck

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/refs"
)

var leakCheckOnce sync.Once

// Enable turns on gVisor's reference leak checker
// (gvisor.dev/gvisor/pkg/refs) in panic mode, once per process. From then on
// every reference-counted object (stack.PacketBuffer, buffer chunks, ...) is
// tracked until its last reference is dropped.
//
// Call it before the first packet of the process exists, normally at the
// start of TestMain: an object created before it and released after it
// makes gVisor panic ("Expected to find entry in leak checking map").
// Run calls it for you.
func Enable() {
	leakCheckOnce.Do(func() { refs.SetLeakMode(refs.LeaksPanic) })
}

// leakPollTimeout bounds how long leak checks wait for references that are
// still being dropped by goroutines winding down.
const leakPollTimeout = 5 * time.Second

// leakReport runs gVisor's leak check and returns its report, or "" if no
// tracked object is alive. Objects still held by goroutines that are
// shutting down are given up to leakPollTimeout to be released.
func leakReport() string {
	deadline := time.Now().Add(leakPollTimeout)
	for {
		msg := leakCheckOnceNow()
		if msg == "" || time.Now().After(deadline) {
			return msg
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leakCheckOnceNow runs one leak check, turning the LeaksPanic panic into a
// report.
func leakCheckOnceNow() (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	refs.DoRepeatedLeakCheck()
	return ""
}

// Check fails t if any reference-counted gVisor object (a
// stack.PacketBuffer, a buffer chunk, ...) is still alive. Call it at the end
// of a test, after closing every stack (stack.Destroy), Fabric and
// connection the test created; objects still being released by exiting
// goroutines are waited for briefly. Objects of other tests running in
// parallel count too, so do not use it in parallel tests.
//
// It also fails t if leak checking was not enabled (see Enable).
// A leaked object stays leaked, so later checks in the same process report
// it again.
func Check(t testing.TB) {
	t.Helper()
	if refs.GetLeakMode() != refs.LeaksPanic {
		t.Errorf("leakcheck.Check: leak checking is not enabled; call leakcheck.Enable (or use leakcheck.Run) in TestMain before any packet exists")
		return
	}
	if msg := leakReport(); msg != "" {
		t.Errorf("leakcheck.Check: %s", msg)
	}
}

// Run enables leak checking, runs the tests and then checks
// that no reference-counted gVisor object is left alive. It returns the exit
// code for os.Exit: m.Run's code, or 1 if the tests passed but something
// leaked (the leaked objects are printed to stderr). Use it as
//
//	func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }
//
// When benchmarks are selected (-test.bench), leak checking stays off: it
// tracks every reference-counted object in a global map, which would
// distort the numbers.
func Run(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		return m.Run()
	}
	Enable()
	code := m.Run()
	if msg := leakReport(); msg != "" {
		fmt.Fprintf(os.Stderr, "leakcheck: reference leak after tests: %s\n", msg)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Snapshot is a set of reference-counted objects alive at one moment, for
// CheckSince.
type Snapshot map[string]bool

// Live returns the reference-counted objects alive now, such as the
// addresses of a running stack, for a later CheckSince. Leak checking
// must be enabled (see Enable).
func Live() Snapshot {
	s := Snapshot{}
	for _, o := range liveObjects(leakCheckOnceNow()) {
		s[o] = true
	}
	return s
}

// CheckSince fails t if any reference-counted gVisor object that was not
// in before is still alive, waiting briefly for objects being released by
// exiting goroutines. Unlike Check it can run while stacks are up: what
// they held at the time of before (their addresses, say) is not a leak.
// Objects of parallel tests count too.
func CheckSince(t testing.TB, before Snapshot) {
	t.Helper()
	if refs.GetLeakMode() != refs.LeaksPanic {
		t.Errorf("leakcheck.CheckSince: leak checking is not enabled; call leakcheck.Enable (or use leakcheck.Run) in TestMain before any packet exists")
		return
	}
	deadline := time.Now().Add(leakPollTimeout)
	for {
		var leaked []string
		for _, o := range liveObjects(leakCheckOnceNow()) {
			if !before[o] {
				leaked = append(leaked, o)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("leakcheck.CheckSince: %d objects leaked:\n%s", len(leaked), strings.Join(leaked, "\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// liveObjects extracts the objects from a gVisor leak report: one line per
// object, starting "[type address]".
func liveObjects(report string) []string {
	var out []string
	for _, line := range strings.Split(report, "\n") {
		if strings.HasPrefix(line, "[") {
			if i := strings.Index(line, "]"); i > 0 {
				out = append(out, line[:i+1])
			}
		}
	}
	return out
}
