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
	t.Cleanup(f.Close) // registered first: runs after the tunnels' Close
	// The VTEP addresses come from the tunnels.
	sps := rr.speakers(t, 2)
	defer closeAll(sps)
	tuns := switchTunnels(t, f, sps)

	// The VM: a gratuitous ARP from its MAC.
	vm := attachVM(t, tuns[0])
	vmMAC := net.HardwareAddr{0x02, 0x56, 0, 0, 0, 0x99}
	sendGARP(t, vm, vmMAC, [4]byte{10, 0, 0, 99})
	waitFor(t, fmt.Sprintf("an EVPN entry for the VM's MAC %s on the other VTEP", vmMAC), 15*time.Second, func() bool {
		for _, e := range tuns[1].Endpoint().FDB().Dump() {
			if e.Origin == Origin && e.MAC.String() == vmMAC.String() {
				return e.Remote.Addr() == netip.MustParseAddr("192.0.2.1")
			}
		}
		return false
	})
}

// switchTunnels makes an L2 tunnel on f for each speaker, with a VM switch
// (Config.Switch) and no static peers, attaches it, and waits until each
// has the others' own MACs. The tunnels close at the test's cleanup, so
// the fabric's Close must be registered before (t.Cleanup).
func switchTunnels(t *testing.T, f *testutil.Fabric, sps []*Speaker) []*stack.Tunnel {
	t.Helper()
	var tuns []*stack.Tunnel
	for i := 1; i <= len(sps); i++ {
		port, err := f.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		tun, err := stack.New(stack.Config{
			VNI: 100, Mode: endpoint.L2, DynamicPeers: true,
			Underlay:  stack.NetstackUnderlay{Link: port, NetstackOptions: stack.NetstackOptions{Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 24)}},
			Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 24)},
			Endpoint:  endpoint.Config{NoLearn: true},
			Switch:    &stack.SwitchConfig{},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tun.Close() })
		if err := sps[i-1].Attach(tun); err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
	}
	for i, tun := range tuns {
		waitFor(t, fmt.Sprintf("the other VTEPs' own MACs on VTEP %d", i+1), 15*time.Second, func() bool { return evpnEntries(tun) == len(tuns)-1 })
	}
	return tuns
}

// attachVM attaches a VM to tun's switch: QEMU stream framing over a pipe,
// whose VM side it returns; what the switch sends the VM is read and
// dropped.
func attachVM(t *testing.T, tun *stack.Tunnel) net.Conn {
	t.Helper()
	vmSide, gnvSide := net.Pipe()
	t.Cleanup(func() { vmSide.Close() })
	if _, err := tun.AttachVM(gnvSide); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, err := vmSide.Read(buf); err != nil {
				return
			}
		}
	}()
	return vmSide
}

// sendGARP sends a gratuitous ARP for ip from mac on the VM side vm.
func sendGARP(t *testing.T, vm net.Conn, mac net.HardwareAddr, ip [4]byte) {
	t.Helper()
	frame := append(append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac...), 0x08, 0x06), 0, 1, 8, 0, 6, 4, 0, 1)
	frame = append(append(append(append(frame, mac...), ip[:]...), make([]byte, 6)...), ip[:]...)
	if _, err := vm.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...)); err != nil {
		t.Fatal(err)
	}
}
