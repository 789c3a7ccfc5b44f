package link

import "strings"

// Offloads is a set of kernel or NIC offloads that a transport, a link
// endpoint or a device uses.
type Offloads uint32

// The offloads. Each names what Linux calls it where it can.
const (
	// OffloadVnetHdr: a virtio_net_hdr precedes every frame
	// (PACKET_VNET_HDR, IFF_VNET_HDR).
	OffloadVnetHdr Offloads = 1 << iota
	// OffloadTxChecksum: outbound UDP checksums are completed by the
	// kernel or NIC (VIRTIO_NET_HDR_F_NEEDS_CSUM).
	OffloadTxChecksum
	// OffloadUDPGSO: runs of UDP datagrams are segmented by the kernel
	// (UDP_SEGMENT, VIRTIO_NET_HDR_GSO_UDP_L4).
	OffloadUDPGSO
	// OffloadUDPGRO: the kernel hands over coalesced UDP datagrams
	// (UDP_GRO).
	OffloadUDPGRO
	// OffloadTunnelGSO: UDP-tunnel segmentation jobs are written, and
	// read, whole (virtio_net_hdr_v1_hash_tunnel, TUN_F_UDP_TUNNEL_GSO).
	OffloadTunnelGSO
	// OffloadTSO4 and OffloadTSO6: the kernel hands a device TCP
	// super-packets (TUN_F_TSO4, TUN_F_TSO6).
	OffloadTSO4
	OffloadTSO6
	// OffloadTSOECN: TCP super-packets may have CWR set (TUN_F_TSO_ECN).
	OffloadTSOECN
	// OffloadUSO4 and OffloadUSO6: the kernel hands a device UDP
	// super-packets (TUN_F_USO4, TUN_F_USO6; Linux 6.2 and later).
	OffloadUSO4
	OffloadUSO6
	// OffloadRxChecksum: the kernel may hand a device partial checksums
	// (TUN_F_CSUM).
	OffloadRxChecksum
)

var offloadNames = []struct {
	o    Offloads
	name string
}{
	{OffloadVnetHdr, "vnet-hdr"},
	{OffloadTSO4, "tso4"},
	{OffloadTSO6, "tso6"},
	{OffloadTSOECN, "tso-ecn"},
	{OffloadUSO4, "uso4"},
	{OffloadUSO6, "uso6"},
	{OffloadRxChecksum, "csum"},
	{OffloadTxChecksum, "tx-csum"},
	{OffloadUDPGSO, "udp-gso"},
	{OffloadUDPGRO, "udp-gro"},
	{OffloadTunnelGSO, "udp-tunnel-gso"},
}

// Has reports whether every offload of f is in o.
func (o Offloads) Has(f Offloads) bool { return o&f == f }

// String lists the offloads for a start-up line, like
// "vnet-hdr tx-csum udp-gso", or "none".
func (o Offloads) String() string {
	var parts []string
	for _, n := range offloadNames {
		if o.Has(n.o) {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// OffloadReporter is implemented by transports, link endpoints and devices
// that use kernel or NIC offloads; wrappers (a capture, say) forward it.
type OffloadReporter interface {
	// Offloads returns the offloads in use now (some are switched off at
	// run time when the kernel refuses them).
	Offloads() Offloads
}
