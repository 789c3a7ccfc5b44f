package endpoint

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/internal/csum"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tooBig handles a tenant packet larger than the tunnel MTU that cannot be
// sent (RFC 8926 §4.4.1): it is dropped and counted, and an IPv4 packet with
// DF gets an ICMP Fragmentation Needed, an IPv6 packet an ICMPv6 Packet Too
// Big, carrying the tunnel MTU, delivered back into the overlay as if sent
// by the packet's destination (as Linux's tunnels do). The outer packet is
// never fragmented in this case.
func (e *Endpoint) tooBig(pkt *stack.PacketBuffer, linkHdr, ip []byte) {
	e.stats.drop(DropTxTooBig)
	if len(ip) < header.IPv4MinimumSize {
		return
	}
	v := pkt.ToView()
	defer v.Release()
	orig := v.AsSlice()[len(linkHdr):]
	var reply []byte
	var proto tcpip.NetworkProtocolNumber
	switch ip[0] >> 4 {
	case 4:
		if ip[6]&0x40 == 0 || ip[9] == protoICMP && len(orig) > 20 && isICMPError4(orig[int(ip[0]&0xf)*4:]) {
			return
		}
		reply, proto = fragNeeded(orig, e.mtu.Load()), header.IPv4ProtocolNumber
	case 6:
		if len(ip) < header.IPv6MinimumSize {
			return
		}
		reply, proto = packetTooBig(orig, e.mtu.Load()), header.IPv6ProtocolNumber
	}
	if reply == nil {
		return
	}
	d := e.attached()
	if d == nil {
		return
	}
	frame := reply
	if e.cfg.Mode == L2 {
		// Back to the sender's MAC, from the MAC it sent to.
		frame = make([]byte, header.EthernetMinimumSize+len(reply))
		copy(frame[0:6], linkHdr[6:12])
		copy(frame[6:12], linkHdr[0:6])
		binary.BigEndian.PutUint16(frame[12:14], uint16(proto))
		copy(frame[header.EthernetMinimumSize:], reply)
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer p.DecRef()
	if e.cfg.Mode == L2 {
		p.LinkHeader().Consume(header.EthernetMinimumSize)
	}
	p.NetworkProtocolNumber = proto
	p.PktType = tcpip.PacketHost
	e.stats.pmtuReplies.Add(1)
	d.DeliverNetworkPacket(proto, p)
}

// isICMPError4 reports whether an ICMP message is an error (no error is
// sent about an error, RFC 1122 §3.2.2).
func isICMPError4(icmp []byte) bool {
	if len(icmp) == 0 {
		return false
	}
	switch icmp[0] {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// fragNeeded builds an IPv4 ICMP Destination Unreachable / Fragmentation
// Needed (RFC 792, RFC 1191) about orig, quoting its header and the start
// of its payload, with next-hop MTU mtu.
func fragNeeded(orig []byte, mtu uint32) []byte {
	quote := min(len(orig), 548) // the reply stays within 576 bytes
	b := make([]byte, 20+8+quote)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TOS:         0xc0, // internetwork control, as ICMP errors are sent
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    protoICMP,
		SrcAddr:     tcpip.AddrFrom4Slice(orig[16:20]),
		DstAddr:     tcpip.AddrFrom4Slice(orig[12:16]),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := b[20:]
	icmp[0], icmp[1] = 3, 4
	binary.BigEndian.PutUint16(icmp[6:8], uint16(min(mtu, 0xffff)))
	copy(icmp[8:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], ^csum.Checksum(icmp, 0))
	return b
}

// packetTooBig builds an ICMPv6 Packet Too Big (RFC 4443 §3.2) about orig,
// quoting as much of it as fits in the IPv6 minimum MTU.
func packetTooBig(orig []byte, mtu uint32) []byte {
	if orig[6] == protoICMPv6 && len(orig) > 40 && orig[40] < 128 {
		return nil // never about an ICMPv6 error
	}
	quote := min(len(orig), header.IPv6MinimumMTU-40-8)
	b := make([]byte, 40+8+quote)
	ip := header.IPv6(b)
	src, dst := tcpip.AddrFrom16Slice(orig[24:40]), tcpip.AddrFrom16Slice(orig[8:24])
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(8 + quote),
		TransportProtocol: protoICMPv6,
		HopLimit:          64,
		SrcAddr:           src,
		DstAddr:           dst,
	})
	icmp := b[40:]
	icmp[0] = 2 // Packet Too Big
	binary.BigEndian.PutUint32(icmp[4:8], mtu)
	copy(icmp[8:], orig[:quote])
	xsum := header.PseudoHeaderChecksum(protoICMPv6, src, dst, uint16(len(icmp)))
	binary.BigEndian.PutUint16(icmp[2:4], ^csum.Checksum(icmp, xsum))
	return b
}
