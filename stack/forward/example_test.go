package forward_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack/forward"
	"github.com/gnv-project/gnv/testutil"
)

// Two overlay hosts on the in-memory fabric. A service listens inside host
// 2's overlay; a Manager forwards a host port on loopback to it through
// host 1's overlay, and a plain net.Dial on the host reaches it.
func ExampleManager() {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 100})
	if err != nil {
		log.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel

	ln, err := b.Listen("tcp", "10.0.0.2:80") // the service, in the overlay
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from 10.0.0.2\n")
			c.Close()
		}
	}()

	// Listen on the host, dial in the overlay: a forward. (Swap the two
	// networks for an expose.)
	m := forward.NewManager(forward.Host{}, a, forward.Options{})
	defer m.Close()
	rule, err := forward.ParseRule("tcp:127.0.0.1:0=10.0.0.2:80")
	if err != nil {
		log.Fatal(err)
	}
	rule, err = m.Add(rule) // port 0: rule.Listen now has the bound port
	if err != nil {
		log.Fatal(err)
	}

	c, err := net.Dial("tcp", rule.Listen.String())
	if err != nil {
		log.Fatal(err)
	}
	msg, _ := io.ReadAll(c)
	c.Close()
	fmt.Print(string(msg))
	for _, st := range m.List() {
		fmt.Println(st.Rule.Proto, st.Rule.Target, "connections:", st.Stats.Connections)
	}
	fmt.Println(m.Remove(forward.Key{Proto: "tcp", Listen: rule.Listen}), len(m.List()))
	// Output:
	// hello from 10.0.0.2
	// tcp 10.0.0.2:80 connections: 1
	// <nil> 0
}

func ExampleParseRule() {
	for _, s := range []string{
		"tcp:127.0.0.1:8080=10.0.0.2:80",
		"udp:[::1]:5353=[fd00::2]:53",
		"tcp:127.0.0.1:8080=fd00::2:80",
		"icmp:127.0.0.1:0=10.0.0.2:0",
	} {
		r, err := forward.ParseRule(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("%s listens on %s, dials %s\n", r.Proto, r.Listen, r.Target)
	}
	// Output:
	// tcp listens on 127.0.0.1:8080, dials 10.0.0.2:80
	// udp listens on [::1]:5353, dials [fd00::2]:53
	// error: rule "tcp:127.0.0.1:8080=fd00::2:80": target "fd00::2:80": IPv6 addresses go in brackets, e.g. [fd00::2]:80
	// error: rule "icmp:127.0.0.1:0=10.0.0.2:0": protocol "icmp": want tcp or udp
}

// Host is the host's network and a *stack.Tunnel the overlay's: both are
// Networks, so any of the four combinations can be given to NewManager.
func ExampleHost() {
	var host forward.Network = forward.Host{}
	pc, err := host.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	ap := netip.MustParseAddrPort(pc.LocalAddr().String())
	fmt.Println(ap.Addr(), ap.Port() != 0)
	// Output: 127.0.0.1 true
}
