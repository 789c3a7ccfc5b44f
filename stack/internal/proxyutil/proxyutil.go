// Package proxyutil holds the small pieces that stack/socks5 and
// stack/httpproxy share: a connection read through the buffer its
// handshake was read with, constant-time credentials, and the timeout
// test for dial errors.
package proxyutil

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"os"
	"syscall"
)

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
