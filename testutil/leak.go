package testutil

import (
	"testing"

	"github.com/gnv-project/gnv/testutil/leakcheck"
)

// EnableLeakCheck turns on gVisor's reference leak checker
// (gvisor.dev/gvisor/pkg/refs) in panic mode, once per process. From then on
// every reference-counted object (stack.PacketBuffer, buffer chunks, ...) is
// tracked until its last reference is dropped.
//
// Call it before the first packet of the process exists, normally at the
// start of TestMain: an object created before it and released after it
// makes gVisor panic ("Expected to find entry in leak checking map").
// RunWithLeakCheck calls it for you.
//
// It is leakcheck.Enable; packages that cannot import testutil (because
// testutil imports them) can use package leakcheck directly.
func EnableLeakCheck() { leakcheck.Enable() }

// CheckLeaks fails t if any reference-counted gVisor object (a
// stack.PacketBuffer, a buffer chunk, ...) is still alive. Call it at the end
// of a test, after destroying every stack (stack.Destroy) and closing every
// Fabric and connection the test created; objects still being released by
// exiting goroutines are waited for briefly. Objects of other tests running
// in parallel count too, so do not use it in parallel tests.
//
// It also fails t if leak checking was not enabled (see EnableLeakCheck).
// A leaked object stays leaked, so later checks in the same process report
// it again.
func CheckLeaks(t testing.TB) {
	t.Helper()
	leakcheck.Check(t)
}

// RunWithLeakCheck enables leak checking, runs the tests and then checks
// that no reference-counted gVisor object is left alive. It returns the exit
// code for os.Exit: m.Run's code, or 1 if the tests passed but something
// leaked (the leaked objects are printed to stderr). Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testutil.RunWithLeakCheck(m)) }
func RunWithLeakCheck(m *testing.M) int { return leakcheck.Run(m) }
