package endpoint

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"time"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Mode is what a Geneve endpoint carries.
type Mode int

const (
	// L2 carries Ethernet frames (protocol type 0x6558): the overlay NIC
	// has a MAC address and resolves neighbours with ARP and NDP.
	L2 Mode = iota
	// L3 carries bare IPv4 and IPv6 packets (protocol types 0x0800 and
	// 0x86DD): the overlay NIC is point-to-point with no link header.
	L3
)

// String returns "l2" or "l3".
func (m Mode) String() string {
	switch m {
	case L2:
		return "l2"
	case L3:
		return "l3"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "l2" or "l3".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "l2", "L2":
		return L2, nil
	case "l3", "L3":
		return L3, nil
	}
	return 0, fmt.Errorf("mode %q: valid modes are l2 and l3", s)
}

// DFMode is the outer IPv4 Don't Fragment policy.
type DFMode int

const (
	// DFUnset never sets DF (the default, as in geneve(4) and Linux).
	DFUnset DFMode = iota
	// DFSet always sets DF: the outer packet is never fragmented.
	DFSet
	// DFInherit copies the DF bit (only that bit) of an inner IPv4
	// packet, and sets DF for inner IPv6, which routers never fragment.
	// A kernel UDP socket cannot set DF per packet: on that underlay
	// inherit sends DF clear, as unset does (stack.KernelUDPUnderlay).
	DFInherit
)

// String returns "unset", "set" or "inherit".
func (d DFMode) String() string {
	switch d {
	case DFUnset:
		return "unset"
	case DFSet:
		return "set"
	case DFInherit:
		return "inherit"
	}
	return fmt.Sprintf("DFMode(%d)", int(d))
}

// ParseDFMode parses "unset", "set" or "inherit".
func ParseDFMode(s string) (DFMode, error) {
	switch s {
	case "unset":
		return DFUnset, nil
	case "set":
		return DFSet, nil
	case "inherit":
		return DFInherit, nil
	}
	return 0, fmt.Errorf("df %q: valid values are set, inherit and unset", s)
}

// OptionType identifies a Geneve option by class and type. The critical bit
// is part of the type.
type OptionType struct {
	Class uint16
	Type  uint8
}

// ControlFunc receives Geneve control packets (O bit set). hdr.Options and
// payload alias the receive buffer and are only valid during the call.
type ControlFunc func(hdr *geneve.Header, payload []byte, src netip.AddrPort)

// Default values.
const (
	DefaultSrcPortMin = 32768
	DefaultSrcPortMax = 61000
	DefaultTTL        = 64
	DefaultGSOMaxSize = 1 << 16
)

