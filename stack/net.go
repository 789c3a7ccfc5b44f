package stack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// errNoOverlay is returned by the net-style methods of a tunnel patched to
// a TAP/TUN device, which has no in-process overlay.
var errNoOverlay = errors.New("the tunnel has no in-process overlay (it is patched to a TAP/TUN device): use the device")

// Net offers a netstack through the shapes of the standard net package. A
// Tunnel embeds the Net of its overlay; NewNet wraps any other netstack.
type Net struct {
	s        *tcpipstack.Stack
	isClosed atomic.Bool // set by Close
	dns      atomic.Pointer[dnsConfig]
}

// NewNet wraps a netstack.
func NewNet(s *tcpipstack.Stack) *Net { return &Net{s: s} }

// Stack returns the wrapped netstack.
func (t *Net) Stack() *tcpipstack.Stack {
	if t == nil {
		return nil
	}
	return t.s
}

// DialContext connects to address over the overlay, like net.Dialer's
// DialContext. network is "tcp", "tcp4", "tcp6", "udp", "udp4" or "udp6";
// the host part of address is an IP literal, or a name when DNS servers
// are set (SetDNS).
//
// Errors are *net.OpError, as the net package returns them. The overlay's
// connect errors carry the matching syscall.Errno (wrapped in an
// *os.SyscallError), so errors.Is(err, syscall.ECONNREFUSED) and the like
// work as for a kernel socket: ECONNREFUSED (the peer reset the SYN),
// EHOSTUNREACH (no route, or neighbour resolution failed), ENETUNREACH
// (no route for the address family), ETIMEDOUT (the SYN retries ran out).
// When ctx ends first, Err is ctx.Err(). After the tunnel is closed, the
// error matches net.ErrClosed.
func (t *Net) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return t.dial(ctx, network, address, nil)
}

// knownNetwork reports whether network is one the dials take.
func knownNetwork(network string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		return true
	}
	return false
}

// resolve checks a net-style network and address for op ("dial" or
// "listen"; wildcard allows an empty host) and returns the netstack
// address, network protocol and transport protocol. Errors are
// *net.OpError, as the net package returns them.
func (t *Net) resolve(op, network, address string, wildcard bool) (tcpip.FullAddress, tcpip.NetworkProtocolNumber, tcpip.TransportProtocolNumber, error) {
	fail := func(err error) (tcpip.FullAddress, tcpip.NetworkProtocolNumber, tcpip.TransportProtocolNumber, error) {
		return tcpip.FullAddress{}, 0, 0, &net.OpError{Op: op, Net: network, Err: err}
	}
	if t == nil {
		return fail(errNoOverlay)
	}
	if t.closed() {
		return fail(net.ErrClosed)
	}
	var transport tcpip.TransportProtocolNumber
	switch network {
	case "tcp", "tcp4", "tcp6":
		transport = tcp.ProtocolNumber
	case "udp", "udp4", "udp6":
		transport = udp.ProtocolNumber
	default:
		return fail(net.UnknownNetworkError(network))
	}
	ap, proto, err := parseAddr(network, address, wildcard)
	if err != nil {
		return fail(err)
	}
	return fullAddr(ap), proto, transport, nil
}

// Listen listens for TCP connections on the overlay, like net.Listen.
// An empty or unspecified host listens on every overlay address (IPv4 and
// IPv6 for "tcp"). Bind errors carry a syscall.Errno (EADDRINUSE,
// EADDRNOTAVAIL); after the tunnel is closed the error matches
// net.ErrClosed.
func (t *Net) Listen(network, address string) (net.Listener, error) {
	ep, wq, addr, err := t.bind(network, address, tcp.ProtocolNumber)
	if err != nil {
		return nil, err
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: addr, Err: tcpipError("listen", terr)}
	}
	return gonet.NewTCPListener(t.s, wq, ep), nil
}

// listenBacklog is the accept queue of Listen's listeners, the usual
// Linux somaxconn (as gonet.ListenTCP uses).
const listenBacklog = 4096

// ListenPacket opens a UDP socket on the overlay, like net.ListenPacket.
// Errors are as for Listen.
func (t *Net) ListenPacket(network, address string) (net.PacketConn, error) {
	ep, wq, _, err := t.bind(network, address, udp.ProtocolNumber)
	if err != nil {
		return nil, err
	}
	return gonet.NewUDPConn(wq, ep), nil
}

