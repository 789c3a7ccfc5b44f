package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/gnv-project/gnv/link/tuntap"
)

func TestOverlayHint(t *testing.T) {
	const hint = "or use --overlay netstack"
	for _, err := range []error{
		&tuntap.PermissionError{Op: "creating", Kind: "TAP", Name: "gnv0", Err: syscall.EPERM},
		fmt.Errorf("creating TUN device gnv1: %w: %w", tuntap.ErrNoTUN, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.ENOENT}),
		fmt.Errorf("TAP device: %w", tuntap.ErrUnsupported),
	} {
		got := overlayHint(fmt.Errorf("stack: %w", err))
		if !strings.Contains(got.Error(), hint) || !errors.Is(got, err) {
			t.Errorf("overlayHint(%v) = %v: want the hint, wrapping the error", err, got)
		}
	}
	got := overlayHint(&tuntap.PermissionError{Op: "creating", Kind: "TAP", Name: "gnv0", Err: syscall.EPERM})
	if want := "creating TAP device gnv0 needs CAP_NET_ADMIN (run as root or grant the capability): operation not permitted (or use --overlay netstack"; !strings.HasPrefix(got.Error(), want) {
		t.Errorf("got %q, want it to start with %q", got, want)
	}
	other := errors.New("device mtu 70000 out of range")
	if got := overlayHint(other); got != other {
		t.Errorf("overlayHint(%v) = %v, want it unchanged", other, got)
	}
}
