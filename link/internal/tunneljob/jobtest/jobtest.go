// Package jobtest builds UDP-tunnel segmentation jobs for the tests of the
// transports that cut them.
package jobtest

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// IPv4TCP returns a job as the Geneve endpoint hands it down: a Geneve
// header, an inner Ethernet header when l2, and an IPv4 TCP super-packet
// (10.0.0.1:1000 → 10.0.0.2:2000, sequence number 100, ACK and PSH)
// carrying payload, with the partial checksum (the pseudo-header sum) the
// overlay stack leaves for segmentation.
func IPv4TCP(l2 bool, payload []byte) []byte {
	b := []byte{0, 0, 0x08, 0x00, 0, 0, 42, 0}
	if l2 {
		b[2], b[3] = 0x65, 0x58
		b = append(b, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00)
	}
	tcpLen := header.TCPMinimumSize + len(payload)
	src, dst := tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	ip := make([]byte, header.IPv4MinimumSize)
	header.IPv4(ip).Encode(&header.IPv4Fields{TotalLength: uint16(20 + tcpLen), ID: 7, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
	tcp := make([]byte, header.TCPMinimumSize)
	header.TCP(tcp).Encode(&header.TCPFields{SrcPort: 1000, DstPort: 2000, SeqNum: 100, DataOffset: 20, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 100})
	binary.BigEndian.PutUint16(tcp[16:], header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen)))
	b = append(append(b, ip...), tcp...)
	return append(b, payload...)
}
