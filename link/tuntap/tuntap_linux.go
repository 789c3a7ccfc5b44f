//go:build linux

package tuntap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The device is opened with x/sys ioctls rather than
// github.com/songgao/water: water has no way to ask for IFF_VNET_HDR, and
// the offload path also needs TUNGETFEATURES, TUNSETVNETHDRSZ, TUNSETVNETLE
// and TUNSETOFFLOAD on the same descriptor. One code path serves both the
// offload and the plain case.

const (
	// devReadBatch is how many frames are read before the batch is handed
	// to the endpoint (fewer if the device runs dry first).
	devReadBatch = 64

	// devReadBigView is the second receive view, for the rest of a
	// super-frame: with the first (an ordinary frame's size) it holds the
	// largest frame a TAP/TUN device hands over, a 64 KiB GSO packet and
	// an Ethernet header with a VLAN tag. It is gVisor's largest pooled
	// chunk size, so it is recycled rather than allocated.
	devReadBigView = 1 << 16

	// devReadBigViews is how many big views are reused in turn: a batch
	// ends when they are all used. Few, so that a super-frame is still in
	// the cache when it is written to the underlay: with 8 the kernel's
	// copy out of them took 3 times as long as the other side's copy of
	// the same bytes into the overlay device, with 1 or 2 twice as long.
	devReadBigViews = 2

	// devHdrScratch is how many leading bytes of a packet the write path
	// copies to patch headers: Ethernet, IP with extension headers, TCP.
	devHdrScratch = 512

	// devMaxIovecs is the kernel's UIO_MAXIOV.
	devMaxIovecs = 1024
)

// devSys is the Linux part of a Device.
type devSys struct {
	f       *os.File
	rc      syscall.RawConn
	nl      *netdev.Conn // route socket in the device's namespace
	ifindex int
	link    *linkConfig // what New configured, and Close undoes

	wg sync.WaitGroup

	// Read side: the read goroutine only. Frames are read with readv into
	// [virtio_net_hdr | rsmall | rbigs[rbigNext]] (riov from riovFirst: without the
	// vnet header from 1), views that become the packets' memory.
	rhdr      [vnet.HdrLen]byte
	rsmall    *buffer.View
	rbigs     []*buffer.View // the big views, reused (nextReadBig)
	rbigNext  int            // the one the last iovec points at
	rcap      int            // rsmall's size: an ordinary frame
	riov      [3]unix.Iovec
	riovFirst int
	rflat     []byte // a frame spanning both views, made contiguous
	batch     stack.PacketBufferList
	readFn    func(fd uintptr) bool
	readErr   error

	// Write side: under wmu.
	wmu     sync.Mutex
	wslices link.Slices
	wiov    [][]byte
	iovecs  []unix.Iovec
	whdr    []byte // [virtio_net_hdr | patched headers]
	wseg    []byte // headers of one software segment
	wflat   []byte // fallback for packets with more than devMaxIovecs views
	writeFn func(fd uintptr) bool
	werr    error
}

// openDevice is New after validation.
func openDevice(opts Options) (_ *Device, err error) {
	d := &Device{opts: opts}
	s := &d.sys
	mode := opts.Mode
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, netdev.DeviceError("creating", mode.kind(), opts.Name, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err})
	}
	defer func() {
		if err == nil {
			return
		}
		if s.f != nil {
			s.f.Close()
		} else {
			unix.Close(fd)
		}
		if s.nl != nil {
			s.nl.Close()
		}
	}()
	if s.nl, err = netdev.Open(); err != nil {
		return nil, fmt.Errorf("creating %s device %s: %w", mode.kind(), opts.Name, err)
	}
	existed := false
	if opts.Name != "" {
		if _, err := s.nl.Ifindex(opts.Name); err == nil {
			existed = true
		}
	}
	op := "creating"
	if existed {
		op = "attaching to"
	}

	flags := uint16(unix.IFF_NO_PI)
	if mode == ModeTAP {
		flags |= unix.IFF_TAP
	} else {
		flags |= unix.IFF_TUN
	}
	if !opts.DisableOffloads {
		if feat, err := unix.IoctlGetUint32(fd, unix.TUNGETFEATURES); err == nil && feat&unix.IFF_VNET_HDR != 0 {
			flags |= unix.IFF_VNET_HDR
		}
	}
	ifr, err := unix.NewIfreq(opts.Name)
	if err != nil {
		return nil, fmt.Errorf("device name %q: %w", opts.Name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		switch {
		case existed && errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("%s %s device %s: an interface of that name exists and is not a %s device", op, mode.kind(), opts.Name, mode.kind())
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("%s %s device %s: the device is in use by another process", op, mode.kind(), opts.Name)
		}
		return nil, netdev.DeviceError(op, mode.kind(), opts.Name, err)
	}
	d.name = ifr.Name()
	d.created = !existed
	if flags&unix.IFF_VNET_HDR != 0 {
		if err := d.setupOffloads(fd); err != nil {
			return nil, err
		}
	}
	s.f = os.NewFile(uintptr(fd), "/dev/net/tun")
	if s.rc, err = s.f.SyscallConn(); err != nil {
		return nil, fmt.Errorf("%s device %s: %w", mode.kind(), d.name, err)
	}

	if s.ifindex, err = s.nl.Ifindex(d.name); err != nil {
		return nil, fmt.Errorf("%s device %s: interface index: %w", mode.kind(), d.name, err)
	}
	if s.link, err = configureLink(s.nl, d.name, s.ifindex, opts, existed); err != nil {
		return nil, err
	}
	d.mac = s.link.mac
	d.mtu.Store(uint32(s.link.mtu))
	return d, nil
}

