package stack_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link/nsudp"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// checksumPair builds two tunnels over netstack underlays on a capturing
// fabric, with the given checksum policies.
func checksumPair(t *testing.T, fam int, ca, cb stack.Checksums) (a, b *stack.Tunnel, f *testutil.Fabric, capture *lockedBuffer) {
	t.Helper()
	capture = &lockedBuffer{}
	f = testutil.NewFabric(testutil.FabricOptions{Seed: 5, Pcap: capture})
	t.Cleanup(f.Close)
	ul := func(i int) netip.Prefix {
		if fam == 4 {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 24)
		}
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), 64)
	}
	mk := func(i int, c stack.Checksums) *stack.Tunnel {
		p, err := f.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		tun, err := stack.New(stack.Config{
			VNI: 8, Mode: endpoint.L3, Remotes: []netip.Addr{ul(3 - i).Addr()},
			Underlay:  stack.NetstackUnderlay{Link: p, NetstackOptions: stack.NetstackOptions{Address: ul(i), Checksums: c}},
			Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 24)},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tun.Close() })
		return tun
	}
	return mk(1, ca), mk(2, cb), f, capture
}

// udpChecksums returns the outer UDP checksums of the Geneve datagrams in
// a fabric capture.
func udpChecksums(t *testing.T, capture []byte) []uint16 {
	var out []uint16
	for _, fr := range frames(t, capture) {
		if len(fr) < 14 {
			continue
		}
		var udp []byte
		switch binary.BigEndian.Uint16(fr[12:14]) {
		case 0x0800:
			if fr[14+9] == 17 {
				udp = fr[14+int(fr[14]&0xf)*4:]
			}
		case 0x86dd:
			if fr[14+6] == 17 {
				udp = fr[14+40:]
			}
		}
		if len(udp) >= 8 && binary.BigEndian.Uint16(udp[2:4]) == geneve.Port {
			out = append(out, binary.BigEndian.Uint16(udp[6:8]))
		}
	}
	return out
}

func transportStats(t *testing.T, tun *stack.Tunnel) nsudp.Stats {
	t.Helper()
	ns, ok := tun.Underlay().Socket().Transport().(*nsudp.Transport)
	if !ok {
		t.Fatal("not a netstack transport")
	}
	return ns.Stats()
}

