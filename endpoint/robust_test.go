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
					ft.r.Receive(batch)
					batch = batch[:0]
				}
			}
			ft.r.Receive(batch)
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