// setupOffloads configures a device opened with IFF_VNET_HDR: a 10-byte
// little-endian virtio_net_hdr and as many offloads as the kernel takes.
func (d *Device) setupOffloads(fd int) error {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet.HdrLen); err != nil {
		return fmt.Errorf("%s device %s: TUNSETVNETHDRSZ: %w", d.opts.Mode.kind(), d.name, err)
	}
	// Little-endian headers whatever the host's byte order (TUNSETVNETLE
	// exists since Linux 3.19; on little-endian hosts it is the default).
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		var probe [2]byte
		binary.NativeEndian.PutUint16(probe[:], 1)
		if probe[0] != 1 {
			return fmt.Errorf("%s device %s: TUNSETVNETLE: %w", d.opts.Mode.kind(), d.name, err)
		}
	}
	d.offloads |= link.OffloadVnetHdr
	const (
		tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		ecn = unix.TUN_F_TSO_ECN
		uso = unix.TUN_F_USO4 | unix.TUN_F_USO6
	)
	// USO needs Linux 6.2; unknown flags make TUNSETOFFLOAD fail with
	// EINVAL, so step down until the kernel accepts.
	for _, f := range []int{tcp | ecn | uso, tcp | ecn, tcp, unix.TUN_F_CSUM} {
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, f) == nil {
			if f&unix.TUN_F_CSUM != 0 {
				d.offloads |= link.OffloadRxChecksum
			}
			if f&unix.TUN_F_TSO4 != 0 {
				d.offloads |= link.OffloadTSO4
			}
			if f&unix.TUN_F_TSO6 != 0 {
				d.offloads |= link.OffloadTSO6
			}
			if f&unix.TUN_F_TSO_ECN != 0 {
				d.offloads |= link.OffloadTSOECN
			}
			if f&unix.TUN_F_USO4 != 0 {
				d.offloads |= link.OffloadUSO4
			}
			if f&unix.TUN_F_USO6 != 0 {
				d.offloads |= link.OffloadUSO6
			}
			break
		}
	}
	return nil
}

// setMTU sets the interface MTU (called by Attach with d.mu held).
func (d *Device) setMTU(mtu uint32) error {
	if mtu == d.mtu.Load() {
		return nil
	}
	if err := d.sys.nl.SetLink(d.sys.ifindex, mtu, nil, false); err != nil {
		return netdev.DeviceError("configuring", d.opts.Mode.kind(), d.name, fmt.Errorf("mtu %d: %w", mtu, err))
	}
	d.mtu.Store(mtu)
	return nil
}

// start allocates the per-direction buffers and starts the read goroutine.
func (d *Device) start() {
	s := &d.sys
	d.initRead()
	s.whdr = make([]byte, vnet.HdrLen+devHdrScratch)
	s.wseg = make([]byte, devHdrScratch)
	s.readFn = d.readFrames
	s.writeFn = d.writeIovecs
	s.wg.Add(1)
	go d.readLoop()
}

// initRead sets up the receive views for the device MTU.
func (d *Device) initRead() {
	s := &d.sys
	s.rcap = max(2048, int(d.mtu.Load())+header.EthernetMinimumSize+4)
	s.riov[0].Base = &s.rhdr[0]
	s.riov[0].SetLen(vnet.HdrLen)
	if !d.offloads.Has(link.OffloadVnetHdr) {
		s.riovFirst = 1
	}
	s.newReadSmall()
	s.nextReadBig()
}

// close closes the device and waits for the read goroutine.
func (d *Device) close() error {
	s := &d.sys
	err := s.f.Close() // wakes the read goroutine; waits for in-flight writes
	s.wg.Wait()
	if s.rsmall != nil {
		s.releaseRead()
	}
	if !d.created {
		err = errors.Join(err, s.link.undo())
	}
	s.nl.Close()
	return err
}
