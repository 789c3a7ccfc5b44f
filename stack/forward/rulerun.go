package forward

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gnv-project/gnv/stack/internal/proxyutil"
)

// counters are a rule's live Stats.
type counters struct {
	connections, active, toTarget, fromTarget, dialErrors, dropped atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Connections: c.connections.Load(),
		Active:      c.active.Load(),
		ToTarget:    c.toTarget.Load(),
		FromTarget:  c.fromTarget.Load(),
		DialErrors:  c.dialErrors.Load(),
		Dropped:     c.dropped.Load(),
	}
}

// rule is a running Rule.
type rule struct {
	m     *Manager
	rule  Rule
	ln    net.Listener   // tcp
	pc    net.PacketConn // udp
	stats counters
	// g holds the listener or socket, the connections and the sessions'
	// sockets, and counts the goroutines; its context bounds the dials.
	g *proxyutil.Group

	mu       sync.Mutex
	sessions map[string]*session
}

// close stops the rule and waits for its goroutines.
func (r *rule) close() { r.g.Close() }

// serveTCP accepts connections until the listener is closed.
func (r *rule) serveTCP() {
	defer r.g.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if !r.g.Closed() {
				r.m.log.Warn("forward: accept failed; the rule stops", "rule", r.rule.String(), "err", err)
			}
			return
		}
		if !r.g.Track(true, c) {
			c.Close()
			return
		}
		r.stats.connections.Add(1)
		r.stats.active.Add(1)
		go r.handleTCP(c)
	}
}

// handleTCP dials the target for c and splices the two.
func (r *rule) handleTCP(c net.Conn) {
	defer r.g.Done()
	defer r.stats.active.Add(^uint64(0))
	defer r.g.Untrack(c)
	defer c.Close()
	ctx, cancel := context.WithTimeout(r.g.Context(), r.m.opts.DialTimeout)
	tc, err := r.m.dial.DialContext(ctx, "tcp", r.rule.Target)
	cancel()
	if err != nil {
		r.stats.dialErrors.Add(1)
		r.m.log.Debug("forward: dial failed", "rule", r.rule.String(), "target", r.rule.Target, "from", c.RemoteAddr().String(), "err", err)
		// Reset rather than close: the client sees that it failed.
		if l, ok := c.(interface{ SetLinger(int) error }); ok {
			_ = l.SetLinger(0)
		}
		return
	}
	if !r.g.Track(false, tc) {
		tc.Close()
		return
	}
	defer r.g.Untrack(tc)
	defer tc.Close()
	Splice(c, tc, &r.stats.toTarget, &r.stats.fromTarget)
}

// session is one UDP flow: a client and the socket dialled for it.
type session struct {
	key    string
	client net.Addr
	conn   net.Conn
	last   atomic.Int64 // time of the last datagram either way, Unix ns
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// serveUDP reads the clients' datagrams until the socket is closed.
func (r *rule) serveUDP() {
	defer r.g.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !r.g.Closed() {
				r.m.log.Warn("forward: receive failed; the rule stops", "rule", r.rule.String(), "err", err)
			}
			return
		}
		s := r.session(from)
		if s == nil {
			r.stats.dropped.Add(1)
			continue
		}
		if _, err := s.conn.Write(buf[:n]); err != nil {
			r.stats.dropped.Add(1)
			r.m.log.Debug("forward: send failed", "rule", r.rule.String(), "target", r.rule.Target, "from", from.String(), "err", err)
			continue
		}
		r.stats.toTarget.Add(uint64(n))
	}
}

// session returns from's session, marked active now, opening one if there
// is room; nil if there is not, or the dial failed. Marking it under the
// lock keeps replies from reaping it as idle in between.
func (r *rule) session(from net.Addr) *session {
	key := from.String()
	r.mu.Lock()
	s := r.sessions[key]
	if s != nil {
		s.last.Store(time.Now().UnixNano())
	}
	full := len(r.sessions) >= r.m.opts.MaxUDPSessions
	r.mu.Unlock()
	if s != nil {
		return s
	}
	if full {
		r.m.log.Debug("forward: too many UDP sessions; datagram dropped", "rule", r.rule.String(), "from", key, "max", r.m.opts.MaxUDPSessions)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.g.Context(), r.m.opts.DialTimeout)
	c, err := r.m.dial.DialContext(ctx, "udp", r.rule.Target)
	cancel()
	if err != nil {
		r.stats.dialErrors.Add(1)
		r.m.log.Debug("forward: dial failed", "rule", r.rule.String(), "target", r.rule.Target, "from", key, "err", err)
		return nil
	}
	s = &session{key: key, client: from, conn: c}
	s.last.Store(time.Now().UnixNano())
	if !r.g.Track(true, c) {
		c.Close()
		return nil
	}
	r.mu.Lock()
	r.sessions[key] = s
	r.mu.Unlock()
	r.stats.connections.Add(1)
	r.stats.active.Add(1)
	go r.replies(s)
	return s
}

// replies relays s's replies to its client until s has been idle for the
// idle timeout, or its socket fails or is closed.
func (r *rule) replies(s *session) {
	defer r.g.Done()
	defer r.stats.active.Add(^uint64(0))
	defer func() {
		r.mu.Lock()
		delete(r.sessions, s.key)
		r.mu.Unlock()
		r.g.Untrack(s.conn)
		s.conn.Close()
	}()
	idle := r.m.opts.UDPIdleTimeout
	buf := make([]byte, maxDatagram)
	for {
		deadline := time.Unix(0, s.last.Load()).Add(idle)
		if !time.Now().Before(deadline) {
			// Check again under the lock: a datagram from the client
			// may have just renewed the session.
			r.mu.Lock()
			deadline = time.Unix(0, s.last.Load()).Add(idle)
			if !time.Now().Before(deadline) {
				delete(r.sessions, s.key)
				r.mu.Unlock()
				r.m.log.Debug("forward: UDP session idle", "rule", r.rule.String(), "client", s.key)
				return
			}
			r.mu.Unlock()
		}
		_ = s.conn.SetReadDeadline(deadline)
		n, err := s.conn.Read(buf)
		if err != nil {
			if proxyutil.IsTimeout(err) {
				continue
			}
			if !r.g.Closed() {
				r.m.log.Debug("forward: UDP session ends", "rule", r.rule.String(), "client", s.key, "err", err)
			}
			return
		}
		s.last.Store(time.Now().UnixNano())
		if _, err := r.pc.WriteTo(buf[:n], s.client); err != nil {
			r.stats.dropped.Add(1)
			continue
		}
		r.stats.fromTarget.Add(uint64(n))
	}
}
