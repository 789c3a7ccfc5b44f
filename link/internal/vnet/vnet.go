// Package vnet encodes and decodes the virtio-net headers (struct
// virtio_net_hdr and virtio_net_hdr_v1_hash_tunnel) that carry offload
// hints between Linux and a TAP/TUN device or an AF_PACKET socket.
package vnet

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// HdrLen is the size of the legacy struct virtio_net_hdr that
// Linux prepends to every frame of an AF_PACKET socket with PACKET_VNET_HDR
// (and of a TUN/TAP device with IFF_VNET_HDR), in both directions.
const HdrLen = 10

// Flags of Hdr (linux/virtio_net.h).
const (
	// FNeedsCsum (VIRTIO_NET_HDR_F_NEEDS_CSUM) says that the
	// 16-bit field CsumOffset bytes after CsumStart holds only the
	// pseudo-header sum; the checksum over CsumStart..end of frame is
	// still to be folded in (CHECKSUM_PARTIAL).
	FNeedsCsum = 1
	// FDataValid (VIRTIO_NET_HDR_F_DATA_VALID), on receive,
	// says that the checksums have been verified (CHECKSUM_UNNECESSARY).
	FDataValid = 2
)

// Segmentation types of Hdr (linux/virtio_net.h).
const (
	GSONone  = 0 // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3 // VIRTIO_NET_HDR_GSO_UDP (IP fragmentation offload)
	GSOTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	// GSOUDPL4 (VIRTIO_NET_HDR_GSO_UDP_L4) cuts the UDP
	// payload into GSOSize-byte datagrams, each with its own IP and UDP
	// header (UDP GSO, as UDP_SEGMENT does for sockets). Linux accepts it
	// from AF_PACKET since 6.2.
	GSOUDPL4 = 5
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN, or-ed into a TCP type
)

// Hdr is struct virtio_net_hdr: offload hints for one frame. Linux
// lays it out little-endian for AF_PACKET (vio_le()), whatever the CPU;
// gVisor's header.VirtioNetHeader getters read big-endian and must not be
// used to parse it.
type Hdr struct {
	// Flags is a set of F* bits.
	Flags uint8
	// GSOType is one of the GSO* values.
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

// Encode writes h into b[:HdrLen], little-endian. It panics if b
// is shorter.
func (h *Hdr) Encode(b []byte) {
	_ = b[HdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:4], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:6], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:8], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:10], h.CsumOffset)
}

// Decode reads h from b, little-endian. It reports false if b is shorter
// than HdrLen.
func (h *Hdr) Decode(b []byte) bool {
	if len(b) < HdrLen {
		return false
	}
	*h = Hdr{
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
func (h Hdr) String() string {
	var fl []string
	if h.Flags&FNeedsCsum != 0 {
		fl = append(fl, "needs-csum")
	}
	if h.Flags&FDataValid != 0 {
		fl = append(fl, "data-valid")
	}
	if h.Flags&FUDPTunnelCsum != 0 {
		fl = append(fl, "udp-tunnel-csum")
	}
	if rest := h.Flags &^ (FNeedsCsum | FDataValid | FUDPTunnelCsum); rest != 0 {
		fl = append(fl, fmt.Sprintf("%#x", rest))
	}
	gso := "none"
	switch h.GSOType &^ (GSOECN | GSOUDPTunnelIPv4 | GSOUDPTunnelIPv6) {
	case GSONone:
	case GSOTCPv4:
		gso = "tcpv4"
	case GSOTCPv6:
		gso = "tcpv6"
	case GSOUDP:
		gso = "udp"
	case GSOUDPL4:
		gso = "udp-l4"
	default:
		gso = fmt.Sprintf("%#x", h.GSOType&^GSOECN)
	}
	switch {
	case h.GSOType&GSOUDPTunnelIPv4 != 0:
		gso += "+udp-tunnel4"
	case h.GSOType&GSOUDPTunnelIPv6 != 0:
		gso += "+udp-tunnel6"
	}
	if h.GSOType&GSOECN != 0 {
		gso += "+ecn"
	}
	return fmt.Sprintf("vnet{flags=[%s] gso=%s hdr_len=%d gso_size=%d csum_start=%d csum_offset=%d}",
		strings.Join(fl, ","), gso, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset)
}

// TunnelHdrLen is the size of struct virtio_net_hdr_v1_hash_tunnel
// (Linux 6.17+): the v1 header (the legacy one plus num_buffers), the hash
// report fields and the two UDP-tunnel offsets. A TAP device whose header
// size is set to it (TUNSETVNETHDRSZ) takes UDP-tunnel segmentation jobs
// on write, and with TUN_F_UDP_TUNNEL_GSO hands such super-frames over on
// read.
const TunnelHdrLen = 24

// UDP-tunnel additions to the virtio_net_hdr flags and segmentation types
// (linux/virtio_net.h, Linux 6.17+).
const (
	// FUDPTunnelCsum (VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM): the
	// outer UDP checksum of every segment is to be computed; the outer
	// checksum field holds the pseudo-header sum of the whole job.
	FUDPTunnelCsum = 8
	// GSOUDPTunnelIPv4 and GSOUDPTunnelIPv6 are
	// or-ed into a TCP segmentation type when the TCP packet is inside a
	// UDP tunnel over IPv4 or IPv6: every segment gets a copy of all the
	// headers, outer and inner, with lengths, IDs and checksums fixed.
	GSOUDPTunnelIPv4 = 0x20
	GSOUDPTunnelIPv6 = 0x40
)

// TunnelHdr is struct virtio_net_hdr_v1_hash_tunnel: a
// Hdr plus where the outer transport header and the inner network
// header start, from the start of the frame (the Ethernet header). For a
// UDP-tunnel job CsumStart is the inner TCP header (the inner checksum is
// partial) and HdrLen ends after it.
type TunnelHdr struct {
	Hdr
	OuterTransportOffset uint16
	InnerNetworkOffset   uint16
}

// Encode writes h into b[:TunnelHdrLen], little-endian, with
// num_buffers and the hash fields zero. It panics if b is shorter.
func (h *TunnelHdr) Encode(b []byte) {
	_ = b[TunnelHdrLen-1]
	h.Hdr.Encode(b)
	clear(b[HdrLen:20])
	binary.LittleEndian.PutUint16(b[20:22], h.OuterTransportOffset)
	binary.LittleEndian.PutUint16(b[22:24], h.InnerNetworkOffset)
}

// Decode reads h from b, little-endian. It reports false if b is shorter
// than TunnelHdrLen.
func (h *TunnelHdr) Decode(b []byte) bool {
	if len(b) < TunnelHdrLen || !h.Hdr.Decode(b) {
		return false
	}
	h.OuterTransportOffset = binary.LittleEndian.Uint16(b[20:22])
	h.InnerNetworkOffset = binary.LittleEndian.Uint16(b[22:24])
	return true
}
