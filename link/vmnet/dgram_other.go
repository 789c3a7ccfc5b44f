//go:build !linux

package vmnet

import "net"

// rawDgram is Linux only: elsewhere the datagram path uses the net
// package (which allocates a socket address per datagram).
type rawDgram struct{ from rawAddr }

type rawAddr struct{}

func newRawDgram(net.PacketConn) *rawDgram { return nil }

func (r *rawDgram) recv([]byte) (int, error)    { panic("unreachable") }
func (r *rawDgram) send([]byte, *rawAddr) error { panic("unreachable") }
func (a *rawAddr) named() bool                  { return false }
func (a *rawAddr) equal(*rawAddr) bool          { return false }
func (a *rawAddr) addr() net.Addr               { return nil }
func rawAddrOf(net.Addr) (rawAddr, bool)        { return rawAddr{}, false }
