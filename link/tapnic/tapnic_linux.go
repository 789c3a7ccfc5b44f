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
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ethnic"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
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

	// tapBigView is the second receive view, for the rest of a
	// super-frame: together with the first (at least 2 KiB) it holds 64
	// KiB of IP plus the Ethernet header. It is gVisor's largest pooled
	// chunk size, so it is recycled rather than allocated.
	tapBigView = 1 << 16

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
	rc       syscall.RawConn
	vnetLen  int // vnet.TunnelHdrLen or vnet.HdrLen
	tunnel   atomic.Bool
	mtu      atomic.Uint32
	frameCap int // the first receive view: MTU + Ethernet + a VLAN tag, at least 2 KiB

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
		return nil, netdev.PermissionError("creating", "TAP", opts.Name, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err})
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
		return nil, netdev.PermissionError("creating", "TAP", opts.Name, err)
	}
	e.name = ifr.Name()
	if err := e.setupOffloads(fd); err != nil {
		return nil, err
	}
	e.File = os.NewFile(uintptr(fd), "gnv-tap:"+e.name)
	if e.rc, err = e.File.SyscallConn(); err != nil {
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
			return nil, netdev.PermissionError("configuring", "TAP", e.name, fmt.Errorf("joining bridge %s: %w", opts.Bridge, err))
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
		return nil, netdev.PermissionError("configuring", "TAP", e.name, err)
	}
	e.mtu.Store(uint32(mtu))
	e.frameCap = max(2048, mtu+header.EthernetMinimumSize+4)
	e.rx.init(e)
	e.tx.init(e)
	e.Read = e.read
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

// ---- receiving ----

// tapRx is the receive goroutine's state: one frame per read, scattered
// into [virtio_net_hdr | a view of frameCap bytes | a 64 KiB view], so that
// ordinary frames use a small buffer and super-frames need no copy.
type tapRx struct {
	e          *Endpoint
	hdr        []byte
	small, big *buffer.View
	iov        [3]unix.Iovec
	flat       []byte // a multi-view frame made contiguous for checking
	n          int
	errno      syscall.Errno
	readFn     func(fd uintptr) bool
}

func (r *tapRx) init(e *Endpoint) {
	r.e = e
	r.hdr = make([]byte, e.vnetLen)
	r.iov[0].Base = &r.hdr[0]
	r.iov[0].SetLen(e.vnetLen)
	r.newSmall()
	r.newBig()
	r.readFn = r.read
}

func (r *tapRx) newSmall() {
	r.small = buffer.NewViewSize(r.e.frameCap)
	r.iov[1].Base = &r.small.AsSlice()[0]
	r.iov[1].SetLen(r.e.frameCap)
}

func (r *tapRx) newBig() {
	r.big = buffer.NewViewSize(tapBigView)
	r.iov[2].Base = &r.big.AsSlice()[0]
	r.iov[2].SetLen(tapBigView)
}

func (r *tapRx) release() {
	if r.small != nil {
		r.small.Release()
		r.small = nil
	}
	if r.big != nil {
		r.big.Release()
		r.big = nil
	}
	r.iov[1], r.iov[2] = unix.Iovec{}, unix.Iovec{}
}

// read reads one frame; it returns false when the device has none, so that
// RawConn.Read waits for it to become readable.
func (r *tapRx) read(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(len(r.iov)))
		switch errno {
		case 0:
			r.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.errno = errno
			return true
		}
	}
}

// read reads the next frame (ethnic.NIC.Read).
func (e *Endpoint) read() error {
	r := &e.rx
	r.n, r.errno = 0, 0
	if err := e.rc.Read(r.readFn); err != nil {
		return err
	}
	if r.errno != 0 {
		return r.errno
	}
	return nil
}

