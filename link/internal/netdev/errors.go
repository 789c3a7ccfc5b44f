package netdev

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// PermissionError reports that the process may not create or configure a
// TAP or TUN device: it lacks CAP_NET_ADMIN. Err is the system's error,
// which errors.Is matches against os.ErrPermission.
type PermissionError struct {
	Op   string // what was being done: "creating", "configuring"
	Kind string // "TAP" or "TUN"
	Name string // the device; empty when the kernel was to name it
	Err  error
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("%s %s device %s needs %s: %v", e.Op, e.Kind, deviceName(e.Name), privilege(), e.Err)
}

// privilege says what it takes to create and configure a device here.
func privilege() string {
	switch runtime.GOOS {
	case "linux":
		return "CAP_NET_ADMIN (run as root or grant the capability)"
	case "windows":
		return "Administrator rights (run as Administrator)"
	}
	return "root (run as root)"
}

// Unwrap returns Err.
func (e *PermissionError) Unwrap() error { return e.Err }

// ErrNoTUN says that the kernel has no /dev/net/tun, so that no TAP or TUN
// device can be made.
var ErrNoTUN = errors.New("no /dev/net/tun (load the tun module with `modprobe tun`)")

// DeviceError wraps err, a failure while doing op ("creating",
// "configuring") on the TAP or TUN (kind) device name: a privilege failure
// becomes a *PermissionError, a missing /dev/net/tun an error that matches
// ErrNoTUN (and err), and other errors are wrapped as they are.
func DeviceError(op, kind, name string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return &PermissionError{Op: op, Kind: kind, Name: name, Err: err}
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("%s %s device %s: %w: %w", op, kind, deviceName(name), ErrNoTUN, err)
	}
	return fmt.Errorf("%s %s device %s: %w", op, kind, deviceName(name), err)
}

func deviceName(name string) string {
	if name == "" {
		return "(kernel-named)"
	}
	return name
}
