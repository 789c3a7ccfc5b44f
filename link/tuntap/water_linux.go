//go:build linux

package tuntap

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// On Linux, BackendWater is a plain fallback that must be asked for: the
// ioctl backend already runs without offloads when the kernel refuses
// IFF_VNET_HDR or DisableOffloads is set, on the same /dev/net/tun, so
// falling back to water by itself would gain nothing. It serves to check
// the portable code path on a system where tests run as root, and as a
// second opinion when the ioctl backend is in doubt. water creates the
// device; rtnetlink sets its MTU, MAC, state and addresses, as for the
// ioctl backend.

// waterLinux is a water device's configuration on Linux.
type waterLinux struct {
	nl      *netdev.Conn
	ifindex int
	kind    string
	name    string
	created bool
	link    *linkConfig // what New configured, and Close undoes
}

// openWater is New for BackendWater after validation.
func openWater(opts Options) (_ *Device, err error) {
	kind := opts.Mode.kind()
	h := &waterLinux{kind: kind}
	if h.nl, err = netdev.Open(); err != nil {
		return nil, fmt.Errorf("creating %s device %s: %w", kind, opts.Name, err)
	}
	defer func() {
		if err != nil {
			h.nl.Close()
		}
	}()
	existed := false
	if opts.Name != "" {
		if _, err := h.nl.Ifindex(opts.Name); err == nil {
			existed = true
		}
	}
	op := "creating"
	if existed {
		op = "attaching to"
	}
	cfg := water.Config{DeviceType: water.TUN}
	if opts.Mode == ModeTAP {
		cfg.DeviceType = water.TAP
	}
	cfg.Name = opts.Name
	// water sets TUNSETPERSIST to this: keep a persistent device so.
	cfg.Persist = existed
	ifce, err := newWater(cfg)
	if err != nil {
		switch {
		case existed && errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("%s %s device %s: an interface of that name exists and is not a %s device", op, kind, opts.Name, kind)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("%s %s device %s: the device is in use by another process", op, kind, opts.Name)
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV):
			err = &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
		}
		return nil, netdev.DeviceError(op, kind, opts.Name, err)
	}
	defer func() {
		if err != nil {
			ifce.Close()
		}
	}()
	h.name, h.created = ifce.Name(), !existed
	if h.ifindex, err = h.nl.Ifindex(h.name); err != nil {
		return nil, fmt.Errorf("%s device %s: interface index: %w", kind, h.name, err)
	}
	if h.link, err = configureLink(h.nl, h.name, h.ifindex, opts, existed); err != nil {
		return nil, err
	}
	return newWaterDevice(opts, ifce, h, h.name, h.link.mac, uint32(h.link.mtu), h.created), nil
}

// waterDeleted reports whether a read error says that the interface was
// deleted under the device (EBADFD).
func waterDeleted(err error) bool { return errors.Is(err, unix.EBADFD) }

// waterMu serialises newWater, so that a descriptor water leaks is the
// only descriptor of /dev/net/tun without FD_CLOEXEC that appears during
// the call: gnv's own backends open theirs with O_CLOEXEC.
var waterMu sync.Mutex

// newWater is water.New without its two descriptor leaks. water opens
// /dev/net/tun without O_CLOEXEC, so fork is held off until the flag is
// set, or a child could keep the device alive; and it does not close the
// descriptor when setting up the device fails (an interface of that name
// of the other kind, one in use, no permission), so that one is closed
// here.
func newWater(cfg water.Config) (*water.Interface, error) {
	waterMu.Lock()
	defer waterMu.Unlock()
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	before := tunDescriptors()
	ifce, err := water.New(cfg)
	if err != nil {
		for fd := range tunDescriptors() {
			if flags, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !before[fd] && ferr == nil && flags&unix.FD_CLOEXEC == 0 {
				unix.Close(fd)
			}
		}
		return nil, err
	}
	if err := setCloexec(ifce); err != nil {
		ifce.Close()
		return nil, err
	}
	return ifce, nil
}

// tunDescriptors returns this process's open descriptors of /dev/net/tun.
func tunDescriptors() map[int]bool {
	fds := map[int]bool{}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fds
	}
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/net/tun" {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				fds[fd] = true
			}
		}
	}
	return fds
}

// setCloexec sets FD_CLOEXEC on the descriptor of a water device.
func setCloexec(ifce *water.Interface) error {
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		return fmt.Errorf("water device: unexpected type %T", ifce.ReadWriteCloser)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { unix.CloseOnExec(int(fd)) })
}

func (h *waterLinux) setMTU(mtu uint32) error {
	if err := h.nl.SetLink(h.ifindex, mtu, nil, false); err != nil {
		return netdev.DeviceError("configuring", h.kind, h.name, fmt.Errorf("mtu %d: %w", mtu, err))
	}
	return nil
}

func (h *waterLinux) close() error {
	var err error
	if !h.created {
		err = h.link.undo()
	}
	h.nl.Close()
	return err
}
