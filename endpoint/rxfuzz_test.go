package endpoint

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/internal/pcap"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// sharedDir is the project's shared reference folder: ../shared from the
// project root.
var sharedDir = filepath.Join("..", "..", "shared")

// Flags of a FuzzReceive input: its first byte.
const (
	fuzzLocal  = 1 << 0 // link.Datagram.Local
	fuzzMSS    = 1 << 1 // link.Datagram.InnerMSS = 1200
	fuzzECN    = 3 << 2 // the outer ECN codepoint (TOS bits 0-1)
	fuzzSrc    = 3 << 4 // which of fuzzSources sent it
	fuzzTTL1   = 1 << 6 // outer TTL 1 instead of 64 (the L3 endpoint inherits it)
	fuzzBuffer = 1 << 7 // also hand over the bytes as link.Datagram.Buffer
)

// fuzzSources are the outer sources an input can pick.
var fuzzSources = [4]netip.AddrPort{
	netip.AddrPortFrom(ovlRemote, 6081),
	netip.MustParseAddrPort("192.0.2.3:6081"),
	netip.MustParseAddrPort("192.0.2.4:40000"),
	netip.MustParseAddrPort("198.51.100.9:6081"),
}

// fuzzInput is a FuzzReceive input: flags, then the UDP payload.
func fuzzInput(flags byte, dg []byte) []byte { return append([]byte{flags}, dg...) }

// receiveSeeds are FuzzReceive's built-in inputs: the two defect
// reproducers, and well-formed traffic for every path of the overlay.
func receiveSeeds() [][]byte {
	l2 := func(typ uint16, ip []byte) []byte {
		return datagram(geneve.Header{VNI: ovlL2VNI, Protocol: geneve.ProtoEthernet}, ether(ovlMAC, ovlPeerMAC, typ, ip))
	}
	l3 := func(ip []byte) []byte {
		p := uint16(geneve.ProtoIPv4)
		if ip[0]>>4 == 6 {
			p = geneve.ProtoIPv6
		}
		return datagram(geneve.Header{VNI: ovlL3VNI, Protocol: p}, ip)
	}
	far4 := netip.MustParseAddr("10.9.0.7")
	frag := ipv6FragmentPair(1)
	arpReq := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 1, 2, 10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 10, 1, 0, 1}
	return [][]byte{
		// Defect 1: Local IPv6 fragments and no-next-header packets
		// leaked a buffer each in GRO.
		fuzzInput(fuzzLocal, l3(frag[0])),
		fuzzInput(fuzzLocal, l2(etherTypeIPv6, frag[1])),
		fuzzInput(fuzzLocal, l3(ipv6Packet(59, []byte("after no next header")))),
		// Defect 2: a TCP data offset past the segment, forwarded.
		fuzzInput(0, l2(etherTypeIPv4, tcpSegment(ovlL2Peer[0], ovlFar[0], 52, 12))),
		fuzzInput(fuzzLocal, l3(tcpSegment(far4, ovlL2Peer[0], 52, 12))),
		fuzzInput(0, l2(etherTypeIPv6, tcpSegment(ovlL2Peer[1], ovlFar[1], 60, 0))),
		// Well-formed: forwarded both ways, to the stack, ARP, UDP.
		fuzzInput(0, l2(etherTypeIPv4, tcpSegment(ovlL2Peer[0], ovlFar[0], 32, 100))),
		fuzzInput(fuzzLocal|fuzzMSS, l3(tcpSegment(far4, ovlL2Peer[0], 20, 1400))),
		fuzzInput(fuzzBuffer, l3(tcpSegment(netip.MustParseAddr("fd00:9::7"), ovlL3Addr[1], 20, 10))),
		fuzzInput(fuzzTTL1|2<<2, l3(udpDatagram(far4, ovlL2Peer[0], 20, 12))),
		fuzzInput(3<<4, l2(etherTypeIPv4, udpDatagram(ovlL2Peer[0], ovlL2Addr[0], 20, 12))),
		fuzzInput(0, datagram(geneve.Header{VNI: ovlL2VNI, Protocol: geneve.ProtoEthernet},
			ether("\xff\xff\xff\xff\xff\xff", ovlPeerMAC, 0x0806, arpReq))),
	}
}

