package stack_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/stack"
)

// TestTransportUnderlay carries a tunnel over a transport of the
// embedder's own: a UDP datagram sent in the overlay leaves through it as
// Geneve with the tunnel's VNI, to the remote, and closing the tunnel
// closes nothing the embedder still needs to see.
func TestTransportUnderlay(t *testing.T) {
	tr := linktest.New(netip.MustParseAddrPort("192.0.2.1:6081"))
	tun, err := stack.New(stack.Config{
		VNI:       321,
		Mode:      endpoint.L3,
		Remotes:   []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		Underlay:  stack.TransportUnderlay{Transport: tr},
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.3.0.1/24")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := tun.DialContext(ctx, "udp", "10.3.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("through the embedder's transport")); err != nil {
		t.Fatal(err)
	}
	sent := tr.Take()
	if len(sent) != 1 {
		t.Fatalf("%d datagrams sent, want 1", len(sent))
	}
	h, _, err := geneve.Decode(sent[0].Data)
	if err != nil || h.VNI != 321 || h.Protocol != geneve.ProtoIPv4 {
		t.Errorf("sent %+v (%v), want VNI 321 carrying IPv4", h, err)
	}
	if dst := sent[0].Packet.Dst; dst != netip.MustParseAddrPort("192.0.2.2:6081") {
		t.Errorf("sent to %v", dst)
	}
	if _, err := stack.New(stack.Config{VNI: 1, Mode: endpoint.L3, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		Underlay: stack.TransportUnderlay{}}); err == nil {
		t.Error("a TransportUnderlay without a Transport was accepted")
	}
}
