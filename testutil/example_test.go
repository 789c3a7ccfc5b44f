package testutil_test

import (
	"bytes"
	"fmt"
	"log"
	"net"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/gnv-project/gnv/testutil"
)

// Two gVisor netstacks exchange UDP datagrams through a Fabric. Each stack
// gets one fabric port as its NIC; the switch learns their MACs from the ARP
// exchange and forwards the datagrams between them.
func Example() {
	fabric := testutil.NewFabric(testutil.FabricOptions{Seed: 1})
	defer fabric.Close() // runs last: after the stacks are destroyed

	newStack := func(addr tcpip.Address, faults testutil.Faults) *stack.Stack {
		port, err := fabric.NewPort("", faults) // "" = a fresh MAC
		if err != nil {
			log.Fatal(err)
		}
		s := stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol},
		})
		if err := s.CreateNIC(1, port); err != nil {
			log.Fatal(err)
		}
		if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: addr, PrefixLen: 24},
		}, stack.AddressProperties{}); err != nil {
			log.Fatal(err)
		}
		s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
		return s
	}
	addrA := tcpip.AddrFrom4([4]byte{10, 0, 0, 1})
	addrB := tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	a := newStack(addrA, testutil.Faults{})
	defer a.Destroy()
	// The link into B's port could drop, duplicate, reorder or delay
	// frames, e.g. testutil.Faults{Loss: 0.01, Delay: time.Millisecond}.
	b := newStack(addrB, testutil.Faults{})
	defer b.Destroy()

	server, err := gonet.DialUDP(b, &tcpip.FullAddress{NIC: 1, Addr: addrB, Port: 7}, nil, ipv4.ProtocolNumber)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	client, err := gonet.DialUDP(a, nil, &tcpip.FullAddress{NIC: 1, Addr: addrB, Port: 7}, ipv4.ProtocolNumber)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	if _, err := client.Write([]byte("hello")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 64)
	n, from, err := server.ReadFrom(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("B got %q from %v\n", buf[:n], from.(*net.UDPAddr).IP)
	if _, err := server.WriteTo(bytes.ToUpper(buf[:n]), from); err != nil {
		log.Fatal(err)
	}
	n, err = client.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("A got %q\n", buf[:n])
	fmt.Printf("frames lost: %d\n", fabric.Stats().DroppedLoss)
	// Output:
	// B got "hello" from 10.0.0.1
	// A got "HELLO"
	// frames lost: 0
}