// bind makes an endpoint of transport for Listen or ListenPacket and binds
// it to address; it returns the endpoint, its wait queue and the bound
// address for error messages.
func (t *Net) bind(network, address string, want tcpip.TransportProtocolNumber) (tcpip.Endpoint, *waiter.Queue, net.Addr, error) {
	fa, proto, transport, err := t.resolve("listen", network, address, true)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(addr net.Addr, err error) (tcpip.Endpoint, *waiter.Queue, net.Addr, error) {
		return nil, nil, nil, &net.OpError{Op: "listen", Net: network, Addr: addr, Err: err}
	}
	if transport != want {
		return fail(nil, net.UnknownNetworkError(network))
	}
	wq := new(waiter.Queue)
	ep, terr := t.s.NewEndpoint(transport, proto, wq)
	if terr != nil {
		return fail(nil, errors.New(terr.String()))
	}
	addr := netAddr(transport, fa)
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return fail(addr, tcpipError("bind", terr))
	}
	return ep, wq, addr, nil
}

// Close marks t closed: from then on its methods fail with net.ErrClosed.
// It does not touch the netstack, which belongs to whoever created it
// (Tunnel.Close calls it before shutting its overlay down).
func (t *Net) Close() error {
	t.isClosed.Store(true)
	return nil
}

func (t *Net) closed() bool { return t.isClosed.Load() }

// tcpipError turns a netstack error into the error a kernel socket call
// named call would return: an *os.SyscallError with the matching
// syscall.Errno where there is one, else the netstack's message.
func tcpipError(call string, terr tcpip.Error) error {
	var errno syscall.Errno
	switch terr.(type) {
	case *tcpip.ErrConnectionRefused:
		errno = syscall.ECONNREFUSED
	case *tcpip.ErrHostUnreachable:
		errno = syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		errno = syscall.ENETUNREACH
	case *tcpip.ErrHostDown:
		errno = syscall.EHOSTDOWN
	case *tcpip.ErrTimeout:
		errno = syscall.ETIMEDOUT
	case *tcpip.ErrConnectionReset:
		errno = syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		errno = syscall.ECONNABORTED
	case *tcpip.ErrPortInUse, *tcpip.ErrAlreadyBound:
		errno = syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress, *tcpip.ErrNoPortAvailable:
		errno = syscall.EADDRNOTAVAIL
	default:
		return errors.New(terr.String())
	}
	return os.NewSyscallError(call, errno)
}

// netAddr is fa as a *net.TCPAddr or *net.UDPAddr, for error messages.
func netAddr(transport tcpip.TransportProtocolNumber, fa tcpip.FullAddress) net.Addr {
	var ip net.IP
	if fa.Addr.Len() > 0 {
		ip = net.IP(fa.Addr.AsSlice())
	}
	if transport == tcp.ProtocolNumber {
		return &net.TCPAddr{IP: ip, Port: int(fa.Port)}
	}
	return &net.UDPAddr{IP: ip, Port: int(fa.Port)}
}

// parseAddr parses host:port for network. wildcard allows an empty host.
func parseAddr(network, address string, wildcard bool) (netip.AddrPort, tcpip.NetworkProtocolNumber, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, 0, fmt.Errorf("port %q: want 0..65535", portStr)
	}
	var a netip.Addr
	if host != "" {
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, 0, &net.AddrError{Err: errNoAddress.Error(), Addr: host}
		}
		a = a.Unmap()
	} else if !wildcard {
		return netip.AddrPort{}, 0, fmt.Errorf("address %q: missing host", address)
	}
	last := network[len(network)-1]
	switch {
	case last == '4' && a.IsValid() && !a.Is4(), last == '6' && a.Is4():
		return netip.AddrPort{}, 0, fmt.Errorf("address %s is not of network %s", a, network)
	}
	proto := ipv4.ProtocolNumber
	if a.Is6() || (!a.IsValid() && last != '4') {
		proto = ipv6.ProtocolNumber
	}
	if a.IsUnspecified() {
		a = netip.Addr{}
	}
	return netip.AddrPortFrom(a, uint16(port)), proto, nil
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: ap.Port()}
	if ap.Addr().IsValid() {
		fa.Addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return fa
}

