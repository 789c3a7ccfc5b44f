package testutil

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// HostsOptions describes a set of Geneve hosts on one fabric.
type HostsOptions struct {
	// N is the number of hosts; 0 means 2.
	N int
	// Mode is the tunnel mode (endpoint.L2 or endpoint.L3).
	Mode endpoint.Mode
	// VNI is the tunnels' VNI.
	VNI uint32
	// UnderlayFamily is 4 (192.0.2.0/24, the default) or 6 (2001:db8::/64).
	UnderlayFamily int
	// Multicast sends through a group (239.1.1.1 or ff15::1) instead of
	// unicast to every other host.
	Multicast bool
	// Seed, Clock and Pcap configure the fabric (see FabricOptions).
	// Seed also sets, for host i, its fabric port's MAC and its L2
	// overlay MAC (HostMAC) and its tunnel's random source (HostRand),
	// so that the hosts are the same on every run with the same seed.
	Seed  int64
	Clock tcpip.Clock
	Pcap  io.Writer
	// Stepped makes the fabric stepped (FabricOptions.Stepped) and
	// registers each host's overlay netstack as a settler
	// (Fabric.AddSettler): drive the hosts with Fabric.Step or
	// Fabric.Run. A nil Clock then means a new ManualClock (Run needs
	// one).
	Stepped bool
	// Faults apply to every host's fabric port.
	Faults Faults
	// Endpoint carries extra endpoint settings for every tunnel.
	Endpoint endpoint.Config
	// Switch, if set, gives every host's L2 tunnel an overlay switch
	// (stack.Config.Switch), so that VMs can attach.
	Switch *stack.SwitchConfig
}

// Host is one fabric host: a fabric port, an underlay netstack on it, a
// Geneve tunnel and its overlay netstack.
type Host struct {
	// Port is the host's fabric port.
	Port *Port
	// Underlay is the host's underlay address.
	Underlay netip.Addr
	// Overlay4 and Overlay6 are the host's overlay addresses:
	// 10.0.0.i/24 and fd00::i/64 for host i (counting from 1).
	Overlay4, Overlay6 netip.Addr
	// Tunnel is the host's tunnel.
	Tunnel *stack.Tunnel
}

// Hosts is a fabric with Geneve hosts on it.
type Hosts struct {
	Fabric *Fabric
	Hosts  []*Host
}

// NewHosts builds a fabric and opts.N hosts on it, each with an IPv4 and
// an IPv6 overlay address. Close releases everything.
func NewHosts(opts HostsOptions) (*Hosts, error) {
	if opts.N == 0 {
		opts.N = 2
	}
	if opts.N < 1 || opts.N > 200 {
		return nil, fmt.Errorf("hosts: N %d out of range 1..200", opts.N)
	}
	if opts.UnderlayFamily == 0 {
		opts.UnderlayFamily = 4
	}
	if opts.UnderlayFamily != 4 && opts.UnderlayFamily != 6 {
		return nil, fmt.Errorf("hosts: underlay family %d: want 4 or 6", opts.UnderlayFamily)
	}
	if opts.Stepped && opts.Clock == nil {
		opts.Clock = NewManualClock()
	}
	hs := &Hosts{Fabric: NewFabric(FabricOptions{Seed: opts.Seed, Clock: opts.Clock, Pcap: opts.Pcap, Stepped: opts.Stepped})}
	underlay := func(i int) netip.Prefix {
		if opts.UnderlayFamily == 4 {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 24)
		}
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), 64)
	}
	var group netip.Addr
	if opts.Multicast {
		group = netip.MustParseAddr("239.1.1.1")
		if opts.UnderlayFamily == 6 {
			group = netip.MustParseAddr("ff15::1")
		}
	}
	for i := 0; i < opts.N; i++ {
		p, err := hs.Fabric.NewPort(HostMAC(opts.Seed, i, true), opts.Faults)
		if err != nil {
			hs.Close()
			return nil, err
		}
		h := &Host{
			Port:     p,
			Underlay: underlay(i).Addr(),
			Overlay4: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}),
			Overlay6: netip.AddrFrom16([16]byte{0xfd, 15: byte(i + 1)}),
		}
		cfg := stack.Config{
			VNI:      opts.VNI,
			Mode:     opts.Mode,
			Group:    group,
			Underlay: stack.NetstackUnderlay{Link: p, NetstackOptions: stack.NetstackOptions{Address: underlay(i)}},
			Addresses: []netip.Prefix{
				netip.PrefixFrom(h.Overlay4, 24),
				netip.PrefixFrom(h.Overlay6, 64),
			},
			Clock:    opts.Clock,
			Rand:     HostRand(opts.Seed, i),
			Endpoint: opts.Endpoint,
			Switch:   opts.Switch,
		}
		if opts.Mode == endpoint.L2 {
			cfg.MAC = net.HardwareAddr(HostMAC(opts.Seed, i, false))
		}
		if !opts.Multicast {
			for j := 0; j < opts.N; j++ {
				if j != i {
					cfg.Remotes = append(cfg.Remotes, underlay(j).Addr())
				}
			}
		}
		h.Tunnel, err = stack.New(cfg)
		if err != nil {
			p.Close()
			hs.Close()
			return nil, fmt.Errorf("host %d: %w", i+1, err)
		}
		hs.Hosts = append(hs.Hosts, h)
		if opts.Stepped {
			hs.Fabric.AddSettler(SettleStack(h.Tunnel.Overlay()))
		}
	}
	return hs, nil
}

// Close closes every tunnel and the fabric.
func (hs *Hosts) Close() {
	for _, h := range hs.Hosts {
		h.Tunnel.Close()
	}
	hs.Fabric.Close()
}
