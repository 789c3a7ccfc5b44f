package l2switch

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/link/internal/frame"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// seenGranularity is how stale a MAC entry's timestamp may get before a
// frame from it refreshes it: most frames then only read the entry.
const seenGranularity = int64(100e6) // 100 ms

// parseBytes is how much of a packet is examined to find its IP and
// transport headers.
const parseBytes = 256

// input switches one frame that port in received (pkt is borrowed).
func (s *Switch) input(in *Port, pkt *stack.PacketBuffer) {
	st := &s.stats
	if in.removed.Load() {
		st.drops[DropClosed].Add(1)
		return
	}
	hdr := pkt.LinkHeader().Slice()
	if len(hdr) < header.EthernetMinimumSize {
		st.drops[DropMalformed].Add(1)
		return
	}
	st.frames.Add(1)
	in.rxFrames.Add(1)
	dst := [6]byte(hdr[0:6])
	src := [6]byte(hdr[6:12])
	if src[0]&1 != 0 {
		st.drops[DropSourceMulticast].Add(1)
		return
	}
	now := s.now()
	if !s.learn(src, in, now) {
		st.drops[DropSourceSpoofed].Add(1)
		return
	}

	var clone *stack.PacketBuffer // the parsed clone for ports, made once
	if dst[0]&1 == 0 {
		if out := s.lookup(dst, now); out != nil {
			if out == in {
				st.filtered.Add(1)
				return
			}
			st.forwarded.Add(1)
			s.send(out, in, pkt, &clone)
			if clone != nil {
				clone.DecRef()
			}
			return
		}
	}
	st.flooded.Add(1)
	var host *Port
	for _, p := range *s.ports.Load() {
		switch {
		case p == in:
		case p.host != nil:
			host = p // last: a netstack changes the packet's metadata
		default:
			s.send(p, in, pkt, &clone)
		}
	}
	if host != nil {
		s.send(host, in, pkt, &clone)
	}
	if clone != nil {
		clone.DecRef()
	}
}

// learn records that src is behind port in. It reports false for a frame
// from another port that claims the host port's MAC.
func (s *Switch) learn(src [6]byte, in *Port, now int64) bool {
	s.macMu.RLock()
	e := s.macs[src]
	s.macMu.RUnlock()
	if e != nil && e.static {
		return e.port == in
	}
	if e != nil && e.port == in {
		if now-e.seen.Load() > seenGranularity {
			e.seen.Store(now)
		}
		return true
	}
	s.macMu.Lock()
	defer s.macMu.Unlock()
	if in.removed.Load() {
		return true // Remove forgets the port's MACs under macMu: never relearn them
	}
	e = s.macs[src]
	if e != nil && e.static {
		return e.port == in
	}
	if e == nil && len(s.macs) >= s.maxMACs {
		s.sweepLocked(now)
		if len(s.macs) >= s.maxMACs {
			s.stats.learnFull.Add(1)
			return true
		}
	}
	if e != nil && e.port == in {
		e.seen.Store(now)
		return true
	}
	ne := &macEntry{port: in}
	ne.seen.Store(now)
	s.macs[src] = ne
	s.stats.learned.Add(1)
	return true
}

// sweepLocked removes aged entries. macMu is held.
func (s *Switch) sweepLocked(now int64) {
	for m, e := range s.macs {
		if !e.static && now-e.seen.Load() > s.aging {
			delete(s.macs, m)
		}
	}
}

// lookup returns the port dst was learned on, or nil.
func (s *Switch) lookup(dst [6]byte, now int64) *Port {
	s.macMu.RLock()
	e := s.macs[dst]
	s.macMu.RUnlock()
	if e == nil || !e.static && now-e.seen.Load() > s.aging || e.port.removed.Load() {
		return nil
	}
	return e.port
}

// send sends pkt, which port in received, out of port out. A port's
// endpoint gets *clone, the parsed clone made on first use; a host port's
// netstack gets pkt itself.
func (s *Switch) send(out, in *Port, pkt *stack.PacketBuffer, clone **stack.PacketBuffer) {
	if out.host != nil {
		out.host.deliver(in, pkt)
		return
	}
	if pkt.GSOOptions.Type != stack.GSONone && !out.gso {
		s.stats.drops[DropGSO].Add(1)
		return
	}
	w := pkt
	if in.host == nil {
		// A received frame: an endpoint's WritePackets expects the
		// network and transport headers of an outbound packet.
		if *clone == nil {
			*clone = parsedClone(pkt)
		}
		w = *clone
	}
	l := s.lists.Get().(*stack.PacketBufferList)
	w.IncRef() // the list's reference, dropped by Reset
	l.PushBack(w)
	out.txFrames.Add(1)
	_, _ = out.ep.WritePackets(*l) // drops are the endpoint's to count
	l.Reset()
	s.lists.Put(l)
}

// parsedClone returns a clone of the received frame pkt whose network and
// transport headers are consumed as those of an outbound packet are pushed
// (link endpoints hash flows and check sizes by them), with any Ethernet
// padding after the IP packet cut off.
func parsedClone(pkt *stack.PacketBuffer) *stack.PacketBuffer {
	c := pkt.Clone()
	et := binary.BigEndian.Uint16(c.LinkHeader().Slice()[12:14])
	c.NetworkProtocolNumber = tcpip.NetworkProtocolNumber(et)
	if et != uint16(header.IPv4ProtocolNumber) && et != uint16(header.IPv6ProtocolNumber) {
		return c
	}
	size := c.Data().Size()
	b, ok := c.Data().PullUp(min(size, parseBytes))
	if !ok {
		return c
	}
	ip, ok := frame.ParseIP(b, size)
	if !ok || (ip.Version == 4) != (et == uint16(header.IPv4ProtocolNumber)) {
		return c
	}
	if ip.TotalLen < size {
		c.Data().CapLength(ip.TotalLen)
	}
	c.NetworkHeader().Consume(ip.HdrLen)
	if !ip.Fragment && ip.L4Len > 0 {
		c.TransportHeader().Consume(ip.L4Len)
		c.TransportProtocolNumber = tcpip.TransportProtocolNumber(ip.Proto)
	}
	return c
}