// frame checks the frame just read and delivers it.
func (r *tapRx) frame(d stack.NetworkDispatcher) {
	e := r.e
	n := r.n - e.vnetLen
	if n < header.EthernetMinimumSize {
		e.stats.rxMalformed.Add(1)
		return
	}
	var vh vnet.TunnelHdr
	if e.vnetLen == vnet.TunnelHdrLen {
		vh.Decode(r.hdr)
	} else {
		vh.Hdr.Decode(r.hdr)
	}
	first := r.small.AsSlice()[:min(n, e.frameCap)]
	if dst := first[:6]; dst[0]&1 == 0 && string(dst) != string(e.LinkAddress()) {
		e.stats.rxOtherHost.Add(1)
		return
	}
	tunnel := false
	switch vh.GSOType &^ (vnet.GSOECN | vnet.GSOUDPTunnelIPv4 | vnet.GSOUDPTunnelIPv6) {
	case vnet.GSONone:
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		// A TCP super-frame, in a UDP tunnel (ours) or not (TCP to the
		// underlay stack, which takes large segments as they are).
		tunnel = vh.GSOType&(vnet.GSOUDPTunnelIPv4|vnet.GSOUDPTunnelIPv6) != 0
	default:
		e.stats.rxMalformed.Add(1) // UDP segmentation was not negotiated
		return
	}
	if vh.Flags&(vnet.FNeedsCsum|vnet.FDataValid) == 0 {
		fr := first
		if n > len(first) {
			r.flat = append(r.flat[:0], first...)
			r.flat = append(r.flat, r.big.AsSlice()[:n-len(first)]...)
			fr = r.flat
		}
		if !frame.RxChecksumOK(fr) {
			e.stats.rxChecksumErrors.Add(1)
			return
		}
	}

	var payload buffer.Buffer
	if n <= e.frameCap {
		r.small.CapLength(n)
		payload = buffer.MakeWithView(r.small)
		r.newSmall()
	} else {
		r.big.CapLength(n - e.frameCap)
		payload = buffer.MakeWithView(r.small)
		payload.Append(r.big)
		r.newSmall()
		r.newBig()
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	defer pkt.DecRef()
	hdr, _ := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	switch {
	case hdr[0]&1 == 0:
		pkt.PktType = tcpip.PacketHost
	case string(hdr[:6]) == string(header.EthernetBroadcastAddress):
		pkt.PktType = tcpip.PacketBroadcast
	default:
		pkt.PktType = tcpip.PacketMulticast
	}
	if vh.Flags&vnet.FNeedsCsum != 0 {
		var mss uint16
		if tunnel {
			mss = vh.GSOSize
			e.stats.rxTunnelGSO.Add(1)
		}
		link.SetReceiveMarks(pkt, true, mss)
	}
	proto := tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(hdr[12:14]))
	pkt.NetworkProtocolNumber = proto
	d.DeliverNetworkPacket(proto, pkt)
	e.stats.rxFrames.Add(1)
}

// ---- sending ----

// tapTx is the writers' state, under wmu.
type tapTx struct {
	e       *Endpoint
	hdr     []byte // the virtio_net_hdr of the frame being written
	scratch []byte // a job's leading bytes, to parse its headers
	iovecs  []unix.Iovec
	errno   syscall.Errno
	writeFn func(fd uintptr) bool
}

func (tx *tapTx) init(e *Endpoint) {
	tx.e = e
	tx.hdr = make([]byte, e.vnetLen)
	tx.scratch = make([]byte, tapHdrScratch)
	tx.writeFn = tx.write
}

// WritePackets implements stack.LinkWriter: one write per frame (a TAP
// device takes no batches). Frames the kernel refuses are counted and
// dropped.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	for _, pkt := range pkts.AsSlice() {
		e.tx.writePacket(pkt)
	}
	return pkts.Len(), nil
}

// writePacket writes one frame with its offload hints.
func (tx *tapTx) writePacket(pkt *stack.PacketBuffer) {
	e := tx.e
	gso := pkt.GSOOptions
	var vh vnet.TunnelHdr
	job := gso.Type == link.GSOUDPTunnel
	switch {
	case job:
		n := copyPacketPrefix(tx.scratch, pkt)
		var ok bool
		vh, ok = tapTunnelHdr(tx.scratch[:n], gso.MSS, gso.NeedsCsum)
		if !ok || !e.tunnel.Load() {
			e.stats.txErrors.Add(1)
			return
		}
	case gso.NeedsCsum:
		vh.Flags = vnet.FNeedsCsum
		vh.CsumStart = uint16(header.EthernetMinimumSize) + gso.L3HdrLen
		vh.CsumOffset = gso.CsumOffset
	}
	if e.vnetLen == vnet.TunnelHdrLen {
		vh.Encode(tx.hdr)
	} else {
		vh.Hdr.Encode(tx.hdr)
	}
	tx.iovecs = append(tx.iovecs[:0], unix.Iovec{Base: &tx.hdr[0]})
	tx.iovecs[0].SetLen(len(tx.hdr))
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b = b[off:]
		off = 0
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		tx.iovecs = append(tx.iovecs, iov)
	}
	tx.errno = 0
	if err := e.rc.Write(tx.writeFn); err != nil {
		e.stats.txErrors.Add(1)
		return
	}
	clear(tx.iovecs) // drop the references to the packet's memory
	switch {
	case tx.errno == 0:
		e.stats.txFrames.Add(1)
		if job {
			e.stats.txTunnelGSO.Add(1)
		}
	case job && tx.errno == unix.EINVAL:
		// The kernel does not take jobs after all: the Geneve endpoint
		// segments from now on; TCP retransmits this one.
		e.tunnel.Store(false)
		e.stats.txOffloadFallbacks.Add(1)
		e.stats.txErrors.Add(1)
	default:
		e.stats.txErrors.Add(1)
	}
}

