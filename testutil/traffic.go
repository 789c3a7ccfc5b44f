package testutil

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"time"
)

// Dialer is anything with a net.Dialer-style DialContext, such as a
// *stack.Tunnel.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Listener is anything that listens like net.Listen and net.ListenPacket,
// such as a *stack.Tunnel.
type Listener interface {
	Listen(network, address string) (net.Listener, error)
	ListenPacket(network, address string) (net.PacketConn, error)
}

// TCPResult reports a transfer.
type TCPResult struct {
	Bytes    int64
	Duration time.Duration
}

// Mbps is the transfer's goodput in Mbit/s.
func (r TCPResult) Mbps() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Duration.Seconds() / 1e6
}

// patternSize is the period of the byte pattern TransferTCP sends.
const patternSize = 1 << 20

// pattern is a repeating pseudo-random byte stream: cheap to generate and
// to check at any rate, and any loss, duplication, reordering or
// corruption of the stream shows as a mismatch.
type pattern struct {
	block []byte
	off   int64
}

func newPattern(seed int64) *pattern {
	b := make([]byte, patternSize)
	rand.New(rand.NewSource(seed)).Read(b)
	return &pattern{block: b}
}

// Read fills p with the next bytes of the stream.
func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		i := int(p.off % patternSize)
		c := copy(b[n:], p.block[i:])
		n += c
		p.off += int64(c)
	}
	return n, nil
}

// Write checks b against the next bytes of the stream.
func (p *pattern) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		i := int(p.off % patternSize)
		c := min(len(b)-n, patternSize-i)
		if !bytes.Equal(b[n:n+c], p.block[i:i+c]) {
			return n, fmt.Errorf("stream differs from what was sent at offset %d", p.off)
		}
		n += c
		p.off += int64(c)
	}
	return n, nil
}

// TransferTCP listens on server at addr (IP:port), connects from client,
// sends size bytes of a seeded pseudo-random stream and checks that the
// server received exactly that stream: every byte, in order, and no more.
func TransferTCP(ctx context.Context, client Dialer, server Listener, addr netip.AddrPort, size int64, seed int64) (TCPResult, error) {
	network := "tcp4"
	if addr.Addr().Is6() {
		network = "tcp6"
	}
	ln, err := server.Listen(network, addr.String())
	if err != nil {
		return TCPResult{}, fmt.Errorf("listen %s: %w", addr, err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		err error
	}
	src := newPattern(seed)
	check := &pattern{block: src.block}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		// Closing the listener does not reach an accepted connection:
		// without this a receiver waiting on a stalled connection would
		// outlive ctx.
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		n, err := io.CopyBuffer(check, c, make([]byte, 256<<10))
		done <- result{n: n, err: err}
	}()
	c, err := client.DialContext(ctx, network, addr.String())
	if err != nil {
		ln.Close()
		<-done
		return TCPResult{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	start := time.Now()
	_, werr := io.CopyBuffer(c, io.LimitReader(src, size), make([]byte, 256<<10))
	if werr == nil {
		werr = c.(interface{ CloseWrite() error }).CloseWrite()
	}
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		c.Close()
		ln.Close()
		r = <-done
		if r.err == nil {
			r.err = ctx.Err()
		}
	}
	elapsed := time.Since(start)
	c.Close()
	if werr != nil {
		return TCPResult{}, fmt.Errorf("send: %w", werr)
	}
	if r.err != nil {
		return TCPResult{}, fmt.Errorf("receive: %d of %d bytes in %v: %w", r.n, size, elapsed.Round(time.Millisecond), r.err)
	}
	if r.n != size {
		return TCPResult{}, fmt.Errorf("received %d bytes, sent %d", r.n, size)
	}
	return TCPResult{Bytes: size, Duration: elapsed}, nil
}

// ExchangeUDP sends count datagrams of size bytes from client to a UDP echo
// server at addr on server and waits for each echo, retrying a datagram up
// to 5 times (the underlay may lose packets). It checks every echo's
// contents.
func ExchangeUDP(ctx context.Context, client Dialer, server Listener, addr netip.AddrPort, count, size int) error {
	network := "udp4"
	if addr.Addr().Is6() {
		network = "udp6"
	}
	pc, err := server.ListenPacket(network, addr.String())
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer pc.Close()
	go EchoPackets(pc)
	c, err := client.DialContext(ctx, network, addr.String())
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	msg := make([]byte, size)
	reply := make([]byte, size+1)
	for i := 0; i < count; i++ {
		for j := range msg {
			msg[j] = byte(i + j)
		}
		got := false
		for try := 0; try < 5 && !got; try++ {
			if _, err := c.Write(msg); err != nil {
				return fmt.Errorf("datagram %d: %w", i, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(reply)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
					continue
				}
				return fmt.Errorf("datagram %d: %w", i, err)
			}
			if !bytes.Equal(reply[:n], msg) {
				return fmt.Errorf("datagram %d: echo differs (%d bytes, sent %d)", i, n, size)
			}
			got = true
		}
		if !got {
			return fmt.Errorf("datagram %d: no echo after 5 tries", i)
		}
	}
	return nil
}

// EchoPackets sends every datagram pc receives back to its sender until a
// read fails (pc is closed). A failed write (the sender is gone, a buffer
// is full) loses that echo only, as the network would.
func EchoPackets(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}
