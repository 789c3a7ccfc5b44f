//go:build windows

package tuntap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/songgao/water"
)

// On Windows water opens an adapter of the tap-windows6 driver (OpenVPN's
// TAP driver, ComponentId tap0901): it must be installed and the adapter
// exist; it outlives the process. TUN is the driver's point-to-point
// emulation, which answers ARP for one IPv4 subnet. netsh sets the MTU and
// addresses (active store), and Close removes the addresses it added.

// tapWindowsComponentID is the tap-windows6 driver's component ID.
const tapWindowsComponentID = "tap0901"

// waterWindows is a tap-windows6 adapter's configuration.
type waterWindows struct {
	name  string
	added []netip.Prefix // addresses New added
}

// openWater is New for BackendWater after validation.
func openWater(opts Options) (_ *Device, err error) {
	kind := opts.Mode.kind()
	cfg := water.Config{DeviceType: water.TAP}
	cfg.ComponentID = tapWindowsComponentID
	cfg.InterfaceName = opts.Name
	if opts.Mode == ModeTUN {
		cfg.DeviceType = water.TUN
		for _, p := range opts.Addresses {
			if p.Addr().Is4() {
				cfg.Network = p.String()
				break
			}
		}
		if cfg.Network == "" {
			return nil, fmt.Errorf("opening %s: a TUN device on Windows needs an IPv4 address: the tap-windows6 driver emulates TUN for one IPv4 subnet", deviceLabel("TUN", opts.Name))
		}
	}
	ifce, err := water.New(cfg)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrPermission):
			return nil, &PermissionError{Op: "opening", Kind: kind, Name: opts.Name, Err: err}
		case strings.Contains(err.Error(), "registry") && opts.Name != "":
			return nil, &noDriverError{msg: fmt.Sprintf("opening %s device %s: no tap-windows6 adapter of that connection name (`netsh interface show interface` lists them; OpenVPN's TAP-Windows6 driver adds adapters)", kind, opts.Name), err: err}
		case strings.Contains(err.Error(), "registry"):
			return nil, &noDriverError{msg: fmt.Sprintf("opening %s device: no tap-windows6 adapter (install OpenVPN's TAP-Windows6 driver, which adds one)", kind), err: err}
		}
		return nil, netdev.DeviceError("opening", kind, opts.Name, err)
	}
	defer func() {
		if err != nil {
			ifce.Close()
		}
	}()
	h := &waterWindows{name: ifce.Name()}
	ifi, err := net.InterfaceByName(h.name)
	if err != nil {
		return nil, fmt.Errorf("%s device %s: %w", kind, h.name, err)
	}
	mtu := uint32(ifi.MTU)
	if opts.MTU != 0 {
		if err := h.setMTU(opts.MTU); err != nil {
			return nil, err
		}
		mtu = opts.MTU
	}
	have := make(map[netip.Addr]bool)
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					have[ip.Unmap()] = true
				}
			}
		}
	}
	if opts.NoDAD && hasIPv6(opts.Addresses) {
		if err := runCmd(netshNoDADCmd(h.name)); err != nil {
			return nil, fmt.Errorf("configuring %s device %s: %w", kind, h.name, err)
		}
	}
	for _, p := range opts.Addresses {
		if have[p.Addr()] {
			continue
		}
		if err := runCmd(netshAddrCmd(h.name, p)); err != nil {
			h.close()
			return nil, fmt.Errorf("configuring %s device %s: address %s: %w", kind, h.name, p, err)
		}
		h.added = append(h.added, p)
	}
	return newWaterDevice(opts, ifce, h, h.name, ifi.HardwareAddr, mtu, false), nil
}

// hasIPv6 reports whether any of ps is an IPv6 prefix.
func hasIPv6(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

func (h *waterWindows) setMTU(mtu uint32) error {
	for _, argv := range netshMTUCmds(h.name, mtu) {
		if err := runCmd(argv); err != nil {
			return fmt.Errorf("configuring device %s: mtu %d: %w", h.name, mtu, err)
		}
	}
	return nil
}

// close removes the addresses New added: the adapter stays.
func (h *waterWindows) close() error {
	var errs []error
	for _, p := range h.added {
		if err := runCmd(netshDelAddrCmd(h.name, p)); err != nil {
			errs = append(errs, fmt.Errorf("removing address %s from %s: %w", p, h.name, err))
		}
	}
	h.added = nil
	return errors.Join(errs...)
}

// waterDeleted reports whether a read error says that the interface was
// deleted under the device: nothing beyond waterGone's errors here.
func waterDeleted(error) bool { return false }
