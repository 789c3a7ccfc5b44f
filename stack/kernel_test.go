package stack_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
)

// kernelHosts builds two tunnels over kernel UDP sockets on loopback
// (127.0.0.1 and 127.0.0.2, or ::1 twice), on ports the system picks. It
// needs no privileges.
func kernelHosts(t *testing.T, mode endpoint.Mode, fam int) (a, b *testutil.Host) {
	t.Helper()
	return loopbackHosts(t, mode, fam, func(local netip.Addr) stack.Underlay {
		return stack.KernelUDPUnderlay{Local: local, MTU: 1500}
	})
}

// loopbackHosts builds two tunnels over the underlays that underlay makes
// for 127.0.0.1 and 127.0.0.2 (or ::1 twice), opened on ports the system
// picks.
func loopbackHosts(t *testing.T, mode endpoint.Mode, fam int, underlay func(local netip.Addr) stack.Underlay) (a, b *testutil.Host) {
	t.Helper()
	ul := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	if fam == 6 {
		ul = []netip.Addr{netip.IPv6Loopback(), netip.IPv6Loopback()}
	}
	var us [2]*stack.SharedUnderlay
	for i := range us {
		u, err := stack.OpenUnderlay(underlay(ul[i]), stack.UnderlayOptions{EphemeralPort: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		us[i] = u
	}
	hosts := make([]*testutil.Host, 2)
	for i := range hosts {
		peer := us[1-i].Socket().Transport().LocalAddr()
		hosts[i] = overlayHost(t, i, stack.Config{VNI: 4242, Mode: mode, Remotes: []netip.Addr{peer.Addr()}, Port: peer.Port(), Underlay: us[i]})
	}
	return hosts[0], hosts[1]
}

// overlayHost makes host i (0 or 1) of a test pair: a tunnel for cfg with
// overlay addresses 10.0.0.i+1/24 and fd00::i+1/64, closed by the test's
// cleanup.
func overlayHost(t *testing.T, i int, cfg stack.Config) *testutil.Host {
	t.Helper()
	h := &testutil.Host{
		Underlay: cfg.Underlay.(*stack.SharedUnderlay).Socket().Transport().LocalAddr().Addr(),
		Overlay4: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}),
		Overlay6: netip.AddrFrom16([16]byte{0xfd, 15: byte(i + 1)}),
	}
	cfg.Addresses = []netip.Prefix{netip.PrefixFrom(h.Overlay4, 24), netip.PrefixFrom(h.Overlay6, 64)}
	tun, err := stack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	h.Tunnel = tun
	return h
}

func TestKernelUDPMatrix(t *testing.T) { loopbackMatrix(t, kernelHosts) }

// loopbackMatrix runs checkPair between the tunnels that hosts builds, in
// both modes, over IPv4 and IPv6 underlays and overlays, and checks that
// the tunnels dropped nothing.
func loopbackMatrix(t *testing.T, hosts func(t *testing.T, mode endpoint.Mode, ul int) (a, b *testutil.Host)) {
	for _, mode := range []endpoint.Mode{endpoint.L2, endpoint.L3} {
		for _, ul := range []int{4, 6} {
			for _, ov := range []int{4, 6} {
				t.Run(fmt.Sprintf("%s/underlay%d/overlay%d", mode, ul, ov), func(t *testing.T) {
					a, b := hosts(t, mode, ul)
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					checkPair(t, ctx, a, b, ov)
					for i, h := range []*testutil.Host{a, b} {
						if st := h.Tunnel.Stats(); st.TotalDrops() != 0 {
							t.Errorf("host %d drops: %v", i+1, st)
						}
					}
				})
			}
		}
	}
}
