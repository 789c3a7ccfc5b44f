package vmnet_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link/vmnet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// newNetstack returns a netstack whose only NIC is ep, with addr/24 and
// fd00::n/64.
func newNetstack(t *testing.T, ep stack.LinkEndpoint, n byte) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatal(err)
	}
	for _, a := range []tcpip.ProtocolAddress{
		{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{10, 0, 0, n}), PrefixLen: 24}},
		{Protocol: ipv6.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16([16]byte{0xfd, 15: n}), PrefixLen: 64}},
	} {
		if err := s.AddProtocolAddress(1, a, stack.AddressProperties{}); err != nil {
			t.Fatal(err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	return s
}

// transfer sends size seeded bytes over TCP from a to b's addr and checks
// their SHA-256 on arrival.
func transfer(t *testing.T, a, b *stack.Stack, addr tcpip.Address, proto tcpip.NetworkProtocolNumber, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(data)
	want := sha256.Sum256(data)
	ln, err := gonet.ListenTCP(b, tcpip.FullAddress{NIC: 1, Addr: addr, Port: 80}, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	c, err := gonet.DialContextTCP(ctx, a, tcpip.FullAddress{NIC: 1, Addr: addr, Port: 80}, proto)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.CloseWrite()
	select {
	case h := <-got:
		if h != want {
			t.Fatalf("to %s: SHA-256 %x, sent %x", addr, h, want)
		}
	case <-ctx.Done():
		t.Fatalf("to %s: transfer timed out", addr)
	}
	c.Close()
}

// TestNetstackPair runs two netstacks, each on a vmnet endpoint, over a
// unix stream socket and over a pair of unix datagram sockets: TCP both
// ways over IPv4 and IPv6 with host GSO on one side and not on the other,
// content checked, and no drops but those of a full transmit queue.
func TestNetstackPair(t *testing.T) {
	for _, kind := range []string{"stream", "datagram"} {
		t.Run(kind, func(t *testing.T) {
			before := runtime.NumGoroutine()
			var ea, eb *vmnet.Endpoint
			var err error
			dir := t.TempDir()
			if kind == "stream" {
				ln, lerr := net.Listen("unix", filepath.Join(dir, "s"))
				if lerr != nil {
					t.Skipf("unix sockets: %v", lerr)
				}
				acc := make(chan net.Conn, 1)
				go func() { c, _ := ln.Accept(); acc <- c }()
				ca, derr := net.Dial("unix", filepath.Join(dir, "s"))
				if derr != nil {
					t.Fatal(derr)
				}
				cb := <-acc
				ln.Close()
				ea, err = vmnet.NewStream(ca, vmnet.Options{MTU: 1450})
				if err == nil {
					eb, err = vmnet.NewStream(cb, vmnet.Options{MTU: 1450, DisableGSO: true})
				}
			} else {
				ga, gb := unixgramPair(t)
				ea, err = vmnet.NewDatagram(ga, vmnet.Options{MTU: 1450, Peer: gb.LocalAddr()})
				if err == nil {
					eb, err = vmnet.NewDatagram(gb, vmnet.Options{MTU: 1450, DisableGSO: true})
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			a, b := newNetstack(t, ea, 1), newNetstack(t, eb, 2)
			transfer(t, a, b, tcpip.AddrFrom4([4]byte{10, 0, 0, 2}), ipv4.ProtocolNumber, 4<<20)
			transfer(t, b, a, tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), ipv4.ProtocolNumber, 2<<20)
			transfer(t, a, b, tcpip.AddrFrom16([16]byte{0xfd, 15: 2}), ipv6.ProtocolNumber, 2<<20)
			sa, sb := ea.Stats(), eb.Stats()
			t.Logf("a: %v", sa)
			t.Logf("b: %v", sb)
			if sa.TxSegments == 0 {
				t.Errorf("the GSO side cut no segments: %v", sa)
			}
			// A full transmit queue drops by design (a switch port's
			// behaviour, checked by TestTxQueueFull), and does when the
			// writer goroutine gets less CPU than the stack filling the
			// queue: TCP recovers. Any other drop is a bug.
			queueFull := sa.Drops[vmnet.DropTxQueueFull] + sb.Drops[vmnet.DropTxQueueFull]
			if sa.TotalDrops()+sb.TotalDrops() != queueFull {
				t.Errorf("drops: a %v, b %v", sa, sb)
			}
			a.Destroy()
			b.Destroy()
			checkGoroutines(t, before)
		})
	}
}
