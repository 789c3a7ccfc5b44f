package endpoint

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync/atomic"

	"github.com/gnv-project/gnv/internal/csum"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ARP and ND suppression (RFC 7432 §10, RFC 9161): an L2 endpoint whose
// control plane knows the MAC of an overlay address (a BGP EVPN MAC/IP
// route, say) answers ARP requests and IPv6 neighbour solicitations for it
// itself, injecting the reply into the overlay as if the owner had sent it,
// instead of flooding the request to every VTEP.

// Neighbor is an entry of the ARP/ND suppression table.
type Neighbor struct {
	IP     netip.Addr
	MAC    net.HardwareAddr
	Origin string
}

// String formats the entry like a line of "gnv fdb show".
func (n Neighbor) String() string {
	s := fmt.Sprintf("%s lladdr %s suppress", n.IP, n.MAC)
	if n.Origin != "" {
		s += " " + n.Origin
	}
	return s
}

type neighEntry struct {
	mac    [6]byte
	origin string
}

// maxReplies bounds the suppression replies being injected at once; past
// it requests are flooded.
const maxReplies = 64

// AddNeighbor adds or replaces an ARP/ND suppression entry: ARP requests
// and neighbour solicitations for ip leaving the endpoint are answered with
// mac. origin marks the entry (see AddStaticFrom).
func (f *FDB) AddNeighbor(ip netip.Addr, mac net.HardwareAddr, origin string) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("neighbor %s: want a unicast address", ip)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.neigh[ip] = neighEntry{mac: k, origin: origin}
	f.nneigh.Store(int32(len(f.neigh)))
	return nil
}

// RemoveNeighbor removes ip's suppression entry if it maps to mac (any
// MAC if mac is nil) and was added by origin, and reports whether it did.
func (f *FDB) RemoveNeighbor(ip netip.Addr, mac net.HardwareAddr, origin string) bool {
	ip = ip.Unmap()
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.neigh[ip]
	if !ok || e.origin != origin || mac != nil && string(e.mac[:]) != string(mac) {
		return false
	}
	delete(f.neigh, ip)
	f.nneigh.Store(int32(len(f.neigh)))
	return true
}

