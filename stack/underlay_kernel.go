package stack

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/capture"
	"github.com/gnv-project/gnv/link/kudp"
)

// KernelUDPUnderlay sends Geneve over an ordinary kernel UDP socket. It
// needs no privilege at all. On Linux the socket batches and offloads
// (kudp.Transport); on other systems it is kudp.Portable, one datagram per
// system call, which refuses the zero-checksum Checksums options.
//
// Outer DF: a kernel socket sets DF for all its datagrams, not per packet,
// so each tunnel on the underlay sets the socket's DF from its
// Config.Endpoint.DF when it starts: endpoint.DFSet sets DF
// (kudp.Options.DontFragment, IP_PMTUDISC_DO); DFUnset, the default, and
// DFInherit leave it clear (IP_PMTUDISC_DONT). Inherit cannot copy the
// inner DF bit here and falls back to clear, which keeps what the endpoint
// lets through (inner IPv4 without DF, larger than the tunnel MTU, for the
// outer packet to be fragmented) sendable. Tunnels sharing one kernel
// underlay must therefore agree: New refuses a tunnel whose DF (set, or
// not) differs from that of the tunnels already on it. Netstack underlays
// set DF per packet and have no such limit.
type KernelUDPUnderlay struct {
	// Local is the local address to bind; invalid means the wildcard
	// address of the remotes' family.
	Local netip.Addr
	// Device is the interface for multicast (joins and sends).
	Device string
	// MTU is the underlay IP MTU; 0 means the interface's.
	MTU int
	// Pcap, if set, receives a capture of every Geneve datagram sent or
	// received, with synthesised outer IP and UDP headers.
	Pcap io.Writer
	// Checksums is the outer UDP checksum policy.
	Checksums
	// MulticastTTL is the socket's TTL for datagrams to a group when a
	// packet does not set one; 0 means 1 (the kernel's default).
	MulticastTTL uint8
	// DisableOffloads turns off UDP GSO and GRO.
	DisableOffloads bool
	// SourcePorts is the number of extra send-only sockets that give
	// different flows different outer UDP source ports (ECMP entropy, RFC
	// 8926 §3.3); see kudp.Options.SourcePorts. 0 means the
	// default (16); negative sends everything from the Geneve port.
	SourcePorts int
}

func (u KernelUDPUnderlay) localAddr() netip.Addr { return u.Local }

func (u KernelUDPUnderlay) validate() error {
	if u.Local.IsMulticast() {
		return &endpoint.FieldError{Field: "Underlay.Local", Value: u.Local, Problem: "must be a unicast address", Valid: "use {Group} for multicast"}
	}
	return nil
}

func (u KernelUDPUnderlay) open(o openOptions) (*SharedUnderlay, error) {
	local := u.Local
	if o.multicast {
		local = netip.Addr{}
	}
	k, err := kudp.New(kudp.Options{
		Local:           netip.AddrPortFrom(local, o.port),
		Family:          o.family,
		Device:          u.Device,
		MTU:             u.MTU,
		NoChecksumTx4:   u.NoChecksumTx4,
		ZeroChecksumTx6: u.ZeroChecksumTx6,
		ZeroChecksumRx6: u.ZeroChecksumRx6,
		MulticastTTL:    int(u.MulticastTTL),
		DisableGSO:      u.DisableOffloads,
		DisableGRO:      u.DisableOffloads,
		SourcePorts:     u.SourcePorts,
	})
	if err != nil {
		return nil, fmt.Errorf("underlay: kernel udp: %w", err)
	}
	var t link.Transport = k
	if u.Pcap != nil {
		if t, err = capture.NewTransport(k, u.Pcap); err != nil {
			k.Close()
			return nil, fmt.Errorf("underlay pcap: %w", err)
		}
	}
	sock, err := endpoint.NewSocket(t)
	if err != nil {
		t.Close()
		return nil, err
	}
	return &SharedUnderlay{sock: sock, dontFragment: k.SetDontFragment}, nil
}
