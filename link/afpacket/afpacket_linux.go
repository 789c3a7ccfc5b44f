//go:build linux

package afpacket

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ethnic"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/mmsg"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// afpTxBatch is the most messages per sendmmsg call.
	afpTxBatch = 64
	// afpHdrSlot is the per-message scratch for the virtio_net_hdr and,
	// for datagrams cut from a job in software, a copy of the link, IP and
	// UDP headers.
	afpHdrSlot = 128
	// afpMaxIov is the kernel's UIO_MAXIOV.
	afpMaxIov = 1024
	// afpOverflow is the spill-over receive space per slot, for
	// super-frames (64 KiB of IP plus Ethernet and slack).
	afpOverflow = 1<<16 + 256
	// afpSenderPool is how many idle senders are kept for concurrent
	// WritePackets calls.
	afpSenderPool = 8
	// packetLoopback is PACKET_LOOPBACK (linux/if_packet.h).
	packetLoopback = 5
)

// Endpoint is a gVisor link endpoint (stack.LinkEndpoint) on a host
// network interface, through one AF_PACKET socket: the underlay netstack's
// NIC sends and receives raw Ethernet frames on the interface, so netstack,
// not the host kernel, does the underlay's IP, UDP, ARP, ND, IGMP and MLD.
//
// # Supported host setup
//
// Give the endpoint an interface of its own that the kernel does not use
// for the same addresses: one end of a veth pair (the other end in the
// host's bridge or routing setup), or a macvlan on a physical NIC. The
// kernel must not have the underlay address, or any address of its subnet,
// on that interface: it would answer ARP/ND for it and consume or reject
// the traffic meant for netstack. IPv6 is best disabled on the interface
// (net.ipv6.conf.DEV.disable_ipv6=1) so that the kernel sends no ND, RS or
// MLD of its own there. CheckHost checks this.
//
// By default netstack uses a MAC address of its own (a random locally
// administered one, or Options.MAC) and the interface is put
// in promiscuous mode (PACKET_MR_PROMISC) so that frames to that MAC
// arrive; the kernel drops them as "other host". With
// Options.UseInterfaceMAC netstack uses the interface's own
// MAC instead and the kernel sees (and must ignore) every frame too. The
// interface also receives all multicast (PACKET_MR_ALLMULTI): netstack's
// joins program nothing on the host NIC.
//
// On a macvlan, use UseInterfaceMAC (or create the macvlan with the MAC
// given in Options.MAC): a macvlan receives unicast frames
// only for its own MAC. VLAN tags are not handled: give the endpoint an
// untagged interface (a VLAN subinterface is fine, not its parent).
//
// # Datapath
//
// Receiving: one goroutine reads batches of frames with recvmmsg(2)
// through the runtime poller, each frame into a pooled buffer sized to the
// MTU that becomes the packet without a copy. The host's own outgoing
// frames are not seen (PACKET_IGNORE_OUTGOING, and frames marked outgoing
// are dropped), nor unicast frames to other MACs. Socket buffers are 8 MiB
// (receive) and 4 MiB (send) when CAP_NET_ADMIN allows (SO_RCVBUFFORCE,
// SO_SNDBUFFORCE), else as large as net.core.[rw]mem_max allow.
//
// Checksums: frames that the local kernel hands over (veth) carry partial
// checksums (CHECKSUM_PARTIAL), so the endpoint advertises
// stack.CapabilityRXChecksumOffload and netstack does not verify IPv4
// header and UDP checksums. With the virtio_net_hdr (see below) the kernel
// says which frames are partial (NEEDS_CSUM) or verified (DATA_VALID); the
// endpoint verifies the IPv4 header and UDP checksums of all other frames
// itself and drops bad ones. Without it, every frame is trusted.
//
// # Offloads (virtio_net_hdr)
//
// With PACKET_VNET_HDR every frame in both directions is preceded by a
// struct virtio_net_hdr (vnet.Hdr). The endpoint uses it for:
//
//   - tx-csum: outbound UDP datagrams that NetstackUDP marks with
//     GSOOptions.NeedsCsum (their checksum field holds the pseudo-header
//     sum) are sent with VIRTIO_NET_HDR_F_NEEDS_CSUM, and the NIC or the
//     kernel completes the checksum. The endpoint then advertises
//     stack.CapabilityTXChecksumOffload.
//   - udp-gso: a UDP segmentation job (link.GSOUDPL4, see link.UDPSegmenter) is sent
//     as one frame with VIRTIO_NET_HDR_GSO_UDP_L4, and the kernel or the
//     NIC cuts it into its datagrams, fixing IP length, ID and checksum
//     and UDP length and checksum in each.
//   - receive: super-frames that the local kernel passes unsegmented (UDP
//     GSO from a kernel UDP socket on the other end of a veth) are cut back
//     into datagrams before netstack sees them; TCP super-frames
//     (UDP-tunnel segmentation jobs from a TAPEndpoint or a kernel tunnel
//     on this host) are delivered whole; frames that are neither partial
//     nor verified are checked as described above. Partial frames carry
//     the receive marks described at GSOUDPTunnel.
//
// Which of these the kernel accepts is probed when the endpoint is created:
// the endpoint sends one probe frame per offload on its own socket and
// watches whether the kernel takes it. The kernel validates the
// virtio_net_hdr synchronously in sendmsg (virtio_net_hdr_to_skb) and
// refuses what it does not understand with EINVAL (UDP_L4 needs Linux 6.2);
// anything it accepts it can always finish in software at transmit time
// when the device lacks the feature, so acceptance is what matters and no
// ethtool feature needs checking. The probe frames are harmless: UDP
// datagrams from and to 0.0.0.0 with TTL 0 and port 9 (discard), in frames
// addressed to the endpoint's own MAC, which other hosts drop and switches
// do not forward back. The interface must be up for the probe (sendmsg on
// a down interface fails with ENETDOWN before the header is looked at), so
// New fails on a down interface. If a job is refused at run
// time all the same (EINVAL, EIO, EOPNOTSUPP), the offload is switched off
// and the packet is sent again without it (a job as separate datagrams,
// checksummed in software if need be). Offloads reports what is in use.
type Endpoint struct {
	cfg     Options
	ifIndex int
	ifMAC   net.HardwareAddr
	ethnic.NIC
	rc       syscall.RawConn
	vnetLen  int // 0 or vnet.HdrLen
	frameCap int // receive buffer per frame: MTU + Ethernet + slack
	txCsum   atomic.Bool
	udpGSO   atomic.Bool
	mtu      atomic.Uint32
	promisc  bool

	rx      *afpRx
	senders chan *afpTx

	stats counters
}

