package evpn

import (
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Graceful restart (RFC 4724) as the receiving speaker. When a peer that
// announced graceful restart for l2vpn-evpn restarts (a route reflector's
// bgpd crashing or being upgraded), GoBGP keeps the routes it sent, marked
// stale, instead of withdrawing them with the session, and the forwarding
// state they built stays: traffic between VTEPs flows on. Once the peer is
// back it sends its routes again, then an End-of-RIB marker. A route not
// sent again by then has gone while the peer was down; GoBGP drops it
// without telling its watchers (v4.8.0), so the speaker marks the peer's
// routes stale itself when the session goes down gracefully and removes
// those still stale at the End-of-RIB. If the peer stays away longer than
// its restart time, GoBGP withdraws its routes, as without graceful
// restart.

// onPeer marks the routes of a peer whose session went down gracefully.
func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	st := ev.Peer.State
	if ev.Type != apiutil.PEER_EVENT_STATE || st.SessionState == bgp.BGP_FSM_ESTABLISHED ||
		st.DisconnectReason != api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.eachRouteOf(st.NeighborAddress, func(_ routeKey, r *route) bool {
		if r.stale {
			return false
		}
		r.stale = true
		return true
	})
	if n > 0 {
		s.stats.GracefulRestarts++
		s.log.Info("evpn: peer restarting gracefully; its routes are kept until it is back", "peer", st.NeighborAddress, "routes", n)
	}
}

// onEOR removes the routes of a peer back from a graceful restart that it
// has not sent again.
func (s *Speaker) onEOR(p *apiutil.Path, _ time.Time) {
	if p.Family != bgp.RF_EVPN {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.eachRouteOf(p.PeerAddress, func(k routeKey, r *route) bool {
		if !r.stale {
			return false
		}
		delete(s.routes, k)
		if r.on != nil {
			r.on.apply(r, false)
		}
		s.stats.Withdrawn++
		return true
	})
	if n > 0 {
		s.stats.StaleRemoved += uint64(n)
		s.log.Info("evpn: peer back from a graceful restart; the routes it did not send again are removed", "peer", p.PeerAddress, "routes", n)
	}
}

// eachRouteOf runs fn on each route received from peer and returns how
// many it returned true for (none once the speaker is closed). s.mu is
// held; fn may delete the route it is given.
func (s *Speaker) eachRouteOf(peer netip.Addr, fn func(routeKey, *route) bool) int {
	id, ok := s.peerIDs[peer]
	if !ok || s.closed {
		return 0
	}
	n := 0
	for k, r := range s.routes {
		if k.peer == id && fn(k, r) {
			n++
		}
	}
	return n
}
