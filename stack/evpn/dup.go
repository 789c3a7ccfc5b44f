package evpn

import (
	"net"
	"time"
)

// Duplicate MAC detection (RFC 7432 §15.1). A MAC that moves between this
// VTEP and others more than a few times in a short while is on two hosts
// at once (a duplicate, or an L2 loop between sites); left alone, the two
// VTEPs would take it from each other forever, each move a new sequence
// number and a BGP update to every VTEP. Once a MAC has moved
// Options.DupMACMoves times within Options.DupMACWindow on this VTEP it is
// a duplicate: its state is frozen as it is at that moment, with updates
// for it neither sent nor acted on, until Options.DupMACFreeze has passed
// or ClearDuplicates is called. Received routes for it are still kept, so
// that the state is worked out afresh when it thaws.

// Duplicate MAC detection defaults: RFC 7432 §15.1's N and M, which FRR and
// Junos use too.
const (
	DefaultDupMACMoves  = 5
	DefaultDupMACWindow = 180 * time.Second
)

// macMoves is the recent mobility of one MAC of a VNI.
type macMoves struct {
	times    []time.Time // the moves within the window, oldest first
	dupSince time.Time   // when it became a duplicate; zero if it is not one
}

// frozen reports whether mac is a duplicate, its updates suppressed.
func (v *vni) frozen(mac [6]byte) bool {
	m := v.moves[mac]
	return m != nil && !m.dupSince.IsZero()
}

// moved records a move of mac (here from another VTEP, or away from here),
// and makes it a duplicate if it has moved too often.
func (v *vni) moved(mac [6]byte) {
	s := v.s
	s.stats.Moves++
	if s.opts.DupMACMoves < 0 {
		return
	}
	now := time.Now()
	m := v.moves[mac]
	if m == nil {
		m = &macMoves{}
		v.moves[mac] = m
	}
	m.times = append(m.recent(now, s.opts.DupMACWindow), now)
	if !m.dupSince.IsZero() || len(m.times) < s.opts.DupMACMoves {
		return
	}
	m.dupSince = now
	s.stats.DuplicateMACs++
	hold := "until cleared (gnv evpn clear-duplicates)"
	if s.opts.DupMACFreeze > 0 {
		hold = s.opts.DupMACFreeze.String()
	}
	s.log.Warn("evpn: duplicate MAC: it moves between VTEPs too often (on two hosts at once, or an L2 loop); its routes are frozen",
		"vni", v.id, "mac", net.HardwareAddr(mac[:]), "moves", len(m.times), "window", s.opts.DupMACWindow, "freeze", hold)
}

// recent returns the moves within window of now (reusing m.times).
func (m *macMoves) recent(now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(m.times) && now.Sub(m.times[i]) >= window {
		i++
	}
	return append(m.times[:0], m.times[i:]...)
}

// expireMoves forgets moves older than the window and thaws the
// duplicates whose freeze has run out.
func (v *vni) expireMoves(now time.Time) {
	s := v.s
	for mac, m := range v.moves {
		if !m.dupSince.IsZero() {
			if s.opts.DupMACFreeze > 0 && now.Sub(m.dupSince) >= s.opts.DupMACFreeze {
				v.thaw(mac)
			}
			continue
		}
		if m.times = m.recent(now, s.opts.DupMACWindow); len(m.times) == 0 {
			delete(v.moves, mac)
		}
	}
}

// thaw ends mac's freeze and history, and works out its state from the
// routes received meanwhile. A MAC still learned here is advertised again
// at the next look at the local MACs (pollLocal).
func (v *vni) thaw(mac [6]byte) {
	delete(v.moves, mac)
	v.s.log.Info("evpn: duplicate MAC cleared; its routes are followed again", "vni", v.id, "mac", net.HardwareAddr(mac[:]))
	v.resolveMAC(mac)
}

// ClearDuplicates ends the freeze of the duplicate MACs of every attached
// VNI (RFC 7432 §15.1's corrective action), or of mac only if it is not
// nil, and returns how many it cleared. Their state is then worked out
// from the routes received meanwhile.
func (s *Speaker) ClearDuplicates(mac net.HardwareAddr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.vnis {
		for k, m := range v.moves {
			if !m.dupSince.IsZero() && (mac == nil || string(mac) == string(k[:])) {
				v.thaw(k)
				n++
			}
		}
	}
	if n > 0 {
		for _, v := range s.vnis {
			v.pollLocal()
		}
	}
	return n
}
