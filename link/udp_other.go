//go:build !linux

package link

import (
	"errors"
	"net/netip"
	"runtime"
)

// errKernelUDPUnsupported is returned by NewKernelUDP on systems other than
// Linux: the transport relies on recvmmsg/sendmmsg and Linux socket options.
var errKernelUDPUnsupported = errors.New("link: KernelUDP is not supported on " + runtime.GOOS + " (Linux only)")

// kernelUDP is empty: KernelUDP is implemented on Linux only.
type kernelUDP struct{}

// NewKernelUDP always fails on this operating system.
func NewKernelUDP(opts KernelUDPOptions) (*KernelUDP, error) {
	if _, err := opts.normalize(); err != nil {
		return nil, err
	}
	return nil, errKernelUDPUnsupported
}

// WriteBatch is not supported on this operating system.
func (t *KernelUDP) WriteBatch(pkts []Packet) (int, error) { return 0, errKernelUDPUnsupported }

// Start is not supported on this operating system.
func (t *KernelUDP) Start(r Receiver) error { return errKernelUDPUnsupported }

// LocalAddr returns the zero AddrPort on this operating system.
func (t *KernelUDP) LocalAddr() netip.AddrPort { return netip.AddrPort{} }

// SourcePorts returns nil on this operating system.
func (t *KernelUDP) SourcePorts() []uint16 { return nil }

// MTU returns DefaultKernelUDPMTU on this operating system.
func (t *KernelUDP) MTU() int { return DefaultKernelUDPMTU }

// Offloads reports no offloads on this operating system.
func (t *KernelUDP) Offloads() (gso, gro bool) { return false, false }

// Stats returns zero counters on this operating system.
func (t *KernelUDP) Stats() KernelUDPStats { return KernelUDPStats{} }

// JoinGroup is not supported on this operating system.
func (t *KernelUDP) JoinGroup(group netip.Addr) error { return errKernelUDPUnsupported }

// LeaveGroup is not supported on this operating system.
func (t *KernelUDP) LeaveGroup(group netip.Addr) error { return errKernelUDPUnsupported }

// Close does nothing on this operating system.
func (t *KernelUDP) Close() error { return nil }

// WireSourcePort returns srcPort's wire port; no pool exists here.
func (t *KernelUDP) WireSourcePort(srcPort uint16) uint16 { return 0 }
