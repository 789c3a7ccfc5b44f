package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/stack/forward"
	"github.com/gnv-project/gnv/stack/httpproxy"
	"github.com/gnv-project/gnv/stack/socks5"
)

// services are the ways host programs and a netstack overlay reach each
// other: port forwards into the overlay (--forward), overlay ports exposed
// to host targets (--expose), and the SOCKS5 (--socks5) and HTTP
// (--http-proxy) proxies into the overlay. Rules can be added and removed
// at run time over the control socket ("gnv forward", "gnv expose").
type services struct {
	forwards *forward.Manager // host listens, overlay dials
	exposes  *forward.Manager // overlay listens, host dials

	socks     *socks5.Server
	socksAddr net.Addr

	http      *http.Server
	proxy     *httpproxy.Proxy
	httpAddr  net.Addr
	httpError chan error
}

// startServices starts ip's forwards, exposes and proxies on tun. On error
// everything started so far is stopped.
func startServices(tun *stack.Tunnel, ip *ifacePlan, log *slog.Logger) (_ *services, err error) {
	log = log.With("name", ip.name)
	s := &services{
		forwards: forward.NewManager(forward.Host{}, tun, forward.Options{Logger: log}),
		exposes:  forward.NewManager(tun, forward.Host{}, forward.Options{Logger: log}),
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, r := range ip.forwards {
		got, err := s.forwards.Add(r)
		if err != nil {
			return nil, fmt.Errorf("--forward %s: %w", r, err)
		}
		log.Info("forwarding", "rule", got.String())
	}
	for _, r := range ip.exposes {
		got, err := s.exposes.Add(r)
		if err != nil {
			return nil, fmt.Errorf("--expose %s: %w", r, err)
		}
		log.Info("exposing", "rule", got.String())
	}
	if ip.socks5 != "" {
		ln, err := net.Listen("tcp", ip.socks5)
		if err != nil {
			return nil, fmt.Errorf("--socks5 %s: %w", ip.socks5, err)
		}
		s.socks = socks5.New(tun, socks5.Options{Logger: log})
		s.socksAddr = ln.Addr()
		go func() { _ = s.socks.Serve(ln) }()
		log.Info("SOCKS5 (CONNECT, UDP ASSOCIATE)", "listen", ln.Addr().String())
	}
	if ip.httpProxy != "" {
		ln, err := net.Listen("tcp", ip.httpProxy)
		if err != nil {
			return nil, fmt.Errorf("--http-proxy %s: %w", ip.httpProxy, err)
		}
		s.proxy = httpproxy.New(tun, httpproxy.Options{Logger: log})
		s.http = &http.Server{Handler: s.proxy, ReadHeaderTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		s.httpAddr = ln.Addr()
		s.httpError = make(chan error, 1)
		go func() { s.httpError <- s.http.Serve(ln) }()
		log.Info("HTTP proxy (CONNECT, absolute-form)", "listen", ln.Addr().String())
	}
	return s, nil
}

// Close stops the proxies and every rule, closing their connections.
func (s *services) Close() error {
	if s.http != nil {
		_ = s.http.Close()
		<-s.httpError
		_ = s.proxy.Close()
	}
	if s.socks != nil {
		_ = s.socks.Close()
	}
	_ = s.forwards.Close()
	_ = s.exposes.Close()
	return nil
}

// manager returns the rule set a control request names: "forward" or
// "expose".
func (s *services) manager(kind string) *forward.Manager {
	if kind == "expose" {
		return s.exposes
	}
	return s.forwards
}

// handleForwardControl runs "forward|expose add NAME RULE", "... del NAME
// KEY" and "... list NAME" for the control socket.
func handleForwardControl(w io.Writer, kind, op string, ri *runningIface, args []string) error {
	if ri.svc == nil {
		return fmt.Errorf("%s has no in-process overlay (--overlay netstack): host programs reach it directly", ri.plan.name)
	}
	m := ri.svc.manager(kind)
	switch op {
	case "list":
		for _, st := range m.List() {
			s := st.Stats
			fmt.Fprintf(w, "%s %s connections %d active %d bytes-to-target %d bytes-from-target %d dial-errors %d dropped %d\n",
				kind, st.Rule, s.Connections, s.Active, s.ToTarget, s.FromTarget, s.DialErrors, s.Dropped)
		}
		return nil
	case "add":
		if len(args) != 1 {
			return fmt.Errorf("%s add: want one rule, like %s", kind, ruleExample(kind))
		}
		r, err := forward.ParseRule(args[0])
		if err != nil {
			return err
		}
		if err := checkExposeListen(kind, r, ri.plan.cfg.Addresses); err != nil {
			return err
		}
		if kind == "forward" {
			if err := checkOverlayTarget(r, ri.tun.DNS()); err != nil {
				return fmt.Errorf("forward %s: %w", args[0], err)
			}
		}
		got, err := m.Add(r)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s %s\n", kind, got)
		return nil
	case "del":
		if len(args) != 1 {
			return fmt.Errorf("%s del: want one rule or PROTO:LISTEN, like %s", kind, ruleExample(kind))
		}
		k, err := forward.ParseKey(args[0])
		if err != nil {
			return err
		}
		if err := m.Remove(k); errors.Is(err, forward.ErrNoRule) {
			return fmt.Errorf("no %s rule listens on %s", kind, k)
		} else if err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("%s %q: valid commands are list, add and del", kind, op)
}

// ruleExample shows the rule syntax of kind.
func ruleExample(kind string) string {
	if kind == "expose" {
		return "tcp:10.0.0.1:80=127.0.0.1:8080 (OVERLAY_ADDR:PORT=HOST:PORT)"
	}
	return "tcp:127.0.0.1:8080=10.0.0.2:80 (HOST_ADDR:PORT=OVERLAY_ADDR:PORT)"
}

// checkExposeListen checks that an expose rule listens on one of addrs, the
// interface's overlay addresses, or on the unspecified address of a family
// among them. Forward rules listen on the host and are not checked here.
func checkExposeListen(kind string, r forward.Rule, addrs []netip.Prefix) error {
	if kind != "expose" {
		return nil
	}
	l := r.Listen.Addr().Unmap()
	var have []string
	for _, p := range addrs {
		a := p.Addr().Unmap()
		if a == l || (l.IsUnspecified() && a.Is4() == l.Is4()) {
			return nil
		}
		have = append(have, a.String())
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return fmt.Errorf("expose %s: %s is not an overlay address of this interface (have %s); an expose listens in the overlay and dials a host target, like %s",
		r, l, strings.Join(have, ", "), ruleExample("expose"))
}

// planServices parses and checks o's --forward, --expose, --socks5 and
// --http-proxy into p, before anything starts: rule syntax, exposes that
// listen on an overlay address, and overlay addresses used twice (host
// addresses used twice are checkListeners' job).
func (p *ifacePlan) planServices(o *ifaceOptions) error {
	for _, s := range o.forwards {
		r, err := forward.ParseRule(s)
		if err != nil {
			return fmt.Errorf("--forward: %w", err)
		}
		if err := checkOverlayTarget(r, p.cfg.DNS); err != nil {
			return fmt.Errorf("--forward %s: %w", s, err)
		}
		p.forwards = append(p.forwards, r)
	}
	overlayListen := map[forward.Key]string{}
	for _, s := range o.exposes {
		r, err := forward.ParseRule(s)
		if err != nil {
			return fmt.Errorf("--expose: %w", err)
		}
		if err := checkExposeListen("expose", r, p.cfg.Addresses); err != nil {
			return fmt.Errorf("--%w", err)
		}
		if prev, ok := overlayListen[r.Key()]; ok && r.Listen.Port() != 0 {
			return fmt.Errorf("--expose %s: %s is already used by --expose %s", s, r.Key(), prev)
		}
		overlayListen[r.Key()] = s
		p.exposes = append(p.exposes, r)
	}
	for _, pr := range []struct{ flag, addr string }{{"--socks5", o.socks5}, {"--http-proxy", o.httpProxy}} {
		if pr.addr == "" {
			continue
		}
		if host, _, err := net.SplitHostPort(pr.addr); err != nil || host == "" {
			return fmt.Errorf("%s %q: want ADDR:PORT, like 127.0.0.1:1080", pr.flag, pr.addr)
		}
	}
	return nil
}

// forwardsShow lists ri's forward and expose rules for gnv show.
func (ri *runningIface) forwardsShow() []forwardShow {
	if ri.svc == nil {
		return nil
	}
	var out []forwardShow
	for _, kind := range []string{"forward", "expose"} {
		for _, st := range ri.svc.manager(kind).List() {
			out = append(out, forwardShow{Kind: kind, Spec: st.Rule.String(), Listen: st.Rule.Listen.String(), Target: st.Rule.Target})
		}
	}
	return out
}

// checkOverlayTarget refuses a forward whose target (in the overlay) is a
// name when the overlay has no DNS servers to look it up with.
func checkOverlayTarget(r forward.Rule, dns []netip.AddrPort) error {
	host, _, _ := net.SplitHostPort(r.Target)
	if _, err := netip.ParseAddr(host); err != nil && len(dns) == 0 {
		return fmt.Errorf("%q is a name, and the overlay has no resolver: give its DNS server with --dns, or an IP address", host)
	}
	return nil
}

// parseDNSServer parses a --dns value: ADDR or ADDR:PORT ([ADDR]:PORT for
// IPv6); the port defaults to 53.
func parseDNSServer(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil && !a.IsUnspecified() && !a.IsMulticast() {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 && !ap.Addr().IsUnspecified() && !ap.Addr().IsMulticast() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	return netip.AddrPort{}, fmt.Errorf("--dns %q: want a unicast ADDR or ADDR:PORT (port 1..65535, default 53), like 10.0.0.53 or [fd00::53]:53", s)
}
