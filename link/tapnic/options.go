// Package tapnic is a gVisor link endpoint on a TAP device of its own: the
// underlay netstack's NIC plugged into the host like a virtual machine's
// interface, usually a port of a bridge. On Linux 6.17 and later it takes
// UDP-tunnel segmentation jobs whole (the kernel's UDP-tunnel GSO). It is
// implemented on Linux; elsewhere New fails.
package tapnic

import "net"

// Options configures New.
type Options struct {
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

// Stats is a snapshot of an Endpoint's counters, as Endpoint.Stats returns
// it. A segmentation job or a super-frame counts as one frame.
type Stats struct {
	// RxFrames counts frames delivered to netstack, and RxTunnelGSO the
	// UDP-tunnel super-frames among them.
	RxFrames, RxTunnelGSO uint64
	// RxOtherHost counts unicast frames to another MAC (a bridge floods
	// unknown destinations), dropped.
	RxOtherHost uint64
	// RxChecksumErrors counts frames dropped because the endpoint found a
	// bad IPv4 header or UDP checksum.
	RxChecksumErrors uint64
	// RxMalformed counts frames too short, larger than the MTU without
	// being super-frames, or with a virtio_net_hdr the endpoint does not
	// take (a UDP super-frame: USO is not negotiated); dropped.
	RxMalformed uint64
	// RxErrors counts failed reads.
	RxErrors uint64

	// TxFrames counts frames written, and TxTunnelGSO the UDP-tunnel
	// segmentation jobs among them.
	TxFrames, TxTunnelGSO uint64
	// TxErrors counts frames the kernel refused or that could not be
	// described to it; dropped.
	TxErrors uint64
	// TxOffloadFallbacks counts segmentation jobs the kernel refused
	// (EINVAL), after which the offload was switched off.
	TxOffloadFallbacks uint64
}
