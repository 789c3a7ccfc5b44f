package socks5

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Version is the SOCKS protocol version, 5.
const Version = 5

// Authentication methods (RFC 1928 §3).
const (
	MethodNoAuth       = 0x00 // no authentication required
	MethodUserPass     = 0x02 // username/password (RFC 1929)
	MethodNoAcceptable = 0xff // no acceptable methods
)

// Address types (RFC 1928 §5).
const (
	AddrIPv4   = 1
	AddrDomain = 3
	AddrIPv6   = 4
)

// Command is a request's CMD (RFC 1928 §4).
type Command byte

// The commands of RFC 1928.
const (
	Connect      Command = 1
	Bind         Command = 2
	UDPAssociate Command = 3
)

// String names the command.
func (c Command) String() string {
	switch c {
	case Connect:
		return "CONNECT"
	case Bind:
		return "BIND"
	case UDPAssociate:
		return "UDP ASSOCIATE"
	}
	return "command " + strconv.Itoa(int(c))
}

// Reply is a reply's REP field (RFC 1928 §6): what became of a request.
type Reply byte

// The reply codes of RFC 1928.
const (
	Succeeded               Reply = 0
	GeneralFailure          Reply = 1
	NotAllowed              Reply = 2
	NetworkUnreachable      Reply = 3
	HostUnreachable         Reply = 4
	ConnectionRefused       Reply = 5
	TTLExpired              Reply = 6
	CommandNotSupported     Reply = 7
	AddressTypeNotSupported Reply = 8
)

var replyNames = [...]string{
	"succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
	"network unreachable", "host unreachable", "connection refused", "TTL expired",
	"command not supported", "address type not supported",
}

// String is the reply's meaning, as RFC 1928 words it.
func (r Reply) String() string {
	if int(r) < len(replyNames) {
		return replyNames[r]
	}
	return "reply " + strconv.Itoa(int(r))
}

// Addr is a SOCKS5 address: an IP address or a domain name, and a port.
type Addr struct {
	// IP is the address, if it is one; else Name is set.
	IP netip.Addr
	// Name is a domain name (at most 255 bytes), if the address is one.
	Name string
	// Port is the port.
	Port uint16
}

// AddrFromAddrPort returns ap as an Addr.
func AddrFromAddrPort(ap netip.AddrPort) Addr { return Addr{IP: ap.Addr(), Port: ap.Port()} }

// String formats the address as host:port, IPv6 in brackets.
func (a Addr) String() string {
	host := a.Name
	if a.IP.IsValid() {
		host = a.IP.Unmap().String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(a.Port)))
}

// AppendBinary appends the address as ATYP, ADDR and PORT.
func (a Addr) AppendBinary(b []byte) ([]byte, error) {
	switch {
	case a.IP.Is4():
		b = append(b, AddrIPv4)
		b = append(b, a.IP.AsSlice()...)
	case a.IP.Is6():
		b = append(b, AddrIPv6)
		b = append(b, a.IP.AsSlice()...)
	case a.Name != "":
		if len(a.Name) > 255 {
			return b, fmt.Errorf("socks5: domain name of %d bytes: at most 255", len(a.Name))
		}
		b = append(b, AddrDomain, byte(len(a.Name)))
		b = append(b, a.Name...)
	default:
		return b, errors.New("socks5: address has neither IP nor name")
	}
	return binary.BigEndian.AppendUint16(b, a.Port), nil
}

// ErrAddressType is returned (wrapped) for an address type that RFC 1928
// does not define; the answer to it is AddressTypeNotSupported.
var ErrAddressType = errors.New("socks5: unknown address type")

// readAddr reads ATYP, ADDR and PORT.
func readAddr(r io.Reader) (Addr, error) {
	var atyp [1]byte
	if _, err := io.ReadFull(r, atyp[:]); err != nil {
		return Addr{}, err
	}
	var a Addr
	switch atyp[0] {
	case AddrIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Addr{}, err
		}
		a.IP = netip.AddrFrom4(b)
	case AddrIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Addr{}, err
		}
		a.IP = netip.AddrFrom16(b)
	case AddrDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return Addr{}, err
		}
		if n[0] == 0 {
			return Addr{}, errors.New("socks5: empty domain name")
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(r, name); err != nil {
			return Addr{}, err
		}
		a.Name = string(name)
	default:
		return Addr{}, fmt.Errorf("%w %d", ErrAddressType, atyp[0])
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return Addr{}, err
	}
	a.Port = binary.BigEndian.Uint16(port[:])
	return a, nil
}

// Request is a client's request (RFC 1928 §4).
type Request struct {
	// Command is CMD: Connect, Bind, UDPAssociate, or another value
	// for the server to refuse.
	Command Command
	// Addr is DST.ADDR and DST.PORT: the destination for Connect; for
	// UDPAssociate, the address the client will send from (zeros if
	// it does not know).
	Addr Addr
}

// ReadRequest reads a request: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT.
// It reads no more than the request. Any command is returned for the
// caller to judge; an unknown address type is ErrAddressType.
func ReadRequest(r io.Reader) (Request, error) {
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Request{}, err
	}
	if h[0] != Version {
		return Request{}, fmt.Errorf("socks5: request version %d, want 5", h[0])
	}
	a, err := readAddr(r)
	if err != nil {
		return Request{}, err
	}
	return Request{Command: Command(h[1]), Addr: a}, nil
}

// AppendBinary appends the request in its wire form.
func (q Request) AppendBinary(b []byte) ([]byte, error) {
	return q.Addr.AppendBinary(append(b, Version, byte(q.Command), 0))
}

// AppendReply appends a reply (RFC 1928 §6) with BND.ADDR and BND.PORT
// set to bound, or 0.0.0.0:0 if bound is the zero Addr.
func AppendReply(b []byte, rep Reply, bound Addr) []byte {
	b = append(b, Version, byte(rep), 0)
	if !bound.IP.IsValid() && bound.Name == "" {
		bound.IP = netip.IPv4Unspecified()
	}
	out, err := bound.AppendBinary(b)
	if err != nil {
		return append(b, AddrIPv4, 0, 0, 0, 0, 0, 0)
	}
	return out
}

// UDPHeader is the header of a relayed UDP datagram (RFC 1928 §7): RSV,
// FRAG, ATYP, DST.ADDR, DST.PORT.
type UDPHeader struct {
	// Frag is the fragment number; 0 is a whole datagram.
	Frag byte
	// Addr is the destination (client to server) or the source (server
	// to client).
	Addr Addr
}

// ParseUDPDatagram splits a relayed datagram into its header and payload.
// The payload aliases b.
func ParseUDPDatagram(b []byte) (UDPHeader, []byte, error) {
	if len(b) < 4 {
		return UDPHeader{}, nil, fmt.Errorf("socks5: UDP datagram of %d bytes: too short for a header", len(b))
	}
	r := sliceReader{b: b[3:]}
	a, err := readAddr(&r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("socks5: UDP datagram of %d bytes: header truncated", len(b))
		}
		return UDPHeader{}, nil, err
	}
	return UDPHeader{Frag: b[2], Addr: a}, r.b, nil
}

// AppendBinary appends the header in its wire form; the payload follows.
func (h UDPHeader) AppendBinary(b []byte) ([]byte, error) {
	return h.Addr.AppendBinary(append(b, 0, 0, h.Frag))
}

// sliceReader reads a byte slice without copying what is left.
type sliceReader struct{ b []byte }

// Read implements io.Reader.
func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
