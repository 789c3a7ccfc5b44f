// Package afpacket is a gVisor link endpoint on a host network interface
// through an AF_PACKET socket, with virtio-net offload hints: the underlay
// netstack's NIC when gnv owns the underlay address. It is implemented on
// Linux; elsewhere New fails.
package afpacket

import "net"

// Options configures New.
type Options struct {
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

// Stats is a snapshot of an Endpoint's counters, as Endpoint.Stats returns
// it. Frames are Ethernet frames on the socket; a GSO frame is one frame.
type Stats struct {
	// RxFrames counts frames delivered to netstack (a split super-frame
	// counts once per datagram).
	RxFrames uint64
	// RxOtherHost counts unicast frames to another MAC, dropped.
	RxOtherHost uint64
	// RxChecksumErrors counts frames dropped because the endpoint found a
	// bad IPv4 header or UDP checksum.
	RxChecksumErrors uint64
	// RxTruncated counts frames larger than the receive buffer, and frames
	// larger than the MTU that were not GSO super-frames; dropped.
	RxTruncated uint64
	// RxMalformed counts frames too short or with headers that do not
	// parse; dropped.
	RxMalformed uint64
	// RxGSOSplit counts UDP super-frames delivered whole and marked for
	// the netstack transport, which hands their datagrams over one by one
	// (link.SetReceiveUDPSegments).
	RxGSOSplit uint64
	// RxGSOWhole counts TCP super-frames delivered whole (UDP-tunnel
	// segmentation jobs from this host).
	RxGSOWhole uint64
	// RxGSODropped counts super-frames of a kind the endpoint does not
	// take (UFO, or TCP without a partial checksum); dropped.
	RxGSODropped uint64
	// RxErrors counts failed recvmmsg calls.
	RxErrors uint64

	// TxFrames counts frames handed to the kernel (a GSO job counts once).
	TxFrames uint64
	// TxErrors counts frames the kernel refused (ENOBUFS, ENETDOWN, ...).
	TxErrors uint64
	// TxChecksumOffloaded counts frames sent with NEEDS_CSUM.
	TxChecksumOffloaded uint64
	// TxGSOFrames counts UDP segmentation jobs sent as one UDP_L4 frame, and
	// TxGSOSegments the datagrams in them.
	TxGSOFrames, TxGSOSegments uint64
	// TxSoftwareSegmented counts segmentation jobs cut into datagrams by
	// the endpoint itself (udp-gso off or refused).
	TxSoftwareSegmented uint64
	// TxTunnelJobs counts UDP-tunnel segmentation jobs cut here into
	// Geneve datagrams (sent as UDP_L4 frames while UDP GSO is on).
	TxTunnelJobs uint64
	// TxOffloadFallbacks counts frames the kernel refused because of their
	// offload hints, after which the offload was switched off and the
	// frame sent again without it.
	TxOffloadFallbacks uint64
}

// afpMaxSegments bounds the datagrams of one UDP segmentation job (the
// kernel's UDP_MAX_SEGMENTS is 64 or 128 depending on the version).
const afpMaxSegments = 64
