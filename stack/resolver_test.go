package stack_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack/internal/proxytest"
	"github.com/gnv-project/gnv/testutil"
)

// TestOverlayDNS: with a DNS server in the overlay, a tunnel's dials take
// names, looked up over the overlay (A and AAAA: "tcp4" and "tcp6" pick
// their family); a name the server does not know fails with a *net.DNSError
// saying so; without servers a name is refused and the error says why.
func TestOverlayDNS(t *testing.T) {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 53, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0], hs.Hosts[1]
	pc, err := b.Tunnel.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	dns := testutil.ServeDNS(pc, map[string][]netip.Addr{"web.gnv.test": {b.Overlay4, b.Overlay6}})
	defer dns.Close()
	proxytest.ServeConns(t, proxytest.Listen(t, b.Tunnel, ":80"), func(c net.Conn) { io.WriteString(c, c.LocalAddr().String()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// No servers: names are refused, and the error says what to do.
	if _, err := a.Tunnel.DialContext(ctx, "tcp", "web.gnv.test:80"); err == nil || !strings.Contains(err.Error(), "no resolver") {
		t.Fatalf("dial by name without DNS servers: %v", err)
	}
	if err := a.Tunnel.SetDNS([]netip.AddrPort{netip.AddrPortFrom(b.Overlay4, 0)}); err != nil {
		t.Fatal(err)
	}
	if got := a.Tunnel.DNS(); len(got) != 1 || got[0] != netip.AddrPortFrom(b.Overlay4, 53) {
		t.Fatalf("DNS() = %v", got)
	}
	for network, want := range map[string]netip.Addr{"tcp4": b.Overlay4, "tcp6": b.Overlay6} {
		c, err := a.Tunnel.DialContext(ctx, network, "web.gnv.test:80")
		if err != nil {
			t.Fatalf("%s dial by name: %v", network, err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if ap, err := netip.ParseAddrPort(string(got)); err != nil || ap.Addr() != want {
			t.Errorf("%s: connected to %q, want %v", network, got, want)
		}
	}
	_, err = a.Tunnel.DialContext(ctx, "tcp", "nosuch.gnv.test:80")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("dial of an unknown name: %v, want a not-found *net.DNSError", err)
	}
	if dns.Queries() == 0 {
		t.Error("the overlay's DNS server got no query")
	}
	if _, err := a.Tunnel.DialContext(ctx, "", "web.gnv.test:80"); err == nil || !strings.Contains(err.Error(), "unknown network") {
		t.Errorf("dial by name on no network: %v", err)
	}
	// Off again.
	if err := a.Tunnel.SetDNS(nil); err != nil || a.Tunnel.DNS() != nil {
		t.Fatalf("SetDNS(nil): %v, %v", err, a.Tunnel.DNS())
	}
	if _, err := a.Tunnel.DialContext(ctx, "tcp", "web.gnv.test:80"); err == nil {
		t.Error("a name dialled after SetDNS(nil)")
	}
}
