package endpoint

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcpSuperPacket builds an outbound host-GSO TCP packet as the overlay
// stack would: headers pushed, checksum left partial, GSO options set.
func tcpSuperPacket(e *Endpoint, v6 bool, payload []byte, mss int, flags header.TCPFlags) *stack.PacketBuffer {
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(e.MaxHeaderLength()) + ipLen + header.TCPMinimumSize,
		Payload:            buffer.MakeWithData(payload),
	})
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize))
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 0xfffff000, AckNum: 7, DataOffset: 20, Flags: flags, WindowSize: 1000})
	tcp.SetChecksum(0x1234) // a partial checksum the endpoint must replace
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	total := ipLen + header.TCPMinimumSize + len(payload)
	if v6 {
		ip := header.IPv6(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv6Fields{PayloadLength: uint16(total - ipLen), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64,
			SrcAddr: tcpip.AddrFrom16(netip.MustParseAddr("fd00::1").As16()), DstAddr: tcpip.AddrFrom16(netip.MustParseAddr("fd00::2").As16())})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
		pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: 16, MSS: uint16(mss), L3HdrLen: uint16(ipLen)}
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), ID: 100, TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
			SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: uint16(mss), L3HdrLen: uint16(ipLen)}
	}
	pkt.EgressRoute.RemoteLinkAddress = "\x02\x00\x00\x00\x00\x02"
	e.AddHeader(pkt)
	return pkt
}

func TestSegmentation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode Mode
		v6   bool
		size int
	}{
		{"l2-v4", L2, false, 10000},
		{"l3-v4", L3, false, 10000},
		{"l2-v6", L2, true, 10001},
		{"l3-v6-exact", L3, true, 2760},
		{"l3-v4-small", L3, false, 100},
		{"l3-v4-ack", L3, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ft, _ := newTestEndpoint(t, Config{VNI: 1, Mode: tc.mode})
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			const mss = 1380
			write(t, e, tcpSuperPacket(e, tc.v6, payload, mss, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin|header.TCPFlagCwr))
			sent := ft.Take()
			want := max(1, (tc.size+mss-1)/mss)
			if len(sent) != want {
				t.Fatalf("%d segments, want %d", len(sent), want)
			}
			var got []byte
			srcPort := sent[0].Packet.SrcPort
			for i, d := range sent {
				h, off, err := geneve.Decode(d.Data)
				if err != nil {
					t.Fatal(err)
				}
				if d.Packet.SrcPort != srcPort {
					t.Errorf("segment %d: source port %d, first was %d", i, d.Packet.SrcPort, srcPort)
				}
				ip := d.Data[off:]
				if h.Protocol == geneve.ProtoEthernet {
					ip = ip[14:]
				}
				if l4 := parseInner(ip); !l4.transportOK(ip) || checkInner(ip, &l4) != innerValid {
					t.Errorf("segment %d: bad checksums", i)
				}
				var tcp header.TCP
				if tc.v6 {
					v6 := header.IPv6(ip)
					if int(v6.PayloadLength()) != len(ip)-40 {
						t.Errorf("segment %d: payload length %d for %d bytes", i, v6.PayloadLength(), len(ip)-40)
					}
					tcp = header.TCP(ip[40:])
				} else {
					v4 := header.IPv4(ip)
					if int(v4.TotalLength()) != len(ip) || !v4.IsChecksumValid() || v4.ID() != uint16(100+i) {
						t.Errorf("segment %d: total length %d for %d bytes, id %d", i, v4.TotalLength(), len(ip), v4.ID())
					}
					tcp = header.TCP(ip[20:])
				}
				if seq := tcp.SequenceNumber(); seq != 0xfffff000+uint32(i*mss) {
					t.Errorf("segment %d: seq %#x", i, seq)
				}
				last := i == len(sent)-1
				f := tcp.Flags()
				if f.Contains(header.TCPFlagFin) != last || f.Contains(header.TCPFlagPsh) != last || f.Contains(header.TCPFlagCwr) != (i == 0) || !f.Contains(header.TCPFlagAck) {
					t.Errorf("segment %d: flags %v", i, f)
				}
				if n := len(tcp.Payload()); n > mss {
					t.Errorf("segment %d: %d bytes > MSS", i, n)
				}
				got = append(got, tcp.Payload()...)
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("reassembled payload differs (%d bytes, want %d)", len(got), len(payload))
			}
			if tc.size > mss && e.Stats().TxGSOSegments != uint64(want) {
				t.Errorf("TxGSOSegments %d, want %d", e.Stats().TxGSOSegments, want)
			}
		})
	}
}
