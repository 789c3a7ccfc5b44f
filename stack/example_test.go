package stack_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/netip"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
)

// Two hosts on the in-memory test fabric, each with a netstack underlay and
// an L2 Geneve tunnel (VNI 100); an HTTP-style exchange over the overlay.
func Example_fabric() {
	fabric := testutil.NewFabric(testutil.FabricOptions{Seed: 1})
	defer fabric.Close()

	newHost := func(underlay, remote, overlay string) *stack.Tunnel {
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
		})
		if err != nil {
			log.Fatal(err)
		}
		return tun
	}
	a := newHost("192.0.2.1/24", "192.0.2.2", "10.0.0.1/24")
	defer a.Close()
	b := newHost("192.0.2.2/24", "192.0.2.1", "10.0.0.2/24")
	defer b.Close()

	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "hello over Geneve\n")
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "10.0.0.2:80")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	msg, _ := io.ReadAll(c)
	fmt.Printf("%s", msg)
	fmt.Println("overlay MTU:", a.MTU())
	// Output:
	// hello over Geneve
	// overlay MTU: 1450
}

// A rootless tunnel over kernel UDP sockets: two tunnels on loopback, and a
// UDP exchange dialled with DialContext. No privileges are needed.
func ExampleTunnel_DialContext() {
	newHost := func(local string, port uint16, remote string, rport uint16, overlay string) *stack.Tunnel {
		tun, err := stack.New(stack.Config{
			VNI:       7,
			Mode:      endpoint.L3,
			Remotes:   []netip.Addr{netip.MustParseAddr(remote)},
			Port:      rport,
			LocalPort: port,
			Underlay:  stack.KernelUDPUnderlay{Local: netip.MustParseAddr(local), MTU: 1500},
			Addresses: []netip.Prefix{netip.MustParsePrefix(overlay)},
		})
		if err != nil {
			log.Fatal(err)
		}
		return tun
	}
	a := newHost("127.0.0.1", 16081, "127.0.0.1", 16082, "10.7.0.1/24")
	defer a.Close()
	b := newHost("127.0.0.1", 16082, "127.0.0.1", 16081, "10.7.0.2/24")
	defer b.Close()

	pc, err := b.ListenPacket("udp", "10.7.0.2:53")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(append([]byte("echo: "), buf[:n]...), from)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "udp", "10.7.0.2:53")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf[:n]))
	fmt.Println("overlay MTU:", a.MTU())
	// Output:
	// echo: ping
	// overlay MTU: 1464
}
