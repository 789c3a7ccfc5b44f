//go:build !linux

package kudp

// Transport is the kernel UDP transport of this system: Portable, plain
// package-net sockets (recvmmsg, sendmmsg and UDP GSO/GRO are Linux's).
type Transport = Portable

// New opens a Portable transport (NewPortable).
func New(opts Options) (*Transport, error) { return NewPortable(opts) }
