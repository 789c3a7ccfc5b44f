package link

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// PacketEndpoint is a gVisor link endpoint (stack.LinkEndpoint) on a host
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
// MLD of its own there. CheckPacketHost checks this.
//
// By default netstack uses a MAC address of its own (a random locally
// administered one, or PacketEndpointOptions.MAC) and the interface is put
// in promiscuous mode (PACKET_MR_PROMISC) so that frames to that MAC
// arrive; the kernel drops them as "other host". With
// PacketEndpointOptions.UseInterfaceMAC netstack uses the interface's own
// MAC instead and the kernel sees (and must ignore) every frame too. The
// interface also receives all multicast (PACKET_MR_ALLMULTI): netstack's
// joins program nothing on the host NIC.
//
// On a macvlan, use UseInterfaceMAC (or create the macvlan with the MAC
// given in PacketEndpointOptions.MAC): a macvlan receives unicast frames
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
//   - udp-gso: a UDP segmentation job (GSOUDPL4, see UDPSegmenter) is sent
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
// NewPacketEndpoint fails on a down interface. If a job is refused at run
// time all the same (EINVAL, EIO, EOPNOTSUPP), the offload is switched off
// and the packet is sent again without it (a job as separate datagrams,
// checksummed in software if need be). Offloads reports what is in use.
//
// PacketEndpoint is implemented on Linux only; elsewhere NewPacketEndpoint
// fails.
type PacketEndpoint struct {
	packetEndpoint // per-OS state
}

var (
	_ stack.LinkEndpoint = (*PacketEndpoint)(nil)
	_ UDPSegmenter       = (*PacketEndpoint)(nil)
)

// PacketEndpointOptions configures NewPacketEndpoint.
type PacketEndpointOptions struct {
	// Device is the host interface, e.g. "veth-gnv0". Required. The socket
	// is opened in the calling thread's network namespace.
	Device string

	// MAC is netstack's MAC address on the interface; nil means a random
	// locally administered unicast address, unless UseInterfaceMAC.
	MAC net.HardwareAddr

	// UseInterfaceMAC makes netstack use the interface's own MAC address
	// (no promiscuous mode). The kernel then receives every frame too and
	// must be kept from answering it (no addresses, IPv6 disabled, no
	// forwarding on the interface).
	UseInterfaceMAC bool

	// MTU is the IP MTU; 0 means the interface's.
	MTU int

	// NoVnetHdr disables PACKET_VNET_HDR, and with it every offload:
	// checksums are computed by netstack, datagrams are sent one by one,
	// and received frames are all trusted to have good checksums.
	NoVnetHdr bool
	// NoTxChecksumOffload keeps the virtio_net_hdr but computes UDP
	// checksums in software (and so disables udp-gso, which needs it).
	NoTxChecksumOffload bool
	// NoUDPGSO keeps checksum offload but sends every datagram on its own.
	NoUDPGSO bool

	// ReadBuffer and WriteBuffer are the socket buffer sizes; 0 means 8 MiB
	// and 4 MiB.
	ReadBuffer, WriteBuffer int

	// BatchSize is the most frames read by one recvmmsg call; 0 means 32.
	BatchSize int
}

// PacketOffloads says which offloads a PacketEndpoint uses.
type PacketOffloads struct {
	// VnetHdr: PACKET_VNET_HDR is on (a virtio_net_hdr precedes every
	// frame); received super-frames are split and unflagged frames' checksums
	// verified.
	VnetHdr bool
	// TxChecksum: UDP checksums are completed by the kernel or NIC
	// (VIRTIO_NET_HDR_F_NEEDS_CSUM).
	TxChecksum bool
	// UDPGSO: runs of datagrams are segmented by the kernel or NIC
	// (VIRTIO_NET_HDR_GSO_UDP_L4).
	UDPGSO bool
}

