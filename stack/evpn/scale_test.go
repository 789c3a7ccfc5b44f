package evpn

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/stack"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	scaleVTEPs = 1000
	scaleMACs  = 10 // per VTEP
)

// BenchmarkScale: one gnv VTEP receives the routes of 1,000 simulated
// VTEPs with 10 MACs each (a Type-3 route and 10 Type-2 routes per VTEP),
// injected through a GoBGP route reflector in the process. It reports the
// time from the last BGP update received to the forwarding state holding
// all 10,000 entries and the 1,000-entry flood list (s-converge), the time
// from the session's start (s-total), the heap per MAC on the receiving
// side (B/mac: GoBGP's RIB, the speaker's state, the forwarding table),
// and one broadcast flooded to the 1,000 VTEPs (ns/flood, sends/flood).
// Run it with -benchtime 1x.
func BenchmarkScale(b *testing.B) {
	for i := 0; i < b.N; i++ {
		scale(b)
	}
}

// TestScaleInjector is not a test: BenchmarkScale runs the test binary
// again with GNV_EVPN_INJECTOR set, and this function then plays the route
// reflector with the 1,000 simulated VTEPs' routes in that process, so
// that the benchmark's heap holds the receiving side only. It prints the
// reflector's port and runs until its standard input closes.
func TestScaleInjector(t *testing.T) {
	if os.Getenv("GNV_EVPN_INJECTOR") == "" {
		t.Skip("the route injector of BenchmarkScale")
	}
	rr := newReflector(t)
	rr.addClient(t, 1)
	inject(t, rr)
	fmt.Printf("port %d\n", rr.port)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

func inject(b testing.TB, rr *reflector) {
	rt, _ := autoRT(testASN, 100)
	geneve := bgp.NewEncapExtended(bgp.TUNNEL_TYPE_GENEVE)
	var paths []*apiutil.Path
	for v := 0; v < scaleVTEPs; v++ {
		vtep := netip.AddrFrom4([4]byte{10, 200, byte(v >> 8), byte(v)})
		rd, _ := bgp.NewRouteDistinguisherIPAddressAS(vtep, 100)
		ecs := bgp.NewPathAttributeExtendedCommunities([]bgp.ExtendedCommunityInterface{rt, geneve})
		attrs := func(n bgp.NLRI, extra ...bgp.PathAttributeInterface) []bgp.PathAttributeInterface {
			mp, _ := bgp.NewPathAttributeMpReachNLRI(bgp.RF_EVPN, []bgp.PathNLRI{{NLRI: n}}, vtep)
			return append([]bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), mp, ecs}, extra...)
		}
		n3, _ := bgp.NewEVPNMulticastEthernetTagRoute(rd, 0, vtep)
		id, _ := bgp.NewIngressReplTunnelID(vtep)
		paths = append(paths, &apiutil.Path{Family: bgp.RF_EVPN, Nlri: n3,
			Attrs: attrs(n3, bgp.NewPathAttributePmsiTunnel(bgp.PMSI_TUNNEL_TYPE_INGRESS_REPL, false, 100, id))})
		for m := 0; m < scaleMACs; m++ {
			mac := netip.AddrFrom4([4]byte{byte(v >> 8), byte(v), byte(m), 0}).As4()
			hw := tcpip.LinkAddress([]byte{0x02, 0x10, mac[0], mac[1], mac[2], 0}).String()
			n2, _ := bgp.NewEVPNMacIPAdvertisementRoute(rd, bgp.EthernetSegmentIdentifier{}, 0, hw, netip.Addr{}, []uint32{100})
			paths = append(paths, &apiutil.Path{Family: bgp.RF_EVPN, Nlri: n2, Attrs: attrs(n2)})
		}
	}
	for i := 0; i < len(paths); i += 1000 {
		if _, err := rr.bgp.AddPath(apiutil.AddPathRequest{Paths: paths[i:min(i+1000, len(paths))]}); err != nil {
			b.Fatal(err)
		}
	}
}

func scale(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleInjector$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "GNV_EVPN_INJECTOR=1")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	rr := &reflector{}
	if _, err := fmt.Fscanf(stdout, "port %d\n", &rr.port); err != nil {
		b.Fatalf("injector: %v", err)
	}

	lt := linktest.New(netip.MustParseAddrPort("192.0.2.1:6081"))
	lt.Record = false
	tun, err := stack.New(stack.Config{VNI: 100, DynamicPeers: true, Underlay: stack.TransportUnderlay{Transport: lt},
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/16")}, Endpoint: endpoint.Config{NoLearn: true, FDBMax: 1 << 16}})
	if err != nil {
		b.Fatal(err)
	}
	defer tun.Close()
	ep := tun.Endpoint()
	// The heap a speaker holds with no routes, measured on one that never
	// connects, is subtracted from the heap per MAC.
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	idle, err := New(Options{ASN: testASN, RouterID: netip.MustParseAddr("10.255.0.9"), NextHop: netip.MustParseAddr("192.0.2.9"),
		Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.10"), Port: 1}}, ConnectRetry: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	fixed := float64(m1.HeapAlloc) - float64(m0.HeapAlloc)
	idle.Close()
	runtime.GC()
	runtime.ReadMemStats(&m1)

	start := time.Now()
	sp := rr.speaker(b, 1, netip.Addr{})
	defer sp.Close()
	var last atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sp.bgp.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPathUpdate: func([]*apiutil.Path, time.Time) {
		last.Store(time.Now().UnixNano())
	}}, server.WatchUpdate(false, "", "")); err != nil {
		b.Fatal(err)
	}
	if err := sp.Attach(tun); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(120 * time.Second)
	for ep.FDB().Stats().Count < scaleVTEPs*scaleMACs || len(ep.FloodRemotes()) < scaleVTEPs {
		if time.Now().After(deadline) {
			b.Fatalf("after 120 s: %d entries, %d VTEPs; %+v", ep.FDB().Stats().Count, len(ep.FloodRemotes()), sp.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	done := time.Now()
	converge := done.Sub(time.Unix(0, last.Load()))
	total := done.Sub(start)
	cancel()
	runtime.GC()
	runtime.ReadMemStats(&m2)
	perMAC := (float64(m2.HeapAlloc) - float64(m1.HeapAlloc) - fixed) / (scaleVTEPs * scaleMACs)
	if p := os.Getenv("GNV_SCALE_HEAP"); p != "" {
		f, _ := os.Create(p)
		pprof.WriteHeapProfile(f)
		f.Close()
	}

	// One broadcast frame, flooded to every VTEP.
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(make([]byte, 64))})
	defer pkt.DecRef()
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(header.EthernetBroadcastAddress)
	ep.AddHeader(pkt)
	var l tcpipstack.PacketBufferList
	l.PushBack(pkt)
	ep.WritePackets(l) // warm up: the batch grows once
	const floods = 200
	sends, sent := lt.Batches(), lt.Count()
	t0 := time.Now()
	for i := 0; i < floods; i++ {
		ep.WritePackets(l)
	}
	perFlood := time.Since(t0) / floods
	if got := (lt.Count() - sent) / floods; got != scaleVTEPs {
		b.Fatalf("a flood sent %d datagrams, want %d", got, scaleVTEPs)
	}
	b.ReportMetric(converge.Seconds(), "s-converge")
	b.ReportMetric(total.Seconds(), "s-total")
	b.ReportMetric(perMAC, "B/mac")
	b.ReportMetric(fixed/(1<<20), "MiB-speaker")
	b.ReportMetric(float64(perFlood.Nanoseconds()), "ns/flood")
	b.ReportMetric(float64(lt.Batches()-sends)/floods, "sends/flood")
}
