package stack

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/l2switch"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// SwitchConfig configures the overlay switch of an L2 tunnel
// (Config.Switch). With it, the tunnel's overlay is a learning Ethernet
// switch (package l2switch) whose ports are the Geneve endpoint (the
// uplink to the remote tunnel hosts), the overlay netstack's NIC or the
// TAP device, and every attached VM:
//
//	overlay netstack (Net: Dial, Listen, Ping) or TAP device
//	                │
//	   VM ── vmnet ─┤ switch ├─ vmnet ── VM
//	                │
//	       Geneve endpoint ── remote tunnel hosts
//
// Each VM's MACs are learned like any local MAC: traffic between VMs and
// the overlay netstack of one host stays on the host, and the Geneve
// endpoint carries the rest (and learns where remote MACs are, as
// without a switch).
type SwitchConfig struct {
	// MaxMACs bounds the switch's MAC table; 0 means
	// l2switch.DefaultMaxMACs.
	MaxMACs int
	// AgingTime is how long a learned MAC stays without a frame from it;
	// 0 means l2switch.DefaultAgingTime (300 s).
	AgingTime time.Duration
}

// validateSwitch checks Config.Switch.
func (c *Config) validateSwitch() error {
	if c.Switch == nil {
		return nil
	}
	if c.Mode != endpoint.L2 {
		return errors.New("switch: an l3 tunnel carries no Ethernet frames; the switch and its VMs need mode l2")
	}
	if c.Switch.MaxMACs < 0 {
		return fmt.Errorf("switch max MACs %d: must not be negative", c.Switch.MaxMACs)
	}
	if c.Switch.AgingTime < 0 {
		return fmt.Errorf("switch aging time %s: must not be negative", c.Switch.AgingTime)
	}
	return nil
}

// newSwitch builds the tunnel's switch with ep as its uplink port, and
// returns the host port for the overlay netstack or the TAP device (a
// promiscuous one: a bridge may be behind the TAP device). The host port
// has the endpoint's MTU, MAC and GSO size, so the overlay sees the link
// it saw without a switch.
func (t *Tunnel) newSwitch(ep *endpoint.Endpoint, promisc bool) (*l2switch.HostPort, error) {
	sw, err := l2switch.New(l2switch.Options{
		MaxMACs:   t.cfg.Switch.MaxMACs,
		AgingTime: t.cfg.Switch.AgingTime,
		Clock:     t.cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	if _, err := sw.AddPort(ep, l2switch.PortOptions{Name: "geneve"}); err != nil {
		return nil, err
	}
	var gso uint32
	if ep.SupportedGSO() == tcpipstack.HostGSOSupported {
		gso = ep.GSOMaxSize()
	}
	host, err := sw.NewHostPort(l2switch.HostPortOptions{
		Name:        "overlay",
		MTU:         ep.MTU(),
		MAC:         net.HardwareAddr(ep.LinkAddress()),
		GSOMaxSize:  gso,
		Promiscuous: promisc,
	})
	if err != nil {
		sw.Close()
		return nil, err
	}
	t.sw = sw
	return host, nil
}

// Switch returns the tunnel's overlay switch (Config.Switch), or nil.
func (t *Tunnel) Switch() *l2switch.Switch { return t.sw }
