// Package capture wraps gnv's underlay transports and link endpoints to
// write what they send and receive to a pcap file. The wrappers forward the
// optional interfaces of what they wrap (segmentation, offloads), as
// gVisor's nested endpoint does, so that wrapping changes nothing else.
package capture

import (
	"encoding/binary"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/gnv-project/gnv/internal/csum"
	"github.com/gnv-project/gnv/internal/pcap"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/tunneljob"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Transport wraps a link.Transport and writes every datagram it sends or
// receives to a pcap file (link type RAW). A kernel socket never shows gnv
// the outer IP and UDP headers, so they are synthesised from the datagram's
// addresses, TOS and TTL; tshark decodes the file as Geneve on the port.
// A UDP-tunnel segmentation job (link.Packet.InnerMSS) is written as the
// datagrams it stands for, as they leave.
type Transport struct {
	link.Transport
	w *pcap.Writer

	mu   sync.Mutex
	buf  []byte
	flat []byte                    // a sent payload made contiguous
	seg  [tunneljob.MaxHdrLen]byte // one segment's headers
	r    link.Receiver
}

// NewTransport writes the pcap header to w and wraps t.
func NewTransport(t link.Transport, w io.Writer) (*Transport, error) {
	pw, err := pcap.NewWriter(w, pcap.LinkTypeRaw, 0)
	if err != nil {
		return nil, err
	}
	return &Transport{Transport: t, w: pw}, nil
}

// WriteBatch implements link.Transport.
func (c *Transport) WriteBatch(pkts []link.Packet) (int, error) {
	now := time.Now()
	local := c.LocalAddr()
	c.mu.Lock()
	for i := range pkts {
		p := &pkts[i]
		src := netip.AddrPortFrom(local.Addr(), c.WireSourcePort(p.SrcPort))
		ttl := p.TTL
		if ttl == 0 {
			ttl = 64
		}
		data := c.flatten(&p.Payload)
		if p.InnerMSS != 0 && c.writeJob(now, src, p, ttl, data) {
			continue
		}
		hdr := c.header(src, p.Dst, data, p.TOS, ttl, p.DF)
		_ = c.w.WritePacket(now, hdr, data)
	}
	c.mu.Unlock()
	return c.Transport.WriteBatch(pkts)
}

var (
	_ link.Transport        = (*Transport)(nil)
	_ link.TunnelSegmenter  = (*Transport)(nil)
	_ link.OffloadReporter  = (*Transport)(nil)
	_ link.WireSourcePorter = (*Transport)(nil)
)

// TunnelSegmentation implements link.TunnelSegmenter for the wrapped
// transport: no jobs unless it takes them.
func (c *Transport) TunnelSegmentation() (int, bool) {
	if t, ok := c.Transport.(link.TunnelSegmenter); ok {
		return t.TunnelSegmentation()
	}
	return 0, false
}

// Offloads implements link.OffloadReporter for the wrapped transport.
func (c *Transport) Offloads() link.Offloads {
	if r, ok := c.Transport.(link.OffloadReporter); ok {
		return r.Offloads()
	}
	return 0
}

// WireSourcePort implements link.WireSourcePorter for the wrapped
// transport.
func (c *Transport) WireSourcePort(srcPort uint16) uint16 {
	if w, ok := c.Transport.(link.WireSourcePorter); ok {
		return w.WireSourcePort(srcPort)
	}
	if srcPort == 0 {
		return c.LocalAddr().Port()
	}
	return srcPort
}

// writeJob writes the datagrams of the job p, whose payload is data, and
// reports whether it could parse the job.
func (c *Transport) writeJob(now time.Time, src netip.AddrPort, p *link.Packet, ttl uint8, data []byte) bool {
	j, ok := tunneljob.Parse(data[:min(len(data), tunneljob.MaxHdrLen)], len(data), p.InnerMSS)
	if !ok {
		return false
	}
	whole := link.Slices{data}
	for idx := range j.Segments() {
		off, n := j.Segment(c.seg[:], data, whole, idx)
		h, pl := c.seg[:j.HdrLen], data[off:off+n]
		_ = c.w.WritePacket(now, c.header(src, p.Dst, nil, p.TOS, ttl, p.DF, h, pl), h, pl)
	}
	return true
}

// flatten returns the bytes of b in one slice: its only view, or else a
// copy in c.flat, which is reused. c.mu is held.
func (c *Transport) flatten(b *buffer.Buffer) []byte {
	vl := b.AsViewList()
	if v := vl.Front(); v != nil && v.Next() == nil {
		return v.AsSlice()
	}
	c.flat = c.flat[:0]
	for v := vl.Front(); v != nil; v = v.Next() {
		c.flat = append(c.flat, v.AsSlice()...)
	}
	return c.flat
}

// Unwrap returns the wrapped transport.
func (c *Transport) Unwrap() link.Transport { return c.Transport }

// Start implements link.Transport.
func (c *Transport) Start(r link.Receiver) error {
	c.r = r
	return c.Transport.Start(c)
}

// Receive implements link.Receiver.
func (c *Transport) Receive(batch []link.Datagram) {
	now := time.Now()
	local := c.LocalAddr()
	c.mu.Lock()
	for i := range batch {
		d := &batch[i]
		dst := d.Dst
		if !dst.IsValid() {
			dst = local.Addr()
		}
		hdr := c.header(d.Src, netip.AddrPortFrom(dst, local.Port()), d.Payload, d.TOS, d.TTL, false)
		_ = c.w.WritePacket(now, hdr, d.Payload)
	}
	c.mu.Unlock()
	c.r.Receive(batch)
}

// header builds an IPv4 or IPv6 + UDP header into c.buf for the UDP
// payload made of payload and more. Over IPv4 the UDP checksum is left
// zero ("none", which tshark does not flag); IPv6 has no such value, so it
// is computed.
func (c *Transport) header(src, dst netip.AddrPort, payload []byte, tos, ttl uint8, df bool, more ...[]byte) []byte {
	n := len(payload)
	for _, m := range more {
		n += len(m)
	}
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() != d.Is4() {
		if d.Is4() {
			s = netip.IPv4Unspecified()
		} else {
			s = netip.IPv6Unspecified()
		}
	}
	if d.Is4() {
		c.buf = append(c.buf[:0], make([]byte, 28)...)
		h := c.buf
		h[0] = 0x45
		h[1] = tos
		binary.BigEndian.PutUint16(h[2:4], uint16(28+n))
		if df {
			h[6] = 0x40
		}
		h[8] = ttl
		h[9] = 17
		s4, d4 := s.As4(), d.As4()
		copy(h[12:16], s4[:])
		copy(h[16:20], d4[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(h[i:]))
		}
		sum = sum&0xffff + sum>>16
		sum = sum&0xffff + sum>>16
		binary.BigEndian.PutUint16(h[10:12], ^uint16(sum))
		udp := h[20:]
		binary.BigEndian.PutUint16(udp[0:2], src.Port())
		binary.BigEndian.PutUint16(udp[2:4], dst.Port())
		binary.BigEndian.PutUint16(udp[4:6], uint16(8+n))
		return h
	}
	c.buf = append(c.buf[:0], make([]byte, 48)...)
	h := c.buf
	binary.BigEndian.PutUint32(h[0:4], 6<<28|uint32(tos)<<20)
	binary.BigEndian.PutUint16(h[4:6], uint16(8+n))
	h[6] = 17
	h[7] = ttl
	s16, d16 := s.As16(), d.As16()
	copy(h[8:24], s16[:])
	copy(h[24:40], d16[:])
	udp := h[40:]
	binary.BigEndian.PutUint16(udp[0:2], src.Port())
	binary.BigEndian.PutUint16(udp[2:4], dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+n))
	var cs csum.Checksumer
	cs.Add(h[8:40])
	cs.Add([]byte{0, 17})
	cs.Add(udp[4:6]) // the pseudo-header's length is the UDP length
	cs.Add(udp[:8])
	cs.Add(payload)
	for _, m := range more {
		cs.Add(m)
	}
	sum := ^cs.Checksum()
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return h
}

