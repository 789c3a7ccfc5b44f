// Package tuntap attaches a host TAP (L2) or TUN (L3) device to a tunnel
// endpoint, with virtio-net offloads (TSO, USO, checksums) on Linux: the
// overlay for programs on the host, or a VM's or container's interface.
//
// Two backends open devices (Options.Backend). On Linux the default one
// opens /dev/net/tun with its own ioctls, for the offloads. The other goes
// through github.com/songgao/water and moves plain packets, one per read
// or write, with no offloads: it is the default on macOS (TUN only, utun)
// and Windows (the tap-windows6 driver), and can be asked for on Linux.
// water has no FreeBSD support, so there New fails with ErrUnsupported.
package tuntap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// A Device is a host TAP (L2) or TUN (L3) interface patched straight to a
// tunnel endpoint, so that host programs use the overlay like any kernel
// interface. There is no overlay netstack in this mode: the host kernel is
// the overlay stack.
//
//	host kernel ─TAP/TUN read─→ Device ─WritePackets→ endpoint ─→ underlay
//	host kernel ←TAP/TUN write─ Device ←Deliver────── endpoint ←─ underlay
//
// Frames the kernel sends into the device are read by one goroutine, turned
// into outbound PacketBuffers (link header in LinkHeader for TAP, network
// and transport headers parsed for flow hashing) and written to the
// endpoint in batches. Packets the endpoint receives are written to the
// device on the endpoint's receive goroutine; the Device is the endpoint's
// stack.NetworkDispatcher.
//
// Offloads (BackendIoctl; BackendWater has none). Unless disabled, the
// device is opened with IFF_VNET_HDR and
// TUNSETOFFLOAD(TUN_F_CSUM|TSO4|TSO6|TSO_ECN|USO4|USO6), so the kernel
// hands over TCP super-packets of up to 64 KiB with a virtio_net_hdr. They
// become host-GSO PacketBuffers (stack.GSOTCPv4/GSOTCPv6, MSS = gso_size)
// that the endpoint segments; UDP super-packets (USO) are split here; a
// partial checksum on a plain packet is finished here. In the other
// direction, TCP packets the endpoint coalesced with GRO are written as one
// super-packet (VIRTIO_NET_HDR_F_NEEDS_CSUM plus gso_type TCPV4/TCPV6), and
// the kernel segments or delivers them as it does GRO packets of a NIC.
// Without the vnet header, coalesced packets are split and checksummed in
// software before they are written. A TAP/TUN descriptor takes one packet
// per write(2), so in this direction GRO's coalescing is the batching.
// With the endpoint's GRO disabled (endpoint.Config.DisableGRO), packets
// are written as they arrived and the kernel checks their checksums.
//
// Why gso_size is derived from the MTU: gVisor's GRO (used by the endpoint)
// only merges segments whose length equals the first one's (the last may
// be shorter), but it does not record that length. The Device therefore
// sets gso_size to the device MTU minus the IP and TCP headers, the
// largest segment the overlay carries. The kernel only uses gso_size to
// re-segment when it forwards the packet (every resulting segment fits the
// MTU) and to estimate the peer's MSS (which it caps by its own advertised
// MSS), so this is exact for the usual full-sized segments and safe
// otherwise. Doing our own coalescing instead (wireguard-go's approach) would
// need the end of each receive batch, which a NetworkDispatcher never sees:
// the endpoint's GRO is flushed by the socket at the end of every batch.
//
// A Device is safe for concurrent use.
type Device struct {
	opts     Options
	name     string
	mac      net.HardwareAddr
	mtu      atomic.Uint32
	created  bool
	offloads link.Offloads

	mu       sync.Mutex // guards ep and the attach/close transitions
	ep       stack.LinkEndpoint
	closed   atomic.Bool
	closeErr error
	once     sync.Once

	stats devCounters
	sys   devSys    // the ioctl backend's part (tuntap_linux.go)
	water *waterDev // the water backend's part (water.go); nil for ioctl
}

// Mode selects the kind of device: a TAP device carries Ethernet
// frames and pairs with an L2 endpoint, a TUN device carries bare IP
// packets and pairs with an L3 endpoint.
type Mode int

const (
	// ModeTAP is an Ethernet (L2) device, for an endpoint in L2 mode.
	ModeTAP Mode = iota
	// ModeTUN is an IP (L3) device, for an endpoint in L3 mode.
	ModeTUN
)

