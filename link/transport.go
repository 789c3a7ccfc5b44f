// Package link holds gnv's underlay transports and host-facing devices.
//
// An underlay Transport moves Geneve datagrams (the UDP payload: Geneve header
// plus the encapsulated frame) between this host and its peers. Transports are
// batch-shaped in both directions so that implementations can use sendmmsg,
// recvmmsg, UDP GSO/GRO or a netstack route without a syscall or allocation per
// packet.
package link

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
)

// Packet is one outgoing Geneve datagram.
type Packet struct {
	// Payload is the UDP payload (Geneve header, options and inner frame).
	// It is borrowed: the transport reads it during WriteBatch and must not
	// keep a reference after WriteBatch returns unless it takes its own
	// (buffer.Buffer.Clone).
	Payload buffer.Buffer

	// Dst is the outer destination address and UDP port.
	Dst netip.AddrPort

	// SrcPort is the outer UDP source port (flow entropy, RFC 8926 §3.3).
	// Zero means the transport's bound port.
	SrcPort uint16

	// TOS is the outer IPv4 TOS / IPv6 traffic class byte, ECN included.
	TOS uint8

	// TTL is the outer IPv4 TTL / IPv6 hop limit. Zero means the
	// transport's default (unicast or multicast TTL as appropriate).
	TTL uint8

	// DF asks for the IPv4 Don't Fragment bit. Ignored on IPv6.
	DF bool

	// FlowLabel is the outer IPv6 flow label (20 bits; RFC 6438 entropy).
	// Zero leaves it to the transport: netstack sends 0, a kernel socket
	// its automatic per-socket label.
	FlowLabel uint32

	// InnerMSS, when not zero, says that Payload holds an unsegmented inner
	// TCP super-packet (a UDP-tunnel segmentation job) to be cut into
	// segments of InnerMSS TCP payload bytes below the transport, each
	// sent as its own Geneve datagram with a copy of all the headers. Its
	// inner TCP checksum field holds the pseudo-header sum over the whole
	// TCP length (a partial checksum). Only set for transports whose
	// TunnelSegmentation says yes.
	InnerMSS uint16
}

// WireSourcePorter is implemented by transports that cannot send from any
// source port they are asked for (a kernel socket sends from the ports it
// has bound).
type WireSourcePorter interface {
	// WireSourcePort returns the outer UDP source port that a Packet with
	// SrcPort srcPort leaves from (srcPort 0: the bound port).
	WireSourcePort(srcPort uint16) uint16
}

// Datagram is one received Geneve datagram.
type Datagram struct {
	// Payload is the UDP payload. It is valid only until Receive returns.
	Payload []byte

	// Buffer, when not nil, is a gVisor buffer that holds the bytes of
	// Payload from byte BufferOff on. The receiver may keep a range of
	// them without copying, by taking its own reference (cloning Buffer,
	// then trimming the clone). Transports that reuse their receive
	// memory leave it nil, and the receiver copies Payload instead. Like
	// Payload it is borrowed: the receiver must not modify, release or
	// keep it. The datagrams cut from one received super-frame share
	// one Buffer, so that lending costs a reference per super-frame, not
	// per datagram.
	Buffer *buffer.Buffer

	// BufferOff is where Payload starts in Buffer.
	BufferOff int

	// Src is the outer source address and UDP port.
	Src netip.AddrPort

	// Dst is the outer destination address (a local unicast address or a
	// joined multicast group), when the transport knows it.
	Dst netip.Addr

	// TOS is the outer IPv4 TOS / IPv6 traffic class byte, ECN included.
	TOS uint8

	// TTL is the outer IPv4 TTL / IPv6 hop limit (0 if unknown).
	TTL uint8

	// Local says that the datagram was built on this host and has not
	// crossed a wire: the kernel handed it over with a partial checksum
	// (CHECKSUM_PARTIAL, VIRTIO_NET_HDR_F_NEEDS_CSUM). Its inner transport
	// checksum may then hold only the pseudo-header sum, as Linux leaves
	// it for the device that never computes it (a veth); like Linux, the
	// receiver trusts such checksums. Only transports that see the
	// kernel's offload metadata (a virtio_net_hdr) set it.
	Local bool

	// InnerMSS, when not zero, says that the datagram is an unsegmented
	// UDP-tunnel super-packet (see Packet.InnerMSS) whose inner TCP
	// segments carry InnerMSS payload bytes each.
	InnerMSS uint16
}

// Receiver consumes batches of received datagrams. Receive is called from
// the transport's receive goroutine, never concurrently with itself for the
// same transport. The datagrams and their payloads are only valid during the
// call.
type Receiver interface {
	Receive(batch []Datagram)
}

// Transport is an underlay: it sends and receives Geneve datagrams.
type Transport interface {
	// WriteBatch sends pkts and returns how many were handed to the
	// underlay. A datagram the underlay refuses is counted by the transport
	// and reported through err; the rest of the batch is still attempted.
	// WriteBatch may be called concurrently.
	WriteBatch(pkts []Packet) (int, error)

	// Start begins delivering received datagrams to r. It is called once.
	Start(r Receiver) error

	// LocalAddr is the bound local address and UDP port.
	LocalAddr() netip.AddrPort

	// MTU is the underlay's IP MTU (the largest outer IP packet), used to
	// derive the tunnel MTU.
	MTU() int

	// JoinGroup joins a multicast group on the underlay (IGMP/MLD reports
	// are sent by whoever owns the IP layer).
	JoinGroup(group netip.Addr) error

	// LeaveGroup leaves a group joined with JoinGroup.
	LeaveGroup(group netip.Addr) error

	// Close stops the receive goroutine, waits for it and releases the
	// socket. It is safe to call more than once.
	Close() error
}
