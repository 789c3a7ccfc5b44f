//go:build !linux

package kudp

import (
	"errors"
	"runtime"

	"github.com/gnv-project/gnv/link"
)

// errUnsupported is returned by New on systems other than Linux: the
// transport relies on recvmmsg/sendmmsg and Linux socket options.
var errUnsupported = errors.New("kernel UDP: the kernel UDP transport is not supported on " + runtime.GOOS + " (Linux only)")

// Transport is implemented on Linux only.
type Transport struct{ link.Transport }

// New checks opts, then fails: the transport is Linux only.
func New(opts Options) (*Transport, error) {
	if _, err := opts.normalize(); err != nil {
		return nil, err
	}
	return nil, errUnsupported
}

// SetDontFragment fails: the transport is Linux only.
func (t *Transport) SetDontFragment(on bool) error { return errUnsupported }
