package stack_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/vmnet"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// A VM joins a tunnel's L2 overlay over a unix socket, with no TAP device
// and no privileges: the tunnel has a switch (Config.Switch) and listens
// where QEMU connects with
//
//	qemu-system-x86_64 ... \
//	    -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/run/gnv/vm.sock \
//	    -device virtio-net-pci,netdev=n0,host_mtu=1450
//
// ("unixgram:PATH" takes QEMU's -netdev dgram or vfkit instead; AttachVM
// takes a connection the runtime made itself). The VM's MAC is learned like
// any local MAC: it reaches the overlay netstack of its host directly and
// the other tunnel hosts through Geneve. Here a netstack at the other end
// of the socket stands in for the VM, and a host on the test fabric serves
// it.
func Example_vm() {
	fabric := testutil.NewFabric(testutil.FabricOptions{Seed: 1})
	defer fabric.Close()
	newHost := func(underlay, remote, overlay string, sw *stack.SwitchConfig) *stack.Tunnel {
		port, err := fabric.NewPort("", testutil.Faults{})
		if err != nil {
			log.Fatal(err)
		}
		tun, err := stack.New(stack.Config{
			VNI:       100,
			Mode:      endpoint.L2,
			Remotes:   []netip.Addr{netip.MustParseAddr(remote)},
			Underlay:  stack.NetstackUnderlay{Link: port, NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix(underlay)}},
			Addresses: []netip.Prefix{netip.MustParsePrefix(overlay)},
			Switch:    sw,
		})
		if err != nil {
			log.Fatal(err)
		}
		return tun
	}
	a := newHost("192.0.2.1/24", "192.0.2.2", "10.0.0.1/24", &stack.SwitchConfig{})
	defer a.Close()
	b := newHost("192.0.2.2/24", "192.0.2.1", "10.0.0.2/24", nil)
	defer b.Close()

	dir, err := os.MkdirTemp("", "gnv-vm")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "vm.sock")
	vms, err := a.ListenVM("unix:" + sock)
	if err != nil {
		log.Fatal(err)
	}
	defer vms.Close()

	// The stand-in VM: 10.0.0.3 on a netstack whose NIC speaks QEMU's
	// stream framing over the socket.
	c, err := net.Dial("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	nic, err := vmnet.NewStream(c, vmnet.Options{MTU: a.MTU()})
	if err != nil {
		log.Fatal(err)
	}
	vm := stack.NewOverlayStack(nil)
	defer vm.Destroy()
	if err := vm.CreateNIC(1, nic); err != nil {
		log.Fatal(err)
	}
	if err := vm.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{10, 0, 0, 3}), PrefixLen: 24},
	}, tcpipstack.AddressProperties{}); err != nil {
		log.Fatal(err)
	}
	vm.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})

	// Host B, across the tunnel, serves the VM.
	ln, err := b.Listen("tcp", "10.0.0.2:80")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "hello, VM\n")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := stack.NewNet(vm).DialContext(ctx, "tcp", "10.0.0.2:80")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("VMs attached to host A:", len(a.VMs()))
	fmt.Print("host B to the VM: ", reply)
	// Output:
	// VMs attached to host A: 1
	// host B to the VM: hello, VM
}
