package netdev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// PermissionError turns a privilege failure while doing op ("creating",
// "configuring") on the TAP or TUN (kind) device name into an error that
// says what is missing and what to do instead. Other errors are wrapped as
// they are.
func PermissionError(op, kind, name string, err error) error {
	if name == "" {
		name = "(kernel-named)"
	}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%s %s device %s needs CAP_NET_ADMIN (run as root or grant the capability), or use --overlay netstack: %w", op, kind, name, err)
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("%s %s device %s: no /dev/net/tun (load the tun module with `modprobe tun`), or use --overlay netstack: %w", op, kind, name, err)
	}
	return fmt.Errorf("%s %s device %s: %w", op, kind, name, err)
}
