package stack_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestNetErrors: the overlay's dial and bind errors carry the
// syscall.Errno a kernel socket would return, inside a *net.OpError, so
// callers (SOCKS5 reply codes, HTTP proxy status codes) can tell refused
// from unreachable with errors.Is; and a closed tunnel says net.ErrClosed.
func TestNetErrors(t *testing.T) {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 5})
	if err != nil {
		t.Fatal(err)
	}
	a, b := hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	check := func(name string, err error, want error) {
		t.Helper()
		var op *net.OpError
		if !errors.As(err, &op) {
			t.Errorf("%s: error %v (%T), want a *net.OpError", name, err, err)
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: error %v, want errors.Is %v", name, err, want)
		}
	}
	_, err = a.DialContext(ctx, "tcp", "10.0.0.2:81")
	check("refused", err, syscall.ECONNREFUSED)
	_, err = a.DialContext(ctx, "tcp", "10.0.0.99:80") // no such neighbour: ARP fails
	check("unreachable", err, syscall.EHOSTUNREACH)

	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = a.DialContext(short, "tcp", "10.0.0.98:80")
	cancelShort()
	check("deadline", err, context.DeadlineExceeded)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("deadline: %v is not a net.Error with Timeout()", err)
	}

	ln, err := b.Listen("tcp", "10.0.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = b.Listen("tcp", "10.0.0.2:80")
	check("bind twice", err, syscall.EADDRINUSE)
	_, err = b.ListenPacket("udp", "10.0.0.9:53")
	check("bind foreign address", err, syscall.EADDRNOTAVAIL)
	_, err = a.DialContext(ctx, "tcp", "example.com:80")
	var ae *net.AddrError
	if !errors.As(err, &ae) {
		t.Errorf("host name: error %v, want a *net.AddrError", err)
	}

	hs.Close()
	_, err = a.DialContext(ctx, "tcp", "10.0.0.2:80")
	check("dial after Close", err, net.ErrClosed)
	_, err = a.Listen("tcp", ":80")
	check("listen after Close", err, net.ErrClosed)
	_, err = a.ListenPacket("udp", ":53")
	check("listen packet after Close", err, net.ErrClosed)
}

// TestNetNoRouteForFamily: a netstack with no route for a destination (an
// IPv6 one on an IPv4-only stack, or outside its only subnet) says
// ENETUNREACH, at once.
func TestNetNoRouteForFamily(t *testing.T) {
	s := stack.NewOverlayStack(nil)
	defer func() { s.Close(); s.Wait() }()
	ep := channel.New(16, 1500, "")
	defer ep.Close()
	if terr := s.CreateNIC(1, ep); terr != nil {
		t.Fatal(terr)
	}
	if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{10, 1, 0, 1}), PrefixLen: 24},
	}, tcpipstack.AddressProperties{}); terr != nil {
		t.Fatal(terr)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{10, 1, 0, 0}), PrefixLen: 24}.Subnet(), NIC: 1}})
	n := stack.NewNet(s)
	for _, dst := range []string{"[fd00::9]:80", "192.0.2.9:80"} {
		_, err := n.DialContext(context.Background(), "tcp", dst)
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("dial %s: error %v, want ENETUNREACH", dst, err)
		}
	}
}
