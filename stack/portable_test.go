package stack_test

import (
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/kudp"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
)

// TestPortableUDPMatrix carries netstack tunnels over kudp.Portable, the
// kernel UDP transport of macOS, Windows and FreeBSD, opened here on
// Linux's loopback and handed to the tunnels as a TransportUnderlay: ICMP
// echo, content-checked TCP and a UDP exchange, in both modes over both
// underlay and overlay families, without a drop or a transport error.
func TestPortableUDPMatrix(t *testing.T) {
	loopbackMatrix(t, func(t *testing.T, mode endpoint.Mode, ul int) (a, b *testutil.Host) {
		var trs []*kudp.Portable
		a, b = loopbackHosts(t, mode, ul, func(local netip.Addr) stack.Underlay {
			tr, err := kudp.NewPortable(kudp.Options{Local: netip.AddrPortFrom(local, 0)})
			if err != nil {
				t.Fatal(err)
			}
			trs = append(trs, tr)
			return stack.TransportUnderlay{Transport: tr}
		})
		// Checked when the test ends, before the tunnels close.
		t.Cleanup(func() {
			for i, tr := range trs {
				if st := tr.Stats(); st.DatagramsSent == 0 || st.DatagramsReceived == 0 || st.SendErrors != 0 || st.ReceiveErrors != 0 {
					t.Errorf("host %d transport: %+v", i+1, st)
				}
			}
		})
		return a, b
	})
}
