package stack_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// dfModes are the outer DF policies every underlay is checked with.
var dfModes = []endpoint.DFMode{endpoint.DFUnset, endpoint.DFSet, endpoint.DFInherit}

// checkOuterDF checks the outer IPv4 DF bit of every Geneve datagram in
// frames (Ethernet, from L3 tunnels) against the policy mode: clear for
// DFUnset, set for DFSet, and for DFInherit the inner IPv4 packet's DF
// (set for inner IPv6), or clear if inheritClear (a kernel socket, which
// cannot set DF per packet). It returns how many datagrams it checked,
// and how many of them carried an inner IPv4 packet with DF.
func checkOuterDF(t *testing.T, frames [][]byte, mode endpoint.DFMode, inheritClear bool) (n, innerDF int) {
	t.Helper()
	for _, fr := range frames {
		if len(fr) < 14+20 || binary.BigEndian.Uint16(fr[12:14]) != 0x0800 || fr[14+9] != 17 {
			continue
		}
		ip := fr[14:]
		udp := ip[int(ip[0]&0xf)*4:]
		if len(udp) < 8+8 || binary.BigEndian.Uint16(udp[2:4]) != geneve.Port {
			continue
		}
		g := udp[8:]
		inner := g[8+int(g[0]&0x3f)*4:]
		if len(inner) < 20 {
			continue
		}
		in := inner[0]>>4 == 6 || inner[6]&0x40 != 0
		if inner[0]>>4 == 4 && in {
			innerDF++
		}
		var want bool
		switch mode {
		case endpoint.DFSet:
			want = true
		case endpoint.DFInherit:
			want = in && !inheritClear
		}
		if got := ip[6]&0x40 != 0; got != want {
			t.Errorf("df %s: outer DF %v, want %v (inner IPv%d, DF %v)", mode, got, want, inner[0]>>4, in)
		}
		n++
	}
	return n, innerDF
}

// sendOverlay sends overlay traffic from a to 10.0.0.2: pings (three if
// they are answered, else one), and three UDP datagrams with DF (netstack's
// default) and three without. Nothing needs to answer.
func sendOverlay(t *testing.T, a *testutil.Host) {
	t.Helper()
	dst := netip.AddrFrom4([4]byte{10, 0, 0, 2})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond) // the peer may not answer
	defer cancel()
	for seq := uint16(1); seq <= 3; seq++ {
		_, _ = a.Tunnel.Ping(ctx, dst, seq, 56)
	}
	to := tcpip.FullAddress{Addr: tcpip.AddrFrom4(dst.As4()), Port: 9}
	for _, pmtud := range []tcpip.PMTUDStrategy{tcpip.PMTUDiscoveryWant, tcpip.PMTUDiscoveryDont} {
		var wq waiter.Queue
		ep, terr := a.Tunnel.Overlay().NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
		if terr != nil {
			t.Fatal(terr)
		}
		if terr := ep.SetSockOptInt(tcpip.MTUDiscoverOption, int(pmtud)); terr != nil {
			ep.Close()
			t.Fatal(terr)
		}
		for range 3 {
			if _, terr := ep.Write(bytes.NewReader([]byte("gnv outer df")), tcpip.WriteOptions{To: &to}); terr != nil {
				ep.Close()
				t.Fatal(terr)
			}
		}
		ep.Close()
	}
}

// TestOuterDFNetstack checks the outer DF bit on the wire of a netstack
// underlay (nsudp on the test fabric): clear by default (DFUnset, as
// FreeBSD's geneve(4)), set with DFSet, copied from the inner packet with
// DFInherit. The AF_PACKET and TAP underlays run the same netstack
// transport; TestOuterDFUnderlays checks them, and kernel UDP, on veths.
func TestOuterDFNetstack(t *testing.T) {
	for _, mode := range dfModes {
		t.Run(mode.String(), func(t *testing.T) {
			capture := &lockedBuffer{}
			hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L3, VNI: 11, Seed: 1, Pcap: capture,
				Endpoint: endpoint.Config{DF: mode}})
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					hs.Close()
				}
			}()
			sendOverlay(t, hs.Hosts[0])
			hs.Close() // the capture is complete once the stacks are gone
			closed = true
			n, innerDF := checkOuterDF(t, frames(t, capture.Bytes()), mode, false)
			if n == 0 || innerDF == 0 || innerDF == n {
				t.Errorf("checked %d Geneve datagrams, %d with inner DF: want some with and some without", n, innerDF)
			}
		})
	}
}
