// Package endpoint implements Geneve (RFC 8926) as a gVisor netstack link
// endpoint.
//
// An Endpoint is the overlay NIC of one virtual network (one VNI). Packets the
// overlay stack writes to it are encapsulated (after segmenting TCP
// super-packets) and handed to an underlay link.Transport through a Socket;
// datagrams the Socket receives are demultiplexed by VNI, checked and
// delivered into the overlay stack. Several Endpoints may share one Socket.
//
//	overlay stack ─WritePackets→ Endpoint ─encapsulate→ Socket ─WriteBatch→ Transport
//	overlay stack ←Deliver────── Endpoint ←decapsulate─ Socket ←Receive──── Transport
//
// In L2 mode the endpoint is an Ethernet NIC (protocol type 0x6558); in L3
// mode it carries bare IPv4/IPv6 packets (protocol types 0x0800/0x86DD).
package endpoint

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// Endpoint is a Geneve tunnel endpoint for one VNI. It implements
// stack.LinkEndpoint and stack.GSOEndpoint.
type Endpoint struct {
	cfg    Config
	sock   *Socket
	family int // underlay family, 4 or 6

	mtu atomic.Uint32
	// linkAddr and dispatcher are read for every packet, so they are
	// atomic pointers: the reader count of an RWMutex is one cache line
	// that the receive and send goroutines would both write.
	linkAddr   atomic.Pointer[tcpip.LinkAddress]
	dispatcher atomic.Pointer[stack.NetworkDispatcher]
	seed       uint32
	critical   map[OptionType]struct{}
	// optCritical: the options this endpoint sends include a critical one,
	// so the C bit is set on every packet.
	optCritical bool

	// flood holds the underlay destinations for flooded traffic: the
	// group, or every remote (see flood.go); copy-on-write under floodMu.
	flood   atomic.Pointer[floodList]
	floodMu sync.Mutex

	// hosts are the L3 host routes (hosts.go); local is the table of MACs
	// seen leaving an L2 endpoint (local.go), nil unless enabled.
	hosts hostTable
	local atomic.Pointer[localTable]

	// replies counts ARP/ND replies being injected (suppress.go).
	replies atomic.Int32
	// replyWG tracks those goroutines, for Wait.
	replyWG sync.WaitGroup

	// fdb is the L2 forwarding table (nil in L3 mode).
	fdb *FDB

	// markOpts maps a packet mark (SO_MARK of the sending overlay socket)
	// to extra options for its packets; copy-on-write.
	markOpts atomic.Pointer[map[uint32][]byte]
	markMu   sync.Mutex

	// handlers maps option types to the functions that see them on
	// received packets; copy-on-write.
	handlers  atomic.Pointer[map[OptionType]OptionHandler]
	handlerMu sync.Mutex

	mu      sync.Mutex
	onClose func()
	closed  bool

	// rxUnchecked withdraws receive checksum offload while a packet the
	// endpoint could not check is being delivered (the NIC reads the
	// capability per packet).
	rxUnchecked atomic.Bool
	// rxLocal claims receive checksum offload, whatever the
	// configuration, while a packet built on this host is being delivered:
	// its checksums may be partial and cannot be checked.
	rxLocal atomic.Bool

	// gro and touched, like run and noRun at the end, belong to the
	// socket's receive goroutine.
	gro     gro.GRO
	touched bool
	rxNow   int64 // the forwarding table's clock, read once per batch
	// rxLearned is the last (inner source MAC, outer source) learned in
	// this batch: a batch is mostly one flow, and learning it again would
	// change nothing.
	rxLearned struct {
		mac [6]byte
		src netip.Addr
	}

	txPool sync.Pool // *txBatch

	// tseg is the transport when it takes UDP-tunnel segmentation jobs.
	tseg link.TunnelSegmenter

	stats counters

	run   rxRun // last: it is large, and touched once per packet
	noRun bool  // benchmarks compare with gVisor's GRO alone
}

var (
	_ stack.LinkEndpoint = (*Endpoint)(nil)
	_ stack.GSOEndpoint  = (*Endpoint)(nil)
)