// Config configures one Geneve endpoint (one VNI on a Socket).
type Config struct {
	// VNI is the virtual network identifier, 0..16777215.
	VNI uint32

	// Mode is L2 (Ethernet inside) or L3 (IP inside).
	Mode Mode

	// Remotes are the unicast peers. In L2 mode, broadcast, multicast and
	// unknown unicast frames are replicated to every remote (head-end
	// replication); L3 mode takes at most one remote.
	Remotes []netip.Addr

	// Group is an underlay multicast group to send to instead of Remotes.
	Group netip.Addr

	// RemotePort is the destination UDP port; 0 means 6081.
	RemotePort uint16

	// MAC is the overlay NIC's address in L2 mode; empty means a random
	// locally administered unicast address.
	MAC tcpip.LinkAddress

	// MTU is the overlay IP MTU. 0 derives it from the underlay MTU minus
	// the outer headers and the options this endpoint sends.
	MTU uint32

	// SrcPortMin and SrcPortMax bound the outer UDP source port, chosen by
	// hashing the inner flow (RFC 8926 §3.3). 0 means 32768..61000.
	SrcPortMin, SrcPortMax uint16

	// TTL is the outer TTL / hop limit; 0 means 64.
	TTL uint8

	// MulticastTTL, if not 0, is the TTL of datagrams sent to the group
	// instead of TTL (geneve(4) uses TTL for both).
	MulticastTTL uint8

	// TTLInherit copies the inner TTL / hop limit into the outer header on
	// encapsulation, and the outer one into the inner header on
	// decapsulation (geneve(4)'s "genevettl inherit"). Frames that are not
	// IP get TTL.
	TTLInherit bool

	// TOS is the outer DSCP (the TOS byte's upper six bits). Its ECN bits
	// are ignored: the outer ECN field is always copied from the inner
	// header (RFC 6040 normal mode).
	TOS uint8

	// DSCPInherit copies the inner DSCP into the outer header on
	// encapsulation instead of TOS (geneve(4)'s "genevedscpinherit").
	DSCPInherit bool

	// DF is the outer IPv4 Don't Fragment policy.
	DF DFMode

	// FlowLabel sets the outer IPv6 flow label from the inner flow hash
	// (RFC 6438), for ECMP entropy in IPv6 underlays. The netstack underlay
	// sends it; a kernel socket uses its own automatic label instead.
	FlowLabel bool

	// Options are raw option TLVs added to every packet sent.
	Options []byte

	// MaxMarkOptions reserves room, in bytes, for per-packet options
	// attached with SetMarkOptions: the MTU is lowered by it (RFC 8926
	// §4.4.1: the MTU must assume the largest options the tunnel may send).
	MaxMarkOptions int

	// KnownCritical lists the critical options this endpoint understands;
	// packets with any other critical option are dropped (RFC 8926 §3.5.1).
	KnownCritical []OptionType

	// OnControl receives O-bit control packets. They are never delivered to
	// the overlay, whether or not OnControl is set.
	OnControl ControlFunc

	// Promiscuous makes an L2 endpoint deliver unicast frames for any MAC.
	Promiscuous bool

	// NoLearn turns off forwarding-table learning (L2; learning is on by
	// default, as geneve(4)'s genevelearn).
	NoLearn bool

	// FDBMax is the forwarding table's size, 1..16777216; 0 means 2000.
	FDBMax int

	// FDBTimeout is how long a learned entry lives without traffic, up to
	// 24h; 0 means 1200 s.
	FDBTimeout time.Duration

	// AcceptAnySource accepts packets from any outer source. By default a
	// unicast endpoint accepts only its remotes and the remotes of its
	// static forwarding entries (RFC 8926 §6.3); a multicast endpoint
	// accepts any source, since its peers are not configured.
	AcceptAnySource bool

	// Clock drives forwarding-table ageing; nil means the real clock.
	Clock tcpip.Clock

	// GSOMaxSize is the largest TCP super-packet the overlay stack may hand
	// down; the endpoint segments it before encapsulation. 0 means 65536;
	// use DisableGSO to turn it off.
	GSOMaxSize uint32

	// DisableGSO makes the overlay stack send MSS-sized packets.
	DisableGSO bool

	// DisableGRO turns off receive coalescing and receive checksum offload:
	// the overlay stack then validates every inner checksum itself, except
	// those of datagrams built on this host, which may be partial: marked
	// by the transport (link.Datagram.Local), or, from a kernel socket
	// that cannot mark them, a TCP checksum field holding exactly the
	// pseudo-header sum that is not the right checksum. Set it on the endpoints of an overlay stack
	// that forwards IP between its NICs: gVisor's forwarding copies a
	// packet without its segmentation offload (stack.GSO), so a coalesced
	// TCP packet larger than the MTU would leave fragmented (IPv4 without
	// DF) or be answered with Fragmentation Needed / Packet Too Big.
	DisableGRO bool
}

// Validate reports the first invalid field of c as a *FieldError, as New
// would, without creating anything. underlayFamily is 4 or 6, the address
// family of the socket the endpoint is for, or 0 when that is not known
// yet; the remotes or group must then agree with one another only.
func (c Config) Validate(underlayFamily int) error {
	_, err := c.validate(underlayFamily)
	return err
}

