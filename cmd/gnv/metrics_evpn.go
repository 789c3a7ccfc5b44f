package main

import (
	"strconv"

	"github.com/gnv-project/gnv/stack/evpn"
	"github.com/prometheus/client_golang/prometheus"
)

// The BGP EVPN speaker's metrics (--evpn-asn), from its Show snapshot at
// scrape time: the sessions, the routes per VNI, and the counters of gnv
// evpn show.

var (
	evpnPeerUpDesc     = metricDesc("evpn_peer_up", "Whether the BGP session with the peer is established (1) or not (0).", "peer")
	evpnPeerRoutesDesc = metricDesc("evpn_peer_routes", "l2vpn-evpn routes of the session: received from the peer, accepted, and advertised to it.", "peer", "direction")
	evpnVNIMACsDesc    = metricDesc("evpn_macs", "MACs of the VNI: advertised by this VTEP (local), by others (remote), and frozen as duplicates (duplicate).", "vni", "kind")
	evpnVNIVTEPsDesc   = metricDesc("evpn_vteps", "VTEPs in the VNI's flood list (Type-3 routes).", "vni")
	evpnCounters       = []struct {
		desc *prometheus.Desc
		get  func(*evpn.Stats) uint64
	}{
		{metricDesc("evpn_routes_received_total", "EVPN best-path changes received from peers."), func(s *evpn.Stats) uint64 { return s.Received }},
		{metricDesc("evpn_routes_withdrawn_total", "EVPN routes withdrawn by peers."), func(s *evpn.Stats) uint64 { return s.Withdrawn }},
		{metricDesc("evpn_mac_moves_total", "MAC mobility events: a MAC that moved here from another VTEP, or away from here."), func(s *evpn.Stats) uint64 { return s.Moves }},
		{metricDesc("evpn_duplicate_macs_total", "MACs found to be duplicates (moving between VTEPs too often) and frozen."), func(s *evpn.Stats) uint64 { return s.DuplicateMACs }},
		{metricDesc("evpn_graceful_restarts_total", "Peer sessions that went down in a graceful restart, their routes kept."), func(s *evpn.Stats) uint64 { return s.GracefulRestarts }},
		{metricDesc("evpn_stale_routes_removed_total", "Routes kept through a peer's graceful restart that it did not send again."), func(s *evpn.Stats) uint64 { return s.StaleRemoved }},
	}
	evpnIgnoredDesc = metricDesc("evpn_routes_ignored_total", "Received routes ignored, by reason: encapsulation (not Geneve), route_target (no attached VNI), type (not 2 or 3, or unusable).", "reason")
)

// describeEVPN sends the descriptions of the EVPN metrics.
func describeEVPN(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{evpnPeerUpDesc, evpnPeerRoutesDesc, evpnVNIMACsDesc, evpnVNIVTEPsDesc, evpnIgnoredDesc} {
		ch <- d
	}
	for _, m := range evpnCounters {
		ch <- m.desc
	}
}

// collectEVPN sends the metrics of the speaker sp.
func collectEVPN(sp *evpn.Speaker, counter func(*prometheus.Desc, uint64, ...string), gauge func(*prometheus.Desc, float64, ...string)) {
	sn := sp.Show()
	for _, p := range sn.Peers {
		peer := p.Address.String()
		up := 0.0
		if p.State == "established" {
			up = 1
		}
		gauge(evpnPeerUpDesc, up, peer)
		gauge(evpnPeerRoutesDesc, float64(p.Received), peer, "received")
		gauge(evpnPeerRoutesDesc, float64(p.Accepted), peer, "accepted")
		gauge(evpnPeerRoutesDesc, float64(p.Advertised), peer, "advertised")
	}
	for _, v := range sn.VNIs {
		vni := strconv.FormatUint(uint64(v.VNI), 10)
		gauge(evpnVNIMACsDesc, float64(len(v.Local)), vni, "local")
		gauge(evpnVNIMACsDesc, float64(len(v.Remote)), vni, "remote")
		gauge(evpnVNIMACsDesc, float64(len(v.Duplicates)), vni, "duplicate")
		gauge(evpnVNIVTEPsDesc, float64(len(v.VTEPs)), vni)
	}
	st := sn.Stats
	for _, m := range evpnCounters {
		counter(m.desc, m.get(&st))
	}
	counter(evpnIgnoredDesc, st.IgnoredEncap, "encapsulation")
	counter(evpnIgnoredDesc, st.IgnoredRT, "route_target")
	counter(evpnIgnoredDesc, st.IgnoredType, "type")
}
