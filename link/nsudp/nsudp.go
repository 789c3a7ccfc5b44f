// Package nsudp is a link.Transport whose UDP/IP runs in a gVisor netstack
// (the underlay netstack), on any link endpoint: the AF_PACKET endpoint,
// the TAP underlay NIC, or the test fabric.
package nsudp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Transport is a Transport whose UDP/IP runs in a gVisor netstack: the
// underlay stack.
//
// It registers itself with the stack's transport demultiplexer for the
// Geneve port, like a UDP socket bound to every address of its NIC, but
// without a socket's receive queue: each datagram is checked (length, UDP
// checksum) on the stack's receive goroutine, referenced (not copied) into
// a queue, and handed to the link.Receiver in batches by one goroutine, which
// lets the receiver keep the bytes without copying them (link.Datagram.Buffer)
// and coalesce with GRO over the batch.
//
// Sending writes the UDP header in front of the Geneve payload and hands
// the packet to a cached netstack route: the payload bytes are shared, not
// copied, and every datagram carries its own source port, TOS, TTL and DF.
// On a NIC with checksum offload (CapabilityTXChecksumOffload) the UDP
// checksum is left to the NIC (GSOOptions.NeedsCsum), and on one that takes
// UDP segmentation jobs (link.UDPSegmenter) runs of equal datagrams go down as
// one job (see WriteBatch); the AF_PACKET endpoint (PacketEndpoint) does
// both.
type Transport struct {
	opts  Options
	proto tcpip.NetworkProtocolNumber
	local tcpip.Address
	mtu   int
	id    stack.TransportEndpointID

	routeMu sync.RWMutex
	routes  map[netip.Addr]*stack.Route

	// The receive queue: HandlePacket appends referenced packets, the
	// receive goroutine swaps the slice out and processes it.
	qmu    sync.Mutex
	queue  []*stack.PacketBuffer
	wake   chan struct{}
	rx     link.Receiver
	groups map[netip.Addr]int

	done    chan struct{}
	wg      sync.WaitGroup
	started atomic.Bool
	closed  atomic.Bool

	stats counters
}

// counters are the live counters behind Stats.
type counters struct {
	txDatagrams, txErrors, txGSOJobs, txGSODatagrams, txTunnelJobs        atomic.Uint64
	rxDatagrams, rxMalformed, rxChecksumErrors, rxQueueFull, rxNotStarted atomic.Uint64
	icmpErrors, rxSuperFrames                                             atomic.Uint64
}

var _ stack.TransportEndpoint = (*Transport)(nil)

// New claims the Geneve port on the underlay stack's NIC.
func New(opts Options) (*Transport, error) {
	if opts.Stack == nil {
		return nil, errors.New("netstack underlay: nil stack")
	}
	if !opts.Local.Addr().IsValid() {
		return nil, errors.New("netstack underlay: local address is required")
	}
	if opts.Local.Port() == 0 {
		return nil, errors.New("netstack underlay: local port is required (6081 is Geneve's)")
	}
	t := &Transport{
		opts:   opts,
		local:  tcpip.AddrFromSlice(opts.Local.Addr().Unmap().AsSlice()),
		routes: make(map[netip.Addr]*stack.Route),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		groups: make(map[netip.Addr]int),
	}
	t.proto = ipv4.ProtocolNumber
	if !opts.Local.Addr().Unmap().Is4() {
		t.proto = ipv6.ProtocolNumber
	}
	if t.opts.MulticastTTL == 0 {
		t.opts.MulticastTTL = 64
	}
	if t.opts.BatchSize <= 0 {
		t.opts.BatchSize = 64
	}
	if t.opts.QueueLen <= 0 {
		t.opts.QueueLen = 4096
	}
	if t.opts.Segmenter == nil {
		if nic, ok := opts.Stack.NICInfo()[opts.NIC]; ok && nic.Name != "" {
			if sg, ok := opts.Stack.GetLinkEndpointByName(nic.Name).(link.UDPSegmenter); ok {
				t.opts.Segmenter = sg
			}
		}
	}
	if t.opts.TunnelSegmenter == nil {
		if nic, ok := opts.Stack.NICInfo()[opts.NIC]; ok && nic.Name != "" {
			if sg, ok := opts.Stack.GetLinkEndpointByName(nic.Name).(link.TunnelSegmenter); ok {
				t.opts.TunnelSegmenter = sg
			}
		}
	}
	t.mtu = opts.MTU
	if t.mtu == 0 {
		nic, ok := opts.Stack.NICInfo()[opts.NIC]
		if !ok {
			return nil, fmt.Errorf("netstack underlay: no NIC %d", opts.NIC)
		}
		t.mtu = int(nic.MTU)
	}
	// Every address of the NIC, so that datagrams to joined groups arrive
	// as well as unicast ones.
	t.id = stack.TransportEndpointID{LocalPort: opts.Local.Port()}
	if terr := opts.Stack.RegisterTransportEndpoint([]tcpip.NetworkProtocolNumber{t.proto}, udp.ProtocolNumber, t.id, t, ports.Flags{}, opts.NIC); terr != nil {
		return nil, fmt.Errorf("netstack underlay: bind port %d: %s", opts.Local.Port(), terr)
	}
	return t, nil
}

