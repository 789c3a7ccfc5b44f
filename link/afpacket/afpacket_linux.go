//go:build linux

package afpacket

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ethnic"
	"golang.org/x/sys/unix"
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
// Sending: writers send batches of frames with sendmmsg(2) on a socket of
// their own, bound to the interface for no protocol (it receives nothing)
// and kept out of the runtime poller. A socket in the poller is watched
// for writability too, and the kernel signals write space each time a
// frame the socket sent is freed: on a veth that happens for every frame,
// in the peer's namespace, and each signal could wake a thread of this
// process for nothing. When the send buffer is full, a writer polls the
// socket itself.
//
// Receiving: one goroutine reads batches of frames with recvmmsg(2)
// through the runtime poller, each frame into views that become the packet
// without a copy (frames of at most 16 KiB are copied out instead: see
// afpRx). The host's own outgoing frames are not seen
// (PACKET_IGNORE_OUTGOING, and frames marked outgoing are dropped), nor
// unicast frames to other MACs. The socket buffers are 8 MiB (the receive
// socket's) and 4 MiB (the send socket's) when CAP_NET_ADMIN allows
// (SO_RCVBUFFORCE, SO_SNDBUFFORCE), else as large as net.core.[rw]mem_max
// allow.
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
	vnetLen  int // 0 or vnet.HdrLen
	frameCap int // receive buffer per frame: MTU + Ethernet + slack
	txCsum   atomic.Bool
	udpGSO   atomic.Bool
	mtu      atomic.Uint32
	promisc  bool

	rx      *afpRx
	senders chan *afpTx
	// The send socket (see Datapath). txFile is not in the runtime
	// poller; txConn runs sends with the descriptor held open.
	txFile *os.File
	txConn syscall.RawConn

	stats counters
}

var (
	_ stack.LinkEndpoint   = (*Endpoint)(nil)
	_ link.UDPSegmenter    = (*Endpoint)(nil)
	_ link.TunnelSegmenter = (*Endpoint)(nil)
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
	if e.txFile, e.txConn, err = e.openTx(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	e.File = os.NewFile(uintptr(fd), "gnv-packet:"+opts.Device)
	if e.Conn, err = e.File.SyscallConn(); err != nil {
		e.File.Close()
		e.txFile.Close()
		return nil, fmt.Errorf("AF_PACKET: %w", err)
	}
	e.rx = newAFPRx(e)
	e.ReadSyscall = e.rx.recvmmsg
	e.Deliver = e.deliverBatch
	e.RxErrors = &e.stats.rxErrors
	e.Release = func() {
		e.rx.release()
		e.txFile.Close() // once the writers polling it saw Closed
	}
	return e, nil
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
	txTunnelJobs                                                      atomic.Uint64
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
		TxTunnelJobs:        c.txTunnelJobs.Load(),
		TxOffloadFallbacks:  c.txOffloadFallbacks.Load(),
	}
}

// UDPSegmentation implements UDPSegmenter.
func (e *Endpoint) UDPSegmentation() (int, bool) {
	return afpMaxSegments, e.udpGSO.Load() && e.txCsum.Load()
}

// TunnelSegmentation implements link.TunnelSegmenter: while UDP GSO is on,
// UDP-tunnel segmentation jobs (link.GSOUDPTunnel) are taken and cut here
// into UDP_L4 frames of Geneve datagrams, whose headers are rewritten from
// the job's and whose payload is gathered from its views: the Geneve
// endpoint then builds no buffer per segment.
func (e *Endpoint) TunnelSegmentation() (int, bool) {
	return 0xffff, e.udpGSO.Load() && e.txCsum.Load()
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
