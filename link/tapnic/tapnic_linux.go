//go:build linux

package tapnic

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ethnic"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// tunFUDPTunnelGSO and tunFUDPTunnelGSOCsum are TUN_F_UDP_TUNNEL_GSO
	// and TUN_F_UDP_TUNNEL_GSO_CSUM (linux/if_tun.h, Linux 6.17+), not yet
	// in x/sys.
	tunFUDPTunnelGSO     = 0x80
	tunFUDPTunnelGSOCsum = 0x100

	// tapBigView is the receive view for all of a frame after its UDP
	// header (see tapRx): with the head view it holds the largest frame,
	// 64 KiB of IP plus the Ethernet header. It is gVisor's largest pooled
	// chunk size, so it is recycled rather than allocated.
	tapBigView = 1 << 16

	// tapMaxSplit bounds the head view: Ethernet with a VLAN tag, IPv6
	// (or IPv4 with options) and UDP.
	tapMaxSplit = 128

	// tapCopyBreak is the largest frame copied out of the big view into
	// a view of its own: copying it, and clearing a view of its size
	// rounded up to a power of two, costs less than clearing a new 64 KiB
	// view (gVisor clears every view it hands out), super-frames of a few
	// segments included.
	tapCopyBreak = 16 << 10

	// tapHdrScratch is how many leading bytes of an outbound job are
	// copied to parse its headers: Ethernet, outer IP, UDP, Geneve with
	// the largest options, inner Ethernet with VLAN tags, IP, TCP.
	tapHdrScratch = 640
)

// Endpoint is a gVisor link endpoint (stack.LinkEndpoint) on a TAP
// device of its own: the underlay netstack's NIC, plugged into the host's
// network like a virtual machine's interface. Netstack, not the host
// kernel, does the underlay's IP, UDP, ARP, ND, IGMP and MLD; the kernel
// only switches or routes frames to and from the TAP device.
//
// # Supported host setup
//
// The TAP device is usually made a port of a Linux bridge
// (Options.Bridge) that also holds the host's uplink (a
// physical NIC or a veth end): netstack then has its own MAC and underlay
// address on that segment, like a VM. Routing to the TAP device instead
// (ip_forward and a route or proxy ARP for the underlay address) works
// too. The kernel must not have the underlay address itself.
//
// # Why a TAP device: the kernel's UDP-tunnel segmentation
//
// Since Linux 6.17 a TAP device whose virtio_net_hdr is the 24-byte
// struct virtio_net_hdr_v1_hash_tunnel takes UDP-tunnel segmentation jobs
// on write: one frame of up to 64 KiB holding the outer Ethernet, IP, UDP
// and Geneve headers and an inner TCP super-packet, which the kernel cuts
// into fully encapsulated segments only where it must, exactly as for its
// own VXLAN or Geneve devices (tx-udp_tnl-segmentation). On a veth or a
// bridge nothing is cut at all, and with TUN_F_UDP_TUNNEL_GSO the peer's
// TAP device hands the job over whole on read. The Geneve endpoint then
// never segments, checksums or coalesces TCP in software (see
// link.TunnelSegmenter and Packet.InnerMSS). The endpoint asks for the tunnel
// header and offload at creation; on older kernels it falls back to the
// plain 10-byte header with checksum offload, and the Geneve endpoint
// segments in software. If the kernel refuses a job at run time, the
// offload is switched off and counted (TxOffloadFallbacks).
//
// Checksums: outbound UDP datagrams that NetstackUDP marks with
// GSOOptions.NeedsCsum are written with VIRTIO_NET_HDR_F_NEEDS_CSUM. On
// receive, frames the kernel marks as partial (NEEDS_CSUM: built on this
// host) or verified (DATA_VALID) are trusted; the IPv4 header and UDP
// checksums of all others are verified here, and bad frames dropped. A
// partial frame is marked for NetstackUDP (link.SetReceiveMarks), so that the
// Geneve endpoint trusts its inner checksum, which the kernel leaves
// partial too.
type Endpoint struct {
	opts    Options
	name    string
	ifindex int
	nl      *netdev.Conn
	ethnic.NIC
	vnetLen int // vnet.TunnelHdrLen or vnet.HdrLen
	tunnel  atomic.Bool
	mtu     atomic.Uint32

	rx tapRx

	wmu sync.Mutex // serialises writers; guards tx
	tx  tapTx

	stats counters
}