// String returns "tap" or "tun".
func (m Mode) String() string {
	switch m {
	case ModeTAP:
		return "tap"
	case ModeTUN:
		return "tun"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// kind returns "TAP" or "TUN" for messages.
func (m Mode) kind() string { return strings.ToUpper(m.String()) }

// Options configures New.
type Options struct {
	// Name is the interface name, at most 15 bytes. Empty lets the kernel
	// choose (tap0, tun0, ...). If an interface of that name and kind
	// exists (a persistent device, e.g. from `ip tuntap add`), it is
	// attached to and left in place by Close as it was found (on Linux:
	// its MTU, MAC and up/down state put back, the addresses New added
	// removed); otherwise it is created and removed by Close.
	Name string

	// Mode is ModeTAP (for an L2 endpoint) or ModeTUN (for L3).
	Mode Mode

	// MTU is the interface MTU. Zero means the MTU of the endpoint, set by
	// Attach; Attach refuses an MTU larger than the endpoint's.
	MTU uint32

	// Addresses are added to the interface (like `ip addr add`). An
	// address that is already there is kept and not removed by Close.
	Addresses []netip.Prefix

	// NoDAD skips IPv6 duplicate address detection for Addresses (like
	// `ip addr add ... nodad`), so they are usable at once.
	NoDAD bool

	// DisableOffloads opens the device without IFF_VNET_HDR: every frame
	// is a plain, fully checksummed packet of at most MTU bytes.
	DisableOffloads bool

	// MAC is the TAP device's Ethernet address. Empty keeps the kernel's
	// (random) one. Ignored for TUN, and on Windows, where the adapter
	// keeps its own (Device.MAC reports it).
	MAC net.HardwareAddr

	// Backend selects how the device is opened: BackendAuto (the zero
	// value) is BackendIoctl on Linux and BackendWater elsewhere.
	Backend Backend
}

// Backend is the code that opens and drives a device.
type Backend int

const (
	// BackendAuto picks BackendIoctl on Linux and BackendWater elsewhere.
	BackendAuto Backend = iota
	// BackendIoctl opens /dev/net/tun with gnv's own ioctls: virtio-net
	// offloads unless DisableOffloads, batched reads, writev. Linux only.
	BackendIoctl
	// BackendWater opens the device with github.com/songgao/water and
	// moves plain, fully checksummed packets of at most MTU bytes: no
	// offloads whatever DisableOffloads says, one packet per system call,
	// a copy each way. The platform's own tools set the MTU and addresses
	// where water does not (rtnetlink on Linux, ifconfig and route on
	// macOS, netsh on Windows).
	//
	// Per platform: Linux, TAP and TUN. macOS, TUN only, as a utun device
	// (Name empty or utunN) that Close removes; TAP would need the
	// tuntaposx kernel extension, which gnv does not use; NoDAD is not
	// applied. Windows, a tap-windows6 adapter
	// (the OpenVPN TAP driver, ComponentId tap0901) that already exists,
	// found by its connection name (Name; empty takes the first): TAP,
	// or TUN through the driver's point-to-point emulation, which needs an
	// IPv4 address in Addresses (the first one is given to the driver).
	// Other systems (FreeBSD included): water has no support, and New
	// fails with ErrUnsupported.
	BackendWater
)

// String returns "auto", "ioctl" or "water".
func (b Backend) String() string {
	switch b {
	case BackendAuto:
		return "auto"
	case BackendIoctl:
		return "ioctl"
	case BackendWater:
		return "water"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// Stats are a Device's counters. "Read" is the kernel-to-tunnel
// direction, "Written" the tunnel-to-kernel direction.
type Stats struct {
	// ReadFrames and ReadBytes count frames read from the device (a
	// super-packet counts once, with its full length).
	ReadFrames, ReadBytes uint64
	// ReadPackets counts packets handed to the endpoint (a UDP
	// super-packet counts once per segment; a TCP one once, as the endpoint
	// segments it).
	ReadPackets uint64
	// ReadTSO counts TCP super-packets (gso_type TCPV4/TCPV6).
	ReadTSO uint64
	// ReadUSO counts UDP super-packets split in software.
	ReadUSO uint64
	// ReadChecksums counts partial checksums finished in software.
	ReadChecksums uint64
	// ReadDrops counts frames dropped as malformed or unsupported.
	ReadDrops uint64
	// ReadErrors counts failed reads.
	ReadErrors uint64

	// WrittenPackets and WrittenBytes count packets written to the device
	// (a super-packet counts once).
	WrittenPackets, WrittenBytes uint64
	// WrittenGSO counts coalesced TCP packets written as one super-packet
	// with a GSO virtio_net_hdr.
	WrittenGSO uint64
	// WrittenSplit counts coalesced TCP packets split in software (no vnet
	// header); their segments count in WrittenPackets.
	WrittenSplit uint64
	// WriteDrops counts packets not written: device closed, or a packet
	// too malformed to write.
	WriteDrops uint64
	// WriteErrors counts failed writes.
	WriteErrors uint64
}

// devCounters are the live counters behind Stats.
type devCounters struct {
	readFrames, readBytes, readPackets, readTSO, readUSO   atomic.Uint64
	readChecksums, readDrops, readErrors                   atomic.Uint64
	writtenPackets, writtenBytes, writtenGSO, writtenSplit atomic.Uint64
	writeDrops, writeErrors                                atomic.Uint64
}

// PermissionError is the error of New (or of Attach, which may set the
// MTU) when the process lacks CAP_NET_ADMIN (on Linux; root on macOS,
// Administrator on Windows); errors.Is(err, os.ErrPermission) holds for it
// too.
type PermissionError = netdev.PermissionError

// ErrNoTUN is matched (errors.Is) by the error of New when the kernel has
// no /dev/net/tun, or, on Windows, no tap-windows6 adapter.
var ErrNoTUN = netdev.ErrNoTUN

// ErrUnsupported is matched (errors.Is) by the error of New when the
// system, or the backend, cannot make the device asked for: TAP on macOS,
// any device on systems water does not support (FreeBSD), BackendIoctl
// off Linux. The error says what works instead.
var ErrUnsupported = errors.New("not supported on " + runtime.GOOS)

// New creates (or attaches to) a TAP or TUN device, sets its MTU
// and MAC, brings it up and adds the addresses. It needs CAP_NET_ADMIN
// (root on macOS, Administrator on Windows); without it the error is a
// *PermissionError (and errors.Is(err, os.ErrPermission)).
// Network namespaces: the device, and the sockets New keeps to
// configure it later, live in the network namespace of the calling thread.
//
// Call Attach to start moving packets, and Close to stop.
func New(opts Options) (*Device, error) {
	if opts.Mode != ModeTAP && opts.Mode != ModeTUN {
		return nil, fmt.Errorf("device mode %d: valid modes are tap and tun", int(opts.Mode))
	}
	// Windows adapters have connection names ("Ethernet 2"), not
	// interface names.
	if len(opts.Name) >= 16 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("device name %q is too long: at most 15 bytes", opts.Name)
	}
	if strings.ContainsAny(opts.Name, "/ \t\n:") && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("device name %q: names must not contain '/', ':' or spaces", opts.Name)
	}
	if opts.MTU != 0 && (opts.MTU < 68 || opts.MTU > 65535) {
		return nil, fmt.Errorf("device mtu %d out of range: valid MTUs are 68..65535", opts.MTU)
	}
	if opts.Mode == ModeTAP && opts.MAC != nil {
		if len(opts.MAC) != 6 || opts.MAC[0]&1 != 0 {
			return nil, fmt.Errorf("device mac %s: want a 6-byte unicast MAC", opts.MAC)
		}
	}
	for _, p := range opts.Addresses {
		if !p.IsValid() {
			return nil, fmt.Errorf("device address %v is not a valid prefix", p)
		}
	}
	opts.Addresses = append([]netip.Prefix(nil), opts.Addresses...)
	switch opts.Backend {
	case BackendAuto:
		if runtime.GOOS != "linux" {
			return openWater(opts)
		}
		return openDevice(opts)
	case BackendIoctl:
		return openDevice(opts)
	case BackendWater:
		return openWater(opts)
	}
	return nil, fmt.Errorf("device backend %d: valid backends are auto, ioctl and water", int(opts.Backend))
}

// Attach connects the device to ep and starts moving packets: the device
// becomes ep's NetworkDispatcher, and a goroutine starts reading the
// device. ep must be a TAP device's L2 endpoint (ARPHardwareEther) or a
// TUN device's L3 endpoint. If Options.MTU was zero, the device MTU
// is set to ep.MTU(); a larger device MTU is refused. For a TAP device,
// ep's link address is set to the device's MAC, so the endpoint accepts
// frames addressed to the host and recognises the host's own frames.
// Attach may be called once.
func (d *Device) Attach(ep stack.LinkEndpoint) error {
	if ep == nil {
		return errors.New("attach: nil endpoint")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return fmt.Errorf("attach: device %s is closed", d.name)
	}
	if d.ep != nil {
		return fmt.Errorf("attach: device %s is already attached", d.name)
	}
	l2 := ep.ARPHardwareType() == header.ARPHardwareEther
	switch {
	case d.opts.Mode == ModeTAP && !l2:
		return fmt.Errorf("attach: TAP device %s needs an l2 endpoint (Ethernet inside), got an l3 one", d.name)
	case d.opts.Mode == ModeTUN && l2:
		return fmt.Errorf("attach: TUN device %s needs an l3 endpoint (IP inside), got an l2 one", d.name)
	}
	epMTU := ep.MTU()
	if d.opts.MTU == 0 {
		set := d.setMTU
		if d.water != nil {
			set = d.waterSetMTU
		}
		if err := set(epMTU); err != nil {
			return err
		}
	} else if d.opts.MTU > epMTU {
		return fmt.Errorf("attach: device %s mtu %d is larger than the tunnel mtu %d", d.name, d.opts.MTU, epMTU)
	}
	if d.opts.Mode == ModeTAP {
		ep.SetLinkAddress(tcpip.LinkAddress(d.mac))
	}
	d.ep = ep
	// start allocates the write path's buffers; ep.Attach then publishes
	// them (under ep's lock) to ep's receive goroutine.
	if d.water != nil {
		d.waterStart()
	} else {
		d.start()
	}
	ep.Attach((*devDispatcher)(d))
	return nil
}

// Name returns the interface name (the kernel's choice if
// Options.Name was empty).
func (d *Device) Name() string { return d.name }

// Mode returns ModeTAP or ModeTUN.
func (d *Device) Mode() Mode { return d.opts.Mode }

// MAC returns the TAP device's Ethernet address (nil for TUN).
func (d *Device) MAC() net.HardwareAddr { return d.mac }

// MTU returns the interface MTU.
func (d *Device) MTU() uint32 { return d.mtu.Load() }

// Created reports whether New created the interface (and Close
// removes it), as opposed to attaching to a persistent one.
func (d *Device) Created() bool { return d.created }

// Offloads implements link.OffloadReporter: the offloads negotiated with
// the kernel (none with BackendWater).
func (d *Device) Offloads() link.Offloads { return d.offloads }

// Stats returns a snapshot of the device's counters.
func (d *Device) Stats() Stats {
	c := &d.stats
	return Stats{
		ReadFrames:     c.readFrames.Load(),
		ReadBytes:      c.readBytes.Load(),
		ReadPackets:    c.readPackets.Load(),
		ReadTSO:        c.readTSO.Load(),
		ReadUSO:        c.readUSO.Load(),
		ReadChecksums:  c.readChecksums.Load(),
		ReadDrops:      c.readDrops.Load(),
		ReadErrors:     c.readErrors.Load(),
		WrittenPackets: c.writtenPackets.Load(),
		WrittenBytes:   c.writtenBytes.Load(),
		WrittenGSO:     c.writtenGSO.Load(),
		WrittenSplit:   c.writtenSplit.Load(),
		WriteDrops:     c.writeDrops.Load(),
		WriteErrors:    c.writeErrors.Load(),
	}
}

// Close detaches the endpoint, stops the read goroutine and waits for it,
// and closes the device, which removes it if New created it. A persistent
// device it leaves as New found it (see Options.Name). It
// is safe to call more than once.
func (d *Device) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		d.closed.Store(true)
		ep := d.ep
		d.mu.Unlock()
		if ep != nil {
			ep.Attach(nil)
		}
		if d.water != nil {
			d.closeErr = d.waterClose()
		} else {
			d.closeErr = d.close()
		}
	})
	return d.closeErr
}