// validate checks c and fills in defaults; it returns a copy. Each error is
// a *FieldError.
func (c Config) validate(underlayFamily int) (Config, error) {
	if c.VNI > geneve.MaxVNI {
		return c, &FieldError{Field: "VNI", Value: c.VNI, Problem: "out of range", Valid: fmt.Sprintf("valid VNIs are 0..%d", geneve.MaxVNI)}
	}
	if c.Mode != L2 && c.Mode != L3 {
		return c, &FieldError{Field: "Mode", Value: int(c.Mode), Valid: "valid modes are l2 and l3"}
	}
	if c.Group.IsValid() && len(c.Remotes) > 0 {
		return c, &FieldError{Field: "Remotes", Problem: "and {Group} are exclusive", Valid: "give either remote addresses or one multicast group"}
	}
	if c.Group.IsValid() && !c.Group.IsMulticast() {
		return c, &FieldError{Field: "Group", Value: c.Group, Problem: "is not a multicast address", Valid: "want IPv4 224.0.0.0/4 or IPv6 ff00::/8"}
	}
	if c.Mode == L3 && len(c.Remotes) > 1 {
		return c, &FieldError{Field: "Remotes", Problem: fmt.Sprintf("given %d times", len(c.Remotes)), Valid: "an l3 endpoint takes one remote"}
	}
	for _, r := range c.Remotes {
		if !r.IsValid() || r.IsUnspecified() || r.IsMulticast() {
			return c, &FieldError{Field: "Remotes", Value: r, Problem: "must be a unicast address", Valid: "use {Group} for multicast"}
		}
	}
	if err := checkFamily(c, underlayFamily); err != nil {
		return c, err
	}
	if c.RemotePort == 0 {
		c.RemotePort = geneve.Port
	}
	if c.SrcPortMin == 0 && c.SrcPortMax == 0 {
		c.SrcPortMin, c.SrcPortMax = DefaultSrcPortMin, DefaultSrcPortMax
	}
	if c.SrcPortMin == 0 || c.SrcPortMin > c.SrcPortMax {
		field := "SrcPortMax"
		if c.SrcPortMin == 0 {
			field = "SrcPortMin"
		}
		return c, &FieldError{Field: field, Value: fmt.Sprintf("%d..%d", c.SrcPortMin, c.SrcPortMax), Valid: "want 1 <= min <= max <= 65535"}
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	c.TOS &^= ecnMask
	if c.DF < DFUnset || c.DF > DFInherit {
		return c, &FieldError{Field: "DF", Value: int(c.DF), Valid: "valid values are unset, set and inherit"}
	}
	if c.FDBMax == 0 {
		c.FDBMax = DefaultFDBMax
	}
	if c.FDBMax < 1 || c.FDBMax > MaxFDBMax {
		return c, &FieldError{Field: "FDBMax", Value: c.FDBMax, Problem: "out of range", Valid: fmt.Sprintf("valid sizes are 1..%d", MaxFDBMax)}
	}
	if c.FDBTimeout == 0 {
		c.FDBTimeout = DefaultFDBTimeout
	}
	if c.FDBTimeout < time.Second || c.FDBTimeout > MaxFDBTimeout {
		return c, &FieldError{Field: "FDBTimeout", Value: c.FDBTimeout, Problem: "out of range", Valid: fmt.Sprintf("valid timeouts are 1..%d seconds", MaxFDBTimeout/time.Second)}
	}
	if c.Clock == nil {
		c.Clock = tcpip.NewStdClock()
	}
	if len(c.Options) > geneve.MaxOptionsLen {
		return c, &FieldError{Field: "Options", Valid: fmt.Sprintf("%d bytes in all, at most %d fit in a Geneve header", len(c.Options), geneve.MaxOptionsLen)}
	}
	if c.MaxMarkOptions < 0 || c.MaxMarkOptions%4 != 0 || len(c.Options)+c.MaxMarkOptions > geneve.MaxOptionsLen {
		return c, &FieldError{Field: "MaxMarkOptions", Value: c.MaxMarkOptions, Valid: fmt.Sprintf("want a multiple of 4, with {Options}, at most %d bytes in all", geneve.MaxOptionsLen)}
	}
	if len(c.Options) > 0 {
		if err := geneve.ValidateOptions(c.Options); err != nil {
			return c, &FieldError{Field: "Options", Err: err}
		}
		c.Options = append([]byte(nil), c.Options...)
	}
	if c.Mode == L2 {
		if c.MAC == "" {
			c.MAC = randomMAC()
		}
		if len(c.MAC) != 6 {
			return c, &FieldError{Field: "MAC", Value: c.MAC, Valid: "want a 6-byte Ethernet address"}
		}
		if c.MAC[0]&1 != 0 {
			return c, &FieldError{Field: "MAC", Value: c.MAC, Problem: "is a multicast address", Valid: "want a unicast MAC"}
		}
	} else {
		c.MAC = ""
	}
	if c.GSOMaxSize == 0 {
		c.GSOMaxSize = DefaultGSOMaxSize
	}
	if c.DisableGSO {
		c.GSOMaxSize = 0
	}
	return c, nil
}

// checkFamily checks that the remotes or the group are of one address
// family, and of underlayFamily if that is not 0.
func checkFamily(c Config, underlayFamily int) error {
	fam := underlayFamily
	check := func(field string, a netip.Addr) error {
		f := 6
		if a.Unmap().Is4() {
			f = 4
		}
		if fam == 0 {
			fam = f
		} else if f != fam {
			return &FieldError{Field: field, Value: a, Problem: fmt.Sprintf("is IPv%d but the other underlay addresses are IPv%d", f, fam),
				Valid: "the underlay uses one address family"}
		}
		return nil
	}
	for _, r := range c.Remotes {
		if err := check("Remotes", r); err != nil {
			return err
		}
	}
	if c.Group.IsValid() {
		return check("Group", c.Group)
	}
	return nil
}

// randomMAC returns a random locally administered unicast MAC address.
func randomMAC() tcpip.LinkAddress {
	var b [6]byte
	_, _ = rand.Read(b[:])
	b[0] = b[0]&^1 | 2
	return tcpip.LinkAddress(b[:])
}

// TunnelMTU returns the overlay IP MTU for an underlay IP MTU: the underlay
// MTU minus the outer IP header (20 or 40 bytes), UDP (8), Geneve (8), the
// options (optLen bytes) and, in L2 mode, the inner Ethernet header (14).
// On a 1500-byte underlay with no options that is 1450/1430 in L2 and
// 1464/1444 in L3 mode for an IPv4/IPv6 underlay.
func TunnelMTU(underlayMTU int, underlayFamily int, mode Mode, optLen int) int {
	ipHdr := 20
	if underlayFamily == 6 {
		ipHdr = 40
	}
	mtu := underlayMTU - ipHdr - 8 - geneve.HeaderLen - optLen
	if mode == L2 {
		mtu -= 14
	}
	return mtu
}
