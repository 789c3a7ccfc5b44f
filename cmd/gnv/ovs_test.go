package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/testutil/netns"
)

// Interop with Open vSwitch's userspace datapath as a real Geneve peer,
// driven by ../shared/peers/ovs-geneve-peer.sh (see its README). OVS runs
// in namespace A, gnv in namespace B, joined by a veth pair.

// ovsPeer finds the peer script and the OVS daemons, or skips.
func ovsPeer(t *testing.T) string {
	t.Helper()
	netns.RequireRoot(t)
	script, err := filepath.Abs("../../../shared/peers/ovs-geneve-peer.sh")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Skipf("no OVS peer script at %s (the shared reference folder must sit next to the project)", script)
	}
	netns.RequireTools(t, "ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "nft", "ethtool", "ping", "sysctl")
	return script
}

// ovsRun runs the peer script.
func ovsRun(t *testing.T, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command(script, args...)
	cmd.Env = append(os.Environ(), "OVS_BASE="+filepath.Join(os.TempDir(), "gnv-ovs"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(script), args, err, out)
	}
	return string(out)
}

// ovsPair starts OVS in a fresh namespace A (underlay ulA, overlay
// 10.1.1.1/24 and fd01::1/64) and prepares B for gnv (underlay address on
// its veth unless packet is true).
func ovsPair(t *testing.T, script string, fam int, vni int, packet bool) (a, b *netns.NS, gnvArgs []string) {
	t.Helper()
	suffix := fmt.Sprintf("%d", os.Getpid()%10000)
	nameA, nameB := "govsA"+suffix, "govsB"+suffix
	ovsRun(t, script, "pair", nameA, nameB)
	t.Cleanup(func() {
		cmd := exec.Command(script, "unpair", nameA, nameB)
		cmd.Env = append(os.Environ(), "OVS_BASE="+filepath.Join(os.TempDir(), "gnv-ovs"))
		_ = cmd.Run()
	})
	a, b = netns.Existing(nameA), netns.Existing(nameB)
	ulA, ulB, bits := "192.0.2.1", "192.0.2.2", 24
	if fam == 6 {
		ulA, ulB, bits = "2001:db8::1", "2001:db8::2", 64
	}
	ovsRun(t, script, "up", nameA, fmt.Sprintf("%s/%d", ulA, bits), ulB, fmt.Sprint(vni), "10.1.1.1/24", "fd01::1/64")
	dev := "veth-" + nameB
	if packet {
		b.MustRun(t, "ethtool", "-K", dev, "tx", "off")
		b.MustRun(t, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")
		gnvArgs = []string{"--underlay", "packet", "--dev", dev, "--underlay-addr", fmt.Sprintf("%s/%d", ulB, bits)}
	} else {
		ovsRun(t, script, "plain", nameB, fmt.Sprintf("%s/%d", ulB, bits))
		gnvArgs = []string{"--underlay", "udp", "--local", ulB}
	}
	gnvArgs = append(gnvArgs, "--vni", fmt.Sprint(vni), "--remote", ulA, "--addr", "10.1.1.2/24", "--addr", "fd01::2/64")
	return a, b, gnvArgs
}

// TestOVSInterop: ping and TCP both ways between gnv and OVS, over IPv4
// and IPv6 underlays, with gnv's kernel UDP and AF_PACKET underlays.
func TestOVSInterop(t *testing.T) {
	script := ovsPeer(t)
	for _, fam := range []int{4, 6} {
		for _, packet := range []bool{false, true} {
			kind := "udp"
			if packet {
				kind = "packet"
			}
			t.Run(fmt.Sprintf("ipv%d/%s", fam, kind), func(t *testing.T) {
				a, b, args := ovsPair(t, script, fam, 100, packet)
				gnvUp(t, b, 1, args...)
				ping(t, b, "10.1.1.1")
				ping(t, a, "10.1.1.2")
				ping(t, b, "fd01::1")
				mbps := kernelTCP(t, b, a, "10.1.1.1", 8<<20)
				kernelTCP(t, a, b, "10.1.1.2", 4<<20)
				t.Logf("gnv -> OVS TCP: %.0f Mbit/s", mbps)
			})
		}
	}
}

// gnvStats asks a running gnv up for its counters.
func gnvStats(t *testing.T, p *upProc) string {
	t.Helper()
	var out bytes.Buffer
	if err := ctlRequest(&out, p.ctl, []string{"stats", "-"}); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestOVSOptions: options OVS sends are ignored by gnv when non-critical and
// dropped (and counted) when critical and unknown, accepted when gnv is told
// it understands them; options gnv sends are accepted by OVS when
// non-critical, dropped when critical and unmapped, accepted once mapped.
func TestOVSOptions(t *testing.T) {
	script := ovsPeer(t)
	a, b, args := ovsPair(t, script, 4, 100, false)
	nameA := a.Name

	t.Run("from OVS", func(t *testing.T) {
		g := gnvUp(t, b, 1, args...)
		ovsRun(t, script, "opt", nameA, "0xffff", "0x01", "0x11223344", "0x0103", "0x02", "0x0102030405060708")
		ping(t, b, "10.1.1.1")
		ovsRun(t, script, "opt", nameA, "0xffff", "0x81", "0xdeadbeef")
		if out, err := b.Run("ping", "-c", "3", "-i", "0.2", "-W", "1", "10.1.1.1"); err == nil {
			t.Fatalf("ping got through with an unknown critical option:\n%s", out)
		}
		if st := gnvStats(t, g); !strings.Contains(st, "critical-option=") {
			t.Errorf("no critical-option drops counted: %s", st)
		}
		g.stop()
		g = gnvUp(t, b, 1, append(args, "--accept-option", "0xffff:0x81")...)
		ping(t, b, "10.1.1.1")
		g.stop()
		ovsRun(t, script, "noopt", nameA)
	})
	t.Run("to OVS", func(t *testing.T) {
		g := gnvUp(t, b, 1, append(args, "--option", "0xffff:0x05:a1b2c3d4")...)
		ping(t, b, "10.1.1.1")
		g.stop()
		g = gnvUp(t, b, 1, append(args, "--option", "0xffff:0x85:a1b2c3d4")...)
		if out, err := b.Run("ping", "-c", "3", "-i", "0.2", "-W", "1", "10.1.1.1"); err == nil {
			t.Fatalf("OVS answered a packet with an unmapped critical option:\n%s", out)
		}
		ovsRun(t, script, "map", nameA, "0xffff", "0x85", "4")
		ping(t, b, "10.1.1.1")
		g.stop()
	})
}
