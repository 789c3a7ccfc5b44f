//go:build !linux

package link

import (
	"errors"
	"net/netip"
	"runtime"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// errPacketUnsupported is returned by NewPacketEndpoint and CheckPacketHost
// on systems other than Linux: AF_PACKET sockets are Linux's.
var errPacketUnsupported = errors.New("link: the AF_PACKET underlay is not supported on " + runtime.GOOS + " (Linux only)")

// packetEndpoint is empty: PacketEndpoint is implemented on Linux only.
type packetEndpoint struct{}

// NewPacketEndpoint always fails on this operating system.
func NewPacketEndpoint(opts PacketEndpointOptions) (*PacketEndpoint, error) {
	return nil, errPacketUnsupported
}

// CheckPacketHost always fails on this operating system.
func CheckPacketHost(dev string, addr netip.Addr) (warnings []string, err error) {
	return nil, errPacketUnsupported
}

// Device returns "" on this operating system.
func (e *PacketEndpoint) Device() string { return "" }

// Offloads reports no offloads on this operating system.
func (e *PacketEndpoint) Offloads() PacketOffloads { return PacketOffloads{} }

// Stats returns zero counters on this operating system.
func (e *PacketEndpoint) Stats() *PacketEndpointStats { return &PacketEndpointStats{} }

// UDPSegmentation reports no segmentation on this operating system.
func (e *PacketEndpoint) UDPSegmentation() (int, bool) { return 0, false }

// MTU returns 0 on this operating system.
func (e *PacketEndpoint) MTU() uint32 { return 0 }

// SetMTU does nothing on this operating system.
func (e *PacketEndpoint) SetMTU(uint32) {}

// MaxHeaderLength returns the Ethernet header length.
func (e *PacketEndpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress returns "" on this operating system.
func (e *PacketEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress does nothing on this operating system.
func (e *PacketEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities returns no capabilities on this operating system.
func (e *PacketEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach does nothing on this operating system.
func (e *PacketEndpoint) Attach(stack.NetworkDispatcher) {}

// IsAttached reports false on this operating system.
func (e *PacketEndpoint) IsAttached() bool { return false }

// Wait does nothing on this operating system.
func (e *PacketEndpoint) Wait() {}

// ARPHardwareType returns header.ARPHardwareEther.
func (e *PacketEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader does nothing on this operating system.
func (e *PacketEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader reports false on this operating system.
func (e *PacketEndpoint) ParseHeader(*stack.PacketBuffer) bool { return false }

// SetOnCloseAction does nothing on this operating system.
func (e *PacketEndpoint) SetOnCloseAction(func()) {}

// Close does nothing on this operating system.
func (e *PacketEndpoint) Close() {}

// WritePackets fails on this operating system.
func (e *PacketEndpoint) WritePackets(stack.PacketBufferList) (int, tcpip.Error) {
	return 0, &tcpip.ErrNotSupported{}
}
