package main

import (
	"io"
	"log/slog"

	"github.com/gnv-project/gnv/link/afpacket"
	"github.com/gnv-project/gnv/link/tapnic"
	"github.com/gnv-project/gnv/stack"
)

// packetUnderlay describes the AF_PACKET underlay on --dev. Opening it
// checks the host setup first (the kernel must not use the underlay address
// on that interface) and logs the check's warnings.
func packetUnderlay(p *upPlan, pcapW io.Writer, log *slog.Logger) (stack.Underlay, error) {
	return stack.PacketUnderlay{
		Device:          p.dev,
		NetstackOptions: p.netstackOptions(pcapW),
		Options: afpacket.Options{
			MAC:       p.underlayMAC,
			MTU:       p.underlayMTU,
			NoVnetHdr: p.noOffloads,
		},
		Warn: func(msg string) { log.Warn("underlay setup", "dev", p.dev, "warning", msg) },
	}, nil
}

// tapUnderlay describes the TAP underlay: netstack on a TAP device of its
// own, made a port of the bridge --dev if given.
func tapUnderlay(p *upPlan, pcapW io.Writer) stack.Underlay {
	return stack.TAPUnderlay{
		Bridge:          p.dev,
		NetstackOptions: p.netstackOptions(pcapW),
		Options: tapnic.Options{
			MAC:         p.underlayMAC,
			MTU:         p.underlayMTU,
			NoTunnelGSO: p.noOffloads,
		},
	}
}

// netstackOptions are the underlay netstack's address and policies from
// the flags.
func (p *upPlan) netstackOptions(pcapW io.Writer) stack.NetstackOptions {
	return stack.NetstackOptions{
		Address:      p.underlayAddr,
		Gateway:      p.gateway,
		MulticastTTL: p.multicastTTL,
		Pcap:         pcapW,
		Checksums:    p.checksums(),
	}
}

// checksums is the outer UDP checksum policy from the flags.
func (p *upPlan) checksums() stack.Checksums {
	return stack.Checksums{NoChecksumTx4: p.noCsum4, ZeroChecksumTx6: p.zeroCsum6Tx, ZeroChecksumRx6: p.zeroCsum6Rx}
}
