package stack_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/kudp"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
)

// TestPortableUDPMatrix carries netstack tunnels over kudp.Portable, the
// kernel UDP transport of macOS, Windows and FreeBSD, opened here on
// Linux's loopback and handed to the tunnels as a TransportUnderlay: ICMP
// echo, content-checked TCP and a UDP exchange, in both modes over both
// underlay and overlay families, without a drop or a send error.
func TestPortableUDPMatrix(t *testing.T) {
	for _, mode := range []endpoint.Mode{endpoint.L2, endpoint.L3} {
		for _, ul := range []int{4, 6} {
			for _, ov := range []int{4, 6} {
				t.Run(fmt.Sprintf("%s/underlay%d/overlay%d", mode, ul, ov), func(t *testing.T) {
					var trs []*kudp.Portable
					a, b := loopbackHosts(t, mode, ul, func(local netip.Addr) stack.Underlay {
						tr, err := kudp.NewPortable(kudp.Options{Local: netip.AddrPortFrom(local, 0)})
						if err != nil {
							t.Fatal(err)
						}
						trs = append(trs, tr)
						return stack.TransportUnderlay{Transport: tr}
					})
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					checkPair(t, ctx, a, b, ov)
					for i, h := range []*testutil.Host{a, b} {
						if st := h.Tunnel.Stats(); st.TotalDrops() != 0 {
							t.Errorf("host %d drops: %v", i+1, st)
						}
						if st := trs[i].Stats(); st.DatagramsSent == 0 || st.DatagramsReceived == 0 || st.SendErrors != 0 || st.ReceiveErrors != 0 {
							t.Errorf("host %d transport: %+v", i+1, st)
						}
					}
				})
			}
		}
	}
}
