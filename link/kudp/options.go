// Package kudp is a link.Transport on an ordinary kernel UDP socket: the
// rootless underlay. It sends from a pool of sockets so that the outer
// source port follows the flow (RFC 8926 §3.3). On Linux, Transport
// batches with recvmmsg/sendmmsg and uses UDP GSO and GRO when the kernel
// has them; elsewhere Transport is Portable, one datagram per system call
// through package net, which NewPortable also opens on Linux.
package kudp

import (
	"errors"
	"fmt"
	"net/netip"
)

// Defaults used by New for zero-valued Options fields.
const (
	// DefaultBuffer is the default SO_RCVBUF and SO_SNDBUF request
	// (8 MiB). With the kernel defaults a kernel-UDP underlay measured 493
	// TCP retransmits per 16 MiB of overlay traffic; with 8 MiB, one.
	DefaultBuffer = 8 << 20

	// DefaultBatchSize is the default number of datagrams per
	// recvmmsg and of messages per sendmmsg.
	DefaultBatchSize = 64

	// DefaultMTU is the underlay IP MTU used when none can be
	// found, and for loopback (whose real MTU of 65536 no wire has).
	DefaultMTU = 1500

	// DefaultMulticastTTL is the default TTL / hop limit of multicast
	// datagrams: 1, the kernel's own default and what Linux VXLAN uses for
	// multicast, so flooded traffic stays on the local link unless
	// configured otherwise.
	DefaultMulticastTTL = 1

	// maxBatch caps BatchSize at the kernel's UIO_MAXIOV, the
	// largest vlen recvmmsg/sendmmsg accept.
	maxBatch = 1024

	// DefaultSourcePorts is the default number of extra send-only
	// sockets that give outgoing datagrams different source ports (see
	// Options.SourcePorts).
	DefaultSourcePorts = 16

	// maxSourcePorts caps Options.SourcePorts.
	maxSourcePorts = 1024
)

// Options configures New.
type Options struct {
	// Local is the address and port to bind. Port 0 lets the kernel choose
	// (see LocalAddr). The address may be invalid or unspecified to bind
	// the wildcard address of Family. An IPv4-mapped IPv6 address is
	// treated as IPv4.
	Local netip.AddrPort

	// Family is 4 or 6. It is required when Local.Addr() is invalid, picks
	// the wildcard family when Local.Addr() is unspecified, and must match
	// Local.Addr() otherwise. IPv6 sockets are IPV6_V6ONLY: one Transport
	// carries one address family.
	Family int

	// Device is an optional interface name. Binding to a device
	// (SO_BINDTODEVICE) needs privileges, so it is used only for multicast:
	// as IP_MULTICAST_IF / IPV6_MULTICAST_IF, as the interface of
	// JoinGroup, as the scope of zone-less link-local destinations, and for
	// the default MTU.
	Device string

	// MTU is the underlay IP MTU. Zero means the MTU of Device, else of the
	// interface owning Local.Addr(), else DefaultMTU. Loopback
	// interfaces count as DefaultMTU (1500) so that tests over lo
	// behave like a real wire.
	MTU int

	// ReadBuffer and WriteBuffer are the socket buffer sizes requested with
	// SO_RCVBUFFORCE / SO_SNDBUFFORCE, falling back silently to SO_RCVBUF /
	// SO_SNDBUF (which the kernel caps at net.core.rmem_max / wmem_max)
	// when that is not permitted. Zero means DefaultBuffer; a
	// negative value keeps the kernel default.
	ReadBuffer, WriteBuffer int

	// BatchSize is the number of datagrams per recvmmsg and of messages
	// per sendmmsg. Zero means DefaultBatchSize; at most 1024.
	// The receive side keeps BatchSize buffers of 64 KiB.
	BatchSize int

	// MulticastTTL is the TTL / hop limit of multicast datagrams whose
	// Packet.TTL is zero: 1..255, zero means DefaultMulticastTTL (1).
	MulticastTTL int

	// MulticastLoop delivers this socket's multicast datagrams to local
	// listeners too (IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP). Off by
	// default.
	MulticastLoop bool

	// DontFragment sets IP_MTU_DISCOVER=IP_PMTUDISC_DO (IPv6:
	// IPV6_MTU_DISCOVER=IPV6_PMTUDISC_DO): every IPv4 datagram carries DF,
	// and a datagram larger than the path MTU fails with EMSGSIZE instead of
	// being fragmented locally. When false the socket gets
	// IP_PMTUDISC_DONT (IPV6_PMTUDISC_DONT): IPv4 datagrams leave with DF
	// clear, as Geneve's default outer DF policy (endpoint.DFUnset, as in
	// FreeBSD's geneve(4)) wants, and oversized ones are fragmented; the
	// kernel's own default ("want") would set DF. Per-packet DF
	// (Packet.DF) is not possible on a kernel socket and is ignored.
	// Transport.SetDontFragment changes it later.
	DontFragment bool

	// NoChecksumTx4 sends IPv4 datagrams with a zero UDP checksum
	// (SO_NO_CHECK). Ignored on IPv6. Disables GSO.
	NoChecksumTx4 bool

	// ZeroChecksumTx6 sends IPv6 datagrams with a zero UDP checksum
	// (UDP_NO_CHECK6_TX); RFC 8926 §4.3.1 allows this only as a configured,
	// non-default mode. Ignored on IPv4. Disables GSO.
	ZeroChecksumTx6 bool

	// ZeroChecksumRx6 accepts IPv6 datagrams with a zero UDP checksum
	// (UDP_NO_CHECK6_RX); without it the kernel drops them. Ignored on
	// IPv4 (IPv4 zero checksums are always accepted).
	ZeroChecksumRx6 bool

	// SourcePorts is the number of extra send-only sockets used to give
	// datagrams of different flows different outer UDP source ports (flow
	// entropy for ECMP, RFC 8926 §3.3). Zero means
	// DefaultSourcePorts (16); a negative value disables the pool,
	// and every datagram leaves from the bound port. At most 1024.
	//
	// Each extra socket is bound to the same local address with port 0 (the
	// kernel picks an ephemeral port) and has the main socket's send-side
	// options. A packet with a non-zero Packet.SrcPort is sent from extra
	// socket SrcPort % SourcePorts; SrcPort 0 uses the main socket. So the
	// source port on the wire is one of these ephemeral ports, not SrcPort
	// itself: the same flow always gets the same port, and there are
	// SourcePorts different ones. The extra sockets are never read: peers
	// send to the Geneve port, and anything arriving on an extra socket's
	// port fills its small receive buffer and is then dropped by the
	// kernel. Each extra socket costs a file descriptor; if they cannot be
	// created (EMFILE, for example), the transport silently uses the main
	// socket only (see (*Transport).SourcePorts).
	SourcePorts int

	// DisableGSO and DisableGRO turn off UDP_SEGMENT sends and UDP_GRO
	// receives even when the kernel supports them.
	DisableGSO, DisableGRO bool

	// forceGSO (tests only) keeps GSO on even with a zero-checksum TX
	// option, to exercise the run-time fallback.
	forceGSO bool
}

