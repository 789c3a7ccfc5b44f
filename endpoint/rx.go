package endpoint

import (
	"encoding/binary"
	"net/netip"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// receive checks one decoded datagram for this endpoint and delivers its
// payload into the overlay stack. It runs on the socket's receive goroutine.
// The checks follow RFC 8926: control packets are never forwarded (§3.4),
// unknown critical options drop the packet (§3.5.1), the protocol type must
// fit the mode, and ECN is decapsulated per RFC 6040.
func (e *Endpoint) receive(dg *link.Datagram, h geneve.Header, payload []byte) {
	if !e.sourceAllowed(dg.Src.Addr()) {
		e.stats.drop(DropSource)
		return
	}
	if h.OAM {
		e.stats.rxControl.Add(1)
		e.stats.drop(DropControl)
		if f := e.cfg.OnControl; f != nil {
			hc := h // only control packets pay for the escaping copy
			f(&hc, payload, dg.Src)
		}
		return
	}
	if h.Critical || len(h.Options) > 0 {
		if !e.criticalUnderstood(h.Options) {
			e.stats.drop(DropCritical)
			return
		}
	}
	var ip []byte
	var proto tcpip.NetworkProtocolNumber
	pktType := tcpip.PacketHost
	switch e.cfg.Mode {
	case L2:
		if h.Protocol != geneve.ProtoEthernet {
			e.stats.drop(DropProtocol)
			return
		}
		if len(payload) < header.EthernetMinimumSize {
			e.stats.drop(DropInnerMalformed)
			return
		}
		var ok bool
		if pktType, ok = e.acceptFrame(payload); !ok {
			return
		}
		proto = tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(payload[12:14]))
		switch proto {
		case etherTypeIPv4:
			ip = payload[header.EthernetMinimumSize:]
			if len(ip) < header.IPv4MinimumSize || ip[0]>>4 != 4 {
				e.stats.drop(DropInnerMalformed)
				return
			}
		case etherTypeIPv6:
			ip = payload[header.EthernetMinimumSize:]
			if len(ip) < header.IPv6MinimumSize || ip[0]>>4 != 6 {
				e.stats.drop(DropInnerMalformed)
				return
			}
		}
	case L3:
		switch h.Protocol {
		case geneve.ProtoIPv4:
			proto = header.IPv4ProtocolNumber
			if len(payload) < header.IPv4MinimumSize || payload[0]>>4 != 4 {
				e.stats.drop(DropInnerMalformed)
				return
			}
		case geneve.ProtoIPv6:
			proto = header.IPv6ProtocolNumber
			if len(payload) < header.IPv6MinimumSize || payload[0]>>4 != 6 {
				e.stats.drop(DropInnerMalformed)
				return
			}
		default:
			e.stats.drop(DropProtocol)
			return
		}
		ip = payload
	}

	// Bytes past the inner IP packet's own length (Ethernet padding, or
	// junk after an L3 packet) are not part of it: trimmed, as the kernel
	// trims them, so that the overlay stack never holds a packet longer
	// than its header says (gVisor's IPv6 forwarding then takes the whole
	// excess for its header chain and panics above 1280 bytes).
	front := dg.BufferOff + len(dg.Payload) - len(payload) // where payload starts in dg.Buffer
	if ip != nil {
		if n := innerIPLen(ip); n > 0 && n < len(ip) {
			payload = payload[:len(payload)-(len(ip)-n)]
			ip = ip[:n]
		}
	}

	// Checks and the ECN / TTL decisions read the borrowed bytes only.
	rewriteECN, newECN := false, uint8(0)
	rewriteTTL, newTTL := false, uint8(0)
	unchecked := ip == nil
	local := dg.Local
	var l4 innerL4
	if ip != nil {
		// Header structure first, for local datagrams too: their
		// checksums may be trusted, their header lengths may not.
		l4 = parseInner(ip)
		if l4.status == l4BadExt {
			e.stats.drop(DropInnerMalformed)
			return
		}
		if !l4.transportOK(ip) {
			e.stats.drop(DropInnerTransportHeader)
			return
		}
		if t, ok := innerTOS(ip); ok {
			ecn, ok := decapECN(t&ecnMask, dg.TOS&ecnMask)
			if !ok {
				e.stats.drop(DropECN)
				return
			}
			rewriteECN, newECN = ecn != t&ecnMask, ecn
			if e.cfg.TTLInherit && dg.TTL != 0 {
				newTTL = dg.TTL
				rewriteTTL = newTTL != innerTTL(ip)
			}
		}
		// A datagram built on this host may carry partial inner
		// checksums (see link.Datagram.Local): trusted, as the kernel
		// trusts them, never checked.
		switch {
		case local:
		case e.cfg.DisableGRO:
			// The overlay stack checks checksums itself, but it would
			// drop a partial one that a kernel socket could not mark:
			// a TCP checksum holding exactly the pseudo-header sum is
			// checked here, and trusted as local if it is not right.
			if partialTCP(ip) && checkInner(ip, &l4) == innerInvalid {
				local = true
			}
		default:
			switch checkInner(ip, &l4) {
			case innerInvalid:
				// A transport that cannot tell (a kernel socket) may
				// still deliver a local datagram: its TCP checksum
				// field then holds exactly the pseudo-header sum.
				if !partialTCP(ip) {
					e.stats.drop(DropInnerChecksum)
					return
				}
				local = true
			case innerUnchecked:
				unchecked = true
			}
		}
	}
	d := e.attached()
	if d == nil {
		e.stats.drop(DropNotAttached)
		return
	}
	if e.fdb != nil {
		if e.rxNow == 0 {
			e.rxNow = e.fdb.now()
			e.rxLearned.src = netip.Addr{}
		}
		if src := dg.Src.Addr().Unmap(); src != e.rxLearned.src || string(payload[6:12]) != string(e.rxLearned.mac[:]) {
			e.fdb.learnFrom(payload[6:12], src, e.rxNow)
			e.rxLearned.src = src
			copy(e.rxLearned.mac[:], payload[6:12])
		}
	}
	if len(h.Options) > 0 {
		e.runHandlers(h.Options, dg.Src)
	}
	e.stats.rxPackets.Add(1)
	e.stats.rxBytes.Add(uint64(len(payload)))
	// Runs take what gVisor's GRO would (checked or local segments of
	// one MTU at most) but rewritten ones.
	if !e.cfg.DisableGRO && !unchecked && !rewriteECN && !rewriteTTL && !e.noRun &&
		dg.InnerMSS == 0 && len(ip) <= int(e.mtu.Load()) && coalescable(ip, &l4) {
		e.coalesce(d, dg, payload, ip, &l4, proto, pktType)
		return
	}
	// Anything else goes after the run, to keep each flow in order.
	if e.run.n > 0 {
		e.flushRun()
	}
	data, head := rxData(payload, ip, &l4, dg.Buffer, front)
	if rewriteECN {
		setInnerECN(head[len(payload)-len(ip):], newECN)
	}
	if rewriteTTL {
		setInnerTTL(head[len(payload)-len(ip):], newTTL)
	}
	pkt := e.rxPacket(data, pktType, proto)
	switch {
	case local && ip != nil && (dg.InnerMSS != 0 || len(ip) > int(e.mtu.Load()) || e.cfg.DisableGRO):
		// A super-packet the kernel did not segment (a UDP-tunnel job
		// from this host), or a local packet while the overlay stack
		// checks checksums itself: delivered on its own, with receive
		// offload claimed for it. Coalesced packets go first.
		if len(ip) > int(e.mtu.Load()) && l4.status == l4Found && l4.proto == protoTCP {
			pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: dg.InnerMSS}
			if ip[0]>>4 == 6 {
				pkt.GSOOptions.Type = stack.GSOTCPv6
			}
			e.stats.rxTunnelJobs.Add(1)
		}
		e.gro.Flush()
		pkt.RXChecksumValidated = true
		e.rxLocal.Store(true)
		d.DeliverNetworkPacket(proto, pkt)
		e.rxLocal.Store(false)
	case e.cfg.DisableGRO:
		d.DeliverNetworkPacket(proto, pkt)
	case !unchecked && l4.groable():
		// Checked above (or local and trusted), so GRO need not check
		// again; the NIC sets the same value from our capabilities.
		pkt.RXChecksumValidated = true
		e.gro.Dispatcher = d
		e.gro.Enqueue(pkt)
	case !unchecked:
		// Checked (or local) but not for GRO: delivered on its own,
		// with receive offload as advertised. Coalesced packets go
		// first to keep each flow in order.
		e.gro.Flush()
		pkt.RXChecksumValidated = true
		d.DeliverNetworkPacket(proto, pkt)
	default:
		// Not checked here (not IP, a fragment, ...): deliver it on its
		// own, with receive offload withdrawn while the NIC looks at it,
		// so the overlay stack checks it. Coalesced packets go first to
		// keep each flow in order.
		e.gro.Flush()
		e.rxUnchecked.Store(true)
		d.DeliverNetworkPacket(proto, pkt)
		e.rxUnchecked.Store(false)
	}
	pkt.DecRef()
}

