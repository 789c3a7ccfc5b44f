// Package vmnet is an Ethernet link to a virtual machine over a socket, in
// the two framings that userspace VM networks use, so that a VM joins a
// gVisor netstack or an L2 switch with no TAP device and no privileges:
//
//   - stream (NewStream): every frame is preceded by its length as a 4-byte
//     big-endian integer. This is QEMU's `-netdev stream` (and the older
//     `-netdev socket`), gvproxy's `-listen-qemu` and libkrun's unix
//     stream; the socket is usually a unix stream socket.
//   - datagram (NewDatagram): one frame per datagram, on a unix datagram
//     socket. This is QEMU's `-netdev dgram` and vfkit (macOS
//     Virtualization.framework), as in gvproxy's `-listen-vfkit`. The peer
//     is configured (Options.Peer) or learned from the first datagram
//     received, after an optional "VFKT" handshake datagram, which is
//     consumed.
//
// An Endpoint implements stack.LinkEndpoint and stack.GSOEndpoint as an
// Ethernet NIC, so it serves both ends: a port of a switch (package
// l2switch) that speaks to a VM, or the NIC of a netstack that plays the
// guest (in tests, or a userspace "VM").
//
// Receive: one goroutine reads the socket (several stream frames per read
// when they are queued) and delivers every frame, its Ethernet header
// consumed, to the attached stack.NetworkDispatcher. A stream length
// prefix larger than Options.MaxFrameSize cannot be resynchronised: the
// frame is counted (DropFraming) and the endpoint closes, as it does when
// the peer goes away. No frame is filtered by destination MAC: the link is
// a wire.
//
// Transmit: WritePackets copies each frame, length prefix included, into
// a bounded queue (Options.TxQueueBytes) that a second goroutine writes to
// the socket, a stream with one Write per batch of queued frames. A VM that
// stops reading therefore never blocks the caller (a netstack, or a switch
// serving other ports): its frames are dropped and counted
// (DropTxQueueFull), as a switch port does. Frames leave with every
// checksum complete and no larger than the MTU, since the VM's virtio-net
// device negotiated no offloads over a socket: a host-GSO TCP super-packet
// (a netstack's, or a Geneve endpoint's, see below) is cut into MSS-sized
// segments with link.SegmentHeader, and a packet whose checksums were
// left partial or stale is checksummed again:
//
//   - packets with GSOOptions.Type GSOTCPv4/GSOTCPv6 (a netstack sending on
//     a host-GSO NIC: every TCP packet carries a partial checksum);
//   - packets with RXChecksumValidated or GSOOptions.NeedsCsum (received by
//     a link that vouched for them, like the Geneve endpoint: its GRO
//     merges TCP segments without redoing their checksums or the IPv4
//     header checksum, and packets built on this host may carry partial
//     checksums); a TCP packet above the MTU is cut at MTU minus its
//     headers.
//
// Other frames (from another VM, say) are written as they are.
//
// Nothing is allocated per frame once the queues have grown. (Off Linux,
// the datagram path uses the Go net package, which allocates a socket
// address per ReadFrom and WriteTo.)
package vmnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ether"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Defaults for Options.
const (
	// DefaultMTU is the IP MTU when Options.MTU is zero.
	DefaultMTU = 1500
	// DefaultMaxFrameSize is the largest frame accepted from the VM when
	// Options.MaxFrameSize is zero: 64 KiB of IP packet plus an Ethernet
	// header and one VLAN tag.
	DefaultMaxFrameSize = 1<<16 + header.EthernetMinimumSize + 4
	// DefaultTxQueueBytes bounds the frames queued for the VM (length
	// prefixes included) when Options.TxQueueBytes is zero.
	DefaultTxQueueBytes = 1 << 20
	// DefaultGSOMaxSize is the GSO size advertised unless
	// Options.DisableGSO is set.
	DefaultGSOMaxSize = 1 << 16
)

// vfkitHandshake is the datagram vfkit sends before its first frame.
const vfkitHandshake = "VFKT"

