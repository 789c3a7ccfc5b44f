package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestReleaseBuild checks what the README's release build
// (CGO_ENABLED=0, -tags grpcnotrace) leaves out: gRPC's request tracing,
// whose text/template makes the linker keep every exported method (2.5 MB
// of text, and the idle RSS with it), and cgo. A new dependency that
// brings either back fails here.
func TestReleaseBuild(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command:", err)
	}
	deps := func(env string, args ...string) []string {
		t.Helper()
		cmd := exec.Command("go", append([]string{"list", "-deps"}, append(args, ".")...)...)
		cmd.Env = append(os.Environ(), env)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		return strings.Fields(string(out))
	}
	const tracing = "golang.org/x/net/trace"
	release := deps("CGO_ENABLED=0", "-tags", "grpcnotrace")
	for _, p := range []string{tracing, "runtime/cgo"} {
		if slices.Contains(release, p) {
			t.Errorf("the release build links %s", p)
		}
	}
	// Without the tag the tracing is there: the check above can fail.
	if !slices.Contains(deps("CGO_ENABLED=0"), tracing) {
		t.Logf("a build without -tags grpcnotrace no longer links %s: the tag may be dropped from the README", tracing)
	}
}