var (
	_ stack.LinkEndpoint   = (*Endpoint)(nil)
	_ link.UDPSegmenter    = (*Endpoint)(nil)
	_ link.OffloadReporter = (*Endpoint)(nil)
)

// New opens an AF_PACKET socket on opts.Device in the calling
// thread's network namespace, sets it up as described on Endpoint and
// probes the offloads. It needs CAP_NET_RAW (and CAP_NET_ADMIN for the
// large socket buffers). Pass the result to stack.CreateNIC, which starts
// the receive goroutine; the stack owns it from then on (Stack.Destroy
// closes it). Close it yourself only if it never joined a stack.
func New(opts Options) (*Endpoint, error) {
	if opts.Device == "" {
		return nil, errors.New("AF_PACKET: no device")
	}
	ifi, err := net.InterfaceByName(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 || ifi.Flags&net.FlagLoopback != 0 {
		return nil, fmt.Errorf("AF_PACKET: %s is not an Ethernet interface", opts.Device)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("AF_PACKET: interface %s is down (ip link set %s up)", opts.Device, opts.Device)
	}
	if opts.ReadBuffer <= 0 {
		opts.ReadBuffer = 8 << 20
	}
	if opts.WriteBuffer <= 0 {
		opts.WriteBuffer = 4 << 20
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 32
	}
	mtu := opts.MTU
	if mtu <= 0 {
		mtu = ifi.MTU
	}
	if mtu < 576 || mtu > 65535-header.EthernetMinimumSize {
		return nil, fmt.Errorf("AF_PACKET: MTU %d out of range", mtu)
	}
	var mac net.HardwareAddr
	switch {
	case opts.MAC != nil:
		if len(opts.MAC) != 6 || opts.MAC[0]&1 != 0 {
			return nil, fmt.Errorf("AF_PACKET: MAC %v: want a unicast Ethernet address", opts.MAC)
		}
		mac = opts.MAC
	case opts.UseInterfaceMAC:
		mac = ifi.HardwareAddr
	default:
		mac = make(net.HardwareAddr, 6)
		if _, err := rand.Read(mac); err != nil {
			return nil, fmt.Errorf("AF_PACKET: random MAC: %w", err)
		}
		mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	}

	e := &Endpoint{
		cfg:      opts,
		ifIndex:  ifi.Index,
		ifMAC:    ifi.HardwareAddr,
		frameCap: mtu + header.EthernetMinimumSize + 4, // + a VLAN tag's worth of slack
		senders:  make(chan *afpTx, afpSenderPool),
	}
	e.SetLinkAddress(tcpip.LinkAddress(mac))
	e.mtu.Store(uint32(mtu))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET: socket: %w", err)
	}
	if err := e.setup(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	e.File = os.NewFile(uintptr(fd), "gnv-packet:"+opts.Device)
	if e.rc, err = e.File.SyscallConn(); err != nil {
		e.File.Close()
		return nil, fmt.Errorf("AF_PACKET: %w", err)
	}
	e.rx = newAFPRx(e)
	e.Read = e.read
	e.Deliver = e.deliverBatch
	e.RxErrors = &e.stats.rxErrors
	e.Release = e.rx.release
	return e, nil
}

// setup configures and binds the socket, then probes the offloads.
func (e *Endpoint) setup(fd int) error {
	opts := &e.cfg
	if !opts.NoVnetHdr {
		// Before bind, so that no frame is ever queued without the header.
		if unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1) == nil {
			e.vnetLen = vnet.HdrLen
		}
	}
	// Linux ≥ 4.20; older kernels show the host's own frames, which the
	// receive path drops by their packet type anyway.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, opts.ReadBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, opts.ReadBuffer)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, opts.WriteBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, opts.WriteBuffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: afpHtons(unix.ETH_P_ALL), Ifindex: e.ifIndex}); err != nil {
		return fmt.Errorf("AF_PACKET: bind %s: %w", opts.Device, err)
	}
	if !bytes.Equal([]byte(e.LinkAddress()), e.ifMAC) {
		if err := afpMembership(fd, e.ifIndex, unix.PACKET_MR_PROMISC); err != nil {
			return fmt.Errorf("AF_PACKET: promiscuous mode on %s: %w", opts.Device, err)
		}
		e.promisc = true
	}
	if err := afpMembership(fd, e.ifIndex, unix.PACKET_MR_ALLMULTI); err != nil {
		return fmt.Errorf("AF_PACKET: all-multicast mode on %s: %w", opts.Device, err)
	}
	if e.vnetLen == 0 {
		return nil
	}
	if !opts.NoTxChecksumOffload {
		ok, err := afpProbe(fd, e.LinkAddress(), false)
		if err != nil {
			return fmt.Errorf("AF_PACKET: offload probe on %s: %w", opts.Device, err)
		}
		e.txCsum.Store(ok)
	}
	if e.txCsum.Load() && !opts.NoUDPGSO {
		ok, err := afpProbe(fd, e.LinkAddress(), true)
		if err != nil {
			return fmt.Errorf("AF_PACKET: offload probe on %s: %w", opts.Device, err)
		}
		e.udpGSO.Store(ok)
	}
	return nil
}

