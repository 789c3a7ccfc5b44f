//go:build !linux

package tuntap

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// devSys is empty: TAP and TUN devices are implemented on Linux only.
type devSys struct{}

// openDevice fails: TAP and TUN devices are implemented on Linux only.
func openDevice(opts Options) (*Device, error) {
	return nil, fmt.Errorf("%s device: %w", opts.Mode.kind(), ErrUnsupported)
}

func (d *Device) setMTU(uint32) error                 { return fmt.Errorf("not supported") }
func (d *Device) start()                              {}
func (d *Device) close() error                        { return nil }
func (d *Device) writePacket(pkt *stack.PacketBuffer) {}
