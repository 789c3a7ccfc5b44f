package forward

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/gnv-project/gnv/stack/internal/proxyutil"
)

// Defaults of Options.
const (
	DefaultDialTimeout    = 30 * time.Second
	DefaultUDPIdleTimeout = 60 * time.Second
	DefaultMaxUDPSessions = 1024
)

// ErrNoRule is returned (wrapped) by Remove for a key that names no rule.
var ErrNoRule = errors.New("no such forwarding rule")

// ErrRuleExists is returned (wrapped) by Add for a rule whose key is taken.
var ErrRuleExists = errors.New("a rule for this address exists")

// Options configure a Manager. The zero value is ready to use.
type Options struct {
	// Logger receives the rules' events: dial failures at debug level,
	// with the target and the client; a listener that fails at warn
	// level. nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds each dial to a target; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// UDPIdleTimeout ends a UDP session after that long without a
	// datagram either way; 0 means DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
	// MaxUDPSessions bounds the UDP sessions of each rule: datagrams
	// from further clients are dropped (and counted) until one ends. 0
	// means DefaultMaxUDPSessions.
	MaxUDPSessions int
}

// Stats are a rule's counters, a snapshot.
type Stats struct {
	// Connections counts the TCP connections accepted, or the UDP
	// sessions opened.
	Connections uint64
	// Active counts the connections or sessions open now.
	Active uint64
	// ToTarget and FromTarget count payload bytes relayed towards the
	// target and back to the clients.
	ToTarget, FromTarget uint64
	// DialErrors counts failed dials to the target.
	DialErrors uint64
	// Dropped counts UDP datagrams dropped: over the session limit, for
	// a session whose dial failed, past the 32 that wait while a new
	// session's target is dialled, or that could not be sent on.
	Dropped uint64
}

// Status is one rule with its counters.
type Status struct {
	// Rule is the rule as running (with its bound port).
	Rule Rule
	// Stats are its counters.
	Stats Stats
}

// Manager runs forwarding rules from one network (where it listens) to
// another (where it dials). Its methods are safe for concurrent use.
type Manager struct {
	listen, dial Network
	opts         Options
	log          *slog.Logger
	ctx          context.Context
	cancel       context.CancelFunc

	mu     sync.Mutex
	rules  map[Key]*rule
	closed bool
}

// NewManager returns a Manager that listens on listen and dials on dial:
// NewManager(Host{}, tun, opts) forwards host ports into the overlay,
// NewManager(tun, Host{}, opts) exposes host services on the overlay.
func NewManager(listen, dial Network, opts Options) *Manager {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.UDPIdleTimeout <= 0 {
		opts.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if opts.MaxUDPSessions <= 0 {
		opts.MaxUDPSessions = DefaultMaxUDPSessions
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{listen: listen, dial: dial, opts: opts, log: proxyutil.Logger(opts.Logger), ctx: ctx, cancel: cancel, rules: map[Key]*rule{}}
}

// Add starts a rule: it listens on r.Listen at once and relays from then
// on. It returns the rule as running, with the port that was bound if
// r.Listen's port was 0; that rule's Key names it for Remove.
func (m *Manager) Add(r Rule) (Rule, error) {
	if r.Proto != "tcp" && r.Proto != "udp" {
		return Rule{}, fmt.Errorf("rule %s: protocol %q: want tcp or udp", r, r.Proto)
	}
	if err := checkTarget(r.Target); err != nil {
		return Rule{}, fmt.Errorf("rule %s: %w", r, err)
	}
	if !r.Listen.IsValid() {
		return Rule{}, fmt.Errorf("rule %s: no listen address", r)
	}
	r.Listen = netip.AddrPortFrom(r.Listen.Addr().Unmap(), r.Listen.Port())
	m.mu.Lock()
	closed := m.closed
	_, taken := m.rules[r.Key()]
	m.mu.Unlock()
	if closed {
		return Rule{}, fmt.Errorf("rule %s: %w", r, net.ErrClosed)
	}
	if taken && r.Listen.Port() != 0 {
		return Rule{}, fmt.Errorf("rule %s: %w", r, ErrRuleExists)
	}
	ru := &rule{m: m, rule: r, g: proxyutil.NewGroup(m.ctx), sessions: map[string]*session{}}
	var bound net.Addr
	if r.Proto == "tcp" {
		ln, err := m.listen.Listen("tcp", r.Listen.String())
		if err != nil {
			return Rule{}, fmt.Errorf("rule %s: %w", r, err)
		}
		ru.ln, bound = ln, ln.Addr()
		ru.g.Track(false, ln)
	} else {
		pc, err := m.listen.ListenPacket("udp", r.Listen.String())
		if err != nil {
			return Rule{}, fmt.Errorf("rule %s: %w", r, err)
		}
		ru.pc, bound = pc, pc.LocalAddr()
		ru.g.Track(false, pc)
	}
	if ap := proxyutil.AddrPort(bound); ap.IsValid() {
		ru.rule.Listen = netip.AddrPortFrom(r.Listen.Addr(), ap.Port())
	}
	m.mu.Lock()
	if m.closed || m.rules[ru.rule.Key()] != nil {
		closed := m.closed
		m.mu.Unlock()
		ru.close()
		if closed {
			return Rule{}, fmt.Errorf("rule %s: %w", r, net.ErrClosed)
		}
		return Rule{}, fmt.Errorf("rule %s: %w", ru.rule, ErrRuleExists)
	}
	m.rules[ru.rule.Key()] = ru
	ru.g.Track(true) // the serving goroutine; the new group is open
	m.mu.Unlock()
	if ru.ln != nil {
		go ru.serveTCP()
	} else {
		go ru.serveUDP()
	}
	m.log.Debug("forward: rule added", "rule", ru.rule.String())
	return ru.rule, nil
}

// Remove stops the rule named k: it stops listening, closes the rule's
// connections and sessions and returns once they are gone.
func (m *Manager) Remove(k Key) error {
	k.Listen = netip.AddrPortFrom(k.Listen.Addr().Unmap(), k.Listen.Port())
	m.mu.Lock()
	ru := m.rules[k]
	delete(m.rules, k)
	m.mu.Unlock()
	if ru == nil {
		return fmt.Errorf("%s: %w", k, ErrNoRule)
	}
	ru.close()
	m.log.Debug("forward: rule removed", "rule", ru.rule.String())
	return nil
}

// List returns every rule with its counters, ordered by protocol and
// listening address.
func (m *Manager) List() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.rules))
	for _, ru := range m.rules {
		out = append(out, Status{Rule: ru.rule, Stats: ru.stats.snapshot()})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int {
		if c := cmp.Compare(a.Rule.Proto, b.Rule.Proto); c != 0 {
			return c
		}
		return a.Rule.Listen.Compare(b.Rule.Listen)
	})
	return out
}

// Stats returns the counters of the rule named k.
func (m *Manager) Stats(k Key) (Stats, bool) {
	k.Listen = netip.AddrPortFrom(k.Listen.Addr().Unmap(), k.Listen.Port())
	m.mu.Lock()
	defer m.mu.Unlock()
	ru := m.rules[k]
	if ru == nil {
		return Stats{}, false
	}
	return ru.stats.snapshot(), true
}

// Close removes every rule and refuses new ones. It returns once every
// goroutine of the Manager has ended.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	rules := m.rules
	m.rules = map[Key]*rule{}
	m.mu.Unlock()
	m.cancel()
	var wg sync.WaitGroup
	for _, ru := range rules {
		wg.Go(ru.close)
	}
	wg.Wait()
	return nil
}