func afpMembership(fd, ifIndex int, typ uint16) error {
	return unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP,
		&unix.PacketMreq{Ifindex: int32(ifIndex), Type: typ})
}

func afpHtons(v uint16) uint16 { return v<<8 | v>>8 }

// afpProbe sends one harmless probe frame with a NEEDS_CSUM virtio_net_hdr
// (and, if gso, as a UDP_L4 job of two datagrams) and reports whether the
// kernel accepted the header. See Endpoint for why acceptance is the
// test and why the frame does no harm.
func afpProbe(fd int, mac tcpip.LinkAddress, gso bool) (bool, error) {
	const payload = 32
	var b [vnet.HdrLen + header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize + payload]byte
	f := b[vnet.HdrLen:]
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: mac, DstAddr: mac, Type: header.IPv4ProtocolNumber})
	l3 := header.EthernetMinimumSize
	l4 := l3 + header.IPv4MinimumSize
	ulen := header.UDPMinimumSize + payload
	ip := header.IPv4(f[l3:l4])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + ulen),
		TTL:         0, // never routed
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     header.IPv4Any,
		DstAddr:     header.IPv4Any,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(f[l4:])
	u.Encode(&header.UDPFields{SrcPort: 9, DstPort: 9, Length: uint16(ulen)})
	u.SetChecksum(header.PseudoHeaderChecksum(header.UDPProtocolNumber, header.IPv4Any, header.IPv4Any, uint16(ulen)))
	copy(f[l4+header.UDPMinimumSize:], "gnv AF_PACKET offload probe")
	vh := vnet.Hdr{
		Flags:      vnet.FNeedsCsum,
		HdrLen:     uint16(l4 + header.UDPMinimumSize),
		CsumStart:  uint16(l4),
		CsumOffset: link.UDPChecksumOffset,
	}
	if gso {
		vh.GSOType = vnet.GSOUDPL4
		vh.GSOSize = payload / 2
	}
	vh.Encode(b[:])
	for tries := 0; ; tries++ {
		_, err := unix.Write(fd, b[:])
		switch {
		case err == nil, err == unix.ENOBUFS:
			// ENOBUFS comes from the device queue, after the header
			// was accepted.
			return true, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN && tries < 100:
			time.Sleep(time.Millisecond)
		case err == unix.EINVAL, err == unix.EOPNOTSUPP, err == unix.EPROTONOSUPPORT, err == unix.EIO:
			return false, nil
		default:
			return false, err
		}
	}
}

// afpOffloadRefused reports errors with which the kernel refuses a frame
// because of its virtio_net_hdr.
func afpOffloadRefused(e syscall.Errno) bool {
	return e == unix.EINVAL || e == unix.EIO || e == unix.EOPNOTSUPP || e == unix.EPROTONOSUPPORT
}

// Device returns the name of the host interface.
func (e *Endpoint) Device() string { return e.cfg.Device }

// Offloads returns the offloads in use now. tx-csum and udp-gso can turn off
// at run time if the kernel refuses them.
func (e *Endpoint) Offloads() link.Offloads {
	var o link.Offloads
	if e.vnetLen != 0 {
		o |= link.OffloadVnetHdr
	}
	if e.txCsum.Load() {
		o |= link.OffloadTxChecksum
	}
	if e.udpGSO.Load() {
		o |= link.OffloadUDPGSO
	}
	return o
}

// counters are the live counters behind Stats.
type counters struct {
	rxFrames, rxOtherHost, rxChecksumErrors, rxTruncated, rxMalformed atomic.Uint64
	rxGSOSplit, rxGSOWhole, rxGSODropped, rxErrors                    atomic.Uint64
	txFrames, txErrors, txChecksumOffloaded, txGSOFrames              atomic.Uint64
	txGSOSegments, txSoftwareSegmented, txOffloadFallbacks            atomic.Uint64
}

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats {
	c := &e.stats
	return Stats{
		RxFrames:            c.rxFrames.Load(),
		RxOtherHost:         c.rxOtherHost.Load(),
		RxChecksumErrors:    c.rxChecksumErrors.Load(),
		RxTruncated:         c.rxTruncated.Load(),
		RxMalformed:         c.rxMalformed.Load(),
		RxGSOSplit:          c.rxGSOSplit.Load(),
		RxGSOWhole:          c.rxGSOWhole.Load(),
		RxGSODropped:        c.rxGSODropped.Load(),
		RxErrors:            c.rxErrors.Load(),
		TxFrames:            c.txFrames.Load(),
		TxErrors:            c.txErrors.Load(),
		TxChecksumOffloaded: c.txChecksumOffloaded.Load(),
		TxGSOFrames:         c.txGSOFrames.Load(),
		TxGSOSegments:       c.txGSOSegments.Load(),
		TxSoftwareSegmented: c.txSoftwareSegmented.Load(),
		TxOffloadFallbacks:  c.txOffloadFallbacks.Load(),
	}
}