// LocalAddr implements Transport.
func (t *Transport) LocalAddr() netip.AddrPort { return t.opts.Local }

// MTU implements Transport.
func (t *Transport) MTU() int { return t.mtu }

// Stats returns a snapshot of the transport's counters.
func (t *Transport) Stats() Stats {
	c := &t.stats
	return Stats{
		TxDatagrams:      c.txDatagrams.Load(),
		TxErrors:         c.txErrors.Load(),
		TxGSOJobs:        c.txGSOJobs.Load(),
		TxGSODatagrams:   c.txGSODatagrams.Load(),
		TxTunnelJobs:     c.txTunnelJobs.Load(),
		RxDatagrams:      c.rxDatagrams.Load(),
		RxSuperFrames:    c.rxSuperFrames.Load(),
		RxMalformed:      c.rxMalformed.Load(),
		RxChecksumErrors: c.rxChecksumErrors.Load(),
		RxQueueFull:      c.rxQueueFull.Load(),
		RxNotStarted:     c.rxNotStarted.Load(),
		ICMPErrors:       c.icmpErrors.Load(),
	}
}

// JoinGroup implements Transport: the NIC joins the group, and the
// underlay stack sends IGMP/MLD reports if it was created with them enabled.
func (t *Transport) JoinGroup(group netip.Addr) error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if t.groups[group] == 0 {
		if terr := t.opts.Stack.JoinGroup(t.proto, t.opts.NIC, tcpip.AddrFromSlice(group.Unmap().AsSlice())); terr != nil {
			return fmt.Errorf("join %s: %s", group, terr)
		}
	}
	t.groups[group]++
	return nil
}

// LeaveGroup implements Transport.
func (t *Transport) LeaveGroup(group netip.Addr) error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if t.groups[group] == 0 {
		return fmt.Errorf("leave %s: not joined", group)
	}
	if t.groups[group]--; t.groups[group] > 0 {
		return nil
	}
	delete(t.groups, group)
	if terr := t.opts.Stack.LeaveGroup(t.proto, t.opts.NIC, tcpip.AddrFromSlice(group.Unmap().AsSlice())); terr != nil {
		return fmt.Errorf("leave %s: %s", group, terr)
	}
	return nil
}

// Offloads implements link.OffloadReporter: the offloads of the underlay
// NIC's link endpoint.
func (t *Transport) Offloads() link.Offloads {
	var o link.Offloads
	if r, ok := t.opts.Segmenter.(link.OffloadReporter); ok {
		o |= r.Offloads()
	}
	if r, ok := t.opts.TunnelSegmenter.(link.OffloadReporter); ok {
		o |= r.Offloads()
	}
	return o
}

// Abort implements stack.TransportEndpoint; the stack calls it when it is
// closed.
func (t *Transport) Abort() { t.Close() }

// Wait implements stack.TransportEndpoint.
func (t *Transport) Wait() {}

// Close implements Transport: it releases the port, stops the receive
// goroutine and drops queued datagrams.
func (t *Transport) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.opts.Stack.UnregisterTransportEndpoint([]tcpip.NetworkProtocolNumber{t.proto}, udp.ProtocolNumber, t.id, t, ports.Flags{}, t.opts.NIC)
	close(t.done)
	t.wg.Wait()
	t.qmu.Lock()
	for i, pkt := range t.queue {
		pkt.DecRef()
		t.queue[i] = nil
	}
	t.queue = nil
	for g := range t.groups {
		_ = t.opts.Stack.LeaveGroup(t.proto, t.opts.NIC, tcpip.AddrFromSlice(g.Unmap().AsSlice()))
	}
	t.groups = nil
	t.qmu.Unlock()
	t.routeMu.Lock()
	for k, r := range t.routes {
		r.Release()
		delete(t.routes, k)
	}
	t.routeMu.Unlock()
	return nil
}
