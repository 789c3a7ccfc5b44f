//go:build !linux

package tuntap

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// devSys is empty: the ioctl backend is Linux's; elsewhere devices go
// through water (water.go).
type devSys struct{}

// openDevice is New for BackendIoctl, which is Linux only.
func openDevice(opts Options) (*Device, error) {
	return nil, fmt.Errorf("%s device: %w: the ioctl backend (virtio-net offloads) is Linux only; elsewhere BackendWater, the default, opens devices without offloads where water supports the system (macOS, Windows)", opts.Mode.kind(), ErrUnsupported)
}

// The ioctl backend's methods, never called: New only makes water devices
// here.
func (d *Device) setMTU(uint32) error                      { return fmt.Errorf("not supported") }
func (d *Device) start()                                   {}
func (d *Device) close() error                             { return nil }
func (d *Device) writePacket(pkt *stack.PacketBuffer)      {}
func (d *Device) writeSegments([]byte, [][]byte, int) bool { return false }
