//go:build darwin

package tuntap

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/songgao/water"
)

// On macOS water opens a utun device: TUN only, created for this process
// and gone when it closes its descriptor, together with its addresses and
// routes. water adds and strips the 4-byte address-family header utun
// puts before each packet. ifconfig and route set the MTU and addresses.

// waterDarwin is a utun device's configuration.
type waterDarwin struct{ name string }

// openWater is New for BackendWater after validation.
func openWater(opts Options) (_ *Device, err error) {
	kind := opts.Mode.kind()
	if opts.Mode == ModeTAP {
		return nil, fmt.Errorf("creating %s: %w: macOS has TUN devices (utun) only; TAP needs the third-party tuntaposx kernel extension, which gnv does not use. A TUN device for an l3 tunnel works (gnv up --mode l3)",
			deviceLabel("TAP", opts.Name), ErrUnsupported)
	}
	if opts.Name != "" && !isUtunName(opts.Name) {
		return nil, fmt.Errorf("device name %q: macOS names TUN devices utunN (utun0, utun7, ...): give such a name or none, and the system picks one", opts.Name)
	}
	if os.Geteuid() != 0 {
		return nil, &PermissionError{Op: "creating", Kind: kind, Name: opts.Name, Err: syscall.EPERM}
	}
	cfg := water.Config{DeviceType: water.TUN}
	cfg.Name = opts.Name
	// water opens the utun socket without close-on-exec and hides the
	// descriptor (behind its address-family wrapper), so child processes
	// inherit it; a long-lived one would keep the utun device after
	// Close.
	ifce, err := water.New(cfg)
	if err != nil {
		if strings.Contains(err.Error(), "busy") {
			return nil, fmt.Errorf("creating %s: the device is in use by another process: %w", deviceLabel("TUN", opts.Name), err)
		}
		return nil, fmt.Errorf("creating %s: %w", deviceLabel("TUN", opts.Name), err)
	}
	defer func() {
		if err != nil {
			ifce.Close()
		}
	}()
	h := &waterDarwin{name: ifce.Name()}
	ifi, err := net.InterfaceByName(h.name)
	if err != nil {
		return nil, fmt.Errorf("TUN device %s: %w", h.name, err)
	}
	mtu := uint32(ifi.MTU)
	if opts.MTU != 0 {
		if err := h.setMTU(opts.MTU); err != nil {
			return nil, err
		}
		mtu = opts.MTU
	}
	for _, p := range opts.Addresses {
		for i, argv := range darwinAddrCmds(h.name, p) {
			run := runCmd
			if i > 0 {
				run = runRouteCmd
			}
			if err := run(argv); err != nil {
				return nil, fmt.Errorf("configuring TUN device %s: address %s: %w", h.name, p, err)
			}
		}
	}
	if err := runCmd(darwinUpCmd(h.name)); err != nil {
		return nil, fmt.Errorf("configuring TUN device %s: %w", h.name, err)
	}
	return newWaterDevice(opts, ifce, h, h.name, nil, mtu, true), nil
}

func (h *waterDarwin) setMTU(mtu uint32) error {
	if err := runCmd(darwinMTUCmd(h.name, mtu)); err != nil {
		return fmt.Errorf("configuring TUN device %s: mtu %d: %w", h.name, mtu, err)
	}
	return nil
}

// close has nothing to undo: the utun device went with its descriptor.
func (h *waterDarwin) close() error { return nil }

// waterDeleted reports whether a read error says that the interface was
// deleted under the device: nothing beyond waterGone's errors here.
func waterDeleted(error) bool { return false }
