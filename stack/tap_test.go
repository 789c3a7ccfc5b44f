//go:build linux

package stack_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/tapnic"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/netns"
)

// TestTAPUnderlay runs two tunnels (netstack overlays, in this process)
// over TAP underlays, each a port of a bridge with one end of a veth pair
// in its own namespace: ping, TCP with its content checked and UDP, with
// TCP super-packets crossing the kernel whole as UDP-tunnel jobs where the
// kernel takes them (Linux 6.17+), and no drops.
func TestTAPUnderlay(t *testing.T) {
	netns.RequireRoot(t)
	for _, c := range []struct {
		mode    endpoint.Mode
		ul, ov  int
		noTnlGS bool
	}{
		{endpoint.L2, 4, 4, false},
		{endpoint.L3, 6, 6, false},
		{endpoint.L2, 6, 4, true},
	} {
		name := fmt.Sprintf("%s/underlay%d/overlay%d", c.mode, c.ul, c.ov)
		if c.noTnlGS {
			name += "/no-tunnel-gso"
		}
		t.Run(name, func(t *testing.T) {
			a, b := netns.New(t, "gnvtap-a"), netns.New(t, "gnvtap-b")
			netns.Veth(t, a, "va", b, "vb")
			ul := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
			bits := 24
			if c.ul == 6 {
				ul, bits = []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")}, 64
			}
			var eps [2]*tapnic.Endpoint
			hosts := make([]*testutil.Host, 2)
			for i, ns := range []*netns.NS{a, b} {
				netns.Bridge(t, ns, "br0", []string{"va", "vb"}[i])
				var u *stack.SharedUnderlay
				if err := ns.Do(func() (err error) {
					u, err = stack.OpenUnderlay(stack.TAPUnderlay{
						Name: "gnvu0", Bridge: "br0", NetstackOptions: stack.NetstackOptions{Address: netip.PrefixFrom(ul[i], bits)},
						Options: tapnic.Options{NoTunnelGSO: c.noTnlGS},
					}, stack.UnderlayOptions{})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { u.Close() })
				eps[i] = u.Stack().GetLinkEndpointByName("underlay").(*tapnic.Endpoint)
				hosts[i] = overlayHost(t, i, stack.Config{VNI: 77, Mode: c.mode, Remotes: []netip.Addr{ul[1-i]}, Underlay: u})
			}
			if name := eps[0].Name(); name != "gnvu0" {
				t.Errorf("TAP device named %q", name)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			checkPair(t, ctx, hosts[0], hosts[1], c.ov)
			tunnelGSO := eps[0].Offloads().Has(link.OffloadTunnelGSO)
			t.Logf("offloads %s; sender %s; receiver %s", eps[0].Offloads(), hosts[0].Tunnel.Stats(), hosts[1].Tunnel.Stats())
			if c.noTnlGS && tunnelGSO {
				t.Errorf("NoTunnelGSO: offloads %s", eps[0].Offloads())
			}
			if !c.noTnlGS && !tunnelGSO {
				t.Logf("this kernel takes no UDP-tunnel jobs (Linux 6.17+ does): segmented in software")
			}
			sa, sb := hosts[0].Tunnel.Stats(), hosts[1].Tunnel.Stats()
			if tunnelGSO && (sa.TxTunnelJobs == 0 || sb.RxTunnelJobs == 0 || eps[0].Stats().TxTunnelGSO == 0 || eps[1].Stats().RxTunnelGSO == 0) {
				t.Errorf("no UDP-tunnel jobs crossed: tunnel tx %d rx %d, TAP tx %d rx %d",
					sa.TxTunnelJobs, sb.RxTunnelJobs, eps[0].Stats().TxTunnelGSO, eps[1].Stats().RxTunnelGSO)
			}
			if !tunnelGSO && (sa.TxTunnelJobs != 0 || sa.TxGSOSegments == 0) {
				t.Errorf("without the offload: %d jobs, %d software segments", sa.TxTunnelJobs, sa.TxGSOSegments)
			}
			for i, h := range hosts {
				if st := h.Tunnel.Stats(); st.TotalDrops() != 0 {
					t.Errorf("host %d drops: %v", i+1, st)
				}
				if s := eps[i].Stats(); s.TxErrors+s.RxChecksumErrors+s.RxMalformed != 0 {
					t.Errorf("TAP %d: tx errors %d, rx checksum errors %d, malformed %d", i+1, s.TxErrors, s.RxChecksumErrors, s.RxMalformed)
				}
			}
		})
	}
}
