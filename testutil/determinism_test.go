package testutil_test

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/testutil"
)

// faultyRun is one seeded, stepped, content-checked TCP transfer of size
// bytes from host 1 to host 2 under loss, duplication and reordering. It
// returns the fabric's capture as it stood when the receiver had read
// everything, and the fabric's counters.
func faultyRun(t *testing.T, mode endpoint.Mode, seed int64, size int, faults testutil.Faults) ([]byte, testutil.FabricStats) {
	t.Helper()
	var capture bytes.Buffer
	hs, err := testutil.NewHosts(testutil.HostsOptions{
		Mode:    mode,
		VNI:     7,
		Seed:    seed,
		Stepped: true,
		Pcap:    &capture,
		Faults:  faults,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0].Tunnel.Overlay(), hs.Hosts[1].Tunnel.Overlay()
	payload := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(payload) // the same bytes whatever the seed
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4(hs.Hosts[1].Overlay4.As4()), Port: 5001}
	if err := steppedTransfer(hs.Fabric, a, b, dst, payload); err != nil {
		t.Fatal(err)
	}
	st := hs.Fabric.Stats()
	if st.SettleTimeouts != 0 {
		t.Errorf("%d frames were not released in time: the run may not be reproducible", st.SettleTimeouts)
	}
	if err := hs.Fabric.PcapError(); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(capture.Bytes()), st
}

// TestSameSeedSameTrace runs the same seeded faulty transfer twice on a
// stepped fabric and wants byte-identical captures (the timestamps come
// from the ManualClock), then once with another seed and wants a different
// one.
func TestSameSeedSameTrace(t *testing.T) {
	faults := testutil.Faults{Loss: 0.1, Reorder: 0.1, Duplicate: 0.05}
	const size = 256 << 10
	for _, mode := range []endpoint.Mode{endpoint.L2, endpoint.L3} {
		t.Run(mode.String(), func(t *testing.T) {
			first, st := faultyRun(t, mode, 11, size, faults)
			if st.DroppedLoss == 0 || st.Duplicated == 0 || st.Reordered == 0 {
				t.Fatalf("the faults did not all happen: %+v", st)
			}
			second, _ := faultyRun(t, mode, 11, size, faults)
			if !bytes.Equal(first, second) {
				t.Errorf("same seed, different traces: %d and %d bytes, first difference at byte %d",
					len(first), len(second), firstDiff(first, second))
			}
			other, _ := faultyRun(t, mode, 12, size, faults)
			if bytes.Equal(first, other) {
				t.Error("seeds 11 and 12 gave the same trace")
			}
			t.Logf("trace %d bytes, sha256 %x; fabric %+v", len(first), sha256.Sum256(first), st)
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
