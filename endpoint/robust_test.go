package endpoint

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ipv6Packet builds an IPv6 packet from 2001:db8::2 to 2001:db8::1 with the
// given next header and payload (extension headers included).
func ipv6Packet(next uint8, payload []byte) []byte {
	b := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(payload)),
		TransportProtocol: tcpip.TransportProtocolNumber(next),
		HopLimit:          64,
		SrcAddr:           tcpip.AddrFrom16(netip.MustParseAddr("2001:db8::2").As16()),
		DstAddr:           tcpip.AddrFrom16(netip.MustParseAddr("2001:db8::1").As16()),
	})
	copy(b[header.IPv6MinimumSize:], payload)
	return b
}

// ipv6FragmentPair returns the two fragments of a 32-byte UDP datagram
// (fragment identification id): 16 bytes at offset 0 with M set, then 16
// bytes at offset 16.
func ipv6FragmentPair(id uint32) [2][]byte {
	udp := make([]byte, 32)
	binary.BigEndian.PutUint16(udp[0:], 1000)
	binary.BigEndian.PutUint16(udp[2:], 2000)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	for i := 8; i < len(udp); i++ {
		udp[i] = byte(i)
	}
	src := tcpip.AddrFrom16(netip.MustParseAddr("2001:db8::2").As16())
	dst := tcpip.AddrFrom16(netip.MustParseAddr("2001:db8::1").As16())
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], ^checksum.Checksum(udp, xsum))
	frag := func(off int, more bool, data []byte) []byte {
		fh := make([]byte, 8+len(data))
		fh[0] = protoUDP
		fo := uint16(off) // a multiple of 8: the offset field is in its top 13 bits
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(fh[8:], data)
		return ipv6Packet(44, fh)
	}
	return [2][]byte{frag(0, true, udp[:16]), frag(16, false, udp[16:])}
}

// TestLocalIPv6NoTransportNoLeak: datagrams marked Local (built on this
// host) whose inner packet is IPv6 with a Fragment header or no next header
// (59) must not go to GRO, whose IPv6 parser leaks a buffer for each of
// them; they are delivered on their own. Every buffer must be released.
func TestLocalIPv6NoTransportNoLeak(t *testing.T) {
	for _, mode := range []Mode{L2, L3} {
		t.Run(mode.String(), func(t *testing.T) {
			e, ft, d := newTestEndpoint(t, Config{VNI: 7, Mode: mode})
			d.keep = false
			h := geneve.Header{VNI: 7, Protocol: geneve.ProtoIPv6}
			wrap := func(ip []byte) []byte {
				if mode == L2 {
					h.Protocol = geneve.ProtoEthernet
					ip = ether(e.LinkAddress(), "\x02\x00\x00\x00\x00\x09", etherTypeIPv6, ip)
				}
				return datagram(h, ip)
			}
			const n = 200
			var batch []link.Datagram
			for i := 0; i < n; i++ {
				pair := ipv6FragmentPair(uint32(i))
				batch = append(batch,
					link.Datagram{Payload: wrap(pair[0]), Src: peerAddr, Local: true},
					link.Datagram{Payload: wrap(pair[1]), Src: peerAddr, Local: true},
					link.Datagram{Payload: wrap(ipv6Packet(59, nil)), Src: peerAddr, Local: true},
					link.Datagram{Payload: wrap(ipv6Packet(59, []byte("trailing bytes after no-next-header"))), Src: peerAddr, Local: true})
				if len(batch) >= 64 {
					ft.Deliver(batch)
					batch = batch[:0]
				}
			}
			ft.Deliver(batch)
			if d.count != 4*n {
				t.Errorf("delivered %d of %d packets (stats %v)", d.count, 4*n, e.Stats())
			}
			if st := e.Stats(); st.RxPackets != 4*n || st.TotalDrops() != 0 {
				t.Errorf("stats %v", st)
			}
			leakcheck.Check(t)
		})
	}
}

// tcpSegment builds an IPv4 or IPv6 TCP packet (ACK, ports 1000 -> 80)
// whose data offset field says doff bytes and whose segment holds a
// 20-byte header and n bytes after it, with valid checksums, whatever doff.
func tcpSegment(src, dst netip.Addr, doff, n int) []byte {
	seg := make([]byte, 20+n)
	binary.BigEndian.PutUint16(seg[0:], 1000)
	binary.BigEndian.PutUint16(seg[2:], 80)
	binary.BigEndian.PutUint32(seg[4:], 1)
	binary.BigEndian.PutUint32(seg[8:], 1)
	seg[12] = byte(doff/4) << 4
	seg[13] = uint8(header.TCPFlagAck)
	binary.BigEndian.PutUint16(seg[14:], 1000)
	for i := 20; i < len(seg); i++ {
		seg[i] = byte(i)
	}
	return withTransport(src, dst, protoTCP, seg, 16)
}

