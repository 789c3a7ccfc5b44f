package nsudp_test

import (
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/nsudp"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

// recorder is a Receiver that keeps copies of what it receives.
type recorder struct {
	mu  sync.Mutex
	got []link.Datagram
	ch  chan struct{}
}

func (r *recorder) Receive(batch []link.Datagram) {
	r.mu.Lock()
	for _, d := range batch {
		c := d
		c.Payload = append([]byte(nil), d.Payload...)
		c.Buffer = nil
		r.got = append(r.got, c)
	}
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recorder) wait(t *testing.T, n int) []link.Datagram {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.got) >= n {
			got := r.got
			r.mu.Unlock()
			return got
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("received %d datagrams, want %d", len(r.got), n)
		}
	}
}

// underlayStack builds a netstack with one fabric port and addr on it.
func underlayStack(t *testing.T, f *testutil.Fabric, addr netip.Prefix) *stack.Stack {
	t.Helper()
	p, err := f.NewPort("", testutil.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol},
	})
	t.Cleanup(s.Destroy)
	if terr := s.CreateNIC(1, p); terr != nil {
		t.Fatal(terr)
	}
	proto := ipv4.ProtocolNumber
	if addr.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
		Address: tcpip.AddrFromSlice(addr.Addr().AsSlice()), PrefixLen: addr.Bits()}}, stack.AddressProperties{}); terr != nil {
		t.Fatal(terr)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header4or6(addr.Addr().Is6()), NIC: 1}})
	return s
}

func header4or6(v6 bool) tcpip.Subnet {
	if v6 {
		s, _ := tcpip.NewSubnet(tcpip.AddrFrom16([16]byte{}), tcpip.MaskFromBytes(make([]byte, 16)))
		return s
	}
	s, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{}), tcpip.MaskFromBytes(make([]byte, 4)))
	return s
}

// TestNetstackUDPPerPacketFields checks that every datagram carries its own
// source port, TOS and TTL on the wire, that the receiver sees them with the
// source and destination addresses, and that the payload bytes arrive both
// as a slice and as a buffer.
func TestNetstackUDPPerPacketFields(t *testing.T) {
	for _, fam := range []string{"192.0.2.", "2001:db8::"} {
		t.Run(fam, func(t *testing.T) {
			f := testutil.NewFabric(testutil.FabricOptions{})
			defer f.Close()
			a, b := netip.MustParsePrefix(fam+"1/24"), netip.MustParsePrefix(fam+"2/24")
			if a.Addr().Is6() {
				a, b = netip.PrefixFrom(a.Addr(), 64), netip.PrefixFrom(b.Addr(), 64)
			}
			sa, sb := underlayStack(t, f, a), underlayStack(t, f, b)
			ta, err := nsudp.New(nsudp.Options{Stack: sa, NIC: 1, Local: netip.AddrPortFrom(a.Addr(), 6081)})
			if err != nil {
				t.Fatal(err)
			}
			defer ta.Close()
			tb, err := nsudp.New(nsudp.Options{Stack: sb, NIC: 1, Local: netip.AddrPortFrom(b.Addr(), 6081)})
			if err != nil {
				t.Fatal(err)
			}
			defer tb.Close()
			if ta.MTU() != 1500 {
				t.Errorf("MTU %d, want the NIC's 1500", ta.MTU())
			}
			rec := &recorder{ch: make(chan struct{}, 1)}
			if err := tb.Start(rec); err != nil {
				t.Fatal(err)
			}
			if err := ta.Start(&recorder{ch: make(chan struct{}, 1)}); err != nil {
				t.Fatal(err)
			}
			// Resolve the neighbour first: while resolution is pending,
			// netstack may send queued datagrams after later ones.
			warm := buffer.MakeWithData([]byte("warm-up"))
			ta.WriteBatch([]link.Packet{{Payload: warm, Dst: netip.AddrPortFrom(b.Addr(), 6081)}})
			warm.Release()
			rec.wait(t, 1)
			rec.mu.Lock()
			rec.got = nil
			rec.mu.Unlock()
			var pkts []link.Packet
			for i := 0; i < 10; i++ {
				pl := buffer.MakeWithData([]byte{byte(i), 1, 2, 3})
				pl.Append(buffer.NewViewWithData([]byte("second view")))
				pkts = append(pkts, link.Packet{Payload: pl, Dst: netip.AddrPortFrom(b.Addr(), 6081),
					SrcPort: uint16(40000 + i), TOS: uint8(i << 2), TTL: uint8(10 + i)})
			}
			n, err := ta.WriteBatch(pkts)
			for _, p := range pkts {
				p.Payload.Release()
			}
			if n != 10 || err != nil {
				t.Fatalf("WriteBatch: %d, %v", n, err)
			}
			got := rec.wait(t, 10)
			for i, d := range got {
				if want := string([]byte{byte(i), 1, 2, 3}) + "second view"; string(d.Payload) != want {
					t.Errorf("datagram %d payload %q, want %q", i, d.Payload, want)
				}
				if d.Src != netip.AddrPortFrom(a.Addr(), uint16(40000+i)) || d.Dst != b.Addr() {
					t.Errorf("datagram %d: src %v dst %v", i, d.Src, d.Dst)
				}
				if d.TOS != uint8(i<<2) || d.TTL != uint8(10+i) {
					t.Errorf("datagram %d: TOS %#x TTL %d, want %#x %d", i, d.TOS, d.TTL, i<<2, 10+i)
				}
			}
			if st := tb.Stats(); st.RxDatagrams != 11 || st.RxChecksumErrors != 0 {
				t.Errorf("receiver stats: rx %d checksum errors %d", st.RxDatagrams, st.RxChecksumErrors)
			}
		})
	}
}
