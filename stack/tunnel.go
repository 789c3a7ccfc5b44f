// Package stack wires gnv's pieces into a usable tunnel: an overlay gVisor
// netstack whose NIC is a Geneve endpoint, over an underlay that is either a
// second netstack on a link endpoint or a kernel UDP socket.
//
// A Tunnel exposes the overlay in the shape of the standard net package
// (DialContext, Listen, ListenPacket), so programs use it without root, a TUN
// device or any kernel configuration.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link/l2switch"
	"github.com/gnv-project/gnv/link/tuntap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// overlayNIC is the overlay stack's NIC ID for the Geneve endpoint.
const overlayNIC tcpip.NICID = 1

// Tunnel is a running Geneve tunnel with its overlay netstack.
type Tunnel struct {
	// Net is the overlay's net-style API: DialContext, Listen,
	// ListenPacket and Ping.
	*Net

	cfg      Config
	overlay  *tcpipstack.Stack
	ep       *endpoint.Endpoint
	underlay *SharedUnderlay
	joined   bool           // joined cfg.Group on the underlay
	dfHeld   bool           // set the DF of the underlay's kernel socket
	device   *tuntap.Device // the TAP/TUN overlay, if any
	nextMark atomic.Uint32  // marks for DialContextOptions

	sw  *l2switch.Switch // the overlay switch (Config.Switch), if any
	vms vmState          // VMs attached to the switch

	ann announcer // the second announcement (Announce)

	closeOnce sync.Once
}

// New builds and starts a tunnel. Invalid configuration is reported, as by
// Config.Validate, with an *endpoint.FieldError naming the field and its
// valid range.
func New(cfg Config) (*Tunnel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.validateSwitch(); err != nil {
		return nil, err
	}
	port := cfg.LocalPort
	if port == 0 {
		port = cfg.Port
	}
	if port == 0 {
		port = geneve.Port
	}
	fam := 4
	if r := firstPeer(&cfg); r.IsValid() && !r.Unmap().Is4() {
		fam = 6
	}
	u, err := cfg.Underlay.open(openOptions{port: port, family: fam, clock: cfg.Clock, rand: cfg.Rand, multicast: cfg.Group.IsValid()})
	if err != nil {
		return nil, err
	}
	if _, shared := cfg.Underlay.(*SharedUnderlay); !shared {
		u.owned = true
	}
	t := &Tunnel{cfg: cfg, underlay: u}
	if t.dfHeld, err = u.holdDF(cfg.Endpoint.DF); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.start(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func firstPeer(c *Config) netip.Addr {
	if c.Group.IsValid() {
		return c.Group
	}
	if len(c.Remotes) > 0 {
		return c.Remotes[0]
	}
	return netip.Addr{}
}

func (t *Tunnel) start() error {
	if t.cfg.Device != nil {
		return t.startDevice()
	}
	ec := t.cfg.endpointConfig()
	if t.cfg.Switch != nil {
		ec.Promiscuous = true // frames for the VMs' MACs, too
	}
	ep, err := endpoint.New(t.underlay.sock, ec)
	if err != nil {
		return endpointError(err)
	}
	t.ep = ep
	var nic tcpipstack.LinkEndpoint = ep
	if t.cfg.Switch != nil {
		if nic, err = t.newSwitch(ep, false); err != nil {
			return err
		}
	}
	s := NewOverlayStackWith(OverlayStackOptions{Clock: t.cfg.Clock, Rand: t.cfg.Rand})
	t.overlay = s
	t.Net = NewNet(s)
	if err := t.Net.SetDNS(t.cfg.DNS); err != nil {
		return &endpoint.FieldError{Field: "DNS", Problem: err.Error()}
	}
	if terr := s.CreateNICWithOptions(overlayNIC, nic, tcpipstack.NICOptions{Name: "geneve"}); terr != nil {
		nic.Close()
		return fmt.Errorf("overlay NIC: %s", terr)
	}
	var routes []tcpip.Route
	has4, has6 := false, false
	for _, p := range t.cfg.Addresses {
		a := p.Addr().Unmap()
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
			has6 = true
		} else {
			has4 = true
		}
		if terr := s.AddProtocolAddress(overlayNIC, tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.AsSlice()), PrefixLen: p.Bits()},
		}, tcpipstack.AddressProperties{}); terr != nil {
			return fmt.Errorf("address %s: %s", p, terr)
		}
		routes = append(routes, tcpip.Route{Destination: subnet(p), NIC: overlayNIC})
	}
	// Everything else goes into the tunnel too: it is this stack's only NIC.
	if has4 {
		routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: overlayNIC})
	}
	if has6 {
		routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: overlayNIC})
	}
	s.SetRouteTable(routes)
	return t.join()
}