// udpDatagram builds an IPv4 or IPv6 UDP packet whose length field is
// ulen and which carries n payload bytes, with valid checksums.
func udpDatagram(src, dst netip.Addr, ulen, n int) []byte {
	seg := make([]byte, 8+n)
	binary.BigEndian.PutUint16(seg[0:], 1000)
	binary.BigEndian.PutUint16(seg[2:], 2000)
	binary.BigEndian.PutUint16(seg[4:], uint16(ulen))
	for i := 8; i < len(seg); i++ {
		seg[i] = byte(i)
	}
	return withTransport(src, dst, protoUDP, seg, 6)
}

// withTransport puts seg behind an IPv4 or IPv6 header and fills in the
// transport checksum at xsumOff over the whole segment.
func withTransport(src, dst netip.Addr, proto uint8, seg []byte, xsumOff int) []byte {
	s, d := tcpipAddr(src), tcpipAddr(dst)
	xsum := header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), s, d, uint16(len(seg)))
	binary.BigEndian.PutUint16(seg[xsumOff:], ^checksum.Checksum(seg, xsum))
	if src.Is4() {
		b := make([]byte, 20+len(seg))
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: proto, SrcAddr: s, DstAddr: d})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(b[20:], seg)
		return b
	}
	b := make([]byte, 40+len(seg))
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(seg)), TransportProtocol: tcpip.TransportProtocolNumber(proto),
		HopLimit: 64, SrcAddr: s, DstAddr: d})
	copy(b[40:], seg)
	return b
}

// TestForwardingMalformedTransportHeader: on an overlay stack that forwards,
// a TCP segment whose data offset runs past its end, or a UDP datagram
// whose length field disagrees with the packet, with valid checksums, is
// dropped and counted (gVisor's forwarding path panics on the TCP one),
// whether the datagram is Local or not; well-formed ones are forwarded.
func TestForwardingMalformedTransportHeader(t *testing.T) {
	o := newOverlay(t)
	defer o.close()
	// Ingress on the L2 NIC, egress on the L3 NIC, and the reverse.
	paths := []struct {
		name     string
		in       *Endpoint
		src, dst [2]netip.Addr
		outVNI   uint32
	}{
		{"l2 to l3", o.l2, ovlL2Peer, ovlFar, ovlL3VNI},
		{"l3 to l2", o.l3, [2]netip.Addr{netip.MustParseAddr("10.9.0.7"), netip.MustParseAddr("fd00:9::7")}, ovlL2Peer, ovlL2VNI},
	}
	for _, p := range paths {
		for fam := 0; fam < 2; fam++ {
			src, dst := p.src[fam], p.dst[fam]
			bad := []struct {
				name string
				ip   []byte
			}{
				{"tcp data offset 52 in a 32-byte segment", tcpSegment(src, dst, 52, 12)},
				{"tcp data offset 60 in a 20-byte segment", tcpSegment(src, dst, 60, 0)},
				{"tcp data offset 16", tcpSegment(src, dst, 16, 12)},
				{"udp length past the packet", udpDatagram(src, dst, 200, 12)},
				{"udp length 4", udpDatagram(src, dst, 4, 12)},
			}
			good := []struct {
				name string
				ip   []byte
			}{
				{"tcp data offset 32", tcpSegment(src, dst, 32, 12)},
				{"udp", udpDatagram(src, dst, 20, 12)},
			}
			send := func(ip []byte, local bool) {
				h := geneve.Header{VNI: p.in.VNI(), Protocol: geneve.ProtoIPv4}
				if fam == 1 {
					h.Protocol = geneve.ProtoIPv6
				}
				if p.in.cfg.Mode == L2 {
					typ := uint16(etherTypeIPv4)
					if fam == 1 {
						typ = etherTypeIPv6
					}
					h.Protocol = geneve.ProtoEthernet
					ip = ether(ovlMAC, ovlPeerMAC, typ, ip)
				}
				o.ft.Deliver([]link.Datagram{{Payload: datagram(h, ip), Src: netip.AddrPortFrom(ovlRemote, 6081), Local: local}})
			}
			for _, local := range []bool{false, true} {
				for _, c := range bad {
					before := p.in.Stats().Drops[DropInnerTransportHeader]
					send(c.ip, local)
					if after := p.in.Stats().Drops[DropInnerTransportHeader]; after != before+1 {
						t.Errorf("%s, IPv%d, local %v, %s: %s counter %d -> %d", p.name, 4+2*fam, local, c.name, DropInnerTransportHeader, before, after)
					}
					if sent := o.ft.Take(); len(sent) != 0 {
						t.Errorf("%s, IPv%d, local %v, %s: %d datagrams sent", p.name, 4+2*fam, local, c.name, len(sent))
					}
				}
				for _, c := range good {
					send(c.ip, local)
					sent := o.ft.Take()
					if len(sent) != 1 {
						t.Errorf("%s, IPv%d, local %v, %s: %d datagrams forwarded, want 1", p.name, 4+2*fam, local, c.name, len(sent))
						continue
					}
					if h, _, err := geneve.Decode(sent[0].Data); err != nil || h.VNI != p.outVNI {
						t.Errorf("%s, IPv%d, %s: forwarded as %+v, %v", p.name, 4+2*fam, c.name, h, err)
					}
				}
			}
		}
	}
}
