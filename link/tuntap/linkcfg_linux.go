//go:build linux

package tuntap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/gnv-project/gnv/link/internal/netdev"
	"golang.org/x/sys/unix"
)

// linkConfig is how New configured a device's interface, for either
// backend: what it set, and what it must undo at Close.
type linkConfig struct {
	nl    *netdev.Conn
	name  string
	index int
	mac   net.HardwareAddr // TAP: the MAC it has
	mtu   int
	added []netip.Prefix // addresses New added
	// found is how a device New attached to (not created) was before:
	// Close puts its MTU, MAC and state back.
	found *netdev.LinkState
}

// configureLink sets the MTU, MAC and addresses that opts give, and brings
// the interface up. For a device that existed it first reads its state,
// and on failure it undoes what it did.
func configureLink(nl *netdev.Conn, name string, index int, opts Options, existed bool) (_ *linkConfig, err error) {
	kind := opts.Mode.kind()
	c := &linkConfig{nl: nl, name: name, index: index}
	if existed {
		st, err := nl.State(name, index, opts.Mode == ModeTAP)
		if err != nil {
			return nil, fmt.Errorf("%s device %s: %w", kind, name, err)
		}
		c.found = &st
	}
	defer func() {
		if err != nil {
			c.undo()
		}
	}()
	if opts.Mode == ModeTAP {
		if c.mac, err = nl.HWAddr(name); err != nil {
			return nil, fmt.Errorf("%s device %s: hardware address: %w", kind, name, err)
		}
		if opts.MAC != nil {
			c.mac = append(net.HardwareAddr(nil), opts.MAC...)
		}
	}
	if c.mtu, err = nl.MTU(name); err != nil {
		return nil, fmt.Errorf("%s device %s: mtu: %w", kind, name, err)
	}
	if opts.MTU != 0 {
		c.mtu = int(opts.MTU)
	}
	var setMAC net.HardwareAddr
	if opts.Mode == ModeTAP {
		setMAC = opts.MAC
	}
	if err := nl.SetLink(index, uint32(c.mtu), setMAC, true); err != nil {
		return nil, netdev.DeviceError("configuring", kind, name, err)
	}
	for _, p := range opts.Addresses {
		added, err := nl.Addr(unix.RTM_NEWADDR, index, p, opts.NoDAD)
		if err != nil {
			return nil, netdev.DeviceError("configuring", kind, name, fmt.Errorf("address %s: %w", p, err))
		}
		if added {
			c.added = append(c.added, p)
		}
	}
	return c, nil
}

// undo removes the addresses New added and puts a device that existed
// back as it was found. A device New created needs neither: closing it
// removes it.
func (c *linkConfig) undo() error {
	var errs []error
	for _, p := range c.added {
		if _, err := c.nl.Addr(unix.RTM_DELADDR, c.index, p, false); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("removing address %s from %s: %w", p, c.name, err))
		}
	}
	c.added = nil
	if c.found != nil {
		if err := c.nl.Restore(c.name, *c.found); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
		c.found = nil
	}
	return errors.Join(errs...)
}
