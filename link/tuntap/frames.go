package tuntap

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/link/internal/frame"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The frame parsing both backends share: what a frame read from the device
// holds, how it becomes a packet for the endpoint, and which packets the
// endpoint delivers are TCP that GRO may have coalesced.

// rxFrame is what parseRxFrame found in a frame read from the device.
type rxFrame struct {
	linkLen int                         // the link header (TAP), 0 for TUN
	proto   tcpip.NetworkProtocolNumber // the network protocol
	ip      frame.IP                    // the IP headers, when isIP
	isIP    bool
	size    int // the frame's length without Ethernet padding
}

// parseRxFrame parses a frame of n bytes read from a TAP (tap) or TUN
// device, b holding at least its headers (b may be the whole frame). It
// reports false for a frame to drop.
func parseRxFrame(b []byte, n int, tap bool) (f rxFrame, ok bool) {
	if tap {
		if len(b) < header.EthernetMinimumSize {
			return f, false
		}
		f.linkLen = header.EthernetMinimumSize
		et := binary.BigEndian.Uint16(b[12:14])
		if et == 0x8100 && len(b) >= f.linkLen+4 { // one 802.1Q tag
			f.linkLen += 4
			et = binary.BigEndian.Uint16(b[16:18])
		}
		f.proto = tcpip.NetworkProtocolNumber(et)
	} else {
		switch {
		case len(b) > 0 && b[0]>>4 == 4:
			f.proto = header.IPv4ProtocolNumber
		case len(b) > 0 && b[0]>>4 == 6:
			f.proto = header.IPv6ProtocolNumber
		default:
			return f, false
		}
	}
	f.size = n
	if f.proto == header.IPv4ProtocolNumber || f.proto == header.IPv6ProtocolNumber {
		f.ip, f.isIP = frame.ParseIP(b[f.linkLen:], n-f.linkLen)
		if f.isIP && (f.ip.Version == 4) != (f.proto == header.IPv4ProtocolNumber) {
			f.isIP = false
		}
		if f.isIP {
			f.size = f.linkLen + f.ip.TotalLen // drop Ethernet padding
		}
	}
	return f, true
}

// newRxPacket makes buf, the frame f describes, a packet with its headers
// and metadata set.
func newRxPacket(buf buffer.Buffer, f *rxFrame, gso stack.GSO) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf})
	if f.linkLen > 0 {
		pkt.LinkHeader().Consume(f.linkLen)
	}
	if f.isIP {
		pkt.NetworkHeader().Consume(f.ip.HdrLen)
		if !f.ip.Fragment && f.ip.L4Len > 0 {
			pkt.TransportHeader().Consume(f.ip.L4Len)
			pkt.TransportProtocolNumber = tcpip.TransportProtocolNumber(f.ip.Proto)
		}
	}
	pkt.NetworkProtocolNumber = f.proto
	pkt.GSOOptions = gso
	return pkt
}

// parseTxIP parses the IP headers of a packet of total bytes the endpoint
// delivered, h being a copy of its first bytes and linkLen its link header
// (14 for TAP, 0 for TUN). It reports false for a packet that is not IP.
func parseTxIP(h []byte, linkLen, total int) (ip frame.IP, isIP bool) {
	if linkLen > 0 {
		et := binary.BigEndian.Uint16(h[12:14])
		if et != uint16(header.IPv4ProtocolNumber) && et != uint16(header.IPv6ProtocolNumber) {
			return ip, false
		}
	}
	return frame.ParseIP(h[linkLen:], total-linkLen)
}