// captureSeeds returns the Geneve datagrams of the shared captures (none if
// the shared folder is absent), each as captured and re-addressed to the
// overlay's VNIs (and, for Ethernet, to its MAC).
func captureSeeds(t testing.TB) [][]byte {
	var files []string
	for _, dir := range []string{"vectors", "peers"} {
		m, _ := filepath.Glob(filepath.Join(sharedDir, dir, "*.pcap"))
		files = append(files, m...)
	}
	var seeds [][]byte
	for _, path := range files {
		lt, frames, err := pcap.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, f := range frames {
			src, dst, p, ok := pcap.UDPPayload(lt, f)
			if !ok || (src.Port() != geneve.Port && dst.Port() != geneve.Port) {
				continue
			}
			seeds = append(seeds, fuzzInput(0, p))
			h, off, err := geneve.Decode(p)
			if err != nil {
				continue
			}
			q := bytes.Clone(p)
			vni := uint32(ovlL3VNI)
			if h.Protocol == geneve.ProtoEthernet {
				vni = ovlL2VNI
				if len(q) >= off+6 {
					copy(q[off:], ovlMAC)
				}
			}
			q[4], q[5], q[6] = byte(vni>>16), byte(vni>>8), byte(vni)
			seeds = append(seeds, fuzzInput(0, q), fuzzInput(fuzzLocal, q))
		}
	}
	return seeds
}

// TestCaptureSeeds makes sure the shared captures give FuzzReceive seeds.
func TestCaptureSeeds(t *testing.T) {
	if _, err := os.Stat(filepath.Join(sharedDir, "vectors")); err != nil {
		t.Skipf("shared reference folder not found at %s (CI has it at ../shared from the project root)", sharedDir)
	}
	if n := len(captureSeeds(t)); n == 0 {
		t.Fatal("no Geneve datagrams in the shared captures")
	}
}

// isTxDrop reports whether r counts packets the endpoint failed to send
// (the DropTx* reasons, declared after every receive reason).
func isTxDrop(r DropReason) bool { return r >= DropTxTooBig }

// rxAccounted is what the receive counters of one endpoint or socket
// account for: packets delivered plus receive drops.
func rxAccounted(s Stats) uint64 {
	n := s.RxPackets
	for r, d := range s.Drops {
		if !isTxDrop(DropReason(r)) {
			n += d
		}
	}
	return n
}

// FuzzReceive feeds arbitrary datagrams through the whole receive path: the
// Socket (decode, VNI demultiplexing) into an L2 and an L3 endpoint that are
// NICs of one real gVisor overlay stack with IPv4 and IPv6 forwarding on
// (see newOverlay), so that packets are delivered, answered (ICMP, TCP RST,
// ARP, NDP) and forwarded out of the other NIC, back through the endpoints
// to the in-memory transport. The first input byte selects the datagram's
// flags (fuzzLocal ... fuzzBuffer); the rest is the UDP payload.
//
// Per input it checks that:
//   - nothing panics;
//   - the datagram is accounted for exactly once: every datagram the Socket
//     receives is dropped by the socket (decode error, unknown VNI) or
//     handed to one endpoint, which either delivers it (RxPackets) or
//     drops it under one receive reason, so the sum over the socket and
//     both endpoints of RxPackets + receive drops grows by exactly the
//     number of datagrams (transmit drops, from replies, are not counted);
//   - the borrowed bytes (Payload, and Buffer when given) are unchanged;
//   - every datagram sent back out is valid Geneve: version 0, one of the
//     two VNIs, the protocol type of that endpoint's mode (IPv4/IPv6
//     matching the inner version in L3), sent to a known peer;
//   - the L2 forwarding table stays within its maximum (ovlFDBMax);
//   - once the stack's timers have run (reassembly and neighbour
//     resolution give up), no reference-counted gVisor object is alive
//     but those the stack held before the first input (its addresses):
//     nothing leaked. (leakcheck.Run checks again at the end of the
//     process, after the stack is destroyed.)
//
// The overlay is built once per fuzzing process; the counters are compared
// as deltas.
func FuzzReceive(f *testing.F) { fuzzReceive(f, false) }

