package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches and parses /metrics.
func scrape(t *testing.T, inst *instance) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + inst.metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	return parseMetrics(t, resp.Body)
}

// parseMetrics parses a /metrics page.
func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the metric name with the labels, and whether
// it exists.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics scrapes gnv up --metrics, parses it with the Prometheus text
// parser, and checks that the counters of gnv stats are there with their
// labels and move with traffic.
func TestMetrics(t *testing.T) {
	a, _ := pairUp(t, "--metrics", "127.0.0.1:0")
	before := scrape(t, a)
	iface := []string{"iface", "gnva"}
	for _, name := range []string{"gnv_rx_packets_total", "gnv_rx_bytes_total", "gnv_tx_packets_total", "gnv_tx_bytes_total",
		"gnv_tx_gso_segments_total", "gnv_tx_tunnel_jobs_total", "gnv_rx_tunnel_jobs_total", "gnv_rx_coalesced_total", "gnv_rx_control_total", "gnv_pmtu_replies_total",
		"gnv_fdb_entries", "gnv_fdb_max_entries", "gnv_fdb_learned_total", "gnv_fdb_moved_total", "gnv_fdb_no_space_total", "gnv_fdb_expired_total",
		"gnv_mtu_bytes"} {
		if _, ok := value(before, name, iface...); !ok {
			t.Errorf("no %s{iface=\"gnva\"}", name)
		}
	}
	for _, name := range []string{"gnv_socket_rx_datagrams_total", "gnv_socket_tx_datagrams_total", "gnv_socket_rx_bytes_total",
		"gnv_socket_tx_bytes_total", "gnv_socket_rx_errors_total", "gnv_socket_tx_errors_total",
		"go_goroutines", "process_cpu_seconds_total", "go_build_info"} {
		if _, ok := value(before, name); !ok {
			t.Errorf("no %s", name)
		}
	}
	if v, ok := value(before, "gnv_drops_total", "iface", "gnva", "reason", "unknown_vni"); !ok || v != 0 {
		t.Errorf(`gnv_drops_total{iface="gnva",reason="unknown_vni"} = %v, %v`, v, ok)
	}
	if n := len(before["gnv_drops_total"].GetMetric()); n != 20 {
		t.Errorf("%d gnv_drops_total series, want one per reason (20)", n)
	}
	if v, _ := value(before, "gnv_fdb_max_entries", iface...); v != 2000 {
		t.Errorf("gnv_fdb_max_entries = %v", v)
	}
	if v, ok := value(before, "gnv_interface_info", "iface", "gnva", "mode", "l2", "vni", "6", "overlay", "netstack"); !ok || v != 1 {
		t.Errorf("gnv_interface_info: %v %v", v, ok)
	}
	if _, ok := value(before, "gnv_socket_info", "kind", "udp", "local", "127.0.0.1:16390"); !ok {
		t.Error("no gnv_socket_info")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := a.ifaces[0].tun.Ping(ctx, mustAddr("10.6.0.2"), uint16(100+i), 56); err != nil {
			t.Fatal(err)
		}
	}
	after := scrape(t, a)
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"gnv_rx_packets_total", iface}, {"gnv_tx_packets_total", iface}, {"gnv_rx_bytes_total", iface}, {"gnv_tx_bytes_total", iface},
		{"gnv_socket_rx_datagrams_total", nil}, {"gnv_socket_tx_datagrams_total", nil}, {"gnv_socket_tx_bytes_total", nil},
	} {
		v0, _ := value(before, c.name, c.labels...)
		v1, _ := value(after, c.name, c.labels...)
		if v1 < v0+5 {
			t.Errorf("%s %v went from %v to %v after 5 pings", c.name, c.labels, v0, v1)
		}
	}
	resp, err := http.Get("http://" + a.metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `gnv_drops_total{iface="gnva",reason="unknown_vni"} 0`) {
		t.Errorf("exposition lacks the documented drop series")
	}
}
