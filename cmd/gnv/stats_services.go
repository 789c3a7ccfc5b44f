package main

import (
	"fmt"
	"io"
)

// gnv stats' part for a netstack overlay's services: the same counters as
// the metrics (metrics_services.go).

// forwardCounters are one forward or expose rule's.
type forwardCounters struct {
	Kind        string `json:"kind"` // forward or expose
	Rule        string `json:"rule"`
	Connections uint64 `json:"connections"`
	Active      uint64 `json:"active"`
	ToTarget    uint64 `json:"to_target_bytes"`
	FromTarget  uint64 `json:"from_target_bytes"`
	DialErrors  uint64 `json:"dial_errors"`
	Dropped     uint64 `json:"dropped"`
}

// socksCounters are the SOCKS5 server's; replies maps each RFC 1928 reply
// (socksReplyLabels) to its count.
type socksCounters struct {
	Connections   uint64            `json:"connections"`
	Active        uint64            `json:"active"`
	Replies       map[string]uint64 `json:"replies"`
	AuthFailures  uint64            `json:"auth_failures"`
	Associations  uint64            `json:"udp_associations"`
	ToTarget      uint64            `json:"to_target_bytes"`
	FromTarget    uint64            `json:"from_target_bytes"`
	UDPIn         uint64            `json:"udp_to_target"`
	UDPOut        uint64            `json:"udp_from_target"`
	UDPFragDrops  uint64            `json:"udp_fragment_drops"`
	UDPOtherDrops uint64            `json:"udp_other_drops"`
}

// httpCounters are the HTTP proxy's.
type httpCounters struct {
	Requests       uint64 `json:"requests"`
	Tunnels        uint64 `json:"tunnels"`
	ActiveTunnels  uint64 `json:"active_tunnels"`
	BadRequests    uint64 `json:"bad_requests"`
	AuthFailures   uint64 `json:"auth_failures"`
	BadGateway     uint64 `json:"bad_gateway"`
	GatewayTimeout uint64 `json:"gateway_timeout"`
	ToTarget       uint64 `json:"to_target_bytes"`
	FromTarget     uint64 `json:"from_target_bytes"`
}

// httpError is a count of the HTTP proxy's answers with an error status.
type httpError struct {
	status string
	n      uint64
}

// errors are c's error answers by status.
func (c *httpCounters) errors() []httpError {
	return []httpError{{"400", c.BadRequests}, {"407", c.AuthFailures}, {"502", c.BadGateway}, {"504", c.GatewayTimeout}}
}

// serviceStats reads ri's services' counters (none without services).
func (ri *runningIface) serviceStats() ([]forwardCounters, *socksCounters, *httpCounters) {
	svc := ri.svc
	if svc == nil {
		return nil, nil, nil
	}
	var fwd []forwardCounters
	for _, kind := range []string{"forward", "expose"} {
		for _, st := range svc.manager(kind).List() {
			s := st.Stats
			fwd = append(fwd, forwardCounters{Kind: kind, Rule: st.Rule.String(), Connections: s.Connections, Active: s.Active,
				ToTarget: s.ToTarget, FromTarget: s.FromTarget, DialErrors: s.DialErrors, Dropped: s.Dropped})
		}
	}
	var sc *socksCounters
	if svc.socks != nil {
		s := svc.socks.Stats()
		sc = &socksCounters{Connections: s.Connections, Active: s.Active, Replies: map[string]uint64{}, AuthFailures: s.AuthFailures,
			Associations: s.Associations, ToTarget: s.ToTarget, FromTarget: s.FromTarget, UDPIn: s.UDPIn, UDPOut: s.UDPOut,
			UDPFragDrops: s.FragDropped, UDPOtherDrops: s.UDPDropped}
		for code, n := range s.Replies {
			sc.Replies[socksReplyLabels[code]] = n
		}
	}
	var hc *httpCounters
	if svc.proxy != nil {
		s := svc.proxy.Stats()
		hc = &httpCounters{Requests: s.Requests, Tunnels: s.Tunnels, ActiveTunnels: s.ActiveTunnels, BadRequests: s.BadRequests,
			AuthFailures: s.AuthFailures, BadGateway: s.BadGateway, GatewayTimeout: s.GatewayTimeout, ToTarget: s.ToTarget, FromTarget: s.FromTarget}
	}
	return fwd, sc, hc
}

// servicesText writes s's services' lines of gnv stats.
func (s *ifaceStats) servicesText(w io.Writer) {
	for _, f := range s.Forwards {
		fmt.Fprintf(w, "%s: %s %s connections %d active %d bytes to target %d from target %d, dial errors %d, dropped %d\n", s.Name,
			f.Kind, f.Rule, f.Connections, f.Active, f.ToTarget, f.FromTarget, f.DialErrors, f.Dropped)
	}
	if c := s.SOCKS5; c != nil {
		var replies []string
		for _, name := range socksReplyLabels {
			if n := c.Replies[name]; n != 0 {
				replies = append(replies, fmt.Sprintf("%s=%d", name, n))
			}
		}
		fmt.Fprintf(w, "%s: socks5 connections %d active %d, replies %s, auth failures %d, bytes to target %d from target %d, udp associations %d datagrams %d/%d drops %d\n",
			s.Name, c.Connections, c.Active, orNone(replies), c.AuthFailures, c.ToTarget, c.FromTarget, c.Associations, c.UDPIn, c.UDPOut, c.UDPFragDrops+c.UDPOtherDrops)
	}
	if c := s.HTTPProxy; c != nil {
		var errs []string
		for _, e := range c.errors() {
			if e.n != 0 {
				errs = append(errs, fmt.Sprintf("%s=%d", e.status, e.n))
			}
		}
		fmt.Fprintf(w, "%s: http-proxy requests %d tunnels %d active %d, errors %s, bytes to target %d from target %d\n",
			s.Name, c.Requests, c.Tunnels, c.ActiveTunnels, orNone(errs), c.ToTarget, c.FromTarget)
	}
}
