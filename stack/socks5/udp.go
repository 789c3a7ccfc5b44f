package socks5

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"sync"

	"github.com/gnv-project/gnv/stack/internal/proxyutil"
)

// association is one UDP ASSOCIATE: the relay socket on the clients'
// network and, opened on first use, a socket per address family on the
// destination network.
type association struct {
	s       *Server
	control net.Conn
	relay   net.PacketConn
	// want is the client's address as the request gave it: a zero IP or
	// port matches any.
	want netip.AddrPort
	wg   sync.WaitGroup
	// ctx ends with the association (its name lookups).
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	client *net.UDPAddr // learnt from the first datagram
	out4   net.PacketConn
	out6   net.PacketConn
	closed bool
	names  map[string]*udpName // destinations given by name (udpname.go)
}

// associate serves UDP ASSOCIATE.
func (s *Server) associate(c net.Conn, br *bufio.Reader, req Request) {
	local := addrOf(c.LocalAddr()).IP
	peer := addrOf(c.RemoteAddr()).IP
	relay, err := s.relay.ListenPacket("udp", net.JoinHostPort(local.String(), "0"))
	if err != nil {
		rep := ReplyFor(err)
		_ = s.reply(c, rep, Addr{})
		s.log.Debug("socks5: UDP relay socket failed", "client", c.RemoteAddr().String(), "reply", rep.String(), "err", err)
		return
	}
	a := &association{s: s, control: c, relay: relay}
	a.ctx, a.cancel = context.WithCancel(s.g.Context())
	// The client's address: as requested where given, else the control
	// connection's peer, with any port until the first datagram.
	ip := req.Addr.IP.Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = peer
	}
	a.want = netip.AddrPortFrom(ip, req.Addr.Port)
	if !s.g.Track(false, a) {
		a.cancel()
		relay.Close()
		return
	}
	defer s.g.Untrack(a)
	defer a.Close()
	if err := s.reply(c, Succeeded, addrOf(relay.LocalAddr())); err != nil {
		return
	}
	s.associations.Add(1)
	if !a.start(a.fromClient) {
		return
	}
	// The association lasts as long as the control connection.
	_, _ = io.Copy(io.Discard, br)
}

// Close ends the association and waits for its goroutines.
func (a *association) Close() error {
	a.cancel()
	a.mu.Lock()
	a.closed = true
	a.control.Close()
	a.relay.Close()
	for _, pc := range []net.PacketConn{a.out4, a.out6} {
		if pc != nil {
			pc.Close()
		}
	}
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}

// fromClient relays the client's datagrams to their destinations.
func (a *association) fromClient() {
	defer a.wg.Done()
	s := a.s
	buf := make([]byte, 65535)
	for {
		n, from, err := a.relay.ReadFrom(buf)
		if err != nil {
			if proxyutil.IsTimeout(err) {
				continue
			}
			return
		}
		src, ok := from.(*net.UDPAddr)
		if !ok || !a.fromOurClient(src) {
			s.udpDropped.Add(1)
			continue
		}
		h, payload, err := ParseUDPDatagram(buf[:n])
		if err != nil {
			s.udpDropped.Add(1)
			s.log.Debug("socks5: bad UDP datagram", "client", src.String(), "err", err)
			continue
		}
		if h.Frag != 0 {
			s.fragDropped.Add(1)
			continue
		}
		if !h.Addr.IP.IsValid() {
			ip, ok := a.lookup(h.Addr.Name, h.Addr.Port, payload)
			if !ok {
				continue // waiting for the name, or dropped and counted
			}
			h.Addr.IP = ip
		}
		a.send(netip.AddrPortFrom(h.Addr.IP.Unmap(), h.Addr.Port), payload)
	}
}

// send relays a client's payload to dst.
func (a *association) send(dst netip.AddrPort, payload []byte) {
	s := a.s
	out, err := a.out(dst.Addr().Is4())
	if err != nil {
		s.udpDropped.Add(1)
		s.log.Debug("socks5: UDP socket failed", "target", dst.String(), "err", err)
		return
	}
	if _, err := out.WriteTo(payload, net.UDPAddrFromAddrPort(dst)); err != nil {
		s.udpDropped.Add(1)
		s.log.Debug("socks5: UDP send failed", "target", dst.String(), "err", err)
		return
	}
	s.udpIn.Add(1)
	s.toTarget.Add(uint64(len(payload)))
}

// fromOurClient reports whether a datagram from src belongs to the
// association, learning the client's port from its first datagram.
func (a *association) fromOurClient(src *net.UDPAddr) bool {
	ap := src.AddrPort()
	ip := ap.Addr().Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client != nil {
		return a.client.AddrPort() == ap
	}
	if ip != a.want.Addr() || (a.want.Port() != 0 && ap.Port() != a.want.Port()) {
		return false
	}
	a.client = src
	return true
}

// out returns the association's socket for IPv4 or IPv6 destinations,
// opening it (and the goroutine that relays its replies) on first use.
func (a *association) out(v4 bool) (net.PacketConn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	slot, network := &a.out6, "udp6"
	if v4 {
		slot, network = &a.out4, "udp4"
	}
	if *slot != nil {
		return *slot, nil
	}
	if a.closed {
		return nil, net.ErrClosed
	}
	pc, err := a.s.network.ListenPacket(network, ":0")
	if err != nil {
		return nil, err
	}
	*slot = pc
	a.startLocked(func() { a.toClient(pc) })
	return pc, nil
}

// start runs f on a goroutine that Close waits for, unless the association
// is already closed.
func (a *association) start(f func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.startLocked(f)
	return true
}

// startLocked is start with a.mu held and the association open. The
// WaitGroup's Add happens under a.mu before Close marks the association
// closed, so it never races with Close's Wait (an Add from zero
// concurrent with Wait is a data race).
func (a *association) startLocked(f func()) {
	a.wg.Add(1)
	go f()
}

// toClient relays replies arriving on pc to the client, each with the
// header naming its source.
func (a *association) toClient(pc net.PacketConn) {
	defer a.wg.Done()
	s := a.s
	buf := make([]byte, 65535)
	const room = 22 // the largest header: IPv6
	for {
		n, from, err := pc.ReadFrom(buf[room:])
		if err != nil {
			if proxyutil.IsTimeout(err) {
				continue
			}
			return
		}
		a.mu.Lock()
		client := a.client
		a.mu.Unlock()
		src := addrOf(from)
		var hb [room]byte
		hdr, err := UDPHeader{Addr: src}.AppendBinary(hb[:0])
		if err != nil || client == nil {
			s.udpDropped.Add(1)
			continue
		}
		start := room - len(hdr)
		copy(buf[start:], hdr)
		if _, err := a.relay.WriteTo(buf[start:room+n], client); err != nil {
			continue
		}
		s.udpOut.Add(1)
		s.fromTarget.Add(uint64(n))
	}
}
