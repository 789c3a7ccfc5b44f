package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/gnv-project/gnv/link/afpacket"
	"github.com/gnv-project/gnv/link/tapnic"
	"github.com/gnv-project/gnv/stack"
)

// openUnderlay opens the shared underlay socket.
func openUnderlay(p *upPlan, log *slog.Logger) (*stack.SharedUnderlay, string, error) {
	var pcapW io.Writer
	var pcapF *pcapFile
	if p.pcap != "" {
		f, err := createPcap(p.pcap)
		if err != nil {
			return nil, "", fmt.Errorf("--pcap: %w", err)
		}
		pcapF, pcapW = f, f
	}
	localPort := p.localPort
	if localPort == 0 {
		localPort = p.port
	}
	u, desc := p.underlayConfig(pcapW, log)
	multicast := false
	for _, ip := range p.ifaces {
		multicast = multicast || ip.cfg.Group.IsValid()
	}
	su, err := stack.OpenUnderlay(u, stack.UnderlayOptions{Port: localPort, Family: p.family, Multicast: multicast})
	if err != nil {
		if pcapF != nil {
			pcapF.Close()
		}
		return nil, "", withFlags(err, nil)
	}
	if pcapF != nil {
		su.OnClose(func() {
			if err := pcapF.Close(); err != nil {
				log.Warn("--pcap: closing the capture", "path", p.pcap, "err", err)
			}
		})
	}
	la := su.Socket().Transport().LocalAddr()
	desc += " " + la.String()
	if off := su.Offloads(); off != "" {
		desc += " (" + off + ")"
	}
	return su, desc, nil
}

// underlayConfig describes the shared underlay, and says what it is for
// the start-up lines. pcapW and log may be nil when it is not to be opened.
func (p *upPlan) underlayConfig(pcapW io.Writer, log *slog.Logger) (stack.Underlay, string) {
	switch p.underlay {
	case "packet":
		return packetUnderlay(p, pcapW, log), "packet underlay on " + p.dev
	case "tap":
		desc := "tap underlay"
		if p.dev != "" {
			desc += " on bridge " + p.dev
		}
		return tapUnderlay(p, pcapW), desc
	}
	return stack.KernelUDPUnderlay{Local: p.local, Device: p.dev, MTU: p.underlayMTU, Pcap: pcapW,
		Checksums: p.checksums(), MulticastTTL: p.multicastTTL, DisableOffloads: p.noOffloads}, "udp underlay"
}

// packetUnderlay describes the AF_PACKET underlay on --dev. Opening it
// checks the host setup first (the kernel must not use the underlay address
// on that interface) and logs the check's warnings.
func packetUnderlay(p *upPlan, pcapW io.Writer, log *slog.Logger) stack.Underlay {
	return stack.PacketUnderlay{
		Device:          p.dev,
		NetstackOptions: p.netstackOptions(pcapW),
		Options: afpacket.Options{
			MAC:       p.underlayMAC,
			MTU:       p.underlayMTU,
			NoVnetHdr: p.noOffloads,
		},
		Warn: func(msg string) { log.Warn("underlay setup", "dev", p.dev, "warning", msg) },
	}
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
