// Package forward moves TCP connections and UDP flows between two
// networks: the host's (Host, the kernel's sockets) and a tunnel's overlay
// (*stack.Net, or the *stack.Tunnel that embeds it). It is how a rootless
// program reaches an in-process overlay, and how the overlay reaches
// services on the host.
//
// A Manager holds forwarding rules. Which way they point is set by the two
// networks it is given: the one it listens on and the one it dials.
//
//	fwd := forward.NewManager(forward.Host{}, tun, forward.Options{}) // host port → overlay (--forward)
//	exp := forward.NewManager(tun, forward.Host{}, forward.Options{}) // overlay port → host (--expose)
//
// Rules are added and removed while traffic flows (for a control socket),
// and each keeps counters: connections, active ones, bytes each way, dial
// errors, dropped datagrams. TCP is spliced with half-close in both
// directions; UDP is relayed per flow, each client address getting a
// socket of its own on the dialled side, so that replies go back to the
// client that caused them, with an idle timeout and a bound on the number
// of flows.
package forward

import (
	"context"
	"net"
)

// Network is where connections are made and accepted: the host (Host) or
// an overlay (*stack.Net and *stack.Tunnel satisfy it). network is "tcp",
// "tcp4", "tcp6", "udp", "udp4" or "udp6"; addresses are host:port.
type Network interface {
	// DialContext connects to address, like net.Dialer.DialContext.
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
	// Listen listens for stream connections, like net.Listen.
	Listen(network, address string) (net.Listener, error)
	// ListenPacket opens a datagram socket, like net.ListenPacket.
	ListenPacket(network, address string) (net.PacketConn, error)
}

// Host is the host's network: the kernel's sockets through the net
// package. The zero value is ready to use; set Dialer or ListenConfig to
// choose timeouts, a local address, keep-alives or socket options.
type Host struct {
	// Dialer makes the connections of DialContext.
	Dialer net.Dialer
	// ListenConfig makes the sockets of Listen and ListenPacket.
	ListenConfig net.ListenConfig
}

var _ Network = Host{}

// DialContext connects to address with h.Dialer.
func (h Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return h.Dialer.DialContext(ctx, network, address)
}

// Listen listens on address with h.ListenConfig.
func (h Host) Listen(network, address string) (net.Listener, error) {
	return h.ListenConfig.Listen(context.Background(), network, address)
}

// ListenPacket opens a datagram socket on address with h.ListenConfig.
func (h Host) ListenPacket(network, address string) (net.PacketConn, error) {
	return h.ListenConfig.ListenPacket(context.Background(), network, address)
}
