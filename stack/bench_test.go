package stack_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

const benchTransfer = 32 << 20

// plainPair is the baseline: the same two overlay netstacks joined by a
// plain fabric link (MTU 1500, no Geneve, no underlay stack).
type plainPair struct {
	f    *testutil.Fabric
	a, b *stack.Net
}

// newPlainPair joins two overlay netstacks, 10.0.0.1 and 10.0.0.2, by a
// fabric with the given seed and faults on both links.
func newPlainPair(tb testing.TB, seed int64, faults testutil.Faults) *plainPair {
	f := testutil.NewFabric(testutil.FabricOptions{Seed: seed})
	p := &plainPair{f: f}
	mk := func(ip string) *stack.Net {
		port, err := f.NewPort("", faults)
		if err != nil {
			tb.Fatal(err)
		}
		s := stack.NewOverlayStack(nil)
		if terr := s.CreateNIC(1, port); terr != nil {
			tb.Fatal(terr)
		}
		a := netip.MustParseAddr(ip)
		if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(a.As4()), PrefixLen: 24}}, tcpipstack.AddressProperties{}); terr != nil {
			tb.Fatal(terr)
		}
		sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{10, 0, 0, 0}), tcpip.MaskFrom("\xff\xff\xff\x00"))
		s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: 1}})
		return stack.NewNet(s)
	}
	p.a, p.b = mk("10.0.0.1"), mk("10.0.0.2")
	return p
}

func (p *plainPair) Close() {
	p.a.Stack().Destroy()
	p.b.Stack().Destroy()
	p.f.Close()
}

func transfer(tb testing.TB, a testutil.Dialer, b testutil.Listener, port uint16) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := testutil.TransferTCP(ctx, a, b, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port), benchTransfer, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return res.Duration
}

// BenchmarkTCPThroughput measures one TCP stream across the overlay of two
// fabric hosts (32 MiB per op, content-checked), and the same two netstacks
// on a plain link.
func BenchmarkTCPThroughput(b *testing.B) {
	for _, mode := range []endpoint.Mode{endpoint.L2, endpoint.L3} {
		b.Run("geneve-"+mode.String(), func(b *testing.B) {
			hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: mode})
			if err != nil {
				b.Fatal(err)
			}
			defer hs.Close()
			b.SetBytes(benchTransfer)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				transfer(b, hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel, uint16(6000+i%1000))
			}
		})
	}
	b.Run("plain", func(b *testing.B) {
		p := newPlainPair(b, 1, testutil.Faults{})
		defer p.Close()
		b.SetBytes(benchTransfer)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			transfer(b, p.a, p.b, uint16(6000+i%1000))
		}
	})
}

// BenchmarkGeneveVsPlain alternates transfers over a Geneve L2 tunnel and
// over the plain link in the same run and reports the throughput ratio
// geneve/plain (goal: >= 0.9).
func BenchmarkGeneveVsPlain(b *testing.B) {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2})
	if err != nil {
		b.Fatal(err)
	}
	defer hs.Close()
	p := newPlainPair(b, 1, testutil.Faults{})
	defer p.Close()
	b.SetBytes(2 * benchTransfer)
	var g, pl time.Duration
	for i := 0; i < b.N; i++ {
		g += transfer(b, hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel, uint16(6000+i%1000))
		pl += transfer(b, p.a, p.b, uint16(6000+i%1000))
	}
	b.ReportMetric(pl.Seconds()/g.Seconds(), "geneve/plain")
	b.ReportMetric(float64(benchTransfer)*float64(b.N)*8/g.Seconds()/1e6, "geneve-Mbit/s")
	b.ReportMetric(float64(benchTransfer)*float64(b.N)*8/pl.Seconds()/1e6, "plain-Mbit/s")
}

// BenchmarkKernelUDPTCP measures one TCP stream across an L2 overlay whose
// underlay is kernel UDP sockets on loopback (the rootless path).
func BenchmarkKernelUDPTCP(b *testing.B) {
	var us [2]*stack.SharedUnderlay
	for i := range us {
		u, err := stack.OpenUnderlay(stack.KernelUDPUnderlay{Local: netip.MustParseAddr("127.0.0.1"), MTU: 1500}, stack.UnderlayOptions{EphemeralPort: true})
		if err != nil {
			b.Fatal(err)
		}
		defer u.Close()
		us[i] = u
	}
	var tuns [2]*stack.Tunnel
	for i := range tuns {
		peer := us[1-i].Socket().Transport().LocalAddr()
		tun, err := stack.New(stack.Config{VNI: 1, Remotes: []netip.Addr{peer.Addr()}, Port: peer.Port(), Underlay: us[i],
			Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 24)}})
		if err != nil {
			b.Fatal(err)
		}
		defer tun.Close()
		tuns[i] = tun
	}
	b.SetBytes(benchTransfer)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		transfer(b, tuns[0], tuns[1], uint16(6000+i%1000))
	}
}
