package main

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The metrics of a netstack overlay's services (--forward, --expose,
// --socks5, --http-proxy): each rule's and each proxy's counters, read at
// scrape time. Rules are labelled kind (forward or expose) and rule (as
// gnv forward list writes it).

var (
	fwdConnectionsDesc = metricDesc("forward_connections_total", "TCP connections accepted, or UDP sessions opened, by a forward or expose rule.", "iface", "kind", "rule")
	fwdActiveDesc      = metricDesc("forward_active", "Connections or UDP sessions of a rule open now.", "iface", "kind", "rule")
	fwdBytesDesc       = metricDesc("forward_bytes_total", "Payload bytes a rule relayed, to the target or back from it.", "iface", "kind", "rule", "direction")
	fwdDialErrorsDesc  = metricDesc("forward_dial_errors_total", "Failed dials to a rule's target.", "iface", "kind", "rule")
	fwdDroppedDesc     = metricDesc("forward_dropped_total", "UDP datagrams a rule dropped (session limit, failed dial, failed send).", "iface", "kind", "rule")

	socksConnectionsDesc = metricDesc("socks5_connections_total", "SOCKS5 client connections accepted.", "iface")
	socksActiveDesc      = metricDesc("socks5_active", "SOCKS5 client connections open now.", "iface")
	socksRepliesDesc     = metricDesc("socks5_replies_total", "SOCKS5 replies sent, by reply (RFC 1928, spaces spelt _).", "iface", "reply")
	socksAuthDesc        = metricDesc("socks5_auth_failures_total", "SOCKS5 clients refused for their method or credentials.", "iface")
	socksAssocDesc       = metricDesc("socks5_udp_associations_total", "SOCKS5 UDP associations made.", "iface")
	socksBytesDesc       = metricDesc("socks5_bytes_total", "Payload bytes relayed, TCP and UDP, to the destinations or back.", "iface", "direction")
	socksDatagramsDesc   = metricDesc("socks5_udp_datagrams_total", "UDP datagrams relayed, from the clients (to_target) or back to them.", "iface", "direction")
	socksUDPDroppedDesc  = metricDesc("socks5_udp_dropped_total", "Client UDP datagrams dropped, by reason: fragment (FRAG not 0) or other.", "iface", "reason")

	httpRequestsDesc = metricDesc("http_proxy_requests_total", "Absolute-form requests the HTTP proxy handled.", "iface")
	httpTunnelsDesc  = metricDesc("http_proxy_tunnels_total", "CONNECT tunnels the HTTP proxy opened.", "iface")
	httpActiveDesc   = metricDesc("http_proxy_active_tunnels", "CONNECT tunnels open now.", "iface")
	httpErrorsDesc   = metricDesc("http_proxy_errors_total", "Requests the HTTP proxy answered with an error, by status: 400, 407, 502, 504.", "iface", "status")
	httpBytesDesc    = metricDesc("http_proxy_bytes_total", "The tunnels' bytes, to the destinations or back.", "iface", "direction")

	serviceDescs = []*prometheus.Desc{fwdConnectionsDesc, fwdActiveDesc, fwdBytesDesc, fwdDialErrorsDesc, fwdDroppedDesc,
		socksConnectionsDesc, socksActiveDesc, socksRepliesDesc, socksAuthDesc, socksAssocDesc, socksBytesDesc, socksDatagramsDesc, socksUDPDroppedDesc,
		httpRequestsDesc, httpTunnelsDesc, httpActiveDesc, httpErrorsDesc, httpBytesDesc}
)

// socksReplyLabels are the reply label values, by code.
var socksReplyLabels = [9]string{"succeeded", "general_failure", "not_allowed", "network_unreachable", "host_unreachable",
	"connection_refused", "ttl_expired", "command_not_supported", "address_type_not_supported"}

// collectServices sends the metrics of ri's services, if it has any: the
// counters gnv stats has (serviceStats).
func collectServices(ri *runningIface, counter func(*prometheus.Desc, uint64, ...string), gauge func(*prometheus.Desc, float64, ...string)) {
	name := ri.plan.name
	fwd, socks, http := ri.serviceStats()
	for _, f := range fwd {
		counter(fwdConnectionsDesc, f.Connections, name, f.Kind, f.Rule)
		gauge(fwdActiveDesc, float64(f.Active), name, f.Kind, f.Rule)
		counter(fwdBytesDesc, f.ToTarget, name, f.Kind, f.Rule, "to_target")
		counter(fwdBytesDesc, f.FromTarget, name, f.Kind, f.Rule, "from_target")
		counter(fwdDialErrorsDesc, f.DialErrors, name, f.Kind, f.Rule)
		counter(fwdDroppedDesc, f.Dropped, name, f.Kind, f.Rule)
	}
	if c := socks; c != nil {
		counter(socksConnectionsDesc, c.Connections, name)
		gauge(socksActiveDesc, float64(c.Active), name)
		for _, reply := range socksReplyLabels {
			counter(socksRepliesDesc, c.Replies[reply], name, reply)
		}
		counter(socksAuthDesc, c.AuthFailures, name)
		counter(socksAssocDesc, c.Associations, name)
		counter(socksBytesDesc, c.ToTarget, name, "to_target")
		counter(socksBytesDesc, c.FromTarget, name, "from_target")
		counter(socksDatagramsDesc, c.UDPIn, name, "to_target")
		counter(socksDatagramsDesc, c.UDPOut, name, "from_target")
		counter(socksUDPDroppedDesc, c.UDPFragDrops, name, "fragment")
		counter(socksUDPDroppedDesc, c.UDPOtherDrops, name, "other")
	}
	if c := http; c != nil {
		counter(httpRequestsDesc, c.Requests, name)
		counter(httpTunnelsDesc, c.Tunnels, name)
		gauge(httpActiveDesc, float64(c.ActiveTunnels), name)
		for _, e := range c.errors() {
			counter(httpErrorsDesc, e.n, name, e.status)
		}
		counter(httpBytesDesc, c.ToTarget, name, "to_target")
		counter(httpBytesDesc, c.FromTarget, name, "from_target")
	}
}