// Ping sends one ICMP or ICMPv6 echo request over the overlay and waits for
// the reply, returning the round-trip time. seq is the echo sequence
// number; size is the payload size.
func (t *Net) Ping(ctx context.Context, dst netip.Addr, seq uint16, size int) (time.Duration, error) {
	if t == nil {
		return 0, errNoOverlay
	}
	dst = dst.Unmap()
	netProto, transProto := ipv4.ProtocolNumber, icmp.ProtocolNumber4
	if dst.Is6() {
		netProto, transProto = ipv6.ProtocolNumber, icmp.ProtocolNumber6
	}
	var wq waiter.Queue
	ep, terr := t.s.NewEndpoint(transProto, netProto, &wq)
	if terr != nil {
		return 0, fmt.Errorf("ping: %s", terr)
	}
	defer ep.Close()
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	msg := make([]byte, header.ICMPv4MinimumSize+size)
	if dst.Is4() {
		msg[0] = byte(header.ICMPv4Echo)
	} else {
		msg[0] = byte(header.ICMPv6EchoRequest)
	}
	binary.BigEndian.PutUint16(msg[6:8], seq)
	for i := header.ICMPv4MinimumSize; i < len(msg); i++ {
		msg[i] = byte(i)
	}
	to := fullAddr(netip.AddrPortFrom(dst, 0))
	start := time.Now()
	var r bytesReader
	r.b = msg
	if _, terr := ep.Write(&r, tcpip.WriteOptions{To: &to}); terr != nil {
		return 0, fmt.Errorf("ping %s: %s", dst, terr)
	}
	buf := make([]byte, len(msg)+64)
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				return 0, fmt.Errorf("ping %s: %w", dst, ctx.Err())
			}
		}
		if terr != nil {
			return 0, fmt.Errorf("ping %s: %s", dst, terr)
		}
		reply := buf[:res.Count]
		if len(reply) >= 8 && binary.BigEndian.Uint16(reply[6:8]) == seq {
			if string(reply[8:]) != string(msg[8:]) {
				return 0, errors.New("ping: echo reply payload differs from the request")
			}
			return time.Since(start), nil
		}
	}
}

// bytesReader is a minimal tcpip.Payloader.
type bytesReader struct{ b []byte }

// Read implements io.Reader.
func (r *bytesReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// Len implements tcpip.Payloader.
func (r *bytesReader) Len() int { return len(r.b) }

// DialContextMark is DialContext with the socket mark (SO_MARK) set on the
// overlay socket before it connects, so every packet of the connection
// carries the mark. Geneve endpoints map marks to per-packet options
// (endpoint.Endpoint.SetMarkOptions); Tunnel.DialContextOptions does both.
func (t *Net) DialContextMark(ctx context.Context, network, address string, mark uint32) (net.Conn, error) {
	return t.dial(ctx, network, address, &mark)
}

// dial is DialContext, with the socket mark set first if mark is not nil.
func (t *Net) dial(ctx context.Context, network, address string, mark *uint32) (net.Conn, error) {
	if t != nil && knownNetwork(network) {
		if d := t.dns.Load(); d != nil {
			if host, port, err := net.SplitHostPort(address); err == nil && host != "" {
				if _, err := netip.ParseAddr(host); err != nil {
					return t.dialName(ctx, d, network, host, port, mark)
				}
			}
		}
	}
	fa, proto, transport, err := t.resolve("dial", network, address, false)
	if err != nil {
		return nil, err
	}
	addr := netAddr(transport, fa)
	fail := func(err error) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: addr, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	var wq waiter.Queue
	ep, terr := t.s.NewEndpoint(transport, proto, &wq)
	if terr != nil {
		return fail(errors.New(terr.String()))
	}
	if mark != nil {
		ep.SocketOptions().SetMark(*mark)
	}
	if transport == udp.ProtocolNumber {
		if terr := ep.Connect(fa); terr != nil {
			ep.Close()
			return fail(tcpipError("connect", terr))
		}
		return gonet.NewUDPConn(&wq, ep), nil
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return fail(ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return fail(tcpipError("connect", terr))
	}
	return gonet.NewTCPConn(&wq, ep), nil
}