var (
	_ stack.LinkEndpoint   = (*Endpoint)(nil)
	_ link.TunnelSegmenter = (*Endpoint)(nil)
	_ link.OffloadReporter = (*Endpoint)(nil)
)

// New creates (or attaches to) the TAP device, sets up its
// offloads, makes it a port of opts.Bridge if set and brings it up, all in
// the calling thread's network namespace. It needs CAP_NET_ADMIN. Pass the
// result to stack.CreateNIC, which starts the receive goroutine; the stack
// owns it from then on (Stack.Destroy closes it). Close it yourself only if
// it never joined a stack.
func New(opts Options) (_ *Endpoint, err error) {
	if opts.MAC != nil && (len(opts.MAC) != 6 || opts.MAC[0]&1 != 0) {
		return nil, fmt.Errorf("TAP underlay: MAC %v: want a unicast Ethernet address", opts.MAC)
	}
	if opts.MTU != 0 && (opts.MTU < 576 || opts.MTU > 65535-header.EthernetMinimumSize) {
		return nil, fmt.Errorf("TAP underlay: MTU %d out of range 576..%d", opts.MTU, 65535-header.EthernetMinimumSize)
	}
	e := &Endpoint{opts: opts}
	mac := opts.MAC
	if mac == nil {
		mac = make(net.HardwareAddr, 6)
		if _, err := rand.Read(mac); err != nil {
			return nil, fmt.Errorf("TAP underlay: random MAC: %w", err)
		}
		mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	}
	e.SetLinkAddress(tcpip.LinkAddress(mac))

	if e.nl, err = netdev.Open(); err != nil {
		return nil, fmt.Errorf("TAP underlay: %w", err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		e.nl.Close()
		return nil, netdev.DeviceError("creating", "TAP", opts.Name, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err})
	}
	defer func() {
		if err != nil {
			if e.File != nil {
				e.File.Close()
			} else {
				unix.Close(fd)
			}
			e.nl.Close()
		}
	}()
	ifr, err := unix.NewIfreq(opts.Name)
	if err != nil {
		return nil, fmt.Errorf("TAP underlay: device name %q: %w", opts.Name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("TAP underlay: device %s is in use by another process", opts.Name)
		}
		return nil, netdev.DeviceError("creating", "TAP", opts.Name, err)
	}
	e.name = ifr.Name()
	if err := e.setupOffloads(fd); err != nil {
		return nil, err
	}
	e.File = os.NewFile(uintptr(fd), "gnv-tap:"+e.name)
	if e.Conn, err = e.File.SyscallConn(); err != nil {
		return nil, fmt.Errorf("TAP underlay %s: %w", e.name, err)
	}
	if e.ifindex, err = e.nl.Ifindex(e.name); err != nil {
		return nil, fmt.Errorf("TAP underlay %s: interface index: %w", e.name, err)
	}
	mtu := opts.MTU
	if opts.Bridge != "" {
		br, err := e.nl.Ifindex(opts.Bridge)
		if err != nil {
			return nil, fmt.Errorf("TAP underlay %s: bridge %s: %w", e.name, opts.Bridge, err)
		}
		if err := e.nl.SetMaster(e.ifindex, br); err != nil {
			return nil, netdev.DeviceError("configuring", "TAP", e.name, fmt.Errorf("joining bridge %s: %w", opts.Bridge, err))
		}
		if mtu == 0 {
			if mtu, err = e.nl.MTU(opts.Bridge); err != nil {
				return nil, fmt.Errorf("TAP underlay %s: bridge %s: mtu: %w", e.name, opts.Bridge, err)
			}
		}
	}
	if mtu == 0 {
		mtu = 1500
	}
	if err := e.nl.SetLink(e.ifindex, uint32(mtu), nil, true); err != nil {
		return nil, netdev.DeviceError("configuring", "TAP", e.name, err)
	}
	e.mtu.Store(uint32(mtu))
	e.rx.init(e)
	e.tx.init(e)
	e.ReadSyscall = e.rx.readv
	e.Deliver = e.rx.frame
	e.RxErrors = &e.stats.rxErrors
	e.Release = func() {
		e.nl.Close()
		e.rx.release()
	}
	return e, nil
}

