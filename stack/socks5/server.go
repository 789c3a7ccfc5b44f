// Package socks5 is a SOCKS5 server (RFC 1928) whose destinations are on a
// forward.Network, normally a tunnel's overlay: a rootless program (curl
// --socks5-hostname, a browser, ssh -o ProxyCommand) reaches overlay hosts
// through it without a TUN device.
//
// It serves CONNECT and UDP ASSOCIATE; BIND is answered "command not
// supported". Authentication is none, or username/password (RFC 1929)
// when Options.Authenticate is set. Failed requests get the reply code
// that says what happened (connection refused, host or network
// unreachable, TTL expired for a timeout) from the network's dial error;
// see ReplyFor.
//
// For UDP ASSOCIATE the server opens a relay socket on the client's side,
// on the IP address the client reached the server at, and one socket per
// address family on the destination network. Datagrams from the client
// carry the RFC 1928 §7 header naming their destination; replies come back
// with the header naming their source. Fragments (FRAG ≠ 0) are dropped
// and counted. The association ends when its TCP control connection
// closes.
package socks5

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/stack/forward"
	"github.com/gnv-project/gnv/stack/internal/proxyutil"
)

// Defaults of Options.
const (
	DefaultDialTimeout      = 30 * time.Second
	DefaultHandshakeTimeout = 30 * time.Second
)

// Options configure a Server. The zero value is ready to use.
type Options struct {
	// Logger receives failed requests at debug level, with the target,
	// the client and the reply code. nil discards them.
	Logger *slog.Logger
	// Authenticate, if set, makes username/password authentication
	// (RFC 1929) mandatory and judges each client's credentials; nil
	// means no authentication. Credentials returns one for a single
	// user.
	Authenticate func(user, password string) bool
	// DialTimeout bounds each CONNECT's dial; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the time from accepting a connection to
	// its request being read; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Relay is the network the UDP relay sockets are opened on: the
	// network the clients are on. nil means forward.Host{}.
	Relay forward.Network
}

// Credentials returns an Options.Authenticate that accepts user with
// password only, comparing in constant time.
func Credentials(user, password string) func(user, password string) bool {
	return proxyutil.Credentials(user, password)
}

// Stats are a Server's counters, a snapshot.
type Stats struct {
	// Connections counts the client connections accepted; Active those
	// open now.
	Connections, Active uint64
	// Replies counts the replies sent, by reply code.
	Replies [9]uint64
	// AuthFailures counts clients that offered no acceptable method or
	// wrong credentials.
	AuthFailures uint64
	// Associations counts UDP associations made.
	Associations uint64
	// ToTarget and FromTarget count payload bytes, TCP and UDP,
	// relayed towards the destinations and back.
	ToTarget, FromTarget uint64
	// UDPIn and UDPOut count datagrams relayed from the clients and back
	// to them.
	UDPIn, UDPOut uint64
	// FragDropped counts client datagrams dropped for FRAG ≠ 0.
	FragDropped uint64
	// UDPDropped counts other client datagrams dropped: from a source
	// other than the association's client, a malformed header, a
	// destination name that could not be looked up (or with too many
	// datagrams waiting for it: see Resolver), or a failed send.
	UDPDropped uint64
}

// Server is a SOCKS5 server. Its methods are safe for concurrent use.
type Server struct {
	network forward.Network
	relay   forward.Network
	opts    Options
	log     *slog.Logger
	g       *proxyutil.Group // listeners, connections, associations

	conns, active, authFailures, associations atomic.Uint64
	toTarget, fromTarget, udpIn, udpOut       atomic.Uint64
	fragDropped, udpDropped                   atomic.Uint64
	replies                                   [9]atomic.Uint64
}

// New returns a server whose destinations are on network n.
func New(n forward.Network, opts Options) *Server {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	relay := opts.Relay
	if relay == nil {
		relay = forward.Host{}
	}
	return &Server{network: n, relay: relay, opts: opts, log: proxyutil.Logger(opts.Logger), g: proxyutil.NewGroup(context.Background())}
}

// Serve accepts connections on ln and serves each on a goroutine of its
// own until ln fails or the server is closed; it closes ln. After Close it
// returns nil, else the error of Accept.
func (s *Server) Serve(ln net.Listener) error {
	if !s.g.Track(false, ln) {
		ln.Close()
		return nil
	}
	defer s.g.Untrack(ln)
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.g.Closed() {
				return nil
			}
			return err
		}
		if !s.g.Track(true, c) {
			c.Close()
			return nil
		}
		go func() {
			defer s.g.Done()
			defer s.g.Untrack(c)
			s.serve(c)
		}()
	}
}

// ServeConn serves one client connection and closes it.
func (s *Server) ServeConn(c net.Conn) {
	if !s.g.Track(true, c) {
		c.Close()
		return
	}
	defer s.g.Done()
	defer s.g.Untrack(c)
	s.serve(c)
}

// Close stops the server: it closes the listeners given to Serve and
// every connection and association, and returns once all are done.
func (s *Server) Close() error {
	s.g.Close()
	return nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections:  s.conns.Load(),
		Active:       s.active.Load(),
		AuthFailures: s.authFailures.Load(),
		Associations: s.associations.Load(),
		ToTarget:     s.toTarget.Load(),
		FromTarget:   s.fromTarget.Load(),
		UDPIn:        s.udpIn.Load(),
		UDPOut:       s.udpOut.Load(),
		FragDropped:  s.fragDropped.Load(),
		UDPDropped:   s.udpDropped.Load(),
	}
	for i := range st.Replies {
		st.Replies[i] = s.replies[i].Load()
	}
	return st
}