// UDPSegmentation implements UDPSegmenter.
func (e *Endpoint) UDPSegmentation() (int, bool) {
	return afpMaxSegments, e.udpGSO.Load() && e.txCsum.Load()
}

// MTU implements stack.LinkEndpoint: the IP MTU.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint. It does not change the interface's
// MTU, and frames larger than the MTU given at creation are not received.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// Capabilities implements stack.LinkEndpoint.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	c := stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload
	if e.txCsum.Load() {
		c |= stack.CapabilityTXChecksumOffload
	}
	return c
}

// ---- receiving ----

// afpRx is the receive goroutine's preallocated state: one slot per frame
// of a recvmmsg batch, each an iovec list [virtio_net_hdr | pooled view of
// frameCap bytes | spill-over].
type afpRx struct {
	e        *Endpoint
	msgs     []unix.Mmsghdr
	iovs     []unix.Iovec
	names    []unix.RawSockaddrLinklayer
	vnet     []byte
	views    []*buffer.View
	overflow []byte
	scratch  []byte // a super-frame made contiguous

	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func newAFPRx(e *Endpoint) *afpRx {
	b := e.cfg.BatchSize
	per := 2
	if e.vnetLen != 0 {
		per = 3
	}
	r := &afpRx{
		e:        e,
		msgs:     make([]unix.Mmsghdr, b),
		iovs:     make([]unix.Iovec, b*per),
		names:    make([]unix.RawSockaddrLinklayer, b),
		vnet:     make([]byte, b*vnet.HdrLen),
		views:    make([]*buffer.View, b),
		overflow: make([]byte, b*afpOverflow),
		scratch:  make([]byte, afpOverflow+e.frameCap),
	}
	for i := range r.msgs {
		iov := r.iovs[i*per : (i+1)*per]
		k := 0
		if e.vnetLen != 0 {
			iov[0].Base = &r.vnet[i*vnet.HdrLen]
			iov[0].SetLen(vnet.HdrLen)
			k++
		}
		r.views[i] = buffer.NewViewSize(e.frameCap)
		iov[k].Base = &r.views[i].AsSlice()[0]
		iov[k].SetLen(e.frameCap)
		iov[k+1].Base = &r.overflow[i*afpOverflow]
		iov[k+1].SetLen(afpOverflow)
		h := &r.msgs[i].Hdr
		h.Iov = &iov[0]
		h.SetIovlen(per)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.readFn = r.recv
	return r
}

// newView gives slot i a fresh frame buffer after its old one became a
// packet.
func (r *afpRx) newView(i int) {
	v := buffer.NewViewSize(r.e.frameCap)
	r.views[i] = v
	k := 0
	if r.e.vnetLen != 0 {
		k = 1
	}
	per := len(r.iovs) / len(r.msgs)
	r.iovs[i*per+k].Base = &v.AsSlice()[0]
}

// release frees the frame buffers.
func (r *afpRx) release() {
	for i, v := range r.views {
		if v != nil {
			v.Release()
			r.views[i] = nil
		}
	}
	clear(r.iovs)
}

// recv runs recvmmsg; it returns false when the socket is empty, so that
// RawConn.Read waits for it to become readable.
func (r *afpRx) recv(fd uintptr) bool {
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Flags = 0
		r.msgs[i].Len = 0
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)), unix.MSG_DONTWAIT, 0, 0)
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

// read reads the next batch of frames (ethnic.NIC.Read).
func (e *Endpoint) read() error {
	r := e.rx
	r.n, r.errno = 0, 0
	if err := e.rc.Read(r.readFn); err != nil {
		return err
	}
	if r.errno != 0 {
		return r.errno
	}
	return nil
}

// deliverBatch delivers the frames read last (ethnic.NIC.Deliver).
func (e *Endpoint) deliverBatch(d stack.NetworkDispatcher) {
	mac := e.LinkAddress()
	for i := 0; i < e.rx.n; i++ {
		e.rx.frame(d, i, mac)
	}
}