// devDispatcher is the Device seen as the endpoint's NetworkDispatcher; a
// separate type keeps DeliverNetworkPacket out of Device's API.
type devDispatcher Device

var (
	_ stack.NetworkDispatcher = (*devDispatcher)(nil)
	_ link.SegmentWriter      = (*devDispatcher)(nil)
)

// DeliverNetworkPacket implements stack.NetworkDispatcher: it writes a
// packet the endpoint received to the device. The packet is borrowed.
func (p *devDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d := (*Device)(p)
	if d.closed.Load() {
		d.stats.writeDrops.Add(1)
		return
	}
	if d.water != nil {
		d.waterWritePacket(pkt)
		return
	}
	d.writePacket(pkt)
}

// WriteSegments implements link.SegmentWriter: the endpoint's coalesced
// runs go to the device as one GSO frame, written from the underlay's
// receive memory. Only devices with a virtio-net header take them.
func (p *devDispatcher) WriteSegments(hdr []byte, payloads [][]byte, mss int) bool {
	d := (*Device)(p)
	if d.water != nil || !d.offloads.Has(link.OffloadVnetHdr) {
		return false
	}
	if d.closed.Load() {
		d.stats.writeDrops.Add(1)
		return true
	}
	return d.writeSegments(hdr, payloads, mss)
}

// DeliverLinkPacket implements stack.NetworkDispatcher. There are no
// netstack packet sockets to deliver to.
func (p *devDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
