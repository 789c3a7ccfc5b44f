// Package proxyutil holds the small pieces that stack/socks5,
// stack/httpproxy and stack/forward share: what a server holds open and
// waits for (Group), a connection read through the buffer its handshake
// was read with, constant-time credentials, the timeout test for dial
// errors, and the default logger.
package proxyutil

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
)

// Group is what a server (a proxy, a forwarding rule) holds open and runs:
// the listeners and connections that closing it closes, the goroutines it
// waits for, and a context that ends when it closes, for dials in
// progress. Its methods are safe for concurrent use.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	open   map[io.Closer]struct{}
}

// NewGroup returns a group whose context is a child of parent.
func NewGroup(parent context.Context) *Group {
	ctx, cancel := context.WithCancel(parent)
	return &Group{ctx: ctx, cancel: cancel, open: map[io.Closer]struct{}{}}
}

// Context ends when the group closes.
func (g *Group) Context() context.Context { return g.ctx }

// Track registers cs to be closed by Close and, with goroutine set, counts
// one goroutine, which calls Done when it ends. Once the group is closed
// it registers and counts nothing and returns false.
func (g *Group) Track(goroutine bool, cs ...io.Closer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	for _, c := range cs {
		g.open[c] = struct{}{}
	}
	if goroutine {
		g.wg.Add(1)
	}
	return true
}

// Untrack forgets cs (the caller closes them).
func (g *Group) Untrack(cs ...io.Closer) {
	g.mu.Lock()
	for _, c := range cs {
		delete(g.open, c)
	}
	g.mu.Unlock()
}

// Done ends a goroutine counted by Track.
func (g *Group) Done() { g.wg.Done() }

// Closed reports whether Close has been called.
func (g *Group) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Close closes everything tracked, ends the context and waits for the
// goroutines. Later Tracks fail.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	for c := range g.open {
		c.Close()
	}
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
}

// AddrPort returns the address of a *net.TCPAddr or *net.UDPAddr, or of
// another net.Addr whose String is IP:port, with IPv4 unmapped; else the
// zero AddrPort.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Logger returns l, or a logger that discards everything when l is nil.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// BufferedConn is a connection whose reads go through R, the buffer its
// handshake (a SOCKS5 request, an HTTP CONNECT) was read with, so that
// bytes the client sent right behind it are not lost.
type BufferedConn struct {
	net.Conn
	// R buffers the connection's reads.
	R *bufio.Reader
}

// Read reads through R.
func (b *BufferedConn) Read(p []byte) (int, error) { return b.R.Read(p) }

// CloseWrite shuts down the writing side, if the connection has one.
func (b *BufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("close write: not supported")
}

// Credentials returns a check that accepts user with password only,
// comparing in constant time.
func Credentials(user, password string) func(user, password string) bool {
	return func(u, p string) bool {
		uok := subtle.ConstantTimeCompare([]byte(u), []byte(user))
		pok := subtle.ConstantTimeCompare([]byte(p), []byte(password))
		return uok&pok == 1
	}
}

// IsTimeout reports whether err says a deadline or timeout ran out:
// ETIMEDOUT, a context deadline, a socket deadline, or any net.Error
// whose Timeout is true.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