// FuzzReceiveRun is FuzzReceive with a batch of three datagrams: the
// input's, and twice the datagram that continues its inner TCP segment
// (see continuation), or the input three times when it holds none. It
// exercises the endpoint's own receive coalescing (runs) with the same
// checks; each datagram is accounted for once.
func FuzzReceiveRun(f *testing.F) { fuzzReceive(f, true) }

// FuzzReceiveNoGRO is FuzzReceiveRun into the same overlay with
// Config.DisableGRO set on both endpoints, as a forwarding overlay should
// be: inner checksums are left to the stack, except the partial ones that
// the endpoint recognises as local.
func FuzzReceiveNoGRO(f *testing.F) { fuzzReceiveIn(f, true, true) }

// fuzzReceive seeds f and builds the overlay, then runs FuzzReceive (run
// false) or FuzzReceiveRun.
func fuzzReceive(f *testing.F, run bool) { fuzzReceiveIn(f, run, false) }

// fuzzReceiveIn is fuzzReceive, into an overlay with GRO off if noGRO.
func fuzzReceiveIn(f *testing.F, run, noGRO bool) {
	for _, s := range receiveSeeds() {
		f.Add(s)
	}
	for _, s := range captureSeeds(f) {
		f.Add(s)
	}
	o := newOverlayGRO(f, !noGRO)
	f.Cleanup(o.close)
	base := leakcheck.Live() // the stack's own objects (its addresses)
	peers := map[netip.Addr]bool{}
	for _, s := range fuzzSources {
		peers[s.Addr()] = true
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzDeliver(t, o, peers, base, in, run)
	})
}

// fuzzDeliver runs one FuzzReceive (run false) or FuzzReceiveRun input.
func fuzzDeliver(t *testing.T, o *overlay, peers map[netip.Addr]bool, base leakcheck.Snapshot, in []byte, run bool) {
	var flags byte
	if len(in) > 0 {
		flags, in = in[0], in[1:]
	}
	dg := link.Datagram{
		Payload: in,
		Src:     fuzzSources[flags&fuzzSrc>>4],
		Dst:     netip.MustParseAddr("192.0.2.1"),
		TOS:     flags & fuzzECN >> 2,
		TTL:     64,
		Local:   flags&fuzzLocal != 0,
	}
	if flags&fuzzMSS != 0 {
		dg.InnerMSS = 1200
	}
	if flags&fuzzTTL1 != 0 {
		dg.TTL = 1
	}
	batch := []link.Datagram{dg}
	if run {
		next := continuation(in)
		if next == nil {
			next = in
		}
		next2 := continuation(next)
		if next2 == nil {
			next2 = in
		}
		batch = append(batch, dg, dg)
		batch[1].Payload, batch[2].Payload = next, next2
	}
	var origs [][]byte
	for i := range batch {
		origs = append(origs, bytes.Clone(batch[i].Payload))
	}
	var shared *buffer.Buffer
	if flags&fuzzBuffer != 0 {
		shared = lendTogether(batch)
	}
	before := rxAccounted(o.sock.Stats()) + rxAccounted(o.l2.Stats()) + rxAccounted(o.l3.Stats())

	o.ft.Deliver(batch)

	after := rxAccounted(o.sock.Stats()) + rxAccounted(o.l2.Stats()) + rxAccounted(o.l3.Stats())
	if after-before != uint64(len(batch)) {
		t.Errorf("%d datagrams accounted for %d times (socket %v; l2 %v; l3 %v)", len(batch), after-before, o.sock.Stats(), o.l2.Stats(), o.l3.Stats())
	}
	for i := range batch {
		if !bytes.Equal(batch[i].Payload, origs[i]) {
			t.Errorf("the borrowed payload changed")
		}
	}
	o.settle()
	if shared != nil {
		for i := range batch {
			if got := shared.Flatten()[batch[i].BufferOff:][:len(origs[i])]; !bytes.Equal(got, origs[i]) {
				t.Errorf("the borrowed buffer changed")
			}
		}
		shared.Release()
	}
	for _, s := range o.ft.Take() {
		checkSent(t, s, peers)
	}
	if n := o.l2.FDB().Stats().Count; n > ovlFDBMax {
		t.Errorf("forwarding table has %d entries, max %d", n, ovlFDBMax)
	}
	leakcheck.CheckSince(t, base)
}

