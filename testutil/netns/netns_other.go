//go:build !linux

package netns

import (
	"errors"
	"os/exec"
	"runtime"
	"testing"
)

// Network namespaces are Linux's. Elsewhere the package has the same API
// so that tests using it compile, and RequireRoot and New skip them.

const skipMsg = "needs Linux network namespaces, not available on " + runtime.GOOS

var errNoNetns = errors.New(skipMsg)

// RequireRoot skips the test: there are no network namespaces here.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	tb.Skip(skipMsg)
}

// RequireTools skips the test unless every tool is on PATH.
func RequireTools(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			tb.Skipf("needs %s, which is not installed", t)
		}
	}
}

// NS is a named network namespace; there are none here.
type NS struct{ Name string }

// New skips the test.
func New(tb testing.TB, prefix string) *NS {
	tb.Helper()
	tb.Skip(skipMsg)
	return nil
}

// Existing returns an NS that every method fails on.
func Existing(name string) *NS { return &NS{Name: name} }

// Run fails.
func (ns *NS) Run(name string, args ...string) (string, error) { return "", errNoNetns }

// MustRun fails the test.
func (ns *NS) MustRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	tb.Fatal(skipMsg)
	return ""
}

// Command returns a command that fails to start.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Err = errNoNetns
	return cmd
}

// Do fails.
func (ns *NS) Do(fn func() error) error { return errNoNetns }

// Veth fails the test.
func Veth(tb testing.TB, a *NS, ifA string, b *NS, ifB string) {
	tb.Helper()
	tb.Fatal(skipMsg)
}

// Bridge fails the test.
func Bridge(tb testing.TB, ns *NS, name string, ports ...string) {
	tb.Helper()
	tb.Fatal(skipMsg)
}
