//go:build !linux

package tapnic

import (
	"errors"
	"runtime"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Endpoint is implemented on Linux only.
type Endpoint struct{ stack.LinkEndpoint }

// New fails: the TAP underlay is Linux only.
func New(opts Options) (*Endpoint, error) {
	return nil, errors.New("TAP underlay: not supported on " + runtime.GOOS + " (Linux only)")
}