// continuation returns a copy of the Geneve datagram p whose inner TCP
// segment's sequence number is advanced by its payload length, its TCP
// checksum kept valid if it was; nil if p holds no TCP segment (after a
// plain IPv4 or IPv6 header) that parses.
func continuation(p []byte) []byte {
	h, off, err := geneve.Decode(p)
	if err != nil {
		return nil
	}
	inner := p[off:]
	if h.Protocol == geneve.ProtoEthernet {
		if len(inner) < 14 {
			return nil
		}
		inner = inner[14:]
	}
	if len(inner) < 20 || (inner[0]>>4 != 4 && inner[0]>>4 != 6) || (inner[0]>>4 == 6 && len(inner) < 40) {
		return nil
	}
	if n := innerIPLen(inner); n > 0 && n < len(inner) {
		inner = inner[:n]
	}
	l4 := parseInner(inner)
	if !l4.groable() || !l4.transportOK(inner) {
		return nil
	}
	q := bytes.Clone(p)
	start := off // where the inner IP packet starts
	if h.Protocol == geneve.ProtoEthernet {
		start += 14
	}
	ipq := q[start : start+len(inner)]
	seg := ipq[l4.off:l4.end]
	doff := int(seg[12]>>4) * 4
	valid := tcpChecksumValid(ipq, seg)
	binary.BigEndian.PutUint32(seg[4:], binary.BigEndian.Uint32(seg[4:])+uint32(len(seg)-doff))
	if valid {
		setTCPChecksum(ipq, seg)
	}
	return q
}

// tcpSum returns the checksum over seg, a TCP segment inside the IP packet
// ip, and its pseudo-header.
func tcpSum(ip, seg []byte) uint16 {
	var src, dst []byte
	if ip[0]>>4 == 4 {
		src, dst = ip[12:16], ip[16:20]
	} else {
		src, dst = ip[8:24], ip[24:40]
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpip.AddrFromSlice(src), tcpip.AddrFromSlice(dst), uint16(len(seg)))
	return checksum.Checksum(seg, xsum)
}

// tcpChecksumValid reports whether seg's TCP checksum is right.
func tcpChecksumValid(ip, seg []byte) bool { return tcpSum(ip, seg) == 0xffff }

// setTCPChecksum makes seg's TCP checksum right.
func setTCPChecksum(ip, seg []byte) {
	seg[16], seg[17] = 0, 0
	binary.BigEndian.PutUint16(seg[16:], ^tcpSum(ip, seg))
}

// checkSent checks one datagram the overlay sent.
func checkSent(t *testing.T, s linktest.Sent, peers map[netip.Addr]bool) {
	t.Helper()
	h, off, err := geneve.Decode(s.Data)
	if err != nil || s.Data[0]>>6 != 0 {
		t.Errorf("sent datagram does not decode: %v (% x)", err, s.Data[:min(len(s.Data), 16)])
		return
	}
	inner := s.Data[off:]
	switch h.VNI {
	case ovlL2VNI:
		if h.Protocol != geneve.ProtoEthernet || len(inner) < 14 {
			t.Errorf("L2 endpoint sent protocol %#x, %d bytes", h.Protocol, len(inner))
		}
	case ovlL3VNI:
		switch {
		case h.Protocol == geneve.ProtoIPv4 && len(inner) >= 20 && inner[0]>>4 == 4:
		case h.Protocol == geneve.ProtoIPv6 && len(inner) >= 40 && inner[0]>>4 == 6:
		default:
			t.Errorf("L3 endpoint sent protocol %#x with % x", h.Protocol, inner[:min(len(inner), 8)])
		}
	default:
		t.Errorf("sent VNI %#x", h.VNI)
	}
	if h.OAM {
		t.Errorf("sent a control packet")
	}
	if !peers[s.Packet.Dst.Addr()] || s.Packet.Dst.Port() != 6081 {
		t.Errorf("sent to %v", s.Packet.Dst)
	}
	if h.Protocol == geneve.ProtoEthernet && len(inner) >= 14 && binary.BigEndian.Uint16(inner[12:14]) == 0 {
		t.Errorf("sent an Ethernet frame with EtherType 0")
	}
}
