package forward_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/gnv-project/gnv/stack/forward"
	"github.com/gnv-project/gnv/stack/internal/proxytest"
)

// BenchmarkTCP moves 8 MiB per op to a sink in overlay b: "direct" dials
// it from overlay a, "forward" goes through a host port forwarded by a
// Manager (host socket, splice, overlay a). The ratio is the forward's
// cost.
func BenchmarkTCP(b *testing.B) {
	a, o := proxytest.Overlays(b)
	ln := proxytest.Listen(b, o.Tunnel, "10.0.0.2:9")
	proxytest.ServeConns(b, ln, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		var buf [8]byte
		for i := range buf {
			buf[i] = byte(n >> (8 * i))
		}
		c.Write(buf[:])
	})
	m := forward.NewManager(forward.Host{}, a.Tunnel, forward.Options{})
	defer m.Close()
	r := addLoopback(b, m, "tcp", "10.0.0.2:9")
	const size = 8 << 20
	chunk := proxytest.Blob(256<<10, 1)
	send := func(b *testing.B, dial func() (net.Conn, error)) {
		b.SetBytes(size)
		for b.Loop() {
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			var got [8]byte
			if _, err := io.ReadFull(c, got[:]); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	}
	b.Run("direct", func(b *testing.B) {
		send(b, func() (net.Conn, error) { return a.Tunnel.DialContext(context.Background(), "tcp", "10.0.0.2:9") })
	})
	b.Run("forward", func(b *testing.B) {
		send(b, func() (net.Conn, error) { return net.Dial("tcp", r.Listen.String()) })
	})
}