// Options configures an Endpoint.
type Options struct {
	// MTU is the link's IP MTU; 0 means DefaultMTU. It sets the segment
	// size for TCP packets cut on the way to the VM; frames the VM sends
	// are accepted up to MaxFrameSize whatever the MTU.
	MTU uint32

	// MAC is the endpoint's link address, the one a netstack NIC on it
	// uses; nil means a random locally administered unicast MAC. A switch
	// port does not need one.
	MAC net.HardwareAddr

	// MaxFrameSize is the largest frame, Ethernet header included,
	// accepted from the VM; 0 means DefaultMaxFrameSize. On a stream, a
	// larger length prefix closes the endpoint.
	MaxFrameSize int

	// TxQueueBytes bounds the bytes queued for the VM, 4 per frame
	// included; 0 means DefaultTxQueueBytes. Frames beyond it are dropped.
	TxQueueBytes int

	// DisableGSO stops the endpoint from advertising host GSO: a netstack
	// on it then sends MTU-sized packets, and the endpoint only cuts
	// packets coalesced by the link they came from.
	DisableGSO bool

	// Peer is where datagrams are sent (datagram endpoints only). Nil
	// learns it from the first datagram received, and again whenever a
	// datagram comes from another address (a restarted VM); when it is
	// set, datagrams from other addresses are dropped (DropForeignPeer).
	// A connected socket (one with a remote address) needs neither.
	Peer net.Addr
}

// DropReason says why the endpoint dropped a frame. Every drop is counted
// under exactly one reason.
type DropReason int

// Drop reasons.
const (
	// DropFraming: a stream length prefix beyond Options.MaxFrameSize. The
	// stream cannot be resynchronised, so the endpoint closes.
	DropFraming DropReason = iota
	// DropRunt: a frame shorter than an Ethernet header.
	DropRunt
	// DropTooBig: a datagram larger than Options.MaxFrameSize.
	DropTooBig
	// DropForeignPeer: a datagram from an address other than
	// Options.Peer.
	DropForeignPeer
	// DropNotAttached: a frame received while no dispatcher is attached.
	DropNotAttached
	// DropTxQueueFull: the transmit queue is full (the VM does not read
	// fast enough).
	DropTxQueueFull
	// DropTxClosed: a frame written after the endpoint closed or its
	// stream failed, or still queued when it did.
	DropTxClosed
	// DropTxMalformed: an outbound packet that cannot be written: shorter
	// than an Ethernet header, or a TCP super-packet with unusable headers.
	DropTxMalformed
	// DropTxNoPeer: a datagram endpoint has no peer yet to send to.
	DropTxNoPeer
	// DropTxError: the socket refused the frame.
	DropTxError

	// NumDropReasons is the number of drop reasons.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	DropFraming:     "framing",
	DropRunt:        "runt",
	DropTooBig:      "too-big",
	DropForeignPeer: "foreign-peer",
	DropNotAttached: "not-attached",
	DropTxQueueFull: "tx-queue-full",
	DropTxClosed:    "tx-closed",
	DropTxMalformed: "tx-malformed",
	DropTxNoPeer:    "tx-no-peer",
	DropTxError:     "tx-error",
}

