//go:build !linux

package tuntap

import "fmt"

// openWater is New for BackendWater, which is Linux only for now.
func openWater(opts Options) (*Device, error) {
	return nil, fmt.Errorf("%s device: %w", opts.Mode.kind(), ErrUnsupported)
}
