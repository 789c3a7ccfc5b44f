//go:build linux

package netdev

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"golang.org/x/sys/unix"
)

// LinkState is what a device attached to, not created, looked like before
// it was configured, so that Restore can put it back as it was found.
type LinkState struct {
	Index int
	MTU   int
	MAC   net.HardwareAddr // nil: not read (a TUN device has none)
	Up    bool
}

// State reads the MTU, whether it is up, and (if withMAC) the MAC of the
// interface name, whose index is index.
func (n *Conn) State(name string, index int, withMAC bool) (LinkState, error) {
	s := LinkState{Index: index}
	var err error
	if s.MTU, err = n.MTU(name); err != nil {
		return s, fmt.Errorf("mtu: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return s, err
	}
	if err := unix.IoctlIfreq(n.fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return s, fmt.Errorf("flags: %w", err)
	}
	s.Up = ifr.Uint16()&unix.IFF_UP != 0
	if withMAC {
		if s.MAC, err = n.HWAddr(name); err != nil {
			return s, fmt.Errorf("hardware address: %w", err)
		}
	}
	return s, nil
}

// Restore puts the interface name back in state s: its MTU and MAC if
// they changed since State, and down if it was down.
func (n *Conn) Restore(name string, s LinkState) error {
	var errs []error
	setMTU := uint32(0)
	if mtu, err := n.MTU(name); err != nil || mtu != s.MTU {
		setMTU = uint32(s.MTU)
	}
	var setMAC net.HardwareAddr
	if s.MAC != nil {
		if mac, err := n.HWAddr(name); err != nil || !slices.Equal(mac, s.MAC) {
			setMAC = s.MAC
		}
	}
	if setMTU != 0 || setMAC != nil {
		if err := n.SetLink(s.Index, setMTU, setMAC, false); err != nil {
			errs = append(errs, fmt.Errorf("restoring mtu %d, mac %s: %w", s.MTU, s.MAC, err))
		}
	}
	if !s.Up {
		if err := n.SetDown(s.Index); err != nil {
			errs = append(errs, fmt.Errorf("setting it down again: %w", err))
		}
	}
	return errors.Join(errs...)
}
