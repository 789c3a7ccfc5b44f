package forward

import (
	"bytes"
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
	last   atomic.Int64 // time of the last datagram either way, Unix ns

	// Under the rule's mu: conn is set once the target is dialled and
	// pending sent; until then the client's datagrams wait in pending.
	conn    net.Conn
	pending [][]byte
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// maxPending is how many datagrams of a new client wait while its target
// is dialled; further ones are dropped and counted.
const maxPending = 32

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
		r.relay(from, buf[:n])
	}
}

// relay sends a client's datagram p to the target on the client's
// session. A new client's session dials the target on a goroutine of its
// own, so that a slow dial (a name to resolve, say) holds up no other
// client; its datagrams wait in order meanwhile.
func (r *rule) relay(from net.Addr, p []byte) {
	key := from.String()
	r.mu.Lock()
	s := r.sessions[key]
	if s == nil {
		if len(r.sessions) >= r.m.opts.MaxUDPSessions {
			r.mu.Unlock()
			r.stats.dropped.Add(1)
			r.m.log.Debug("forward: too many UDP sessions; datagram dropped", "rule", r.rule.String(), "from", key, "max", r.m.opts.MaxUDPSessions)
			return
		}
		if !r.g.Track(true) { // closing
			r.mu.Unlock()
			r.stats.dropped.Add(1)
			return
		}
		s = &session{key: key, client: from}
		r.sessions[key] = s
		r.stats.active.Add(1)
		go r.runSession(s)
	}
	s.last.Store(time.Now().UnixNano())
	c := s.conn
	if c == nil {
		if len(s.pending) < maxPending {
			s.pending = append(s.pending, bytes.Clone(p))
		} else {
			r.stats.dropped.Add(1)
		}
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	r.send(s, c, p)
}

// send writes a client's datagram to the target.
func (r *rule) send(s *session, c net.Conn, p []byte) {
	if _, err := c.Write(p); err != nil {
		r.stats.dropped.Add(1)
		r.m.log.Debug("forward: send failed", "rule", r.rule.String(), "target", r.rule.Target, "from", s.key, "err", err)
		return
	}
	r.stats.toTarget.Add(uint64(len(p)))
}

// runSession dials the target for s, sends what its client sent
// meanwhile, then relays the replies (replies). If the dial fails, the
// session ends and its datagrams are counted as dropped.
func (r *rule) runSession(s *session) {
	defer r.g.Done()
	defer r.stats.active.Add(^uint64(0))
	ctx, cancel := context.WithTimeout(r.g.Context(), r.m.opts.DialTimeout)
	c, err := r.m.dial.DialContext(ctx, "udp", r.rule.Target)
	cancel()
	if err == nil && !r.g.Track(false, c) {
		c.Close()
		err = errors.New("the rule is closed")
	}
	if err != nil {
		r.stats.dialErrors.Add(1)
		r.m.log.Debug("forward: dial failed", "rule", r.rule.String(), "target", r.rule.Target, "from", s.key, "err", err)
		r.mu.Lock()
		r.forgetLocked(s)
		r.stats.dropped.Add(uint64(len(s.pending)))
		s.pending = nil
		r.mu.Unlock()
		return
	}
	r.stats.connections.Add(1)
	defer func() {
		r.mu.Lock()
		r.forgetLocked(s)
		r.mu.Unlock()
		r.g.Untrack(c)
		c.Close()
	}()
	// Send what waited, in order: datagrams that arrive meanwhile join
	// pending until it is found empty and conn is set.
	for {
		r.mu.Lock()
		batch := s.pending
		s.pending = nil
		if len(batch) == 0 {
			s.conn = c
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		for _, p := range batch {
			r.send(s, c, p)
		}
	}
	r.replies(s, c)
}

// forgetLocked removes s from the sessions, unless its client has a newer
// one already. r.mu is held.
func (r *rule) forgetLocked(s *session) {
	if r.sessions[s.key] == s {
		delete(r.sessions, s.key)
	}
}

// replies relays s's replies from c to its client until s has been idle
// for the idle timeout, or c fails or is closed.
func (r *rule) replies(s *session, c net.Conn) {
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
				r.forgetLocked(s)
				r.mu.Unlock()
				r.m.log.Debug("forward: UDP session idle", "rule", r.rule.String(), "client", s.key)
				return
			}
			r.mu.Unlock()
		}
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
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
