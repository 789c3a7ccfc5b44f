package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// versionString is what gnv version prints: the module version and the
// VCS revision the binary was built from, from its build information.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	return formatVersion(bi, ok)
}

// formatVersion formats build information as one line, like
//
//	gnv v0.0.0-20261206140323-58a0b301c69f (github.com/gnv-project/gnv), revision 58a0b301c69f162303248762b7c672af7051de7b (2026-12-06T14:03:23Z, modified), go1.26.3 linux/amd64
func formatVersion(bi *debug.BuildInfo, ok bool) string {
	platform := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	if !ok || bi == nil {
		return "gnv (no build information), " + platform
	}
	version, path := bi.Main.Version, bi.Main.Path
	if version == "" {
		version = "(unknown)"
	}
	if path == "" {
		path = "github.com/gnv-project/gnv"
	}
	var rev, when string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "gnv %s (%s), ", version, path)
	if rev == "" {
		b.WriteString("revision unknown (built without VCS stamping)")
	} else {
		var notes []string
		if when != "" {
			notes = append(notes, when)
		}
		if modified {
			notes = append(notes, "modified")
		}
		b.WriteString("revision " + rev)
		if len(notes) > 0 {
			b.WriteString(" (" + strings.Join(notes, ", ") + ")")
		}
	}
	if bi.GoVersion != "" {
		platform = bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
	}
	return b.String() + ", " + platform
}