// frame handles the frame in slot i.
func (r *afpRx) frame(d stack.NetworkDispatcher, i int, mac tcpip.LinkAddress) {
	e := r.e
	m := &r.msgs[i]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		e.stats.rxTruncated.Add(1)
		return
	}
	if t := r.names[i].Pkttype; t == unix.PACKET_OUTGOING || t == packetLoopback {
		return
	}
	n := int(m.Len) - e.vnetLen
	if n < header.EthernetMinimumSize {
		e.stats.rxMalformed.Add(1)
		return
	}
	var vh vnet.Hdr
	if e.vnetLen != 0 {
		vh.Decode(r.vnet[i*vnet.HdrLen:])
	}
	v := r.views[i]
	fr := v.AsSlice()
	if n < len(fr) {
		fr = fr[:n]
	}
	if dst := fr[:6]; dst[0]&1 == 0 && string(dst) != string(mac) {
		e.stats.rxOtherHost.Add(1)
		return
	}
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		r.whole(d, i, n, &vh)
		return
	default:
		r.split(d, i, n, &vh)
		return
	}
	if n > len(fr) {
		e.stats.rxTruncated.Add(1)
		return
	}
	if e.vnetLen != 0 && vh.Flags&(vnet.FNeedsCsum|vnet.FDataValid) == 0 && !frame.RxChecksumOK(fr) {
		e.stats.rxChecksumErrors.Add(1)
		return
	}
	v.CapLength(n)
	r.newView(i)
	e.deliver(d, buffer.MakeWithView(v), vh.Flags&vnet.FNeedsCsum != 0, 0)
}

// whole delivers a TCP super-frame as it is: a UDP-tunnel segmentation job
// from this host (a TAP underlay's, or a kernel tunnel's) that crossed a
// veth unsegmented. AF_PACKET's header does not say that it is tunnelled,
// only that it is TCP with a partial checksum; netstack takes it as one
// large UDP datagram, and the Geneve endpoint the inner super-packet.
func (r *afpRx) whole(d stack.NetworkDispatcher, i, n int, vh *vnet.Hdr) {
	e := r.e
	if vh.Flags&vnet.FNeedsCsum == 0 || n > e.frameCap+afpOverflow {
		e.stats.rxGSODropped.Add(1)
		return
	}
	v := r.views[i]
	payload := buffer.MakeWithView(v)
	r.newView(i)
	if n > e.frameCap {
		payload.Append(buffer.NewViewWithData(r.overflow[i*afpOverflow : i*afpOverflow+n-e.frameCap]))
	} else {
		v.CapLength(n)
	}
	e.stats.rxGSOWhole.Add(1)
	e.deliver(d, payload, true, vh.GSOSize)
}

// deliver hands one frame to netstack; it takes ownership of payload.
// local and mss are the receive marks (see link.GSOUDPTunnel): the kernel left
// the frame's checksum partial, and the inner segment size of a tunnel
// job.
func (e *Endpoint) deliver(d stack.NetworkDispatcher, payload buffer.Buffer, local bool, mss uint16) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	link.SetReceiveMarks(pkt, local, mss)
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		pkt.DecRef()
		e.stats.rxMalformed.Add(1)
		return
	}
	switch {
	case hdr[0]&1 == 0:
		pkt.PktType = tcpip.PacketHost
	case string(hdr[:6]) == string(header.EthernetBroadcastAddress):
		pkt.PktType = tcpip.PacketBroadcast
	default:
		pkt.PktType = tcpip.PacketMulticast
	}
	proto := tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(hdr[12:14]))
	pkt.NetworkProtocolNumber = proto
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
	e.stats.rxFrames.Add(1)
}

// split cuts a UDP super-frame (the local kernel hands over UDP GSO
// datagrams unsegmented) into its datagrams. Their checksums are partial
// (NEEDS_CSUM), which the NIC's RX checksum offload covers.
func (r *afpRx) split(d stack.NetworkDispatcher, i, n int, vh *vnet.Hdr) {
	e := r.e
	if vh.GSOType&^vnet.GSOECN != vnet.GSOUDPL4 || vh.GSOSize == 0 || n > len(r.scratch) {
		e.stats.rxGSODropped.Add(1)
		return
	}
	buf := r.scratch[:n]
	k := copy(buf, r.views[i].AsSlice())
	copy(buf[k:], r.overflow[i*afpOverflow:])
	l3, l4, proto, ok := frame.L3L4(buf)
	hl := l4 + header.UDPMinimumSize
	if !ok || proto != uint8(header.UDPProtocolNumber) || len(buf) < hl {
		e.stats.rxMalformed.Add(1)
		return
	}
	payload := buf[hl:]
	mss := int(vh.GSOSize)
	for idx, off := 0, 0; off < len(payload); idx, off = idx+1, off+mss {
		m := min(mss, len(payload)-off)
		v := buffer.NewViewSize(hl + m)
		s := v.AsSlice()
		copy(s, buf[:hl])
		copy(s[hl:], payload[off:off+m])
		link.SegmentHeader(s[:hl], l3, l4, link.ProtoUDP, idx, off, m, off+m >= len(payload))
		e.deliver(d, buffer.MakeWithView(v), true, 0)
	}
	e.stats.rxGSOSplit.Add(1)
}

// ---- sending ----

// afpTx kinds of message.
const (
	afpPlain = iota // no offload
	afpCsum         // NEEDS_CSUM
	afpGSO          // a UDP_L4 job
	afpSeg          // one datagram cut from a job
)

// afpMeta describes one message of an afpTx batch.
type afpMeta struct {
	pkt      *stack.PacketBuffer
	kind     uint8
	csum     bool // sent with NEEDS_CSUM
	failed   bool
	segs     int
	iovStart int
	iovN     int
}

