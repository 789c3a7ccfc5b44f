package evpn

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
)

// TestVMMACAdvertised: a VM attached to a tunnel's overlay switch
// (Config.Switch) is a local MAC like any other: once it sends a frame, its
// VTEP advertises it and the other VTEP gets an EVPN forwarding entry for
// it, pointing back.
func TestVMMACAdvertised(t *testing.T) {
	rr := newReflector(t)
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 2})
	defer f.Close()
	sps := rr.speakers(t, 2) // the VTEP addresses come from the tunnels
	defer closeAll(sps)
	var tuns []*stack.Tunnel
	for i := 1; i <= 2; i++ {
		port, err := f.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := stack.Config{
			VNI: 100, Mode: endpoint.L2, DynamicPeers: true,
			Underlay:  stack.NetstackUnderlay{Link: port, NetstackOptions: stack.NetstackOptions{Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 24)}},
			Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 24)},
			Endpoint:  endpoint.Config{NoLearn: true},
		}
		if i == 1 {
			cfg.Switch = &stack.SwitchConfig{}
		}
		tun, err := stack.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tun.Close()
		if err := sps[i-1].Attach(tun); err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
	}
	waitFor(t, "the two VTEPs' own MACs", 15*time.Second, func() bool { return evpnEntries(tuns[1]) == 1 })

	// The VM: QEMU stream framing over a pipe; a gratuitous ARP from its MAC.
	vmSide, gnvSide := net.Pipe()
	defer vmSide.Close()
	if _, err := tuns[0].AttachVM(gnvSide); err != nil {
		t.Fatal(err)
	}
	go func() { // drain what the switch sends the VM
		buf := make([]byte, 65536)
		for {
			if _, err := vmSide.Read(buf); err != nil {
				return
			}
		}
	}()
	vmMAC := net.HardwareAddr{0x02, 0x56, 0, 0, 0, 0x99}
	frame := append(append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vmMAC...), 0x08, 0x06), 0, 1, 8, 0, 6, 4, 0, 1)
	frame = append(append(append(append(frame, vmMAC...), 10, 0, 0, 99), make([]byte, 6)...), 10, 0, 0, 99)
	if _, err := vmSide.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("an EVPN entry for the VM's MAC %s on the other VTEP", vmMAC), 15*time.Second, func() bool {
		for _, e := range tuns[1].Endpoint().FDB().Dump() {
			if e.Origin == Origin && e.MAC.String() == vmMAC.String() {
				return e.Remote.Addr() == netip.MustParseAddr("192.0.2.1")
			}
		}
		return false
	})
}
