package stack

import (
	"net/netip"
	"sync"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// AnnounceInterval is the time between the two announcements Announce
// sends (RFC 5227 §1.1: ANNOUNCE_NUM 2, ANNOUNCE_INTERVAL 2 seconds).
const AnnounceInterval = 2 * time.Second

// announcer holds the second announcement's timer.
type announcer struct {
	mu     sync.Mutex
	timer  tcpip.Timer
	closed bool
}

// Announce tells the peers of an L2 tunnel its MAC address: a gratuitous
// ARP request (an ARP announcement, RFC 5227 §2.3) for every IPv4 address
// of Config.Addresses and an unsolicited Neighbor Advertisement with the
// override flag (RFC 4861 §7.2.6) for every IPv6 one, sent to all
// remotes or the group, now and again AnnounceInterval later (on
// Config.Clock), unless the tunnel has closed: one lost datagram, or a
// peer still coming up, should not leave a stale entry behind. Peers
// update the neighbour entries they have for those addresses (Linux does
// for both), and their Geneve forwarding tables learn where the MAC is,
// so a restarted host is reachable at once. gVisor has no helper for
// either message, so the frames are built here and written through the
// tunnel's Geneve endpoint, the same for a netstack overlay and a TAP
// device. An L3 tunnel has no link layer: Announce does nothing.
func (t *Tunnel) Announce() {
	if !t.announce() {
		return
	}
	a := &t.ann
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	clock := t.cfg.Clock
	if clock == nil {
		clock = tcpip.NewStdClock()
	}
	a.timer = clock.AfterFunc(AnnounceInterval, func() {
		// Under the lock, so that Close waits for a write in progress
		// before it closes the endpoint.
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.closed {
			t.announce()
		}
	})
}

// stopAnnouncing cancels a pending announcement; later ones do nothing.
func (t *Tunnel) stopAnnouncing() {
	a := &t.ann
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
}

// announce sends the announcements once and reports whether the tunnel
// has any to send.
func (t *Tunnel) announce() bool {
	if t.cfg.Mode != endpoint.L2 || t.ep == nil || len(t.cfg.Addresses) == 0 {
		return false
	}
	mac := t.ep.LinkAddress()
	if len(mac) != header.EthernetAddressSize {
		return false
	}
	for _, p := range t.cfg.Addresses {
		a := p.Addr().Unmap()
		if a.Is4() {
			t.writeFrame(arpAnnouncement(mac, a), header.ARPProtocolNumber, header.ARPSize)
		} else if !a.IsUnspecified() {
			t.writeFrame(unsolicitedNA(mac, a), header.IPv6ProtocolNumber, header.IPv6MinimumSize)
		}
	}
	return true
}

// writeFrame hands an Ethernet frame, whose network header is netLen
// bytes, to the endpoint as the overlay stack would.
func (t *Tunnel) writeFrame(frame []byte, proto tcpip.NetworkProtocolNumber, netLen int) {
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	pkt.NetworkProtocolNumber = proto
	if _, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize); !ok {
		return
	}
	if _, ok := pkt.NetworkHeader().Consume(netLen); !ok {
		return
	}
	var pkts tcpipstack.PacketBufferList
	pkts.PushBack(pkt)
	_, _ = t.ep.WritePackets(pkts) // borrows pkt
}

// ethernet returns an Ethernet header from src to dst of type.
func ethernet(dst, src tcpip.LinkAddress, typ tcpip.NetworkProtocolNumber, size int) []byte {
	b := make([]byte, header.EthernetMinimumSize, header.EthernetMinimumSize+size)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: src, DstAddr: dst, Type: typ})
	return b
}

// arpAnnouncement is a broadcast ARP request from mac for a, whose sender
// and target protocol addresses are both a.
func arpAnnouncement(mac tcpip.LinkAddress, a netip.Addr) []byte {
	b := ethernet(header.EthernetBroadcastAddress, mac, header.ARPProtocolNumber, header.ARPSize)
	b = b[:header.EthernetMinimumSize+header.ARPSize]
	arp := header.ARP(b[header.EthernetMinimumSize:])
	arp.SetIPv4OverEthernet()
	arp.SetOp(header.ARPRequest)
	ip := a.As4()
	copy(arp.HardwareAddressSender(), mac)
	copy(arp.ProtocolAddressSender(), ip[:])
	copy(arp.ProtocolAddressTarget(), ip[:])
	return b
}

// unsolicitedNA is a Neighbor Advertisement from a (with mac as its target
// link-layer address, the override flag set) to all nodes.
func unsolicitedNA(mac tcpip.LinkAddress, a netip.Addr) []byte {
	const optLen = 8 // Target Link-Layer Address option: type, length 1 (8 bytes), MAC
	icmpLen := header.ICMPv6NeighborAdvertMinimumSize + optLen
	dst := header.IPv6AllNodesMulticastAddress
	src := tcpip.AddrFrom16(a.As16())
	b := ethernet(header.EthernetAddressFromMulticastIPv6Address(dst), mac, header.IPv6ProtocolNumber, header.IPv6MinimumSize+icmpLen)
	b = b[:header.EthernetMinimumSize+header.IPv6MinimumSize+icmpLen]
	ip := header.IPv6(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(icmpLen),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          header.NDPHopLimit,
		SrcAddr:           src,
		DstAddr:           dst,
	})
	icmp := header.ICMPv6(ip[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6NeighborAdvert)
	na := header.NDPNeighborAdvert(icmp.MessageBody())
	na.SetOverrideFlag(true)
	na.SetTargetAddress(src)
	opt := icmp[header.ICMPv6NeighborAdvertMinimumSize:]
	opt[0], opt[1] = 2, 1
	copy(opt[2:], mac)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: src, Dst: dst}))
	return b
}