// headCopyMin is the size below which a received payload is copied whole
// rather than split into copied headers and shared data.
const headCopyMin = 256

// headLen returns how many leading bytes of a received payload to copy
// into the packet's own memory: the link, IP and transport headers (all
// the overlay stack and GRO consume), or the whole payload when it is
// small or its transport header was not found. ip is the inner IP packet
// within payload (nil if not IP) and l4 what parseInner found in it.
func headLen(payload, ip []byte, l4 *innerL4) int {
	if len(payload) <= headCopyMin || ip == nil || l4.status != l4Found {
		return len(payload)
	}
	n := len(payload) - len(ip) + l4.off
	switch l4.proto {
	case protoTCP:
		n += int(ip[l4.off+12]>>4) * 4 // transportOK checked it
	case protoUDP, protoICMP, protoICMPv6:
		n += 8
	default:
		return len(payload)
	}
	return min(n, len(payload))
}

// flushGRO delivers packets held for coalescing; the socket calls it at the
// end of every receive batch.
func (e *Endpoint) flushGRO() {
	e.touched = false
	e.rxNow = 0
	if !e.cfg.DisableGRO {
		if e.run.n > 0 {
			e.flushRun()
		}
		e.gro.Flush()
	}
}

// criticalUnderstood reports whether every critical option in h is one the
// endpoint was told it understands. Options are structurally valid here
// (geneve.Decode checked them).
func (e *Endpoint) criticalUnderstood(opts []byte) bool {
	it := geneve.Options(opts)
	for {
		o, ok := it.Next()
		if !ok {
			return true
		}
		if o.Type&geneve.OptionCritical == 0 {
			continue
		}
		t := OptionType{Class: o.Class, Type: o.Type}
		if _, ok := e.critical[t]; ok {
			continue
		}
		if hs := e.handlers.Load(); hs != nil {
			if _, ok := (*hs)[t]; ok {
				continue
			}
		}
		return false
	}
}

