// Package httpproxy is an HTTP proxy (an http.Handler) whose destinations
// are on a forward.Network, normally a tunnel's overlay: programs that
// speak HTTP proxies (curl -x, browsers, package managers, anything that
// honours HTTP_PROXY) reach overlay hosts through it without a TUN device.
//
// It serves CONNECT (a tunnel: "200 Connection established", then the
// bytes both ways) and absolute-form requests (GET http://host/path),
// which it sends on with net/http's Transport dialling through the
// network; hop-by-hop headers are removed both ways. When the dial fails
// the client gets 502 Bad Gateway, or 504 Gateway Timeout for a timeout,
// with a body that names the error.
//
//	p := httpproxy.New(tun, httpproxy.Options{})
//	defer p.Close()
//	srv := &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
//	go srv.Serve(ln) // a host listener, e.g. 127.0.0.1:3128
package httpproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync/atomic"
	"time"

	"github.com/gnv-project/gnv/stack/forward"
	"github.com/gnv-project/gnv/stack/internal/proxyutil"
)

// DefaultDialTimeout is the default of Options.DialTimeout.
const DefaultDialTimeout = 30 * time.Second

// Options configure a Proxy. The zero value is ready to use.
type Options struct {
	// Logger receives failed dials at debug level, with the target and
	// the client. nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds each dial to a destination; 0 means
	// DefaultDialTimeout. A dial that runs out gets 504.
	DialTimeout time.Duration
	// Authenticate, if set, requires Basic credentials in
	// Proxy-Authorization (else 407) and judges them; nil means none.
	Authenticate func(user, password string) bool
}

// Credentials returns an Options.Authenticate that accepts user with
// password only, comparing in constant time.
func Credentials(user, password string) func(user, password string) bool {
	return proxyutil.Credentials(user, password)
}

// Stats are a Proxy's counters, a snapshot.
type Stats struct {
	// Requests counts absolute-form requests handled.
	Requests uint64
	// Tunnels counts CONNECT tunnels opened; ActiveTunnels those open
	// now.
	Tunnels, ActiveTunnels uint64
	// BadGateway and GatewayTimeout count 502 and 504 answers.
	BadGateway, GatewayTimeout uint64
	// BadRequests counts requests that were not proxy requests (400).
	BadRequests uint64
	// AuthFailures counts 407 answers.
	AuthFailures uint64
	// ToTarget and FromTarget count the tunnels' bytes each way.
	ToTarget, FromTarget uint64
}

// Proxy is an HTTP proxy handler. Serve it with an http.Server; its
// methods are safe for concurrent use.
type Proxy struct {
	network   forward.Network
	opts      Options
	log       *slog.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
	g         *proxyutil.Group // the CONNECT tunnels

	requests, tunnels, activeTunnels, badGateway, gatewayTimeout atomic.Uint64
	badRequests, authFailures, toTarget, fromTarget              atomic.Uint64
}

var _ http.Handler = (*Proxy)(nil)