// afpTx holds the preallocated state of one WritePackets call.
type afpTx struct {
	e    *Endpoint
	msgs [afpTxBatch]unix.Mmsghdr
	meta [afpTxBatch]afpMeta
	hdrs [afpTxBatch * afpHdrSlot]byte
	iovs []unix.Iovec
	nm   int

	slices link.Slices // the packet being cut in software, for checksums

	redo     []*stack.PacketBuffer
	spare    []*stack.PacketBuffer
	failed   int
	firstErr syscall.Errno

	// sendLoop state, shared with the RawConn callbacks.
	i, n      int
	errno     syscall.Errno
	blocked   bool
	controlFn func(fd uintptr)
	writeFn   func(fd uintptr) bool
}

func (e *Endpoint) getTx() *afpTx {
	select {
	case tx := <-e.senders:
		return tx
	default:
	}
	tx := &afpTx{
		e:     e,
		iovs:  make([]unix.Iovec, 0, 4*afpTxBatch),
		redo:  make([]*stack.PacketBuffer, 0, afpTxBatch),
		spare: make([]*stack.PacketBuffer, 0, afpTxBatch),
	}
	tx.controlFn = func(fd uintptr) { tx.sendLoop(fd, false) }
	tx.writeFn = func(fd uintptr) bool { return tx.sendLoop(fd, true) }
	return tx
}

func (e *Endpoint) putTx(tx *afpTx) {
	select {
	case e.senders <- tx:
	default:
	}
}

// WritePackets implements stack.LinkWriter. The packets are borrowed. UDP
// datagrams marked NeedsCsum leave with NEEDS_CSUM (or are checksummed
// here), and link.GSOUDPL4 jobs as one UDP_L4 frame (or as datagrams cut here).
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.Closed() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	tx := e.getTx()
	defer e.putTx(tx)
	tx.failed, tx.firstErr = 0, 0
	for _, pkt := range pkts.AsSlice() {
		tx.add(pkt)
	}
	tx.flush()
	// Packets refused for their offload hints go again, now without.
	// At most two rounds: each refusal turns an offload off for good.
	for len(tx.redo) > 0 {
		redo := tx.redo
		tx.redo = tx.spare[:0]
		for _, pkt := range redo {
			tx.add(pkt)
		}
		tx.flush()
		clear(redo)
		tx.spare = redo[:0]
	}
	n := pkts.Len() - tx.failed
	if tx.firstErr != 0 {
		return max(n, 0), tcpip.TranslateErrno(tx.firstErr)
	}
	return n, nil
}

// add queues the messages for one packet.
func (tx *afpTx) add(pkt *stack.PacketBuffer) {
	e := tx.e
	g := &pkt.GSOOptions
	switch {
	case g.Type == link.GSOUDPL4:
		if e.udpGSO.Load() && e.txCsum.Load() {
			if tx.views(pkt)+1 <= afpMaxIov && pkt.Data().Size() > int(g.MSS) {
				tx.addJob(pkt)
				return
			}
		}
		tx.addSegments(pkt)
	case g.NeedsCsum && g.Type == stack.GSONone:
		if e.txCsum.Load() {
			tx.addFrame(pkt, afpCsum)
			return
		}
		afpChecksumInPlace(pkt)
		tx.addFrame(pkt, afpPlain)
	default:
		tx.addFrame(pkt, afpPlain)
	}
}

// afpChecksumInPlace completes the partial UDP checksum of a packet marked
// NeedsCsum, in its own header.
func afpChecksumInPlace(pkt *stack.PacketBuffer) {
	u := pkt.TransportHeader().Slice()
	if len(u) < header.UDPMinimumSize {
		return
	}
	link.FinishChecksum(u, link.ProtoUDP, header.UDP(u).Checksum(), pkt.Data().Checksum())
	pkt.GSOOptions.NeedsCsum = false
}

// views counts the views of pkt, for the iovec limit.
func (tx *afpTx) views(pkt *stack.PacketBuffer) int {
	vl, _ := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		n++
	}
	return n
}

// slot returns the header scratch of the next message, flushing first if
// the batch is full.
func (tx *afpTx) slot() []byte {
	if tx.nm == afpTxBatch {
		tx.flush()
	}
	return tx.hdrs[tx.nm*afpHdrSlot : (tx.nm+1)*afpHdrSlot]
}

// headerLens returns the lengths of pkt's link and network headers.
func afpHeaderLens(pkt *stack.PacketBuffer) (link, network int) {
	return len(pkt.LinkHeader().Slice()), len(pkt.NetworkHeader().Slice())
}

// addFrame queues pkt as one frame, with a NEEDS_CSUM header if kind is
// afpCsum.
func (tx *afpTx) addFrame(pkt *stack.PacketBuffer, kind uint8) {
	s := tx.slot()
	start := len(tx.iovs)
	if vl := tx.e.vnetLen; vl != 0 {
		vh := vnet.Hdr{}
		if kind == afpCsum {
			ll, nl := afpHeaderLens(pkt)
			vh.Flags = vnet.FNeedsCsum
			vh.CsumStart = uint16(ll + nl)
			vh.CsumOffset = pkt.GSOOptions.CsumOffset
			vh.HdrLen = vh.CsumStart + vh.CsumOffset + 2
		}
		vh.Encode(s)
		tx.iov(s[:vl])
	}
	vl, off := pkt.AsViewList()
	tx.appendRange(vl, off, pkt.Size())
	tx.push(pkt, kind, 1, start, kind == afpCsum)
}

