package link

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// VirtioNetHdrLen is the size of the legacy struct virtio_net_hdr that
// Linux prepends to every frame of an AF_PACKET socket with PACKET_VNET_HDR
// (and of a TUN/TAP device with IFF_VNET_HDR), in both directions.
const VirtioNetHdrLen = 10

// Flags of VirtioNetHdr (linux/virtio_net.h).
const (
	// VirtioNetHdrFNeedsCsum (VIRTIO_NET_HDR_F_NEEDS_CSUM) says that the
	// 16-bit field CsumOffset bytes after CsumStart holds only the
	// pseudo-header sum; the checksum over CsumStart..end of frame is
	// still to be folded in (CHECKSUM_PARTIAL).
	VirtioNetHdrFNeedsCsum = 1
	// VirtioNetHdrFDataValid (VIRTIO_NET_HDR_F_DATA_VALID), on receive,
	// says that the checksums have been verified (CHECKSUM_UNNECESSARY).
	VirtioNetHdrFDataValid = 2
)

// Segmentation types of VirtioNetHdr (linux/virtio_net.h).
const (
	VirtioNetHdrGSONone  = 0 // VIRTIO_NET_HDR_GSO_NONE
	VirtioNetHdrGSOTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	VirtioNetHdrGSOUDP   = 3 // VIRTIO_NET_HDR_GSO_UDP (IP fragmentation offload)
	VirtioNetHdrGSOTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	// VirtioNetHdrGSOUDPL4 (VIRTIO_NET_HDR_GSO_UDP_L4) cuts the UDP
	// payload into GSOSize-byte datagrams, each with its own IP and UDP
	// header (UDP GSO, as UDP_SEGMENT does for sockets). Linux accepts it
	// from AF_PACKET since 6.2.
	VirtioNetHdrGSOUDPL4 = 5
	VirtioNetHdrGSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN, or-ed into a TCP type
)

// VirtioNetHdr is struct virtio_net_hdr: offload hints for one frame. Linux
// lays it out little-endian for AF_PACKET (vio_le()), whatever the CPU;
// gVisor's header.VirtioNetHeader getters read big-endian and must not be
// used to parse it.
type VirtioNetHdr struct {
	// Flags is a set of VirtioNetHdrF* bits.
	Flags uint8
	// GSOType is one of the VirtioNetHdrGSO* values.
	GSOType uint8
	// HdrLen is the length of the headers (from the start of the frame)
	// copied in front of every segment.
	HdrLen uint16
	// GSOSize is the payload size of each segment but the last.
	GSOSize uint16
	// CsumStart is where checksumming starts, from the start of the frame.
	CsumStart uint16
	// CsumOffset is where the checksum field is, from CsumStart.
	CsumOffset uint16
}

// Encode writes h into b[:VirtioNetHdrLen], little-endian. It panics if b
// is shorter.
func (h *VirtioNetHdr) Encode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:4], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:6], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:8], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:10], h.CsumOffset)
}

// Decode reads h from b, little-endian. It reports false if b is shorter
// than VirtioNetHdrLen.
func (h *VirtioNetHdr) Decode(b []byte) bool {
	if len(b) < VirtioNetHdrLen {
		return false
	}
	*h = VirtioNetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:4]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:6]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:8]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:10]),
	}
	return true
}

