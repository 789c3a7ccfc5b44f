package nsudp

import (
	"net/netip"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Options configures a Transport transport.
type Options struct {
	// Stack is the underlay netstack; NIC is its NIC that carries the
	// Geneve traffic. Local.Addr() must be assigned to that NIC.
	Stack *stack.Stack
	NIC   tcpip.NICID
	Local netip.AddrPort

	// MTU is the underlay IP MTU; 0 means the NIC's MTU.
	MTU int

	// MulticastTTL is the TTL of datagrams sent to a multicast group when
	// the packet does not set one; 0 means 64 (as geneve(4) does).
	MulticastTTL uint8

	// NoChecksum4 sends IPv4 datagrams with a zero UDP checksum (RFC 8926
	// §4.3 allows it).
	NoChecksum4 bool

	// ZeroChecksumTx6 sends IPv6 datagrams with a zero UDP checksum (RFC
	// 8926 §4.3.1 allows it only when configured, in a controlled network;
	// RFC 6935/6936). Possible here because the transport writes the UDP
	// header itself.
	ZeroChecksumTx6 bool

	// Segmenter is the link endpoint that takes UDP segmentation jobs
	// (link.GSOUDPL4) for this transport's NIC; nil means the NIC's link
	// endpoint if it implements link.UDPSegmenter. Set it when the endpoint is
	// wrapped (a capture, say) in something that does not. Jobs are built
	// only while Segmenter.UDPSegmentation says so.
	Segmenter link.UDPSegmenter

	// link.TunnelSegmenter is the link endpoint that takes UDP-tunnel
	// segmentation jobs (link.GSOUDPTunnel) for this transport's NIC; nil means
	// the NIC's link endpoint if it implements link.TunnelSegmenter. Like
	// Segmenter, set it when the endpoint is wrapped.
	TunnelSegmenter link.TunnelSegmenter

	// ZeroChecksumRx6 accepts IPv6 datagrams with a zero UDP checksum
	// (RFC 8926 §4.3.1 allows it only when configured). IPv4 datagrams with
	// a zero checksum are always accepted.
	ZeroChecksumRx6 bool

	// QueueLen bounds the datagrams waiting for the receiver; 0 means 4096.
	QueueLen int

	// BatchSize is the most datagrams handed to the receiver at once; 0
	// means 64.
	BatchSize int
}

// Stats is a snapshot of a Transport's counters, as Transport.Stats
// returns it.
type Stats struct {
	// TxDatagrams counts datagrams handed to the underlay stack (those of
	// segmentation jobs one by one).
	TxDatagrams uint64
	// TxErrors counts datagrams that could not be sent: no route, or
	// refused by the underlay stack.
	TxErrors uint64
	// TxGSOJobs counts runs of datagrams handed to the underlay NIC as one
	// UDP segmentation job, and TxGSODatagrams the datagrams in them (they
	// count in TxDatagrams too).
	TxGSOJobs, TxGSODatagrams uint64
	// TxTunnelJobs counts UDP-tunnel segmentation jobs (link.Packet.InnerMSS)
	// handed to the underlay NIC.
	TxTunnelJobs uint64
	// RxDatagrams counts datagrams handed to the receiver.
	RxDatagrams uint64
	// RxSuperFrames counts UDP super-frames (link.SetReceiveUDPSegments)
	// whose datagrams were handed over out of one packet (they count in
	// RxDatagrams).
	RxSuperFrames uint64
	// RxMalformed counts datagrams whose UDP length is wrong.
	RxMalformed uint64
	// RxChecksumErrors counts datagrams with a bad UDP checksum, and IPv6
	// datagrams with a zero checksum unless ZeroChecksumRx6 is set.
	RxChecksumErrors uint64
	// RxQueueFull counts datagrams dropped because the receiver fell
	// QueueLen datagrams behind.
	RxQueueFull uint64
	// RxNotStarted counts datagrams that arrived before Start or after
	// Close.
	RxNotStarted uint64
	// ICMPErrors counts ICMP errors received for sent datagrams.
	ICMPErrors uint64
}
