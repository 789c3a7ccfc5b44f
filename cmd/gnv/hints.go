package main

import (
	"errors"
	"fmt"

	"github.com/gnv-project/gnv/link/tuntap"
)

// overlayHint adds to err, the error of bringing up an interface, the flag
// that does without a TAP or TUN device when the device is what failed for
// want of privileges, of /dev/net/tun or of Linux. The library errors say
// what is missing, not which gnv flag to use instead.
func overlayHint(err error) error {
	var perm *tuntap.PermissionError
	if errors.As(err, &perm) || errors.Is(err, tuntap.ErrNoTUN) || errors.Is(err, tuntap.ErrUnsupported) {
		return fmt.Errorf("%w (or use --overlay netstack, which needs no TAP or TUN device)", err)
	}
	return err
}
