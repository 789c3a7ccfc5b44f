//go:build !linux && !darwin && !windows

package tuntap

import (
	"fmt"
	"runtime"
)

// openWater is New for BackendWater: github.com/songgao/water has no
// support for this system (FreeBSD included).
func openWater(opts Options) (*Device, error) {
	return nil, fmt.Errorf("creating %s device: %w: github.com/songgao/water, which gnv uses for devices off Linux, has no %s support (an overlay netstack needs no device)",
		opts.Mode.kind(), ErrUnsupported, runtime.GOOS)
}

// waterDeleted reports whether a read error says that the interface was
// deleted under the device: nothing beyond waterGone's errors here.
func waterDeleted(error) bool { return false }