// addJob queues a link.GSOUDPL4 job as one UDP_L4 frame.
func (tx *afpTx) addJob(pkt *stack.PacketBuffer) {
	s := tx.slot()
	start := len(tx.iovs)
	ll, nl := afpHeaderLens(pkt)
	mss := int(pkt.GSOOptions.MSS)
	vh := vnet.Hdr{
		Flags:      vnet.FNeedsCsum,
		GSOType:    vnet.GSOUDPL4,
		HdrLen:     uint16(ll + nl + header.UDPMinimumSize),
		GSOSize:    uint16(mss),
		CsumStart:  uint16(ll + nl),
		CsumOffset: link.UDPChecksumOffset,
	}
	vh.Encode(s)
	tx.iov(s[:vnet.HdrLen])
	vl, off := pkt.AsViewList()
	tx.appendRange(vl, off, pkt.Size())
	segs := (pkt.Data().Size() + mss - 1) / mss
	tx.push(pkt, afpGSO, segs, start, true)
}

// addSegments cuts a link.GSOUDPL4 job into datagrams, each a message with its
// own copy of the headers.
func (tx *afpTx) addSegments(pkt *stack.PacketBuffer) {
	e := tx.e
	ll, nl := afpHeaderLens(pkt)
	l4 := ll + nl
	hl := l4 + header.UDPMinimumSize
	mss := int(pkt.GSOOptions.MSS)
	total := pkt.Data().Size()
	if hl+e.vnetLen > afpHdrSlot || mss <= 0 || len(pkt.TransportHeader().Slice()) != header.UDPMinimumSize {
		e.stats.txErrors.Add(1)
		tx.failed++
		return
	}
	vlist, off := pkt.AsViewList()
	dataStart := off + pkt.HeaderSize()
	offload := e.txCsum.Load()
	if !offload {
		tx.slices = tx.slices[:0].AppendViews(vlist, off)
	}
	e.stats.txSoftwareSegmented.Add(1)
	for idx, done := 0, 0; done < total; idx, done = idx+1, done+mss {
		m := min(mss, total-done)
		s := tx.slot()
		start := len(tx.iovs)
		h := s[e.vnetLen : e.vnetLen+hl]
		k := copy(h, pkt.LinkHeader().Slice())
		k += copy(h[k:], pkt.NetworkHeader().Slice())
		copy(h[k:], pkt.TransportHeader().Slice())
		pseudo := link.SegmentHeader(h, ll, l4, link.ProtoUDP, idx, done, m, done+m >= total)
		var vh vnet.Hdr
		if offload {
			header.UDP(h[l4:]).SetChecksum(pseudo)
			vh = vnet.Hdr{Flags: vnet.FNeedsCsum, HdrLen: uint16(hl), CsumStart: uint16(l4), CsumOffset: link.UDPChecksumOffset}
		} else {
			link.FinishChecksum(h[l4:], link.ProtoUDP, pseudo, tx.slices.Checksum(dataStart-off+done, m))
		}
		if e.vnetLen != 0 {
			vh.Encode(s)
		}
		tx.iov(s[:e.vnetLen+hl])
		tx.appendRange(vlist, dataStart+done, m)
		tx.push(pkt, afpSeg, 1, start, offload)
	}
}

// iov appends one iovec.
func (tx *afpTx) iov(b []byte) {
	tx.iovs = append(tx.iovs, unix.Iovec{Base: &b[0]})
	tx.iovs[len(tx.iovs)-1].SetLen(len(b))
}

// appendRange appends iovecs for n bytes of vl from offset off.
func (tx *afpTx) appendRange(vl buffer.ViewList, off, n int) {
	for v := vl.Front(); v != nil && n > 0; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b = b[off:]
		off = 0
		if len(b) > n {
			b = b[:n]
		}
		if len(b) > 0 {
			tx.iov(b)
		}
		n -= len(b)
	}
}

// push records a message built from the iovecs since start.
func (tx *afpTx) push(pkt *stack.PacketBuffer, kind uint8, segs, start int, csum bool) {
	tx.meta[tx.nm] = afpMeta{pkt: pkt, kind: kind, csum: csum, segs: segs, iovStart: start, iovN: len(tx.iovs) - start}
	tx.nm++
}

// flush sends the queued messages.
func (tx *afpTx) flush() {
	e := tx.e
	if tx.nm == 0 {
		return
	}
	// tx.iovs may have grown while building: point the messages at it now.
	for k := 0; k < tx.nm; k++ {
		h := &tx.msgs[k].Hdr
		m := &tx.meta[k]
		h.Iov = &tx.iovs[m.iovStart]
		h.SetIovlen(m.iovN)
	}
	tx.i, tx.n = 0, tx.nm
	for tx.i < tx.n {
		tx.errno, tx.blocked = 0, false
		err := e.rc.Control(tx.controlFn)
		if err == nil && tx.blocked {
			err = e.rc.Write(tx.writeFn)
		}
		if err != nil { // closed
			for k := tx.i; k < tx.n; k++ {
				tx.fail(&tx.meta[k], unix.EBADF)
			}
			break
		}
		if tx.errno == 0 {
			continue
		}
		tx.refused(&tx.meta[tx.i], tx.errno)
		tx.i++
	}
	for k := 0; k < tx.nm; k++ {
		m := &tx.meta[k]
		if !m.failed {
			e.stats.txFrames.Add(1)
			if m.csum {
				e.stats.txChecksumOffloaded.Add(1)
			}
			if m.kind == afpGSO {
				e.stats.txGSOFrames.Add(1)
				e.stats.txGSOSegments.Add(uint64(m.segs))
			}
		}
		*m = afpMeta{}
		tx.msgs[k].Hdr.Iov = nil
	}
	clear(tx.iovs)
	tx.iovs = tx.iovs[:0]
	tx.nm = 0
}

