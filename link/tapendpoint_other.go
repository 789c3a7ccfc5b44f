//go:build !linux

package link

import (
	"errors"
	"runtime"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tapEndpoint is empty: TAPEndpoint is implemented on Linux only.
type tapEndpoint struct{}

// NewTAPEndpoint always fails on this operating system.
func NewTAPEndpoint(opts TAPEndpointOptions) (*TAPEndpoint, error) {
	return nil, errors.New("link: the TAP underlay is not supported on " + runtime.GOOS + " (Linux only)")
}

// Name returns "" on this operating system.
func (e *TAPEndpoint) Name() string { return "" }

// Offloads reports no offloads on this operating system.
func (e *TAPEndpoint) Offloads() TAPOffloads { return TAPOffloads{} }

// Stats returns zero counters on this operating system.
func (e *TAPEndpoint) Stats() *TAPEndpointStats { return &TAPEndpointStats{} }

// TunnelSegmentation reports no segmentation on this operating system.
func (e *TAPEndpoint) TunnelSegmentation() (int, bool) { return 0, false }

// MTU returns 0 on this operating system.
func (e *TAPEndpoint) MTU() uint32 { return 0 }

// SetMTU does nothing on this operating system.
func (e *TAPEndpoint) SetMTU(uint32) {}

// MaxHeaderLength returns the Ethernet header length.
func (e *TAPEndpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress returns "" on this operating system.
func (e *TAPEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress does nothing on this operating system.
func (e *TAPEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities returns no capabilities on this operating system.
func (e *TAPEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach does nothing on this operating system.
func (e *TAPEndpoint) Attach(stack.NetworkDispatcher) {}

// IsAttached reports false on this operating system.
func (e *TAPEndpoint) IsAttached() bool { return false }

// Wait does nothing on this operating system.
func (e *TAPEndpoint) Wait() {}

// ARPHardwareType returns header.ARPHardwareEther.
func (e *TAPEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader does nothing on this operating system.
func (e *TAPEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader reports false on this operating system.
func (e *TAPEndpoint) ParseHeader(*stack.PacketBuffer) bool { return false }

// SetOnCloseAction does nothing on this operating system.
func (e *TAPEndpoint) SetOnCloseAction(func()) {}

// Close does nothing on this operating system.
func (e *TAPEndpoint) Close() {}

// WritePackets drops the packets on this operating system.
func (e *TAPEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return 0, &tcpip.ErrNotSupported{}
}
