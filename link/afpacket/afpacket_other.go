//go:build !linux

package afpacket

import (
	"errors"
	"net/netip"
	"runtime"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// errUnsupported is returned by New and CheckHost on systems other than
// Linux: AF_PACKET sockets are Linux's.
var errUnsupported = errors.New("AF_PACKET: the AF_PACKET underlay is not supported on " + runtime.GOOS + " (Linux only)")

// Endpoint is implemented on Linux only.
type Endpoint struct{ stack.LinkEndpoint }

// New fails: AF_PACKET is Linux only.
func New(opts Options) (*Endpoint, error) { return nil, errUnsupported }

// CheckHost fails: AF_PACKET is Linux only.
func CheckHost(dev string, addr netip.Addr) (warnings []string, err error) {
	return nil, errUnsupported
}
