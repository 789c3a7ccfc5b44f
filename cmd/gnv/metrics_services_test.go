package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// TestServiceMetrics: a netstack overlay's forward, SOCKS5 server and HTTP
// proxy are used, and /metrics counts it: the rule's connection and bytes,
// the SOCKS5 replies by kind, the HTTP proxy's requests.
func TestServiceMetrics(t *testing.T) {
	a, b := pairUp(t, "--metrics", "127.0.0.1:0", "--forward", "tcp:127.0.0.1:0=10.6.0.2:80",
		"--socks5", "127.0.0.1:0", "--http-proxy", "127.0.0.1:0")
	ln, err := b.ifaces[0].tun.Listen("tcp", "10.6.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from the overlay") })}
	go srv.Serve(ln)
	defer srv.Close()
	svc := a.ifaces[0].svc
	get := func(c *http.Client, u string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello from the overlay" {
			t.Fatalf("GET %s: %q", u, body)
		}
	}
	rule := svc.forwards.List()[0].Rule
	get(&http.Client{Timeout: 10 * time.Second}, "http://"+rule.Listen.String()+"/")
	socks, err := proxy.SOCKS5("tcp", svc.socksAddr.String(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	dialer := socks.(proxy.ContextDialer)
	get(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext}}, "http://10.6.0.2/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := dialer.DialContext(ctx, "tcp", "10.6.0.2:81"); err == nil { // nothing listens: refused
		c.Close()
		t.Fatal("SOCKS5 CONNECT to a closed port succeeded")
	}
	proxyURL, _ := url.Parse("http://" + svc.httpAddr.String())
	get(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}, "http://10.6.0.2/")

	mfs := scrape(t, a)
	iface := []string{"iface", "gnva"}
	fwd := []string{"iface", "gnva", "kind", "forward", "rule", rule.String()}
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
	}{
		{"gnv_forward_connections_total", fwd, func(v float64) bool { return v == 1 }},
		{"gnv_forward_bytes_total", append(fwd, "direction", "from_target"), func(v float64) bool { return v > 0 }},
		{"gnv_forward_dial_errors_total", fwd, func(v float64) bool { return v == 0 }},
		{"gnv_socks5_connections_total", iface, func(v float64) bool { return v >= 2 }},
		{"gnv_socks5_replies_total", append(iface, "reply", "succeeded"), func(v float64) bool { return v >= 1 }},
		{"gnv_socks5_replies_total", append(iface, "reply", "connection_refused"), func(v float64) bool { return v == 1 }},
		{"gnv_socks5_replies_total", append(iface, "reply", "host_unreachable"), func(v float64) bool { return v == 0 }},
		{"gnv_socks5_bytes_total", append(iface, "direction", "from_target"), func(v float64) bool { return v > 0 }},
		{"gnv_http_proxy_requests_total", iface, func(v float64) bool { return v == 1 }},
		{"gnv_http_proxy_errors_total", append(iface, "status", "502"), func(v float64) bool { return v == 0 }},
	} {
		if v, ok := value(mfs, c.name, c.labels...); !ok || !c.want(v) {
			t.Errorf("%s%v = %v (present %v)", c.name, c.labels, v, ok)
		}
	}
	if n := len(mfs["gnv_socks5_replies_total"].GetMetric()); n != 9 {
		t.Errorf("%d gnv_socks5_replies_total series, want one per reply code (9)", n)
	}

	// gnv stats has the same, as text and as JSON.
	code, out, stderr := runCLI("stats", "--control", a.control)
	if code != 0 || !strings.Contains(out, "gnva: forward "+rule.String()+" connections 1 ") ||
		!strings.Contains(out, "connection_refused=1") || !strings.Contains(out, "gnva: http-proxy requests 1 ") {
		t.Errorf("gnv stats: exit %d, %s\n%s", code, stderr, out)
	}
	code, out, stderr = runCLI("stats", "--json", "--control", a.control)
	var st struct {
		Interfaces []struct {
			Forwards []struct {
				Kind        string `json:"kind"`
				Connections uint64 `json:"connections"`
			} `json:"forwards"`
			SOCKS5 *struct {
				Replies map[string]uint64 `json:"replies"`
			} `json:"socks5"`
			HTTPProxy *struct {
				Requests uint64 `json:"requests"`
			} `json:"http_proxy"`
		} `json:"interfaces"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Interfaces) != 1 {
		t.Fatalf("gnv stats --json: exit %d, %v, %s", code, err, stderr)
	}
	i := st.Interfaces[0]
	if len(i.Forwards) != 1 || i.Forwards[0].Kind != "forward" || i.Forwards[0].Connections != 1 || i.SOCKS5 == nil ||
		i.SOCKS5.Replies["connection_refused"] != 1 || len(i.SOCKS5.Replies) != 9 || i.HTTPProxy == nil || i.HTTPProxy.Requests != 1 {
		t.Errorf("gnv stats --json: %s", out)
	}
}
