package stack_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/testutil"
)

// transferSize is the TCP transfer of every matrix case (8 MiB, or 1 MiB
// with -short).
func transferSize() int64 {
	if testing.Short() {
		return 1 << 20
	}
	return 8 << 20
}

// checkPair runs ICMP echo, a TCP transfer with its content checked and a
// UDP exchange from a to b over the overlay address family fam.
func checkPair(t *testing.T, ctx context.Context, a, b *testutil.Host, fam int) {
	t.Helper()
	dst := b.Overlay4
	if fam == 6 {
		dst = b.Overlay6
	}
	for seq := uint16(1); seq <= 3; seq++ {
		if _, err := a.Tunnel.Ping(ctx, dst, seq, 56); err != nil {
			t.Fatalf("ping %s: %v", dst, err)
		}
	}
	res, err := testutil.TransferTCP(ctx, a.Tunnel, b.Tunnel, netip.AddrPortFrom(dst, 5001), transferSize(), 7)
	if err != nil {
		t.Fatalf("tcp to %s: %v", dst, err)
	}
	t.Logf("tcp %d bytes to %s: %.0f Mbit/s", res.Bytes, dst, res.Mbps())
	if err := testutil.ExchangeUDP(ctx, a.Tunnel, b.Tunnel, netip.AddrPortFrom(dst, 5002), 20, 1000); err != nil {
		t.Fatalf("udp to %s: %v", dst, err)
	}
}

func TestFabricMatrix(t *testing.T) {
	for _, mode := range []endpoint.Mode{endpoint.L2, endpoint.L3} {
		for _, ul := range []int{4, 6} {
			for _, ov := range []int{4, 6} {
				t.Run(fmt.Sprintf("%s/underlay%d/overlay%d", mode, ul, ov), func(t *testing.T) {
					hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: mode, VNI: 5000 + uint32(ul*10+ov), UnderlayFamily: ul, Seed: 1})
					if err != nil {
						t.Fatal(err)
					}
					defer hs.Close()
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					checkPair(t, ctx, hs.Hosts[0], hs.Hosts[1], ov)
					for i, h := range hs.Hosts {
						st := h.Tunnel.Stats()
						if st.TotalDrops() != 0 {
							t.Errorf("host %d drops: %v", i+1, st)
						}
					}
				})
			}
		}
	}
}