// write is the syscall.RawConn write callback.
func (tx *tapTx) write(fd uintptr) bool {
	for {
		_, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&tx.iovecs[0])), uintptr(len(tx.iovecs)))
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		tx.errno = errno
		return true
	}
}

// copyPacketPrefix copies the first bytes of pkt (from its link header on)
// into dst and returns how many.
func copyPacketPrefix(dst []byte, pkt *stack.PacketBuffer) int {
	n := 0
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
	return n
}

// tapTunnelHdr describes a UDP-tunnel segmentation job to the kernel.
// frame holds at least the job's headers: Ethernet, outer IP, UDP, Geneve
// with its options, then (L2) the inner Ethernet header with any VLAN tags,
// and the inner IP and TCP headers. mss is the inner segment size;
// outerCsum asks for outer UDP checksums. It reports false if the headers
// do not parse or the inner packet is not TCP.
func tapTunnelHdr(fr []byte, mss uint16, outerCsum bool) (vh vnet.TunnelHdr, ok bool) {
	l3, l4, proto, ok := frame.L3L4(fr)
	if !ok || proto != uint8(header.UDPProtocolNumber) {
		return vh, false
	}
	g := l4 + header.UDPMinimumSize
	if len(fr) < g+8 {
		return vh, false
	}
	nh := g + 8 + int(fr[g]&0x3f)*4
	switch binary.BigEndian.Uint16(fr[g+2:]) {
	case 0x6558: // Ethernet
		nh += header.EthernetMinimumSize
		if len(fr) < nh {
			return vh, false
		}
		et := binary.BigEndian.Uint16(fr[nh-2:])
		for et == 0x8100 || et == 0x88a8 {
			nh += 4
			if len(fr) < nh {
				return vh, false
			}
			et = binary.BigEndian.Uint16(fr[nh-2:])
		}
		if et != uint16(header.IPv4ProtocolNumber) && et != uint16(header.IPv6ProtocolNumber) {
			return vh, false
		}
	case uint16(header.IPv4ProtocolNumber), uint16(header.IPv6ProtocolNumber):
	default:
		return vh, false
	}
	if len(fr) < nh {
		return vh, false
	}
	ip, ok := frame.ParseIP(fr[nh:], 1<<16)
	if !ok || ip.Fragment || ip.Proto != frame.ProtoTCP || ip.L4Len == 0 {
		return vh, false
	}
	th := nh + ip.HdrLen
	vh.Flags = vnet.FNeedsCsum
	if outerCsum {
		vh.Flags |= vnet.FUDPTunnelCsum
	}
	vh.GSOType = vnet.GSOTCPv4
	if ip.Version == 6 {
		vh.GSOType = vnet.GSOTCPv6
	}
	if fr[l3]>>4 == 4 {
		vh.GSOType |= vnet.GSOUDPTunnelIPv4
	} else {
		vh.GSOType |= vnet.GSOUDPTunnelIPv6
	}
	if fr[th+13]&byte(header.TCPFlagCwr) != 0 {
		vh.GSOType |= vnet.GSOECN
	}
	vh.HdrLen = uint16(th + ip.L4Len)
	vh.GSOSize = mss
	vh.CsumStart = uint16(th)
	vh.CsumOffset = link.TCPChecksumOffset
	vh.OuterTransportOffset = uint16(l4)
	vh.InnerNetworkOffset = uint16(nh)
	return vh, true
}
