package testutil_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/testutil"
)

// TestTransferTCPHonoursContext cuts the fabric in the middle of a
// transfer: TransferTCP must give up when its context ends, receiver
// included, instead of waiting for a connection that will never finish.
func TestTransferTCPHonoursContext(t *testing.T) {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L3, VNI: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cut := time.AfterFunc(200*time.Millisecond, func() {
		for _, h := range hs.Hosts {
			_ = h.Port.SetFaults(testutil.Faults{Loss: 1})
		}
	})
	defer cut.Stop()
	_, err = testutil.TransferTCP(ctx, hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel, netip.MustParseAddrPort("10.0.0.2:7000"), 1<<40, 1)
	if err == nil {
		t.Fatal("a 1 TiB transfer over a cut fabric succeeded")
	}
	t.Logf("TransferTCP: %v", err)
}