// setupOffloads asks for the UDP-tunnel header and offloads, or falls back
// to the plain header with checksum offload.
func (e *Endpoint) setupOffloads(fd int) error {
	// Little-endian headers whatever the host's byte order (TUNSETVNETLE
	// exists since Linux 3.19; on little-endian hosts it is the default).
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		var probe [2]byte
		binary.NativeEndian.PutUint16(probe[:], 1)
		if probe[0] != 1 {
			return fmt.Errorf("TAP underlay %s: TUNSETVNETLE: %w", e.name, err)
		}
	}
	const tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN
	// TUN_F_UDP_TUNNEL_GSO came with the tunnel header (Linux 6.17): a
	// kernel that takes the flag also takes jobs described by the header
	// on write.
	if !e.opts.NoTunnelGSO &&
		unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet.TunnelHdrLen) == nil &&
		unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcp|tunFUDPTunnelGSO|tunFUDPTunnelGSOCsum) == nil {
		e.vnetLen = vnet.TunnelHdrLen
		e.tunnel.Store(true)
		return nil
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet.HdrLen); err != nil {
		return fmt.Errorf("TAP underlay %s: TUNSETVNETHDRSZ: %w", e.name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM); err != nil {
		return fmt.Errorf("TAP underlay %s: TUNSETOFFLOAD: %w", e.name, err)
	}
	e.vnetLen = vnet.HdrLen
	return nil
}

// Name returns the TAP interface name.
func (e *Endpoint) Name() string { return e.name }

// Offloads implements link.OffloadReporter: tx-csum always, and
// udp-tunnel-gso while the kernel takes jobs.
func (e *Endpoint) Offloads() link.Offloads {
	o := link.OffloadTxChecksum
	if e.tunnel.Load() {
		o |= link.OffloadTunnelGSO
	}
	return o
}

// counters are the live counters behind Stats.
type counters struct {
	rxFrames, rxTunnelGSO, rxOtherHost, rxChecksumErrors, rxMalformed, rxErrors atomic.Uint64
	txFrames, txTunnelGSO, txErrors, txOffloadFallbacks                         atomic.Uint64
}

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats {
	c := &e.stats
	return Stats{
		RxFrames:           c.rxFrames.Load(),
		RxTunnelGSO:        c.rxTunnelGSO.Load(),
		RxOtherHost:        c.rxOtherHost.Load(),
		RxChecksumErrors:   c.rxChecksumErrors.Load(),
		RxMalformed:        c.rxMalformed.Load(),
		RxErrors:           c.rxErrors.Load(),
		TxFrames:           c.txFrames.Load(),
		TxTunnelGSO:        c.txTunnelGSO.Load(),
		TxErrors:           c.txErrors.Load(),
		TxOffloadFallbacks: c.txOffloadFallbacks.Load(),
	}
}

// TunnelSegmentation implements TunnelSegmenter.
func (e *Endpoint) TunnelSegmentation() (int, bool) {
	return 0xffff, e.tunnel.Load()
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// Capabilities implements stack.LinkEndpoint.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload | stack.CapabilityTXChecksumOffload
}
