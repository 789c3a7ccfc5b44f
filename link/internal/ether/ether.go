// Package ether is the Ethernet side of a netstack link endpoint that gnv's
// Ethernet endpoints share (vmnet's VM link, l2switch's host port, and
// through ethnic the AF_PACKET and TAP underlay NICs): the NIC's own MAC
// with the Ethernet header methods of stack.LinkEndpoint, MAC options, and
// the classification of received frames; and the endpoint's attachment to
// its stack (attach.go).
package ether

import (
	"crypto/rand"
	"fmt"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// NIC is an Ethernet NIC's own address and header handling. Endpoints
// embed it; it is safe for concurrent use.
type NIC struct {
	mu  sync.RWMutex
	mac tcpip.LinkAddress
}

// LinkAddress implements stack.LinkEndpoint.
func (n *NIC) LinkAddress() tcpip.LinkAddress {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.mac
}

// SetLinkAddress implements stack.LinkEndpoint.
func (n *NIC) SetLinkAddress(mac tcpip.LinkAddress) {
	n.mu.Lock()
	n.mac = mac
	n.mu.Unlock()
}

// MaxHeaderLength implements stack.LinkEndpoint: the Ethernet header.
func (n *NIC) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// ARPHardwareType implements stack.LinkEndpoint.
func (n *NIC) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint: it pushes the Ethernet header,
// from the NIC's MAC unless the route names another.
func (n *NIC) AddHeader(pkt *stack.PacketBuffer) {
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = n.LinkAddress()
	}
	header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize)).Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (n *NIC) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// MAC checks a configured MAC (what names the option in the error): a
// 6-byte unicast address, or nil for a random locally administered one.
func MAC(mac net.HardwareAddr, what string) (tcpip.LinkAddress, error) {
	if mac == nil {
		var b [6]byte
		_, _ = rand.Read(b[:])
		b[0] = b[0]&^1 | 2 // unicast, locally administered
		return tcpip.LinkAddress(b[:]), nil
	}
	if len(mac) != 6 || mac[0]&1 != 0 {
		return "", fmt.Errorf("%s %s: want a 6-byte unicast MAC", what, mac)
	}
	return tcpip.LinkAddress(mac), nil
}

// Classify says what a received frame with destination dst is to a NIC
// whose MAC is own, as an Ethernet NIC does.
func Classify(dst, own tcpip.LinkAddress) tcpip.PacketType {
	switch {
	case dst == own:
		return tcpip.PacketHost
	case dst == header.EthernetBroadcastAddress:
		return tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		return tcpip.PacketMulticast
	}
	return tcpip.PacketOtherHost
}
