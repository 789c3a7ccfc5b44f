package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gnv-project/gnv/stack"
)

// proxy accepts host connections on ln and splices each to a connection
// dialled into the overlay. It is how a rootless user reaches a netstack
// overlay: port forwards and SOCKS5.
type proxy struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Close stops accepting, closes every proxied connection and waits.
func (p *proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// serve accepts connections and runs handle for each.
func (p *proxy) serve(handle func(net.Conn)) {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			defer c.Close()
			handle(c)
		}()
	}
}

// splice copies both ways until either side closes.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// startForward forwards a host TCP port to an overlay address.
func startForward(ctx context.Context, tun *stack.Tunnel, f forwardSpec, log *slog.Logger) (io.Closer, error) {
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("--forward %s: %w", f.listen, err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve(func(c net.Conn) {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		oc, err := tun.DialContext(dctx, "tcp", f.target.String())
		cancel()
		if err != nil {
			log.Warn("forward: dial failed", "target", f.target, "err", err)
			return
		}
		if !p.track(oc) {
			oc.Close()
			return
		}
		defer p.untrack(oc)
		defer oc.Close()
		splice(c, oc)
	})
	log.Info("forwarding", "listen", ln.Addr().String(), "target", f.target)
	return p, nil
}

// startSOCKS5 serves SOCKS5 (RFC 1928) CONNECT without authentication on a
// host address; destinations must be IP addresses on the overlay.
func startSOCKS5(ctx context.Context, tun *stack.Tunnel, addr string, log *slog.Logger) (io.Closer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--socks5 %s: %w", addr, err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve(func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		target, err := socksHandshake(c)
		if err != nil {
			log.Debug("socks5: bad request", "from", c.RemoteAddr(), "err", err)
			return
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		oc, err := tun.DialContext(dctx, "tcp", target.String())
		cancel()
		if err != nil {
			_, _ = c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
			return
		}
		if !p.track(oc) {
			oc.Close()
			return
		}
		defer p.untrack(oc)
		defer oc.Close()
		// Success, bound address 0.0.0.0:0.
		if _, err := c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
			return
		}
		_ = c.SetDeadline(time.Time{})
		splice(c, oc)
	})
	log.Info("socks5", "listen", ln.Addr().String())
	return p, nil
}

// socksHandshake reads the greeting and a CONNECT request; it answers the
// greeting (no authentication) and returns the destination. Errors get the
// matching SOCKS5 reply.
func socksHandshake(c net.Conn) (netip.AddrPort, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return netip.AddrPort{}, err
	}
	if hdr[0] != 5 {
		return netip.AddrPort{}, fmt.Errorf("version %d, want 5", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return netip.AddrPort{}, err
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		_, _ = c.Write([]byte{5, 0xff})
		return netip.AddrPort{}, errors.New("client offers no no-authentication method")
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return netip.AddrPort{}, err
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return netip.AddrPort{}, err
	}
	fail := func(code byte, err error) (netip.AddrPort, error) {
		_, _ = c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
		return netip.AddrPort{}, err
	}
	if req[0] != 5 || req[1] != 1 {
		return fail(7, fmt.Errorf("command %d: only CONNECT is supported", req[1]))
	}
	var ip netip.Addr
	switch req[3] {
	case 1:
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return netip.AddrPort{}, err
		}
		ip = netip.AddrFrom4(b)
	case 4:
		var b [16]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return netip.AddrPort{}, err
		}
		ip = netip.AddrFrom16(b)
	case 3:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return netip.AddrPort{}, err
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return netip.AddrPort{}, err
		}
		a, err := netip.ParseAddr(string(name))
		if err != nil {
			return fail(8, fmt.Errorf("domain %q: the overlay has no resolver; use an IP address", name))
		}
		ip = a
	default:
		return fail(8, fmt.Errorf("address type %d", req[3]))
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip.Unmap(), binary.BigEndian.Uint16(port[:])), nil
}