// join joins the configured group on the underlay.
func (t *Tunnel) join() error {
	if t.cfg.Group.IsValid() {
		if err := t.underlay.joinGroup(t.cfg.Group); err != nil {
			return fmt.Errorf("group %s: %w", t.cfg.Group, err)
		}
		t.joined = true
	}
	return nil
}

// startDevice patches the endpoint to a TAP or TUN device.
func (t *Tunnel) startDevice() error {
	mode := tuntap.ModeTAP
	if t.cfg.Mode == endpoint.L3 {
		mode = tuntap.ModeTUN
	}
	dev, err := tuntap.New(tuntap.Options{
		Name:            t.cfg.Device.Name,
		Mode:            mode,
		MTU:             t.cfg.MTU,
		Addresses:       t.cfg.Addresses,
		NoDAD:           true,
		DisableOffloads: t.cfg.Device.DisableOffloads,
		MAC:             t.cfg.MAC,
	})
	if err != nil {
		return err
	}
	t.device = dev
	ec := t.cfg.endpointConfig()
	if mode == tuntap.ModeTAP {
		// The kernel owns the overlay MAC, and decides itself what to do
		// with frames for other MACs (a bridge may sit on the TAP).
		ec.MAC = tcpip.LinkAddress(dev.MAC())
		ec.Promiscuous = true
	}
	ep, err := endpoint.New(t.underlay.sock, ec)
	if err != nil {
		return endpointError(err)
	}
	t.ep = ep
	var link tcpipstack.LinkEndpoint = ep
	if t.cfg.Switch != nil {
		if link, err = t.newSwitch(ep, true); err != nil {
			return err
		}
	}
	if err := dev.Attach(link); err != nil {
		return err
	}
	return t.join()
}

// DialContextOptions connects over the overlay like DialContext, and every
// packet of the connection carries the Geneve options opts (TLVs, after the
// tunnel's own options). The tunnel must reserve room for them:
// Config.Endpoint.MaxMarkOptions. The options are forgotten when the
// connection is closed.
func (t *Tunnel) DialContextOptions(ctx context.Context, network, address string, opts []byte) (net.Conn, error) {
	if t.Net == nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errNoOverlay}
	}
	mark := t.nextMark.Add(1)
	if err := t.ep.SetMarkOptions(mark, opts); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	c, err := t.DialContextMark(ctx, network, address, mark)
	if err != nil {
		_ = t.ep.SetMarkOptions(mark, nil)
		return nil, err
	}
	return &markedConn{Conn: c, release: func() { _ = t.ep.SetMarkOptions(mark, nil) }}, nil
}