// New creates the endpoint for cfg.VNI and registers it on sock. A VNI may
// appear once per socket.
func New(sock *Socket, cfg Config) (*Endpoint, error) {
	if sock == nil {
		return nil, fmt.Errorf("endpoint: nil socket")
	}
	fam := 4
	if la := sock.t.LocalAddr().Addr(); la.IsValid() && !la.Unmap().Is4() {
		fam = 6
	}
	cfg, err := cfg.validate(fam)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		cfg:    cfg,
		sock:   sock,
		family: fam,
		seed:   cfg.VNI*0x9e3779b9 + 0x7f4a7c15,
	}
	e.linkAddr.Store(&cfg.MAC)
	e.optCritical = hasCritical(cfg.Options)
	if len(cfg.KnownCritical) > 0 {
		e.critical = make(map[OptionType]struct{}, len(cfg.KnownCritical))
		for _, o := range cfg.KnownCritical {
			e.critical[o] = struct{}{}
		}
	}
	var dsts []netip.AddrPort
	if cfg.Group.IsValid() {
		dsts = []netip.AddrPort{netip.AddrPortFrom(cfg.Group, cfg.RemotePort)}
	}
	for _, r := range cfg.Remotes {
		dsts = append(dsts, netip.AddrPortFrom(r, cfg.RemotePort))
	}
	e.flood.Store(newFloodList(dsts, len(dsts)))
	if cfg.Mode == L2 {
		e.fdb = newFDB(cfg.Clock, !cfg.NoLearn, cfg.FDBMax, cfg.FDBTimeout, cfg.RemotePort, fam)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		m := TunnelMTU(sock.t.MTU(), fam, cfg.Mode, len(cfg.Options)+cfg.MaxMarkOptions)
		if m < 68 {
			return nil, fmt.Errorf("mtu: the underlay MTU %d leaves %d bytes for the overlay; at least 68 are needed", sock.t.MTU(), m)
		}
		mtu = uint32(m)
	} else if mtu < 68 || mtu > 65535 {
		return nil, fmt.Errorf("mtu %d out of range: valid MTUs are 68..65535", mtu)
	}
	e.mtu.Store(mtu)
	if ts, ok := sock.t.(link.TunnelSegmenter); ok {
		e.tseg = ts
		// Keep a whole super-packet within one outer IP packet (the
		// overlay stack adds at most 61 bytes of TCP/IP headers to the
		// payload GSOMaxSize allows, the tunnel 56 plus the inner IP
		// and Ethernet headers and the options).
		limit := uint32(65535 - 160 - len(cfg.Options) - cfg.MaxMarkOptions)
		if e.cfg.GSOMaxSize > limit {
			e.cfg.GSOMaxSize = limit
		}
	}
	e.gro.Init(!cfg.DisableGRO)
	e.txPool.New = newTxBatch
	if err := sock.register(e); err != nil {
		if e.fdb != nil {
			e.fdb.close()
		}
		return nil, err
	}
	return e, nil
}

// FDB returns the L2 forwarding table, or nil for an L3 endpoint.
func (e *Endpoint) FDB() *FDB { return e.fdb }

// OptionHandler sees an option of a received packet that passed every
// check and is about to be delivered. The option's data aliases the receive
// buffer: it is valid only during the call, and the call must be quick (it
// runs on the receive path).
type OptionHandler func(opt geneve.Option, src netip.AddrPort)

// HandleOption registers h for options of type t on received packets. A
// registered critical option is understood: packets carrying it are
// accepted. A nil h removes the registration.
func (e *Endpoint) HandleOption(t OptionType, h OptionHandler) {
	e.handlerMu.Lock()
	defer e.handlerMu.Unlock()
	m := map[OptionType]OptionHandler{}
	if old := e.handlers.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	if h == nil {
		delete(m, t)
	} else {
		m[t] = h
	}
	e.handlers.Store(&m)
}