// runHandlers calls the registered option handlers for the options of an
// accepted packet.
func (e *Endpoint) runHandlers(opts []byte, src netip.AddrPort) {
	hs := e.handlers.Load()
	if hs == nil || len(*hs) == 0 {
		return
	}
	it := geneve.Options(opts)
	for {
		o, ok := it.Next()
		if !ok {
			return
		}
		if h := (*hs)[OptionType{Class: o.Class, Type: o.Type}]; h != nil {
			h(o, src)
		}
	}
}

// sourceAllowed applies source validation (RFC 8926 §6.3): a unicast
// endpoint accepts only its remotes (configured or added to the flood
// list), the remotes of static forwarding entries and of host routes,
// unless configured to accept any source.
func (e *Endpoint) sourceAllowed(src netip.Addr) bool {
	if e.cfg.AcceptAnySource || e.cfg.Group.IsValid() {
		return true
	}
	src = src.Unmap()
	if e.flood.Load().has(src) {
		return true
	}
	return e.fdb != nil && e.fdb.isStaticRemote(src) || e.hosts.isRemote(src)
}

// acceptFrame applies the L2 receive filter: frames from our own MAC are
// loops, unicast frames for other MACs are not ours unless promiscuous. It
// classifies accepted frames as an Ethernet NIC would.
func (e *Endpoint) acceptFrame(frame []byte) (tcpip.PacketType, bool) {
	own := e.LinkAddress()
	dst := frame[0:6]
	src := frame[6:12]
	if string(src) == string(own) {
		e.stats.drop(DropLoop)
		return 0, false
	}
	switch {
	case string(dst) == string(own):
		return tcpip.PacketHost, true
	case string(dst) == string(header.EthernetBroadcastAddress):
		return tcpip.PacketBroadcast, true
	case dst[0]&1 != 0:
		return tcpip.PacketMulticast, true
	case e.cfg.Promiscuous:
		return tcpip.PacketOtherHost, true
	}
	e.stats.drop(DropNotForUs)
	return 0, false
}

// innerIPLen returns the length an inner IP packet declares (IPv4 total
// length, IPv6 40 + payload length), or 0 when it declares none that can
// be trusted (below the header, or an IPv6 jumbo payload length of 0).
func innerIPLen(ip []byte) int {
	switch ip[0] >> 4 {
	case 4:
		if n := int(binary.BigEndian.Uint16(ip[2:4])); n >= header.IPv4MinimumSize {
			return n
		}
	case 6:
		if n := int(binary.BigEndian.Uint16(ip[4:6])); n != 0 {
			return header.IPv6MinimumSize + n
		}
	}
	return 0
}