// markedConn forgets its mark's options when closed.
type markedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and forgets its options.
func (c *markedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite shuts down the writing side of a TCP connection.
func (c *markedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("close write: not a TCP connection")
}

// Device returns the TAP/TUN device of a device tunnel, or nil.
func (t *Tunnel) Device() *tuntap.Device { return t.device }

// Offloads describes the offloads between the overlay and gnv, for a
// start-up line: the device's virtio-net offloads, or the overlay
// netstack's GSO/GRO.
func (t *Tunnel) Offloads() string {
	if t.device != nil {
		return t.device.Offloads().String()
	}
	var parts []string
	if t.ep.SupportedGSO() == tcpipstack.HostGSOSupported {
		parts = append(parts, "gso")
	}
	if t.ep.Capabilities()&tcpipstack.CapabilityRXChecksumOffload != 0 {
		parts = append(parts, "gro")
	}
	return strings.Join(parts, " ")
}

// NewOverlayStack returns a netstack set up the way gnv sets up a tunnel's
// overlay (IPv4, IPv6, ARP, TCP, UDP, ICMP; SACK on; large TCP buffers), with
// no NIC. Use it to attach a Geneve endpoint yourself, or as the baseline
// when comparing a tunnel against a plain link.
func NewOverlayStack(clock tcpip.Clock) *tcpipstack.Stack {
	return NewOverlayStackWith(OverlayStackOptions{Clock: clock})
}

// OverlayStackOptions configure NewOverlayStackWith.
type OverlayStackOptions struct {
	// Clock drives the stack's timers; nil means the real clock.
	Clock tcpip.Clock
	// Rand is the stack's random source, as in Config.Rand; nil means
	// crypto/rand.
	Rand io.Reader
}

// NewOverlayStackWith is NewOverlayStack with a choice of random source as
// well as clock.
func NewOverlayStackWith(o OverlayStackOptions) *tcpipstack.Stack {
	s := tcpipstack.New(tcpipstack.Options{
		NetworkProtocols:   []tcpipstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []tcpipstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
		Clock:              o.Clock,
		SecureRNG:          o.Rand,
	})
	sack := tcpip.TCPSACKEnabled(true)
	_ = s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	_ = s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	_ = s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	_ = s.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)
	return s
}

// Overlay returns the overlay netstack, for anything the net-style methods
// do not cover.
func (t *Tunnel) Overlay() *tcpipstack.Stack { return t.overlay }

// Endpoint returns the tunnel's Geneve endpoint.
func (t *Tunnel) Endpoint() *endpoint.Endpoint { return t.ep }

// Underlay returns the underlay the tunnel runs on.
func (t *Tunnel) Underlay() *SharedUnderlay { return t.underlay }

// MTU returns the overlay MTU.
func (t *Tunnel) MTU() uint32 { return t.ep.MTU() }

// Stats returns the Geneve endpoint's counters plus, when the tunnel owns
// its socket, the socket's (malformed datagrams, unknown VNIs).
func (t *Tunnel) Stats() endpoint.Stats {
	s := t.ep.Stats()
	if t.underlay.owned {
		ss := t.underlay.sock.Stats()
		s.Add(&ss)
	}
	return s
}

// Close stops the tunnel. It aborts the overlay's connections, closes the
// endpoint and, unless the underlay is shared, the socket and the underlay
// netstack. It returns once no goroutine of the tunnel is left.
func (t *Tunnel) Close() error {
	var err error
	t.closeOnce.Do(func() {
		t.stopAnnouncing()
		if t.Net != nil {
			_ = t.Net.Close()
		}
		if t.overlay != nil {
			t.overlay.Close()
		}
		t.closeVMs()
		if t.sw != nil {
			t.sw.Close()
		}
		if t.joined {
			t.underlay.leaveGroup(t.cfg.Group)
		}
		if t.dfHeld {
			t.underlay.releaseDF()
		}
		if t.device != nil {
			t.device.Close()
		}
		if t.ep != nil {
			t.ep.Close()
		}
		if t.underlay.owned {
			err = t.underlay.Close()
		}
		if t.overlay != nil {
			t.overlay.Wait()
		}
	})
	return err
}

// errNoAddress is returned for an address that names no IP literal.
var errNoAddress = errors.New("host must be an IP address: the overlay has no resolver (set DNS servers: Config.DNS, --dns)")