// reply sends a reply and counts it.
func (s *Server) reply(c net.Conn, rep Reply, bound Addr) error {
	if int(rep) < len(s.replies) {
		s.replies[rep].Add(1)
	}
	_, err := c.Write(AppendReply(nil, rep, bound))
	return err
}

// serve runs one client connection.
func (s *Server) serve(c net.Conn) {
	defer c.Close()
	s.conns.Add(1)
	s.active.Add(1)
	defer s.active.Add(^uint64(0))
	_ = c.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	// Reads go through a buffer (a client may send its request right
	// behind its greeting); nothing is read past the request.
	br := bufio.NewReaderSize(c, 512)
	if err := s.authenticate(c, br); err != nil {
		s.log.Debug("socks5: handshake failed", "client", c.RemoteAddr().String(), "err", err)
		return
	}
	req, err := ReadRequest(br)
	if err != nil {
		if errors.Is(err, ErrAddressType) {
			_ = s.reply(c, AddressTypeNotSupported, Addr{})
		} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !proxyutil.IsTimeout(err) {
			_ = s.reply(c, GeneralFailure, Addr{})
		}
		s.log.Debug("socks5: bad request", "client", c.RemoteAddr().String(), "err", err)
		return
	}
	// The dial has a timeout of its own; an association lasts as long
	// as its control connection.
	_ = c.SetDeadline(time.Time{})
	switch req.Command {
	case Connect:
		s.connect(c, br, req)
	case UDPAssociate:
		s.associate(c, br, req)
	default:
		_ = s.reply(c, CommandNotSupported, Addr{})
		s.log.Debug("socks5: command not supported", "client", c.RemoteAddr().String(), "command", req.Command.String())
	}
}

// authenticate runs method negotiation and, if required, RFC 1929.
func (s *Server) authenticate(c net.Conn, r io.Reader) error {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return err
	}
	if h[0] != Version {
		return fmt.Errorf("greeting version %d, want 5", h[0])
	}
	methods := make([]byte, h[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return err
	}
	want := byte(MethodNoAuth)
	if s.opts.Authenticate != nil {
		want = MethodUserPass
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		s.authFailures.Add(1)
		_, _ = c.Write([]byte{Version, MethodNoAcceptable})
		return fmt.Errorf("client offers methods %v, not %d", methods, want)
	}
	if _, err := c.Write([]byte{Version, want}); err != nil {
		return err
	}
	if want == MethodNoAuth {
		return nil
	}
	// RFC 1929: VER 1, ULEN, UNAME, PLEN, PASSWD.
	var v [2]byte
	if _, err := io.ReadFull(r, v[:]); err != nil {
		return err
	}
	if v[0] != 1 {
		return fmt.Errorf("username/password version %d, want 1", v[0])
	}
	user := make([]byte, v[1])
	if _, err := io.ReadFull(r, user); err != nil {
		return err
	}
	if _, err := io.ReadFull(r, v[1:]); err != nil {
		return err
	}
	pass := make([]byte, v[1])
	if _, err := io.ReadFull(r, pass); err != nil {
		return err
	}
	if !s.opts.Authenticate(string(user), string(pass)) {
		s.authFailures.Add(1)
		_, _ = c.Write([]byte{1, 1})
		return fmt.Errorf("user %q: wrong credentials", user)
	}
	_, err := c.Write([]byte{1, 0})
	return err
}

// connect serves CONNECT.
func (s *Server) connect(c net.Conn, br *bufio.Reader, req Request) {
	target := req.Addr.String()
	ctx, cancel := context.WithTimeout(s.g.Context(), s.opts.DialTimeout)
	tc, err := s.network.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		rep := ReplyFor(err)
		_ = s.reply(c, rep, Addr{})
		s.log.Debug("socks5: connect failed", "target", target, "client", c.RemoteAddr().String(), "reply", rep.String(), "err", err)
		return
	}
	if !s.g.Track(false, tc) {
		tc.Close()
		return
	}
	defer s.g.Untrack(tc)
	defer tc.Close()
	if err := s.reply(c, Succeeded, addrOf(tc.LocalAddr())); err != nil {
		return
	}
	forward.Splice(&proxyutil.BufferedConn{Conn: c, R: br}, tc, &s.toTarget, &s.fromTarget)
}

// addrOf returns a connection's address as an Addr.
func addrOf(a net.Addr) Addr {
	ap := proxyutil.AddrPort(a)
	return Addr{IP: ap.Addr(), Port: ap.Port()}
}

// ReplyFor returns the reply code that tells a client why a dial failed:
// ConnectionRefused for ECONNREFUSED, HostUnreachable for EHOSTUNREACH,
// EHOSTDOWN or a name that cannot be resolved, NetworkUnreachable for
// ENETUNREACH, TTLExpired for ETIMEDOUT or any other timeout, NotAllowed
// for EACCES and EPERM, GeneralFailure for anything else (and Succeeded
// for nil). The overlay (stack.Net) and the host's sockets both report
// these errors as syscall.Errno values inside a *net.OpError.
func ReplyFor(err error) Reply {
	var dns *net.DNSError
	var addr *net.AddrError
	switch {
	case err == nil:
		return Succeeded
	case errors.Is(err, syscall.ECONNREFUSED):
		return ConnectionRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return HostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return NetworkUnreachable
	case proxyutil.IsTimeout(err):
		return TTLExpired
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return NotAllowed
	case errors.As(err, &dns), errors.As(err, &addr):
		return HostUnreachable
	}
	return GeneralFailure
}