// String lists the active offloads, like "vnet-hdr tx-csum udp-gso", or
// "none".
func (o PacketOffloads) String() string {
	var s []string
	if o.VnetHdr {
		s = append(s, "vnet-hdr")
	}
	if o.TxChecksum {
		s = append(s, "tx-csum")
	}
	if o.UDPGSO {
		s = append(s, "udp-gso")
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

// PacketEndpointStats counts what a PacketEndpoint did. Frames are
// Ethernet frames on the socket; a GSO frame is one frame.
type PacketEndpointStats struct {
	// RxFrames counts frames delivered to netstack (a split super-frame
	// counts once per datagram).
	RxFrames atomic.Uint64
	// RxOtherHost counts unicast frames to another MAC, dropped.
	RxOtherHost atomic.Uint64
	// RxChecksumErrors counts frames dropped because the endpoint found a
	// bad IPv4 header or UDP checksum.
	RxChecksumErrors atomic.Uint64
	// RxTruncated counts frames larger than the receive buffer, and frames
	// larger than the MTU that were not GSO super-frames; dropped.
	RxTruncated atomic.Uint64
	// RxMalformed counts frames too short or with headers that do not
	// parse; dropped.
	RxMalformed atomic.Uint64
	// RxGSOSplit counts UDP super-frames split into datagrams.
	RxGSOSplit atomic.Uint64
	// RxGSOWhole counts TCP super-frames delivered whole (UDP-tunnel
	// segmentation jobs from this host).
	RxGSOWhole atomic.Uint64
	// RxGSODropped counts super-frames of a kind the endpoint does not
	// take (UFO, or TCP without a partial checksum); dropped.
	RxGSODropped atomic.Uint64
	// RxErrors counts failed recvmmsg calls.
	RxErrors atomic.Uint64

	// TxFrames counts frames handed to the kernel (a GSO job counts once).
	TxFrames atomic.Uint64
	// TxErrors counts frames the kernel refused (ENOBUFS, ENETDOWN, ...).
	TxErrors atomic.Uint64
	// TxChecksumOffloaded counts frames sent with NEEDS_CSUM.
	TxChecksumOffloaded atomic.Uint64
	// TxGSOFrames counts UDP segmentation jobs sent as one UDP_L4 frame, and
	// TxGSOSegments the datagrams in them.
	TxGSOFrames, TxGSOSegments atomic.Uint64
	// TxSoftwareSegmented counts segmentation jobs cut into datagrams by
	// the endpoint itself (udp-gso off or refused).
	TxSoftwareSegmented atomic.Uint64
	// TxOffloadFallbacks counts frames the kernel refused because of their
	// offload hints, after which the offload was switched off and the
	// frame sent again without it.
	TxOffloadFallbacks atomic.Uint64
}

// GSOUDPL4 is the stack.GSOType of a UDP segmentation job: one outbound
// PacketBuffer that stands for a run of datagrams with the same addresses,
// ports, TOS, TTL and DF and equal payload sizes (the last may be
// shorter). NetstackUDP builds such jobs when the underlay NIC's link
// endpoint implements UDPSegmenter and says it accepts them:
//
//   - the IP header is that of the whole job (its length covers all
//     datagrams);
//   - the UDP header is that of the first datagram except that its length
//     is 8 + all payload bytes and its checksum field holds the
//     pseudo-header sum over that length (GSOOptions.NeedsCsum,
//     CsumOffset 6);
//   - GSOOptions.MSS is the UDP payload size of each datagram but the
//     last.
//
// gVisor defines no UDP segmentation type; this value lies outside those it
// defines. Its IPv4 and IPv6 layers pass it through: they only compare the
// type with GSONone, which also keeps them from fragmenting the job.
const GSOUDPL4 stack.GSOType = 0x75

// UDPSegmenter is implemented by link endpoints that accept UDP
// segmentation jobs (GSOUDPL4 packets) in WritePackets and send them as
// separate datagrams, with the kernel's or NIC's segmentation offload or
// in software. NetstackUDP looks for it on its NIC's link endpoint
// (NetstackUDPOptions.Segmenter).
type UDPSegmenter interface {
	// UDPSegmentation reports whether jobs are worth building now (the
	// offload is on) and the most datagrams per job.
	UDPSegmentation() (maxSegments int, ok bool)
}

// afpMaxSegments bounds the datagrams of one UDP segmentation job (the
// kernel's UDP_MAX_SEGMENTS is 64 or 128 depending on the version).
const afpMaxSegments = 64

// afpSegmentHeader rewrites hdr, a copy of a job's link, IP and UDP headers
// (the IP header at l3, the UDP header at l4), for its i-th datagram of n
// payload bytes: IP length, IPv4 ID (the job's plus i, as the kernel does)
// and header checksum, UDP length. It returns the UDP pseudo-header sum
// for the datagram (not complemented) and leaves the UDP checksum field
// alone.
func afpSegmentHeader(hdr []byte, l3, l4, i, n int) uint16 {
	ulen := header.UDPMinimumSize + n
	binary.BigEndian.PutUint16(hdr[l4+4:], uint16(ulen))
	ip := hdr[l3:l4]
	if ip[0]>>4 == 4 {
		h := header.IPv4(ip)
		h.SetTotalLength(uint16(l4 - l3 + ulen))
		h.SetID(h.ID() + uint16(i))
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		return header.PseudoHeaderChecksum(header.UDPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(ulen))
	}
	h := header.IPv6(ip)
	h.SetPayloadLength(uint16(l4 - l3 - header.IPv6MinimumSize + ulen))
	return header.PseudoHeaderChecksum(header.UDPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(ulen))
}

// afpFinishUDPChecksum completes the UDP checksum of udp (header, checksum
// field ignored) given the pseudo-header sum and the payload sum.
func afpFinishUDPChecksum(udp []byte, pseudo, payload uint16) {
	u := header.UDP(udp)
	u.SetChecksum(0)
	c := ^u.CalculateChecksum(checksum.Combine(pseudo, payload))
	if c == 0 {
		c = 0xffff // RFC 768: zero means "no checksum"
	}
	u.SetChecksum(c)
}

// afpL3L4 finds the IP and UDP headers of an Ethernet frame: the offsets of
// the IP and transport headers and the IP protocol (next header) number.
// ok is false for frames that are not IPv4 or IPv6, or too short.
func afpL3L4(frame []byte) (l3, l4 int, proto uint8, ok bool) {
	if len(frame) < header.EthernetMinimumSize {
		return 0, 0, 0, false
	}
	l3 = header.EthernetMinimumSize
	ip := frame[l3:]
	switch header.Ethernet(frame).Type() {
	case header.IPv4ProtocolNumber:
		if len(ip) < header.IPv4MinimumSize || ip[0]>>4 != 4 {
			return 0, 0, 0, false
		}
		ihl := int(ip[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || len(ip) < ihl {
			return 0, 0, 0, false
		}
		return l3, l3 + ihl, ip[9], true
	case header.IPv6ProtocolNumber:
		if len(ip) < header.IPv6MinimumSize || ip[0]>>4 != 6 {
			return 0, 0, 0, false
		}
		return l3, l3 + header.IPv6MinimumSize, ip[6], true
	}
	return 0, 0, 0, false
}

// afpRxChecksumOK verifies what netstack will not, on a NIC with RX checksum
// offload: the IPv4 header checksum and the UDP checksum of a received
// frame whose checksums the kernel has neither verified nor left partial.
// Frames it cannot judge (not IP, fragments, IPv6 extension headers,
// malformed lengths) pass: netstack checks their structure. A zero UDP
// checksum passes too: on IPv4 it means none, and on IPv6 the transport
// decides (NetstackUDPOptions.ZeroChecksumRx6).
func afpRxChecksumOK(frame []byte) bool {
	l3, l4, proto, ok := afpL3L4(frame)
	if !ok {
		return true
	}
	ip := frame[l3:]
	var end int
	if ip[0]>>4 == 4 {
		h := header.IPv4(ip)
		if checksum.Checksum(ip[:l4-l3], 0) != 0xffff {
			return false
		}
		end = l3 + int(h.TotalLength())
		if h.FragmentOffset() != 0 || h.Flags()&header.IPv4FlagMoreFragments != 0 {
			return true
		}
	} else {
		end = l4 + int(header.IPv6(ip).PayloadLength())
	}
	if proto != uint8(header.UDPProtocolNumber) || end > len(frame) || end < l4+header.UDPMinimumSize {
		return true
	}
	u := header.UDP(frame[l4:end])
	if u.Checksum() == 0 || int(u.Length()) != len(u) {
		return true
	}
	var src, dst tcpip.Address
	if ip[0]>>4 == 4 {
		src, dst = header.IPv4(ip).SourceAddress(), header.IPv4(ip).DestinationAddress()
	} else {
		src, dst = header.IPv6(ip).SourceAddress(), header.IPv6(ip).DestinationAddress()
	}
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u)))
	return checksum.Checksum(u, sum) == 0xffff
}

// afpUDPCsumOffset is the offset of the checksum field in a UDP header.
const afpUDPCsumOffset = 6

// DirectQDisc is a stack.QueueingDiscipline that hands each packet to the
// link endpoint's WritePackets on the caller's goroutine, as the NIC's
// default one does, but reuses its one-packet lists where the default one
// allocates one per packet. Pass it as stack.NICOptions.QDisc, built on
// the endpoint given to CreateNIC (the outermost one).
type DirectQDisc struct {
	w     stack.LinkWriter
	lists sync.Pool
}

var _ stack.QueueingDiscipline = (*DirectQDisc)(nil)

// NewDirectQDisc returns a DirectQDisc writing to w.
func NewDirectQDisc(w stack.LinkWriter) *DirectQDisc {
	return &DirectQDisc{w: w}
}

// WritePacket implements stack.QueueingDiscipline. The packet stays the
// caller's: the list holds a reference of its own, dropped on return.
func (q *DirectQDisc) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	l, _ := q.lists.Get().(*stack.PacketBufferList)
	if l == nil {
		l = &stack.PacketBufferList{}
	}
	l.PushBack(pkt.IncRef())
	_, err := q.w.WritePackets(*l)
	l.Reset()
	q.lists.Put(l)
	return err
}

// Close implements stack.QueueingDiscipline; there is nothing to stop.
func (q *DirectQDisc) Close() {}
