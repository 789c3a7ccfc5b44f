package link

import (
	"net"
	"strings"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TAPEndpoint is a gVisor link endpoint (stack.LinkEndpoint) on a TAP
// device of its own: the underlay netstack's NIC, plugged into the host's
// network like a virtual machine's interface. Netstack, not the host
// kernel, does the underlay's IP, UDP, ARP, ND, IGMP and MLD; the kernel
// only switches or routes frames to and from the TAP device.
//
// # Supported host setup
//
// The TAP device is usually made a port of a Linux bridge
// (TAPEndpointOptions.Bridge) that also holds the host's uplink (a
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
// TunnelSegmenter and Packet.InnerMSS). The endpoint asks for the tunnel
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
// partial frame is marked for NetstackUDP (RxLocalPartial), so that the
// Geneve endpoint trusts its inner checksum, which the kernel leaves
// partial too.
//
// TAPEndpoint is implemented on Linux only; elsewhere NewTAPEndpoint fails.
type TAPEndpoint struct {
	tapEndpoint // per-OS state
}

var (
	_ stack.LinkEndpoint = (*TAPEndpoint)(nil)
	_ TunnelSegmenter    = (*TAPEndpoint)(nil)
)

// TAPEndpointOptions configures NewTAPEndpoint.
type TAPEndpointOptions struct {
	// Name is the TAP interface name, at most 15 bytes; empty lets the
	// kernel choose (tap0, ...). The device is created (and removed by
	// Close); an existing persistent TAP device of that name is attached
	// to and left in place.
	Name string

	// Bridge, if set, is a Linux bridge to make the TAP device a port of.
	Bridge string

	// MAC is netstack's MAC address; nil means a random locally
	// administered unicast address. (The TAP device's own, kernel-side
	// MAC is a different one.)
	MAC net.HardwareAddr

	// MTU is the IP MTU; 0 means the bridge's, or 1500.
	MTU int

	// NoTunnelGSO keeps the plain virtio_net_hdr (checksum offload only):
	// the Geneve endpoint then segments TCP in software.
	NoTunnelGSO bool
}

// TAPOffloads says which offloads a TAPEndpoint uses.
type TAPOffloads struct {
	// TxChecksum: UDP checksums are completed by the kernel
	// (VIRTIO_NET_HDR_F_NEEDS_CSUM).
	TxChecksum bool
	// TunnelGSO: UDP-tunnel segmentation jobs are written whole, and
	// received whole (virtio_net_hdr_v1_hash_tunnel, TUN_F_UDP_TUNNEL_GSO).
	TunnelGSO bool
}

// String lists the active offloads, like "tx-csum udp-tunnel-gso", or
// "none".
func (o TAPOffloads) String() string {
	var s []string
	if o.TxChecksum {
		s = append(s, "tx-csum")
	}
	if o.TunnelGSO {
		s = append(s, "udp-tunnel-gso")
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

// TAPEndpointStats counts what a TAPEndpoint did. A segmentation job or a
// super-frame counts as one frame.
type TAPEndpointStats struct {
	// RxFrames counts frames delivered to netstack, and RxTunnelGSO the
	// UDP-tunnel super-frames among them.
	RxFrames, RxTunnelGSO atomic.Uint64
	// RxOtherHost counts unicast frames to another MAC (a bridge floods
	// unknown destinations), dropped.
	RxOtherHost atomic.Uint64
	// RxChecksumErrors counts frames dropped because the endpoint found a
	// bad IPv4 header or UDP checksum.
	RxChecksumErrors atomic.Uint64
	// RxMalformed counts frames too short, larger than the MTU without
	// being super-frames, or with a virtio_net_hdr the endpoint does not
	// take (a UDP super-frame: USO is not negotiated); dropped.
	RxMalformed atomic.Uint64
	// RxErrors counts failed reads.
	RxErrors atomic.Uint64

	// TxFrames counts frames written, and TxTunnelGSO the UDP-tunnel
	// segmentation jobs among them.
	TxFrames, TxTunnelGSO atomic.Uint64
	// TxErrors counts frames the kernel refused or that could not be
	// described to it; dropped.
	TxErrors atomic.Uint64
	// TxOffloadFallbacks counts segmentation jobs the kernel refused
	// (EINVAL), after which the offload was switched off.
	TxOffloadFallbacks atomic.Uint64
}

// GSOUDPTunnel is the stack.GSOType of a UDP-tunnel segmentation job on the
// underlay NIC, built by NetstackUDP from a Packet with InnerMSS: one
// outbound UDP datagram whose payload is a Geneve header and an inner TCP
// super-packet with a partial checksum. GSOOptions.MSS is the inner TCP
// segment size; NeedsCsum says that the outer UDP checksum is wanted (its
// field holds the pseudo-header sum over the whole job), else it is zero;
// L3HdrLen is the outer IP header length. Like GSOUDPL4 it lies outside
// the types gVisor defines, and its IP layers pass it through unfragmented.
const GSOUDPTunnel stack.GSOType = 0x76

// Receive marks. The link endpoints of this package mark a received frame
// that the kernel handed over with a partial checksum
// (VIRTIO_NET_HDR_F_NEEDS_CSUM: built on this host, never crossed a wire)
// by setting GSOOptions.NeedsCsum on the inbound PacketBuffer (netstack
// leaves GSOOptions alone on the way in), and for a UDP-tunnel super-frame
// also GSOOptions.MSS, the inner segment size. NetstackUDP turns the marks
// into Datagram.Local and Datagram.InnerMSS.