// refused handles a message the kernel refused with errno.
func (tx *afpTx) refused(m *afpMeta, errno syscall.Errno) {
	e := tx.e
	if afpOffloadRefused(errno) {
		switch m.kind {
		case afpGSO:
			e.udpGSO.Store(false)
			e.stats.txOffloadFallbacks.Add(1)
			m.failed = true
			tx.redo = append(tx.redo, m.pkt)
			return
		case afpCsum:
			e.txCsum.Store(false)
			e.udpGSO.Store(false)
			e.stats.txOffloadFallbacks.Add(1)
			m.failed = true
			tx.redo = append(tx.redo, m.pkt)
			return
		case afpSeg:
			// A datagram cut from a job: resending the job would
			// duplicate its other datagrams, so only switch the
			// offload off for the next ones.
			e.txCsum.Store(false)
			e.udpGSO.Store(false)
		}
	}
	tx.fail(m, errno)
}

func (tx *afpTx) fail(m *afpMeta, errno syscall.Errno) {
	if m.failed {
		return
	}
	m.failed = true
	tx.e.stats.txErrors.Add(1)
	tx.failed++
	if tx.firstErr == 0 {
		tx.firstErr = errno
	}
}

// sendLoop sends msgs[tx.i:tx.n] (see sendmmsgAll), recording a failure
// in tx.errno and a full socket in tx.blocked.
func (tx *afpTx) sendLoop(fd uintptr, canWait bool) bool {
	done, blocked, errno := mmsg.SendAll(fd, tx.msgs[:tx.n], &tx.i, canWait)
	tx.blocked = tx.blocked || blocked
	if errno != 0 {
		tx.errno = errno
	}
	return done
}

// ---- host check ----

// CheckHost checks that dev suits an AF_PACKET underlay with address
// addr (see Endpoint for the supported setup), in the calling
// thread's network namespace. It returns an error naming each problem that
// breaks the underlay: dev missing, down, not Ethernet; the kernel having
// addr, or an address whose subnet holds addr, on dev; the kernel having
// addr on another interface (it answers ARP for its addresses on every
// interface). Warnings name what may disturb it: IPv6 enabled on dev (the
// kernel may answer ND and sends RS and MLD there), forwarding enabled on
// dev (with UseInterfaceMAC the kernel would forward the underlay's
// packets).
func CheckHost(dev string, addr netip.Addr) (warnings []string, err error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET: AF_PACKET underlay: %w", err)
	}
	a := addr.Unmap().WithZone("")
	var problems []string
	if ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) != 6 {
		problems = append(problems, fmt.Sprintf("%s is not an Ethernet interface", dev))
	}
	if ifi.Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("%s is down (ip link set %s up)", dev, dev))
	}
	ifs, prefixes, _ := netdev.InterfacePrefixes()
	for i := range ifs {
		for _, p := range prefixes[i] {
			ip := p.Addr()
			switch {
			case ifs[i].Index != ifi.Index && ip == a:
				problems = append(problems, fmt.Sprintf("the kernel has %s on %s and answers ARP/ND for its addresses on %s too; remove it", a, ifs[i].Name, dev))
			case ifs[i].Index != ifi.Index:
			case ip == a:
				problems = append(problems, fmt.Sprintf("the kernel has %s itself on %s: it would answer ARP/ND for it and take the underlay's traffic (ip addr del %s dev %s)", p, dev, p, dev))
			case p.Contains(a):
				problems = append(problems, fmt.Sprintf("the kernel has %s on %s, a subnet that holds %s: it would answer and route for it (ip addr del %s dev %s)", p, dev, a, p, dev))
			}
		}
	}
	if v, ok := afpSysctl("net/ipv6/conf/" + dev + "/disable_ipv6"); ok && v == "0" {
		warnings = append(warnings, fmt.Sprintf("IPv6 is enabled on %s: the kernel may answer ND and sends RS/MLD there (sysctl -w net.ipv6.conf.%s.disable_ipv6=1)", dev, dev))
	}
	if v, ok := afpSysctl("net/ipv4/conf/" + dev + "/forwarding"); ok && v == "1" {
		warnings = append(warnings, fmt.Sprintf("IPv4 forwarding is on for %s: if netstack shares the interface's MAC the kernel forwards its packets", dev))
	}
	if v, ok := afpSysctl("net/ipv6/conf/" + dev + "/forwarding"); ok && v == "1" {
		warnings = append(warnings, fmt.Sprintf("IPv6 forwarding is on for %s: if netstack shares the interface's MAC the kernel forwards its packets", dev))
	}
	if len(problems) > 0 {
		return warnings, fmt.Errorf("AF_PACKET: AF_PACKET underlay on %s: %s", dev, strings.Join(problems, "; "))
	}
	return warnings, nil
}

// afpSysctl reads /proc/sys/<name> in the calling thread's namespace.
func afpSysctl(name string) (string, bool) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}