// Stats are the counters of a Transport, as returned by Stats.
type Stats struct {
	// DatagramsSent and BytesSent count datagrams (and their UDP payload
	// bytes) the kernel accepted, GSO segments counted one by one.
	DatagramsSent, BytesSent uint64

	// SendErrors counts datagrams that were not sent: refused by the
	// kernel (EMSGSIZE, ENETUNREACH, …) or with an unusable Dst.
	SendErrors uint64

	// GSOSends counts messages sent as one UDP_SEGMENT super-datagram.
	GSOSends uint64

	// GSOFallbacks counts GSO messages the kernel refused and that were
	// resent without GSO.
	GSOFallbacks uint64

	// DatagramsReceived and BytesReceived count delivered datagrams (after
	// GRO splitting) and their UDP payload bytes.
	DatagramsReceived, BytesReceived uint64

	// GROSplits counts received messages that carried a UDP_GRO control
	// message and were split into several datagrams.
	GROSplits uint64

	// Truncated counts received messages dropped because they did not fit
	// the receive buffer (MSG_TRUNC).
	Truncated uint64

	// ReceiveErrors counts failed recvmmsg calls (other than EAGAIN/EINTR).
	ReceiveErrors uint64
}

var (
	errFamilyMismatch = errors.New("kernel UDP: address family does not match the socket")
	errBadDst         = errors.New("kernel UDP: invalid destination address")
	errBadJob         = errors.New("kernel UDP: a tunnel segmentation job that cannot be cut (malformed, or UDP GSO is off)")
	errNotMulticast   = errors.New("kernel UDP: not a multicast group address")
	errAlreadyStarted = errors.New("kernel UDP: transport already started")
	errNilReceiver    = errors.New("kernel UDP: nil link.Receiver")
)

// config is Options after defaults and validation.
type config struct {
	Options
	v6   bool
	bind netip.Addr // address to bind, of the right family
}

// normalize validates o and fills in defaults.
func (o Options) normalize() (config, error) {
	c := config{Options: o}
	a := o.Local.Addr().Unmap()
	switch o.Family {
	case 0, 4, 6:
	default:
		return c, fmt.Errorf("kernel UDP: Family %d, want 4 or 6", o.Family)
	}
	switch {
	case !a.IsValid():
		if o.Family == 0 {
			return c, errors.New("kernel UDP: Family is required when Local has no address")
		}
		c.v6 = o.Family == 6
	case a.IsUnspecified() && o.Family != 0:
		c.v6 = o.Family == 6
	default:
		c.v6 = a.Is6()
		if o.Family != 0 && (o.Family == 6) != c.v6 {
			return c, fmt.Errorf("kernel UDP: Local %v is not IPv%d", a, o.Family)
		}
	}
	switch {
	case a.IsValid() && !a.IsUnspecified():
		c.bind = a
	case c.v6:
		c.bind = netip.IPv6Unspecified()
	default:
		c.bind = netip.IPv4Unspecified()
	}
	if c.MTU < 0 {
		return c, fmt.Errorf("kernel UDP: MTU %d", c.MTU)
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = DefaultBuffer
	}
	if c.WriteBuffer == 0 {
		c.WriteBuffer = DefaultBuffer
	}
	switch {
	case c.BatchSize == 0:
		c.BatchSize = DefaultBatchSize
	case c.BatchSize < 0:
		return c, fmt.Errorf("kernel UDP: BatchSize %d", c.BatchSize)
	case c.BatchSize > maxBatch:
		c.BatchSize = maxBatch
	}
	switch {
	case c.MulticastTTL == 0:
		c.MulticastTTL = DefaultMulticastTTL
	case c.MulticastTTL < 0 || c.MulticastTTL > 255:
		return c, fmt.Errorf("kernel UDP: MulticastTTL %d", c.MulticastTTL)
	}
	switch {
	case c.SourcePorts == 0:
		c.SourcePorts = DefaultSourcePorts
	case c.SourcePorts < 0:
		c.SourcePorts = 0
	case c.SourcePorts > maxSourcePorts:
		c.SourcePorts = maxSourcePorts
	}
	return c, nil
}