// SetMarkOptions makes packets with mark (the SO_MARK of the overlay socket
// that sent them) carry opts after the tunnel's own options. opts must be
// valid option TLVs no longer than Config.MaxMarkOptions. Empty opts
// removes the mark's options.
func (e *Endpoint) SetMarkOptions(mark uint32, opts []byte) error {
	if mark == 0 {
		return fmt.Errorf("mark 0 is every unmarked packet; use Config.Options for options on all packets")
	}
	if len(opts) > e.cfg.MaxMarkOptions {
		return fmt.Errorf("options: %d bytes, but the tunnel reserves %d for per-packet options (Config.MaxMarkOptions)", len(opts), e.cfg.MaxMarkOptions)
	}
	if err := geneve.ValidateOptions(opts); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	e.markMu.Lock()
	defer e.markMu.Unlock()
	m := map[uint32][]byte{}
	if old := e.markOpts.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	if len(opts) == 0 {
		delete(m, mark)
	} else {
		m[mark] = append([]byte(nil), opts...)
	}
	e.markOpts.Store(&m)
	return nil
}

// Config returns the endpoint's configuration with defaults filled in.
func (e *Endpoint) Config() Config { return e.cfg }

// VNI returns the endpoint's virtual network identifier.
func (e *Endpoint) VNI() uint32 { return e.cfg.VNI }

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats { return e.stats.snapshot() }

// MTU implements stack.LinkEndpoint: the overlay IP MTU.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: the inner Ethernet header
// in L2 mode, nothing in L3 mode. Outer headers live in separate buffers.
func (e *Endpoint) MaxHeaderLength() uint16 {
	if e.cfg.Mode == L2 {
		return header.EthernetMinimumSize
	}
	return 0
}

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress { return *e.linkAddr.Load() }

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	e.linkAddr.Store(&addr)
}

// Capabilities implements stack.LinkEndpoint. L2 endpoints need neighbour
// resolution. Unless GRO is disabled the endpoint validates inner checksums
// itself and says so, which GRO requires; for the rare packet it cannot
// check (a fragment, say) it withdraws the claim while delivering it.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	var c stack.LinkEndpointCapabilities
	if e.cfg.Mode == L2 {
		c |= stack.CapabilityResolutionRequired
	}
	if !e.cfg.DisableGRO && !e.rxUnchecked.Load() || e.rxLocal.Load() {
		c |= stack.CapabilityRXChecksumOffload
	}
	return c
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *Endpoint) GSOMaxSize() uint32 { return e.cfg.GSOMaxSize }

// SupportedGSO implements stack.GSOEndpoint: host GSO, segmented in software
// by the endpoint right before encapsulation.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO {
	if e.cfg.GSOMaxSize == 0 {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

// Attach implements stack.LinkEndpoint.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&d)
}

// attached returns the dispatcher Attach gave, or nil.
func (e *Endpoint) attached() stack.NetworkDispatcher {
	if d := e.dispatcher.Load(); d != nil {
		return *d
	}
	return nil
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	return e.dispatcher.Load() != nil
}

// Wait implements stack.LinkEndpoint: it returns once no ARP/ND reply the
// endpoint injects (suppress.go) is still being delivered. The socket's
// receive goroutine is stopped by Socket.Close.
func (e *Endpoint) Wait() { e.replyWG.Wait() }

// ARPHardwareType implements stack.LinkEndpoint.
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType {
	if e.cfg.Mode == L2 {
		return header.ARPHardwareEther
	}
	return header.ARPHardwareNone
}

// AddHeader implements stack.LinkEndpoint: it pushes the inner Ethernet
// header in L2 mode.
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	if e.cfg.Mode != L2 {
		return
	}
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = e.LinkAddress()
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	if e.cfg.Mode != L2 {
		return true
	}
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// Close implements stack.LinkEndpoint: it unregisters the VNI from the
// socket. The socket itself stays open for other endpoints.
func (e *Endpoint) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.dispatcher.Store(nil)
	onClose := e.onClose
	e.mu.Unlock()
	e.sock.unregister(e)
	if e.fdb != nil {
		e.fdb.close()
	}
	if onClose != nil {
		onClose()
	}
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	e.onClose = f
	e.mu.Unlock()
}
