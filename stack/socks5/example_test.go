package socks5_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack/socks5"
	"github.com/gnv-project/gnv/testutil"
)

// A SOCKS5 server on the host's loopback whose destinations are in an
// overlay: a client CONNECTs to a service inside the other overlay host,
// then asks for a closed port and is told "connection refused".
func ExampleServer() {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 100})
	if err != nil {
		log.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel
	svc, err := b.Listen("tcp", "10.0.0.2:80")
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from 10.0.0.2\n")
			c.Close()
		}
	}()

	srv := socks5.New(a, socks5.Options{}) // destinations in a's overlay
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	for _, port := range []uint16{80, 81} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			log.Fatal(err)
		}
		req, _ := socks5.Request{
			Command: socks5.Connect,
			Addr:    socks5.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port)),
		}.AppendBinary([]byte{5, 1, socks5.MethodNoAuth}) // greeting, then the request
		c.Write(req)
		resp := make([]byte, 2+10) // method choice, reply with an IPv4 address
		io.ReadFull(c, resp)
		fmt.Printf("port %d: %v\n", port, socks5.Reply(resp[3]))
		rest, _ := io.ReadAll(c)
		fmt.Print(string(rest))
		c.Close()
	}
	// Output:
	// port 80: succeeded
	// hello from 10.0.0.2
	// port 81: connection refused
}
