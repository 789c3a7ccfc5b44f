package evpn

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/testutil"
)

// TestDuplicateMAC: one MAC on a VM behind each of two VTEPs. Each
// gratuitous ARP moves it to the sender's VTEP with a higher sequence
// number, until the moves reach DupMACMoves: the MAC is then frozen on both
// (RFC 7432 §15.1), and further frames move it no more. Clearing the freeze
// on one VTEP and letting it run out on the other makes both follow the
// MAC again.
func TestDuplicateMAC(t *testing.T) {
	rr := newReflector(t)
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 3})
	t.Cleanup(f.Close)
	const moves = 3
	sps := rr.speakers(t, 2, func(o *Options) {
		o.LocalInterval = 20 * time.Millisecond
		o.DupMACMoves, o.DupMACWindow, o.DupMACFreeze = moves, time.Minute, time.Hour
	})
	defer closeAll(sps)
	tuns := switchTunnels(t, f, sps)
	vms := []net.Conn{attachVM(t, tuns[0]), attachVM(t, tuns[1])}
	mac := net.HardwareAddr{0x02, 0x56, 0, 0, 0, 0x42}

	// state is where speaker i has the MAC: "local SEQ", "remote VTEP SEQ"
	// or "", and whether it is frozen.
	state := func(i int) (where string, frozen bool) {
		sn := sps[i].Show()
		for _, m := range sn.VNIs[0].Local {
			if m.MAC.String() == mac.String() {
				where = fmt.Sprintf("local %d", m.Seq)
			}
		}
		for _, m := range sn.VNIs[0].Remote {
			if m.MAC.String() == mac.String() && where == "" {
				where = fmt.Sprintf("remote %s %d", m.VTEP, m.Seq)
			}
		}
		for _, d := range sn.VNIs[0].Duplicates {
			frozen = frozen || d.MAC.String() == mac.String()
		}
		return where, frozen
	}
	// flap sends a gratuitous ARP from VM i and waits until its VTEP
	// advertises the MAC and the other VTEP follows, or either is frozen.
	flap := func(i int) {
		t.Helper()
		sendGARP(t, vms[i], mac, [4]byte{10, 0, 0, 42})
		waitFor(t, fmt.Sprintf("the MAC moved to VTEP %d", i+1), 10*time.Second, func() bool {
			here, frozenHere := state(i)
			there, frozenThere := state(1 - i)
			return frozenHere || frozenThere ||
				strings.HasPrefix(here, "local") && strings.HasPrefix(there, fmt.Sprintf("remote 192.0.2.%d %s", i+1, strings.TrimPrefix(here, "local ")))
		})
	}
	frozen := func() bool { _, a := state(0); _, b := state(1); return a && b }
	for round := 0; !frozen(); round++ {
		if round == 2*moves+2 {
			t.Fatalf("not frozen after %d gratuitous ARPs: stats %+v / %+v", round, sps[0].Stats(), sps[1].Stats())
		}
		flap(round % 2)
	}
	// Both froze on their third move; whatever frames come now, neither
	// moves it again, nor advertises anything new.
	time.Sleep(100 * time.Millisecond) // any update still in flight
	before := [2]string{}
	for i := range sps {
		if st := sps[i].Stats(); st.DuplicateMACs != 1 || st.Moves != moves {
			t.Errorf("speaker %d at the freeze: %+v, want %d moves and 1 duplicate", i+1, st, moves)
		}
		before[i], _ = state(i)
	}
	for round := 0; round < 4; round++ {
		sendGARP(t, vms[round%2], mac, [4]byte{10, 0, 0, 42})
		time.Sleep(5 * sps[0].opts.LocalInterval)
	}
	for i := range sps {
		after, fr := state(i)
		if st := sps[i].Stats(); st.Moves != moves || after != before[i] || !fr {
			t.Errorf("speaker %d moved a frozen MAC: %q then %q, frozen %v, stats %+v", i+1, before[i], after, fr, st)
		}
	}
	show := sps[0].Show().String()
	if !strings.Contains(show, "duplicate "+mac.String()+" frozen since") || !strings.Contains(show, "duplicate macs 1") {
		t.Errorf("show:\n%s", show)
	}
	t.Logf("frozen:\n%s", show)

	// VTEP 1's freeze is cleared: VM 1 still sends, so VTEP 1 takes the MAC
	// over with the next sequence number. VTEP 2 stays frozen meanwhile.
	if n := sps[0].ClearDuplicates(mac); n != 1 {
		t.Fatalf("ClearDuplicates: %d, want 1", n)
	}
	if n := sps[0].ClearDuplicates(mac); n != 0 {
		t.Fatalf("ClearDuplicates again: %d, want 0", n)
	}
	sendGARP(t, vms[0], mac, [4]byte{10, 0, 0, 42})
	var seq uint32
	waitFor(t, "VTEP 1 advertising the MAC after the clear", 10*time.Second, func() bool {
		for _, m := range sps[0].Show().VNIs[0].Local {
			if m.MAC.String() == mac.String() {
				seq = m.Seq
				return true
			}
		}
		return false
	})
	if seq != moves+1 {
		t.Errorf("after the clear VTEP 1 advertises seq %d, want one above the last, %d", seq, moves+1)
	}
	time.Sleep(100 * time.Millisecond)
	if after, fr := state(1); after != before[1] || !fr {
		t.Errorf("VTEP 2, still frozen, followed the MAC: %q then %q", before[1], after)
	}

	// VTEP 2's freeze runs out: it follows the MAC to VTEP 1.
	sps[1].mu.Lock()
	for _, v := range sps[1].vnis {
		v.expireMoves(time.Now().Add(2 * time.Hour))
	}
	sps[1].mu.Unlock()
	waitFor(t, "VTEP 2 following the MAC after its freeze", 10*time.Second, func() bool {
		where, fr := state(1)
		return !fr && where == fmt.Sprintf("remote 192.0.2.1 %d", seq)
	})
}

// TestDuplicateMACOff: with detection off the MAC moves every time.
func TestDuplicateMACOff(t *testing.T) {
	rr := newReflector(t)
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 4})
	t.Cleanup(f.Close)
	sps := rr.speakers(t, 2, func(o *Options) { o.LocalInterval = 20 * time.Millisecond; o.DupMACMoves = -1 })
	defer closeAll(sps)
	tuns := switchTunnels(t, f, sps)
	vms := []net.Conn{attachVM(t, tuns[0]), attachVM(t, tuns[1])}
	mac := net.HardwareAddr{0x02, 0x56, 0, 0, 0, 0x43}
	for round := range 8 {
		i := round % 2
		sendGARP(t, vms[i], mac, [4]byte{10, 0, 0, 43})
		waitFor(t, fmt.Sprintf("round %d: the MAC at VTEP %d with seq %d", round, i+1, round), 10*time.Second, func() bool {
			for _, m := range sps[i].Show().VNIs[0].Local {
				if m.MAC.String() == mac.String() && m.Seq == uint32(round) {
					for _, r := range sps[1-i].Show().VNIs[0].Remote {
						if r.MAC.String() == mac.String() && r.Seq == uint32(round) {
							return true
						}
					}
				}
			}
			return false
		})
	}
	for i, sp := range sps {
		if st := sp.Stats(); st.DuplicateMACs != 0 || len(sp.Show().VNIs[0].Duplicates) != 0 {
			t.Errorf("speaker %d: %+v", i+1, st)
		}
	}
}