// String formats h for logs and test failures.
func (h VirtioNetHdr) String() string {
	var fl []string
	if h.Flags&VirtioNetHdrFNeedsCsum != 0 {
		fl = append(fl, "needs-csum")
	}
	if h.Flags&VirtioNetHdrFDataValid != 0 {
		fl = append(fl, "data-valid")
	}
	if h.Flags&VirtioNetHdrFUDPTunnelCsum != 0 {
		fl = append(fl, "udp-tunnel-csum")
	}
	if rest := h.Flags &^ (VirtioNetHdrFNeedsCsum | VirtioNetHdrFDataValid | VirtioNetHdrFUDPTunnelCsum); rest != 0 {
		fl = append(fl, fmt.Sprintf("%#x", rest))
	}
	gso := "none"
	switch h.GSOType &^ (VirtioNetHdrGSOECN | VirtioNetHdrGSOUDPTunnelIPv4 | VirtioNetHdrGSOUDPTunnelIPv6) {
	case VirtioNetHdrGSONone:
	case VirtioNetHdrGSOTCPv4:
		gso = "tcpv4"
	case VirtioNetHdrGSOTCPv6:
		gso = "tcpv6"
	case VirtioNetHdrGSOUDP:
		gso = "udp"
	case VirtioNetHdrGSOUDPL4:
		gso = "udp-l4"
	default:
		gso = fmt.Sprintf("%#x", h.GSOType&^VirtioNetHdrGSOECN)
	}
	switch {
	case h.GSOType&VirtioNetHdrGSOUDPTunnelIPv4 != 0:
		gso += "+udp-tunnel4"
	case h.GSOType&VirtioNetHdrGSOUDPTunnelIPv6 != 0:
		gso += "+udp-tunnel6"
	}
	if h.GSOType&VirtioNetHdrGSOECN != 0 {
		gso += "+ecn"
	}
	return fmt.Sprintf("vnet{flags=[%s] gso=%s hdr_len=%d gso_size=%d csum_start=%d csum_offset=%d}",
		strings.Join(fl, ","), gso, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset)
}

// VirtioNetHdrTunnelLen is the size of struct virtio_net_hdr_v1_hash_tunnel
// (Linux 6.17+): the v1 header (the legacy one plus num_buffers), the hash
// report fields and the two UDP-tunnel offsets. A TAP device whose header
// size is set to it (TUNSETVNETHDRSZ) takes UDP-tunnel segmentation jobs
// on write, and with TUN_F_UDP_TUNNEL_GSO hands such super-frames over on
// read.
const VirtioNetHdrTunnelLen = 24

// UDP-tunnel additions to the virtio_net_hdr flags and segmentation types
// (linux/virtio_net.h, Linux 6.17+).
const (
	// VirtioNetHdrFUDPTunnelCsum (VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM): the
	// outer UDP checksum of every segment is to be computed; the outer
	// checksum field holds the pseudo-header sum of the whole job.
	VirtioNetHdrFUDPTunnelCsum = 8
	// VirtioNetHdrGSOUDPTunnelIPv4 and VirtioNetHdrGSOUDPTunnelIPv6 are
	// or-ed into a TCP segmentation type when the TCP packet is inside a
	// UDP tunnel over IPv4 or IPv6: every segment gets a copy of all the
	// headers, outer and inner, with lengths, IDs and checksums fixed.
	VirtioNetHdrGSOUDPTunnelIPv4 = 0x20
	VirtioNetHdrGSOUDPTunnelIPv6 = 0x40
)

// VirtioNetHdrTunnel is struct virtio_net_hdr_v1_hash_tunnel: a
// VirtioNetHdr plus where the outer transport header and the inner network
// header start, from the start of the frame (the Ethernet header). For a
// UDP-tunnel job CsumStart is the inner TCP header (the inner checksum is
// partial) and HdrLen ends after it.
type VirtioNetHdrTunnel struct {
	VirtioNetHdr
	OuterTransportOffset uint16
	InnerNetworkOffset   uint16
}

// Encode writes h into b[:VirtioNetHdrTunnelLen], little-endian, with
// num_buffers and the hash fields zero. It panics if b is shorter.
func (h *VirtioNetHdrTunnel) Encode(b []byte) {
	_ = b[VirtioNetHdrTunnelLen-1]
	h.VirtioNetHdr.Encode(b)
	clear(b[VirtioNetHdrLen:20])
	binary.LittleEndian.PutUint16(b[20:22], h.OuterTransportOffset)
	binary.LittleEndian.PutUint16(b[22:24], h.InnerNetworkOffset)
}

// Decode reads h from b, little-endian. It reports false if b is shorter
// than VirtioNetHdrTunnelLen.
func (h *VirtioNetHdrTunnel) Decode(b []byte) bool {
	if len(b) < VirtioNetHdrTunnelLen || !h.VirtioNetHdr.Decode(b) {
		return false
	}
	h.OuterTransportOffset = binary.LittleEndian.Uint16(b[20:22])
	h.InnerNetworkOffset = binary.LittleEndian.Uint16(b[22:24])
	return true
}