// String returns the reason's short name.
func (r DropReason) String() string {
	if r >= 0 && r < NumDropReasons {
		return dropReasonNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", int(r))
}

// Stats is a snapshot of an endpoint's counters.
type Stats struct {
	// RxFrames and RxBytes count frames received from the VM and
	// delivered (bytes include the Ethernet header).
	RxFrames, RxBytes uint64
	// TxFrames and TxBytes count frames written to the socket.
	TxFrames, TxBytes uint64
	// TxSegments counts frames cut from TCP packets larger than the MTU
	// (also counted in TxFrames).
	TxSegments uint64
	// TxChecksums counts frames whose transport checksum was completed or
	// redone in software.
	TxChecksums uint64
	// PeerChanges counts datagram peers learned: the first, and every
	// change of address after it.
	PeerChanges uint64
	// Drops counts dropped frames by reason.
	Drops [NumDropReasons]uint64
}

// TotalDrops returns the sum of Drops.
func (s Stats) TotalDrops() uint64 { return link.SumDrops(s.Drops[:]) }

// String formats the non-zero counters on one line.
func (s Stats) String() string {
	str := fmt.Sprintf("rx %d frames %d bytes, tx %d frames %d bytes", s.RxFrames, s.RxBytes, s.TxFrames, s.TxBytes)
	if s.TxSegments != 0 {
		str += fmt.Sprintf(", %d segments", s.TxSegments)
	}
	if s.TxChecksums != 0 {
		str += fmt.Sprintf(", %d checksums", s.TxChecksums)
	}
	if s.PeerChanges != 0 {
		str += fmt.Sprintf(", %d peer changes", s.PeerChanges)
	}
	for r, n := range s.Drops {
		if n != 0 {
			str += fmt.Sprintf(", drop %s %d", DropReason(r), n)
		}
	}
	return str
}

type counters struct {
	rxFrames, rxBytes, txFrames, txBytes atomic.Uint64
	txSegments, txChecksums, peerChanges atomic.Uint64
	drops                                [NumDropReasons]atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

func (c *counters) snapshot() Stats {
	s := Stats{
		RxFrames:    c.rxFrames.Load(),
		RxBytes:     c.rxBytes.Load(),
		TxFrames:    c.txFrames.Load(),
		TxBytes:     c.txBytes.Load(),
		TxSegments:  c.txSegments.Load(),
		TxChecksums: c.txChecksums.Load(),
		PeerChanges: c.peerChanges.Load(),
	}
	link.LoadDrops(s.Drops[:], c.drops[:])
	return s
}

// peer is a datagram peer address with its string form, which is what
// addresses are compared by, and (with rawDgram) its raw form.
type peer struct {
	addr net.Addr
	key  string
	raw  rawAddr
}

// Endpoint is an Ethernet link endpoint on a socket to a VM. It is safe for
// concurrent use.
type Endpoint struct {
	ether.NIC // the MAC and the Ethernet header methods

	opts     Options
	maxFrame int
	txLimit  int
	gsoMax   uint32

	conn      net.Conn       // stream
	pconn     net.PacketConn // datagram
	raw       *rawDgram      // pconn driven directly (Linux, unconnected unix sockets)
	connected bool           // datagram socket with a fixed remote: Write
	fixedPeer bool           // Options.Peer was set
	peer      atomic.Pointer[peer]

	mtu atomic.Uint32

	att ether.Attachment // the dispatcher and the on-close action

	// The transmit queue: WritePackets appends records (length prefix and
	// frame) to fill; the writer goroutine swaps it for its own buffer and
	// writes that.
	txMu     sync.Mutex
	fill     []byte
	txClosed bool
	wslices  [][]byte // scratch: the views of the packet being queued
	hdr      []byte   // scratch: a copy of its headers
	txWake   chan struct{}

	stop       chan struct{} // closed by Close
	readerDone chan struct{}
	writerDone chan struct{}
	done       chan struct{} // closed when Close has finished
	closeOnce  sync.Once
	errMu      sync.Mutex
	err        error

	stats counters
}

var (
	_ stack.LinkEndpoint = (*Endpoint)(nil)
	_ stack.GSOEndpoint  = (*Endpoint)(nil)
)

// NewStream returns an endpoint that exchanges length-prefixed frames with
// a VM over c (QEMU `-netdev stream`, gvproxy `-listen-qemu`). It takes
// ownership of c: Close closes it. Frames start moving when a dispatcher is
// attached (stack.CreateNIC, or a switch's AddPort).
func NewStream(c net.Conn, opts Options) (*Endpoint, error) {
	if c == nil {
		return nil, errors.New("vmnet: nil connection")
	}
	e, err := newEndpoint(opts)
	if err != nil {
		return nil, err
	}
	e.conn = c
	return e, nil
}

// NewDatagram returns an endpoint that exchanges one frame per datagram
// with a VM over c, usually a unix datagram socket bound to the path the
// VM sends to (QEMU `-netdev dgram`, vfkit). It takes ownership of c. The
// peer is Options.Peer, the remote address of a connected c, or learned
// from the datagrams received (see Options.Peer).
func NewDatagram(c net.PacketConn, opts Options) (*Endpoint, error) {
	if c == nil {
		return nil, errors.New("vmnet: nil connection")
	}
	e, err := newEndpoint(opts)
	if err != nil {
		return nil, err
	}
	e.pconn = c
	if cc, ok := c.(net.Conn); ok && cc.RemoteAddr() != nil {
		e.connected = true
		e.fixedPeer = true
	} else {
		e.raw = newRawDgram(c)
	}
	if opts.Peer != nil {
		e.fixedPeer = true
		p := &peer{addr: opts.Peer, key: opts.Peer.String()}
		p.raw, _ = rawAddrOf(opts.Peer)
		e.peer.Store(p)
	}
	return e, nil
}

func newEndpoint(opts Options) (*Endpoint, error) {
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	if opts.MTU < 68 || opts.MTU > 65535 {
		return nil, fmt.Errorf("vmnet: mtu %d out of range: valid MTUs are 68..65535", opts.MTU)
	}
	if opts.MaxFrameSize == 0 {
		opts.MaxFrameSize = DefaultMaxFrameSize
	}
	if opts.MaxFrameSize < header.EthernetMinimumSize || opts.MaxFrameSize > 1<<24 {
		return nil, fmt.Errorf("vmnet: max frame size %d out of range: valid sizes are %d..%d", opts.MaxFrameSize, header.EthernetMinimumSize, 1<<24)
	}
	if opts.TxQueueBytes == 0 {
		opts.TxQueueBytes = DefaultTxQueueBytes
	}
	if opts.TxQueueBytes < 0 {
		return nil, fmt.Errorf("vmnet: tx queue bytes %d: must not be negative", opts.TxQueueBytes)
	}
	mac, err := ether.MAC(opts.MAC, "vmnet: mac")
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		opts:       opts,
		maxFrame:   opts.MaxFrameSize,
		txLimit:    opts.TxQueueBytes,
		hdr:        make([]byte, hdrScratch),
		txWake:     make(chan struct{}, 1),
		stop:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	if !opts.DisableGSO {
		e.gsoMax = DefaultGSOMaxSize
	}
	e.SetLinkAddress(mac)
	e.mtu.Store(opts.MTU)
	return e, nil
}

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats { return e.stats.snapshot() }

// Done returns a channel that is closed once the endpoint has closed:
// Close was called, or the peer went away (the stream ended or failed).
func (e *Endpoint) Done() <-chan struct{} { return e.done }

// Err returns why the endpoint closed by itself (the stream's end, a read
// or write error, a framing error), or nil.
func (e *Endpoint) Err() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.err
}

// RemoteAddr returns the VM's address: the stream's remote address, or the
// datagram peer (nil until learned).
func (e *Endpoint) RemoteAddr() net.Addr {
	if e.conn != nil {
		return e.conn.RemoteAddr()
	}
	if e.connected {
		return e.pconn.(net.Conn).RemoteAddr()
	}
	if p := e.peer.Load(); p != nil {
		return p.addr
	}
	return nil
}

// LocalAddr returns the socket's local address.
func (e *Endpoint) LocalAddr() net.Addr {
	if e.conn != nil {
		return e.conn.LocalAddr()
	}
	return e.pconn.LocalAddr()
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// Capabilities implements stack.LinkEndpoint: an Ethernet NIC that
// resolves neighbours; a netstack on it checks every checksum itself.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *Endpoint) GSOMaxSize() uint32 { return e.gsoMax }

// SupportedGSO implements stack.GSOEndpoint: host GSO, segmented in
// software before the frames are queued, unless Options.DisableGSO.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO { return ether.SupportedGSO(e.gsoMax) }

// Attach implements stack.LinkEndpoint. The first non-nil dispatcher
// starts the endpoint's two goroutines; Attach(nil) only stops deliveries
// (frames received meanwhile are dropped, DropNotAttached).
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.att.SetDispatcher(d, func() {
		go e.readLoop()
		go e.writeLoop()
	})
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.att.IsAttached() }

// Wait implements stack.LinkEndpoint. It returns at once: a stack calls it
// holding a lock that a frame being delivered may need; Close waits for
// the goroutines.
func (e *Endpoint) Wait() {}

// SetOnCloseAction implements stack.LinkEndpoint: f runs when the endpoint
// closes, whether by Close or because the peer went away (a stack removes
// its NIC, a switch its port).
func (e *Endpoint) SetOnCloseAction(f func()) { e.att.SetOnCloseAction(f) }

// Close implements stack.LinkEndpoint. It runs the on-close action, closes
// the socket, drops what is still queued and waits for the endpoint's
// goroutines. It is safe to call more than once and from the on-close
// action.
func (e *Endpoint) Close() {
	if action := e.att.TakeOnClose(false); action != nil {
		action() // may call Close: that call does the work below
	}
	e.closeOnce.Do(func() {
		started := e.att.Detach()
		e.closeTx()
		close(e.stop)
		e.closeConn()
		if started {
			<-e.readerDone
			<-e.writerDone
		}
		close(e.done)
	})
	<-e.done
}

// closeTx refuses further frames and drops the queued ones.
func (e *Endpoint) closeTx() {
	e.txMu.Lock()
	e.txClosed = true
	n := countRecords(e.fill)
	e.fill = e.fill[:0]
	e.txMu.Unlock()
	e.stats.drops[DropTxClosed].Add(uint64(n))
}

func (e *Endpoint) closeConn() {
	if e.conn != nil {
		_ = e.conn.Close()
	} else {
		_ = e.pconn.Close()
	}
}

// fail records why the endpoint stops (the first reason wins) and closes
// the socket, which stops both goroutines.
func (e *Endpoint) fail(err error) {
	e.errMu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.errMu.Unlock()
	e.closeConn()
}

// stopping reports whether Close has begun.
func (e *Endpoint) stopping() bool {
	select {
	case <-e.stop:
		return true
	default:
		return false
	}
}