// New returns a proxy whose destinations are on network n.
func New(n forward.Network, opts Options) *Proxy {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	log := proxyutil.Logger(opts.Logger)
	p := &Proxy{network: n, opts: opts, log: log, g: proxyutil.NewGroup(context.Background())}
	p.transport = &http.Transport{
		DialContext:     p.dial,
		MaxIdleConns:    100,
		IdleConnTimeout: 90 * time.Second,
		// A proxy passes Content-Encoding through untouched.
		DisableCompression: true,
	}
	p.rp = &httputil.ReverseProxy{
		// The outgoing request is a clone of the incoming one, whose
		// URL is absolute already; ReverseProxy has removed the
		// hop-by-hop headers.
		Rewrite:      func(*httputil.ProxyRequest) {},
		Transport:    p.transport,
		ErrorHandler: p.fail,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// dial connects through the network, within DialTimeout.
func (p *Proxy) dial(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
	defer cancel()
	return p.network.DialContext(ctx, network, address)
}

// Status returns the status code for a failure to reach the
// destination: 504 Gateway Timeout for a timeout (ETIMEDOUT, a deadline),
// else 502 Bad Gateway.
func Status(err error) int {
	if proxyutil.IsTimeout(err) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// fail answers a request whose destination could not be reached.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := Status(err)
	if code == http.StatusGatewayTimeout {
		p.gatewayTimeout.Add(1)
	} else {
		p.badGateway.Add(1)
	}
	p.log.Debug("http proxy: destination failed", "method", r.Method, "target", r.Host, "client", r.RemoteAddr, "status", code, "err", err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(code)
	fmt.Fprintf(w, "gnv http proxy: %s %s: %v\n", r.Method, r.Host, err)
}

// ServeHTTP proxies one request: CONNECT opens a tunnel; an absolute-form
// request (GET http://host/path) is sent on; anything else is 400.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.authorized(w, r) {
		return
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		p.badRequests.Add(1)
		http.Error(w, "gnv http proxy: not a proxy request: want an absolute http:// URL or CONNECT", http.StatusBadRequest)
		return
	}
	p.requests.Add(1)
	p.rp.ServeHTTP(w, r)
}

// authorized checks Proxy-Authorization, answering 407 if it fails.
func (p *Proxy) authorized(w http.ResponseWriter, r *http.Request) bool {
	if p.opts.Authenticate == nil {
		return true
	}
	if h := r.Header.Get("Proxy-Authorization"); h != "" {
		// Basic credentials, parsed as for Authorization.
		q := &http.Request{Header: http.Header{"Authorization": {h}}}
		if user, pass, ok := q.BasicAuth(); ok && p.opts.Authenticate(user, pass) {
			return true
		}
	}
	p.authFailures.Add(1)
	w.Header().Set("Proxy-Authenticate", `Basic realm="gnv"`)
	http.Error(w, "gnv http proxy: proxy authentication required", http.StatusProxyAuthRequired)
	return false
}

// connect serves CONNECT.
func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	if _, port, err := net.SplitHostPort(target); err != nil || port == "" {
		p.badRequests.Add(1)
		http.Error(w, fmt.Sprintf("gnv http proxy: CONNECT %q: want host:port", target), http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "gnv http proxy: CONNECT needs HTTP/1", http.StatusHTTPVersionNotSupported)
		return
	}
	if !p.g.Track(true) {
		http.Error(w, "gnv http proxy: closed", http.StatusServiceUnavailable)
		return
	}
	defer p.g.Done()
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(p.g.Context(), cancel)
	tc, err := p.dial(ctx, "tcp", target)
	stop()
	cancel()
	if err != nil {
		p.fail(w, r, err)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		tc.Close()
		return
	}
	if !p.g.Track(false, c, tc) {
		c.Close()
		tc.Close()
		return
	}
	defer p.g.Untrack(c, tc)
	defer c.Close()
	defer tc.Close()
	p.tunnels.Add(1)
	p.activeTunnels.Add(1)
	defer p.activeTunnels.Add(^uint64(0))
	_ = c.SetDeadline(time.Time{})
	if _, err := io.WriteString(brw, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	forward.Splice(&proxyutil.BufferedConn{Conn: c, R: brw.Reader}, tc, &p.toTarget, &p.fromTarget)
}

// Close closes every CONNECT tunnel and the idle connections to
// destinations, cancels dials in progress, and waits for the tunnels to
// end. Requests in flight belong to the http.Server: shut it down first.
func (p *Proxy) Close() error {
	p.g.Close()
	p.transport.CloseIdleConnections()
	return nil
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Requests:       p.requests.Load(),
		Tunnels:        p.tunnels.Load(),
		ActiveTunnels:  p.activeTunnels.Load(),
		BadGateway:     p.badGateway.Load(),
		GatewayTimeout: p.gatewayTimeout.Load(),
		BadRequests:    p.badRequests.Load(),
		AuthFailures:   p.authFailures.Load(),
		ToTarget:       p.toTarget.Load(),
		FromTarget:     p.fromTarget.Load(),
	}
}