// Neighbors returns the suppression table sorted by address.
func (f *FDB) Neighbors() []Neighbor {
	f.mu.RLock()
	out := make([]Neighbor, 0, len(f.neigh))
	for ip, e := range f.neigh {
		out = append(out, Neighbor{IP: ip, MAC: append(net.HardwareAddr(nil), e.mac[:]...), Origin: e.origin})
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// neighbor looks ip up in the suppression table.
func (f *FDB) neighbor(ip netip.Addr) ([6]byte, bool) {
	f.mu.RLock()
	e, ok := f.neigh[ip]
	f.mu.RUnlock()
	return e.mac, ok
}

const (
	etherTypeARP = 0x0806
	arpLen       = 28
	// ndLen is what is read of a solicitation: the IPv6 header and the
	// ICMPv6 header with the target address.
	ndLen = header.IPv6MinimumSize + 24
)

// suppress handles a broadcast or multicast frame leaving the endpoint: an
// ARP request or neighbour solicitation for an address in the suppression
// table is answered locally and reported true (not to be sent); anything
// else is left to be flooded. ARP requests and solicitations that look an
// address up are counted either way; announcements (a gratuitous ARP, whose
// sender and target addresses are the same, and duplicate address
// detection, from the unspecified address) are flooded and not counted:
// no table could answer them.
func (e *Endpoint) suppress(pkt *stack.PacketBuffer, linkHdr []byte) bool {
	et := binary.BigEndian.Uint16(linkHdr[12:14])
	switch {
	case et == etherTypeARP:
		var a [arpLen]byte
		if peek(pkt, len(linkHdr), a[:]) < arpLen || binary.BigEndian.Uint16(a[0:2]) != 1 ||
			binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 || a[4] != 6 || a[5] != 4 || binary.BigEndian.Uint16(a[6:8]) != 1 {
			return false
		}
		target := netip.AddrFrom4([4]byte(a[24:28]))
		if target == netip.AddrFrom4([4]byte(a[14:18])) {
			return false // gratuitous ARP
		}
		if e.fdb.nneigh.Load() != 0 {
			if mac, ok := e.fdb.neighbor(target); ok && e.reply(arpReply(a[:], mac), header.ARPProtocolNumber, &e.stats.arpSuppressed) {
				return true
			}
		}
		e.stats.arpFlooded.Add(1)
	case et == etherTypeIPv6 && linkHdr[0] == 0x33 && linkHdr[1] == 0x33:
		var b [ndLen]byte
		if peek(pkt, len(linkHdr), b[:]) < ndLen || b[0]>>4 != 6 || b[6] != protoICMPv6 || b[40] != uint8(header.ICMPv6NeighborSolicit) || b[41] != 0 {
			return false
		}
		src := netip.AddrFrom16([16]byte(b[8:24]))
		target := netip.AddrFrom16([16]byte(b[48:64]))
		if src.IsUnspecified() {
			return false // duplicate address detection
		}
		if e.fdb.nneigh.Load() != 0 {
			if mac, ok := e.fdb.neighbor(target); ok && e.reply(neighborAdvert(linkHdr, src, target, mac), header.IPv6ProtocolNumber, &e.stats.ndSuppressed) {
				return true
			}
		}
		e.stats.ndFlooded.Add(1)
	}
	return false
}

// peek copies bytes of pkt from offset off (counted from its first
// header) into dst, without allocating, and returns how many it copied.
func peek(pkt *stack.PacketBuffer, off int, dst []byte) int {
	vl, start := pkt.AsViewList()
	off += start
	n := 0
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(dst[n:], s[off:])
		off = 0
	}
	return n
}

// arpReply builds the Ethernet frame of the ARP reply to request (the 28
// ARP bytes), from mac, the owner of the address asked for.
func arpReply(req []byte, mac [6]byte) *buffer.View {
	v := buffer.NewViewSize(header.EthernetMinimumSize + arpLen)
	f := v.AsSlice()
	copy(f[0:6], req[8:14]) // to the requester
	copy(f[6:12], mac[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[header.EthernetMinimumSize:]
	copy(a[0:6], req[0:6]) // hardware and protocol types and sizes
	binary.BigEndian.PutUint16(a[6:8], 2)
	copy(a[8:14], mac[:])
	copy(a[14:18], req[24:28]) // the address asked for
	copy(a[18:24], req[8:14])
	copy(a[24:28], req[14:18])
	return v
}

// neighborAdvert builds the Ethernet frame of a solicited neighbour
// advertisement (RFC 4861 §7.2.4) for target, owned by mac, to the
// soliciting address src, whose frame had the Ethernet header linkHdr.
func neighborAdvert(linkHdr []byte, src, target netip.Addr, mac [6]byte) *buffer.View {
	const icmpLen = 24 + 8 // header, target, target link-layer address option
	v := buffer.NewViewSize(header.EthernetMinimumSize + header.IPv6MinimumSize + icmpLen)
	f := v.AsSlice()
	copy(f[0:6], linkHdr[6:12])
	copy(f[6:12], mac[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
	ip := header.IPv6(f[header.EthernetMinimumSize:])
	from, to := tcpip.AddrFrom16(target.As16()), tcpip.AddrFrom16(src.As16())
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     icmpLen,
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          header.NDPHopLimit,
		SrcAddr:           from,
		DstAddr:           to,
	})
	icmp := f[header.EthernetMinimumSize+header.IPv6MinimumSize:]
	clear(icmp)
	icmp[0] = uint8(header.ICMPv6NeighborAdvert)
	icmp[4] = 0x60 // solicited, override
	t := target.As16()
	copy(icmp[8:24], t[:])
	icmp[24], icmp[25] = 2, 1 // target link-layer address, 8 bytes
	copy(icmp[26:32], mac[:])
	xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, from, to, icmpLen)
	binary.BigEndian.PutUint16(icmp[2:4], ^csum.Checksum(icmp, xsum))
	return v
}

// reply injects frame (whose view it takes) into the overlay, as if
// received, and reports whether it will; if it will, it adds one to
// counter first, so that nobody sees the answer before its count. The
// delivery runs on a goroutine of its own: the request may have been sent
// with locks of the overlay stack's neighbour cache held, which the reply
// needs.
func (e *Endpoint) reply(frame *buffer.View, proto tcpip.NetworkProtocolNumber, counter *atomic.Uint64) bool {
	if e.replies.Add(1) > maxReplies {
		e.replies.Add(-1)
		frame.Release()
		return false
	}
	counter.Add(1)
	e.replyWG.Add(1)
	go func() {
		defer e.replyWG.Done()
		defer e.replies.Add(-1)
		d := e.attached()
		if d == nil {
			frame.Release()
			e.stats.drop(DropNotAttached)
			return
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(frame)})
		pkt.LinkHeader().Consume(header.EthernetMinimumSize)
		pkt.NetworkProtocolNumber = proto
		pkt.PktType = tcpip.PacketHost
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}()
	return true
}