// Endpoint wraps an Ethernet link endpoint and writes every frame
// sent or received to a pcap file (link type Ethernet). It forwards GSO
// capabilities (nested.Endpoint does) so wrapping changes nothing else.
type Endpoint struct {
	nested.Endpoint
	w *pcap.Writer
}

var (
	_ stack.LinkEndpoint   = (*Endpoint)(nil)
	_ stack.GSOEndpoint    = (*Endpoint)(nil)
	_ link.UDPSegmenter    = (*Endpoint)(nil)
	_ link.TunnelSegmenter = (*Endpoint)(nil)
	_ link.OffloadReporter = (*Endpoint)(nil)
)

// NewEndpoint writes the pcap header to w and wraps ep.
func NewEndpoint(ep stack.LinkEndpoint, w io.Writer) (*Endpoint, error) {
	pw, err := pcap.NewWriter(w, pcap.LinkTypeEthernet, 0)
	if err != nil {
		return nil, err
	}
	c := &Endpoint{w: pw}
	c.Endpoint.Init(ep, c)
	return c, nil
}

// DeliverNetworkPacket implements stack.NetworkDispatcher. The link header
// has been consumed by the wrapped endpoint but is still in the packet.
func (c *Endpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	_ = c.w.WritePacketBuffer(time.Now(), pkt)
	c.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkWriter.
func (c *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	now := time.Now()
	for _, pkt := range pkts.AsSlice() {
		_ = c.w.WritePacketBuffer(now, pkt)
	}
	return c.Endpoint.WritePackets(pkts)
}

// UDPSegmentation implements link.UDPSegmenter for the wrapped endpoint: no
// jobs unless it takes them.
func (c *Endpoint) UDPSegmentation() (int, bool) {
	if s, ok := c.Endpoint.Child().(link.UDPSegmenter); ok {
		return s.UDPSegmentation()
	}
	return 0, false
}

// TunnelSegmentation implements link.TunnelSegmenter for the wrapped
// endpoint.
func (c *Endpoint) TunnelSegmentation() (int, bool) {
	if s, ok := c.Endpoint.Child().(link.TunnelSegmenter); ok {
		return s.TunnelSegmentation()
	}
	return 0, false
}

// Offloads implements link.OffloadReporter for the wrapped endpoint.
func (c *Endpoint) Offloads() link.Offloads {
	if r, ok := c.Endpoint.Child().(link.OffloadReporter); ok {
		return r.Offloads()
	}
	return 0
}
