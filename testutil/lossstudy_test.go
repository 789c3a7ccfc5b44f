package testutil_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
)

// lossStudyFaults is issue 11's fault model (10% loss, 10% reordering, 5%
// duplication on every link into a host) plus 1 ms of delay per link, so
// that a round trip takes fabric time even when nothing is lost.
var lossStudyFaults = testutil.Faults{Loss: 0.1, Reorder: 0.1, Duplicate: 0.05, Delay: time.Millisecond}

// lossStudySize is the size of one transfer.
const lossStudySize = 4 << 20

// lossStudyResult is what one stepped transfer took.
type lossStudyResult struct {
	virtual              time.Duration // fabric (ManualClock) time
	retransmits, timeout uint64        // sender's TCP counters
	frames               uint64        // frames the fabric switched
}

// BenchmarkFaultyStepped answers issue 11's question (does the Geneve path
// make a faulty transfer slower than the same netstacks on a plain faulty
// link, and why?) without the machine's load in the answer: every transfer
// runs on a stepped fabric, so its time is fabric time on the ManualClock
// (round trips, reorder holds, and above all the TCP timers the stacks
// waited on), and the same seed gives the same run. Each operation is one
// 4 MiB transfer with seed i+1 through the tunnel and, with the same seed,
// between the same netstacks attached to the fabric directly; x-plain is
// the ratio of the summed fabric times. Run it with
//
//	go test -run '^$' -bench FaultyStepped -benchtime 10x ./testutil/
func BenchmarkFaultyStepped(b *testing.B) {
	for _, c := range []struct {
		name string
		mode endpoint.Mode
		gso  bool
	}{
		{"l3", endpoint.L3, true},
		{"l3-nogso", endpoint.L3, false},
		{"l2", endpoint.L2, true},
		{"l2-nogso", endpoint.L2, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(lossStudySize)
			var tun, plain lossStudyResult
			var worst time.Duration
			for i := 0; i < b.N; i++ {
				seed := int64(i + 1)
				r := steppedTunnelRun(b, c.mode, !c.gso, seed)
				tun.add(r)
				worst = max(worst, r.virtual)
				plain.add(steppedPlainRun(b, seed))
			}
			n := float64(b.N)
			b.ReportMetric(tun.virtual.Seconds()/n, "fabric-s/op")
			b.ReportMetric(worst.Seconds(), "worst-fabric-s")
			b.ReportMetric(plain.virtual.Seconds()/n, "plain-fabric-s/op")
			b.ReportMetric(tun.virtual.Seconds()/plain.virtual.Seconds(), "x-plain")
			b.ReportMetric(float64(tun.retransmits)/n, "retransmits/op")
			b.ReportMetric(float64(plain.retransmits)/n, "plain-retransmits/op")
			b.ReportMetric(float64(tun.timeout)/n, "rto/op")
			b.ReportMetric(float64(plain.timeout)/n, "plain-rto/op")
			b.ReportMetric(float64(tun.frames)/n, "frames/op")
			b.ReportMetric(float64(plain.frames)/n, "plain-frames/op")
		})
	}
}

func (r *lossStudyResult) add(o lossStudyResult) {
	r.virtual += o.virtual
	r.retransmits += o.retransmits
	r.timeout += o.timeout
	r.frames += o.frames
}

func lossStudyPayload() []byte {
	p := make([]byte, lossStudySize)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(p)
	return p
}

// steppedTunnelRun is one transfer between two NewHosts tunnels.
func steppedTunnelRun(tb testing.TB, mode endpoint.Mode, noGSO bool, seed int64) lossStudyResult {
	clk := testutil.NewManualClock()
	hs, err := testutil.NewHosts(testutil.HostsOptions{
		Mode: mode, VNI: 7, Seed: seed, Stepped: true, Clock: clk,
		Faults:   lossStudyFaults,
		Endpoint: endpoint.Config{DisableGSO: noGSO},
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0].Tunnel.Overlay(), hs.Hosts[1].Tunnel.Overlay()
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4(hs.Hosts[1].Overlay4.As4()), Port: 5001}
	return timedSteppedRun(tb, clk, hs.Fabric, a, b, dst)
}

// steppedPlainRun is one transfer between two overlay netstacks (the
// tunnels' own stack options) on fabric ports with the tunnels' MTU.
func steppedPlainRun(tb testing.TB, seed int64) lossStudyResult {
	clk := testutil.NewManualClock()
	f := testutil.NewFabric(testutil.FabricOptions{Seed: seed, Clock: clk, Stepped: true, MTU: 1450})
	defer f.Close()
	var stacks []*tcpipstack.Stack
	defer func() {
		for _, s := range stacks {
			s.Close()
			s.Wait()
		}
	}()
	for i := range 2 {
		p, err := f.NewPort(testutil.HostMAC(seed, i, true), lossStudyFaults)
		if err != nil {
			tb.Fatal(err)
		}
		s := stack.NewOverlayStackWith(stack.OverlayStackOptions{Clock: clk, Rand: testutil.HostRand(seed, i)})
		stacks = append(stacks, s)
		if terr := s.CreateNIC(1, p); terr != nil {
			tb.Fatal(terr)
		}
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
		if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(a.As4()), PrefixLen: 24}}, tcpipstack.AddressProperties{}); terr != nil {
			tb.Fatal(terr)
		}
		sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{10, 0, 0, 0}), tcpip.MaskFrom("\xff\xff\xff\x00"))
		s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: 1}})
		f.AddSettler(testutil.SettleStack(s))
	}
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2}), Port: 5001}
	return timedSteppedRun(tb, clk, f, stacks[0], stacks[1], dst)
}

func timedSteppedRun(tb testing.TB, clk *testutil.ManualClock, f *testutil.Fabric, a, b *tcpipstack.Stack, dst tcpip.FullAddress) lossStudyResult {
	start := clk.NowMonotonic()
	if err := steppedTransfer(f, a, b, dst, lossStudyPayload()); err != nil {
		tb.Fatal(err)
	}
	st := a.Stats().TCP
	return lossStudyResult{
		virtual:     clk.NowMonotonic().Sub(start),
		retransmits: st.Retransmits.Value(),
		timeout:     st.Timeouts.Value(),
		frames:      f.Stats().Frames,
	}
}