func TestChecksumPolicies(t *testing.T) {
	// The first ping also resolves the underlay neighbours: give it time
	// on a loaded machine. The one expected to fail gets a second.
	pingWithin := func(a *stack.Tunnel, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := a.Ping(ctx, netip.MustParseAddr("10.0.0.2"), 1, 32)
		return err
	}
	ping := func(a *stack.Tunnel) error { return pingWithin(a, 10*time.Second) }
	t.Run("ipv4 default: checksums on the wire", func(t *testing.T) {
		a, _, _, capture := checksumPair(t, 4, stack.Checksums{}, stack.Checksums{})
		if err := ping(a); err != nil {
			t.Fatal(err)
		}
		for _, c := range udpChecksums(t, capture.Bytes()) {
			if c == 0 {
				t.Fatal("a zero UDP checksum with checksums on")
			}
		}
	})
	t.Run("ipv4 zero checksums sent and accepted", func(t *testing.T) {
		a, _, _, capture := checksumPair(t, 4, stack.Checksums{NoChecksumTx4: true}, stack.Checksums{})
		if err := ping(a); err != nil {
			t.Fatal(err)
		}
		zero := 0
		for _, c := range udpChecksums(t, capture.Bytes()) {
			if c == 0 {
				zero++
			}
		}
		if zero == 0 {
			t.Error("no zero checksum on the wire")
		}
	})
	t.Run("ipv6 zero checksums refused by default", func(t *testing.T) {
		a, b, _, _ := checksumPair(t, 6, stack.Checksums{ZeroChecksumTx6: true}, stack.Checksums{})
		if err := pingWithin(a, time.Second); err == nil {
			t.Fatal("ping answered although B refuses zero-checksum IPv6")
		}
		deadline := time.Now().Add(5 * time.Second)
		for transportStats(t, b).RxChecksumErrors == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := transportStats(t, b).RxChecksumErrors; n == 0 {
			t.Error("B counted no checksum errors")
		}
	})
	t.Run("ipv6 zero checksums accepted when configured", func(t *testing.T) {
		both := stack.Checksums{ZeroChecksumTx6: true, ZeroChecksumRx6: true}
		a, _, _, capture := checksumPair(t, 6, both, both)
		if err := ping(a); err != nil {
			t.Fatal(err)
		}
		for _, c := range udpChecksums(t, capture.Bytes()) {
			if c != 0 {
				t.Fatalf("checksum %#x on the wire, want 0", c)
			}
		}
	})
	t.Run("bad checksum dropped", func(t *testing.T) {
		_, b, f, _ := checksumPair(t, 4, stack.Checksums{}, stack.Checksums{})
		// Inject a Geneve datagram with a wrong (non-zero) UDP checksum.
		inj, err := f.NewPort("", testutil.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		defer inj.Close()
		inj.Attach(nopDispatcher{})
		inner := make([]byte, 28)
		header.IPv4(inner).Encode(&header.IPv4Fields{TotalLength: 28, TTL: 64, Protocol: 17,
			SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})})
		gh := geneve.Header{VNI: 8, Protocol: geneve.ProtoIPv4}
		payload := make([]byte, gh.Len()+len(inner))
		gh.Encode(payload)
		copy(payload[gh.Len():], inner)
		src, dst := tcpip.AddrFrom4([4]byte{192, 0, 2, 1}), tcpip.AddrFrom4([4]byte{192, 0, 2, 2})
		frame := make([]byte, 14+20+8+len(payload))
		copy(frame[0:6], b.Underlay().Stack().NICInfo()[1].LinkAddress)
		copy(frame[6:12], inj.LinkAddress())
		binary.BigEndian.PutUint16(frame[12:14], 0x0800)
		ip := header.IPv4(frame[14:])
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(20 + 8 + len(payload)), TTL: 64, Protocol: 17, SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
		u := header.UDP(frame[34:])
		u.Encode(&header.UDPFields{SrcPort: 40000, DstPort: geneve.Port, Length: uint16(8 + len(payload))})
		copy(frame[42:], payload)
		xsum := header.PseudoHeaderChecksum(17, src, dst, uint16(8+len(payload)))
		u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(payload, xsum)) + 1) // wrong by one
		pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(frame[14:])})
		copy(pkt.LinkHeader().Push(14), frame[:14])
		var l tcpipstack.PacketBufferList
		l.PushBack(pkt)
		inj.WritePackets(l)
		pkt.DecRef()
		for i := 0; i < 100 && transportStats(t, b).RxChecksumErrors == 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		st := transportStats(t, b)
		if st.RxChecksumErrors != 1 || st.RxDatagrams != 0 {
			t.Errorf("checksum errors %d, datagrams %d", st.RxChecksumErrors, st.RxDatagrams)
		}
	})
}

type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *tcpipstack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *tcpipstack.PacketBuffer)    {}

// TestFlowLabel: with FlowLabel on an IPv6 netstack underlay, every
// Geneve datagram carries a non-zero flow label, the same for one inner
// flow and different across flows, and traffic still flows.
func TestFlowLabel(t *testing.T) {
	capture := &lockedBuffer{}
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L3, VNI: 6, UnderlayFamily: 6, Pcap: capture,
		Endpoint: endpoint.Config{FlowLabel: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0], hs.Hosts[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for port := uint16(7000); port < 7004; port++ {
		if err := testutil.ExchangeUDP(ctx, a.Tunnel, b.Tunnel, netip.AddrPortFrom(b.Overlay4, port), 3, 100); err != nil {
			t.Fatal(err)
		}
	}
	labels := map[uint16]map[uint32]bool{} // outer source port -> labels
	for _, fr := range frames(t, capture.Bytes()) {
		if len(fr) < 14+48 || binary.BigEndian.Uint16(fr[12:14]) != 0x86dd || fr[14+6] != 17 {
			continue
		}
		ip := fr[14:]
		if binary.BigEndian.Uint16(ip[42:44]) != geneve.Port {
			continue
		}
		label := binary.BigEndian.Uint32(ip[0:4]) & 0xfffff
		if label == 0 {
			t.Fatal("a Geneve datagram without a flow label")
		}
		sp := binary.BigEndian.Uint16(ip[40:42])
		if labels[sp] == nil {
			labels[sp] = map[uint32]bool{}
		}
		labels[sp][label] = true
	}
	distinct := map[uint32]bool{}
	for sp, ls := range labels {
		if len(ls) != 1 {
			t.Errorf("source port %d (one flow) carried %d labels", sp, len(ls))
		}
		for l := range ls {
			distinct[l] = true
		}
	}
	if len(distinct) < 4 {
		t.Errorf("%d distinct labels for at least 8 flows (4 each way)", len(distinct))
	}
}
