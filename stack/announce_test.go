package stack_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestAnnounce: an L2 tunnel announces its MAC for each overlay address to
// its remotes, an ARP announcement for IPv4 and an unsolicited Neighbor
// Advertisement with the override flag for IPv6, both well formed; an L3
// tunnel sends nothing.
func TestAnnounce(t *testing.T) {
	tr := linktest.New(netip.MustParseAddrPort("192.0.2.1:6081"))
	mac := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 7}
	tun, err := stack.New(stack.Config{
		VNI:       42,
		Remotes:   []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		Underlay:  stack.TransportUnderlay{Transport: tr},
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.4.0.1/24"), netip.MustParsePrefix("fd04::1/64")},
		MAC:       mac,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	tr.Take()
	tun.Announce()
	var arps, nas int
	for _, s := range tr.Take() {
		if s.Packet.Dst != netip.MustParseAddrPort("192.0.2.2:6081") {
			t.Errorf("sent to %v", s.Packet.Dst)
		}
		h, off, err := geneve.Decode(s.Data)
		if err != nil || h.VNI != 42 || h.Protocol != geneve.ProtoEthernet {
			t.Fatalf("%+v %v", h, err)
		}
		eth := header.Ethernet(s.Data[off:])
		if eth.SourceAddress() != tcpip.LinkAddress(mac) {
			t.Errorf("frame from %v", eth.SourceAddress())
		}
		body := s.Data[off+header.EthernetMinimumSize:]
		switch eth.Type() {
		case header.ARPProtocolNumber:
			arp := header.ARP(body)
			if eth.DestinationAddress() != header.EthernetBroadcastAddress || !arp.IsValid() || arp.Op() != header.ARPRequest ||
				string(arp.HardwareAddressSender()) != string(mac) || netip.AddrFrom4([4]byte(arp.ProtocolAddressSender())).String() != "10.4.0.1" ||
				netip.AddrFrom4([4]byte(arp.ProtocolAddressTarget())).String() != "10.4.0.1" {
				t.Errorf("ARP %x to %v", []byte(arp), eth.DestinationAddress())
			}
			arps++
		case header.IPv6ProtocolNumber:
			ip := header.IPv6(body)
			icmp := header.ICMPv6(ip.Payload())
			if icmp.Type() != header.ICMPv6NeighborAdvert {
				continue // DAD or MLD from the overlay stack
			}
			na := header.NDPNeighborAdvert(icmp.MessageBody())
			if ip.SourceAddress().String() != "fd04::1" || ip.DestinationAddress() != header.IPv6AllNodesMulticastAddress || ip.HopLimit() != 255 ||
				na.TargetAddress().String() != "fd04::1" || !na.OverrideFlag() || na.SolicitedFlag() ||
				checksum.Checksum(icmp, header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(icmp)))) != 0xffff {
				t.Errorf("NA %x", []byte(body))
			}
			it, err := na.Options().Iter(true)
			if err != nil {
				t.Fatal(err)
			}
			opt, done, err := it.Next()
			if err != nil || done {
				t.Fatalf("NA options: %v", err)
			}
			if tll, ok := opt.(header.NDPTargetLinkLayerAddressOption); !ok || tll.EthernetAddress() != tcpip.LinkAddress(mac) {
				t.Errorf("NA option %v", opt)
			}
			nas++
		}
	}
	if arps != 1 || nas != 1 {
		t.Errorf("%d ARP announcements and %d neighbor advertisements, want one each", arps, nas)
	}

	tr3 := linktest.New(netip.MustParseAddrPort("192.0.2.1:6081"))
	l3, err := stack.New(stack.Config{VNI: 43, Mode: endpoint.L3, Remotes: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		Underlay: stack.TransportUnderlay{Transport: tr3}, Addresses: []netip.Prefix{netip.MustParsePrefix("10.5.0.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	tr3.Take()
	l3.Announce()
	if n := len(tr3.Take()); n != 0 {
		t.Errorf("an l3 tunnel sent %d datagrams", n)
	}
}

// TestAnnounceTwice: as RFC 5227 asks, the announcement goes out again
// AnnounceInterval later, once; a tunnel closed before then sends no
// second one.
func TestAnnounceTwice(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		clock := faketime.NewManualClock()
		tr := linktest.New(netip.MustParseAddrPort("192.0.2.1:6081"))
		tun, err := stack.New(stack.Config{
			VNI:       42,
			Remotes:   []netip.Addr{netip.MustParseAddr("192.0.2.2")},
			Underlay:  stack.TransportUnderlay{Transport: tr},
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.4.0.1/24")},
			Clock:     clock,
		})
		if err != nil {
			t.Fatal(err)
		}
		arps := func() int {
			n := 0
			for _, s := range tr.Take() {
				_, off, err := geneve.Decode(s.Data)
				if err == nil && header.Ethernet(s.Data[off:]).Type() == header.ARPProtocolNumber {
					n++
				}
			}
			return n
		}
		arps()
		tun.Announce()
		if n := arps(); n != 1 {
			t.Fatalf("%d ARP announcements at once, want 1", n)
		}
		clock.Advance(stack.AnnounceInterval - time.Millisecond)
		if n := arps(); n != 0 {
			t.Errorf("%d ARP announcements before the interval, want 0", n)
		}
		if closeFirst {
			tun.Close()
		}
		clock.Advance(time.Millisecond)
		want := 1
		if closeFirst {
			want = 0
		}
		if n := arps(); n != want {
			t.Errorf("closed first %v: %d ARP announcements after the interval, want %d", closeFirst, n, want)
		}
		clock.Advance(10 * stack.AnnounceInterval)
		if n := arps(); n != 0 {
			t.Errorf("%d more ARP announcements later, want none", n)
		}
		tun.Close()
	}
}
