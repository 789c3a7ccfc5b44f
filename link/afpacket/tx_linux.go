//go:build linux

package afpacket

import (
	"syscall"

	"github.com/gnv-project/gnv/internal/csum"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/mmsg"
	"github.com/gnv-project/gnv/link/internal/tunneljob"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// afpTx kinds of message.
const (
	afpPlain     = iota // no offload
	afpCsum             // NEEDS_CSUM
	afpGSO              // a UDP_L4 job
	afpSeg              // one datagram cut from a job
	afpTunnelGSO        // a UDP_L4 frame of datagrams cut from a UDP-tunnel job
)

// afpMeta describes one message of an afpTx batch.
type afpMeta struct {
	pkt      *stack.PacketBuffer
	kind     uint8
	csum     bool // sent with NEEDS_CSUM
	failed   bool
	segs     int
	iovStart int
	iovN     int
}

// afpTx holds the preallocated state of one WritePackets call.
type afpTx struct {
	e    *Endpoint
	msgs [afpTxBatch]unix.Mmsghdr
	meta [afpTxBatch]afpMeta
	hdrs [afpTxBatch * afpHdrSlot]byte
	iovs []unix.Iovec
	nm   int

	slices link.Slices // the bytes of the packet being queued (packetSlices)

	// jobHdrs holds the Geneve and inner headers of the segments of the
	// UDP-tunnel jobs queued since the last flush.
	jobHdrs   []byte
	jobSlices link.Slices // the job being cut, from its Geneve header on

	redo  []*stack.PacketBuffer
	spare []*stack.PacketBuffer
	// failed counts the packets (not messages: a job or a software
	// segmentation is several) that went out incompletely or not at all;
	// lastFailed is the last one counted, whose other messages follow.
	failed     int
	lastFailed *stack.PacketBuffer
	firstErr   syscall.Errno

	// sendLoop state, shared with the RawConn callbacks.
	i, n      int
	errno     syscall.Errno
	blocked   bool
	controlFn func(fd uintptr)
	waitFn    func(fd uintptr)
}

func (e *Endpoint) getTx() *afpTx {
	select {
	case tx := <-e.senders:
		return tx
	default:
	}
	tx := &afpTx{
		e:     e,
		iovs:  make([]unix.Iovec, 0, 4*afpTxBatch),
		redo:  make([]*stack.PacketBuffer, 0, afpTxBatch),
		spare: make([]*stack.PacketBuffer, 0, afpTxBatch),
	}
	tx.controlFn = func(fd uintptr) { tx.sendLoop(fd) }
	// The send socket is not in the runtime poller (see Endpoint).
	tx.waitFn = func(fd uintptr) { mmsg.WaitWritable(fd, e.Closed) }
	return tx
}

func (e *Endpoint) putTx(tx *afpTx) {
	select {
	case e.senders <- tx:
	default:
	}
}

// WritePackets implements stack.LinkWriter. The packets are borrowed. UDP
// datagrams marked NeedsCsum leave with NEEDS_CSUM (or are checksummed
// here), and link.GSOUDPL4 jobs as one UDP_L4 frame (or as datagrams cut here).
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.Closed() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	tx := e.getTx()
	defer e.putTx(tx)
	tx.failed, tx.lastFailed, tx.firstErr = 0, nil, 0
	for _, pkt := range pkts.AsSlice() {
		tx.add(pkt)
	}
	tx.flush()
	// Packets refused for their offload hints go again, now without.
	// At most two rounds: each refusal turns an offload off for good.
	for len(tx.redo) > 0 {
		redo := tx.redo
		tx.redo = tx.spare[:0]
		for _, pkt := range redo {
			tx.add(pkt)
		}
		tx.flush()
		clear(redo)
		tx.spare = redo[:0]
	}
	clear(tx.slices[:cap(tx.slices)]) // drop the references to the packets' memory
	tx.lastFailed = nil
	n := pkts.Len() - tx.failed
	if tx.firstErr != 0 {
		return n, tcpip.TranslateErrno(tx.firstErr)
	}
	return n, nil
}

// add queues the messages for one packet.
func (tx *afpTx) add(pkt *stack.PacketBuffer) {
	e := tx.e
	g := &pkt.GSOOptions
	switch {
	case g.Type == link.GSOUDPTunnel:
		tx.addTunnelJob(pkt)
	case g.Type == link.GSOUDPL4:
		if e.udpGSO.Load() && e.txCsum.Load() {
			if tx.views(pkt)+1 <= afpMaxIov && pkt.Data().Size() > int(g.MSS) {
				tx.addJob(pkt)
				return
			}
		}
		tx.addSegments(pkt)
	case g.NeedsCsum && g.Type == stack.GSONone:
		if e.txCsum.Load() {
			tx.addFrame(pkt, afpCsum)
			return
		}
		afpChecksumInPlace(pkt)
		tx.addFrame(pkt, afpPlain)
	default:
		tx.addFrame(pkt, afpPlain)
	}
}

// afpChecksumInPlace completes the partial UDP checksum of a packet marked
// NeedsCsum, in its own header.
func afpChecksumInPlace(pkt *stack.PacketBuffer) {
	u := pkt.TransportHeader().Slice()
	if len(u) < header.UDPMinimumSize {
		return
	}
	link.FinishChecksum(u, link.ProtoUDP, header.UDP(u).Checksum(), pkt.Data().Checksum())
	pkt.GSOOptions.NeedsCsum = false
}

// views counts the views of pkt, for the iovec limit.
func (tx *afpTx) views(pkt *stack.PacketBuffer) int {
	vl, _ := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		n++
	}
	return n
}

// slot returns the header scratch of the next message, flushing first if
// the batch is full.
func (tx *afpTx) slot() []byte {
	if tx.nm == afpTxBatch {
		tx.flush()
	}
	return tx.hdrs[tx.nm*afpHdrSlot : (tx.nm+1)*afpHdrSlot]
}

// afpHeaderLens returns the lengths of pkt's link and network headers.
func afpHeaderLens(pkt *stack.PacketBuffer) (link, network int) {
	return len(pkt.LinkHeader().Slice()), len(pkt.NetworkHeader().Slice())
}

// addFrame queues pkt as one frame, with a NEEDS_CSUM header if kind is
// afpCsum.
func (tx *afpTx) addFrame(pkt *stack.PacketBuffer, kind uint8) {
	s := tx.slot()
	start := len(tx.iovs)
	if vl := tx.e.vnetLen; vl != 0 {
		vh := vnet.Hdr{}
		if kind == afpCsum {
			ll, nl := afpHeaderLens(pkt)
			vh.Flags = vnet.FNeedsCsum
			vh.CsumStart = uint16(ll + nl)
			vh.CsumOffset = pkt.GSOOptions.CsumOffset
			vh.HdrLen = vh.CsumStart + vh.CsumOffset + 2
		}
		vh.Encode(s)
		tx.iov(s[:vl])
	}
	tx.packetSlices(pkt).Each(0, pkt.Size(), tx.iov)
	tx.push(pkt, kind, 1, start, kind == afpCsum)
}

// addJob queues a link.GSOUDPL4 job as one UDP_L4 frame.
func (tx *afpTx) addJob(pkt *stack.PacketBuffer) {
	s := tx.slot()
	start := len(tx.iovs)
	ll, nl := afpHeaderLens(pkt)
	mss := int(pkt.GSOOptions.MSS)
	vh := vnet.Hdr{
		Flags:      vnet.FNeedsCsum,
		GSOType:    vnet.GSOUDPL4,
		HdrLen:     uint16(ll + nl + header.UDPMinimumSize),
		GSOSize:    uint16(mss),
		CsumStart:  uint16(ll + nl),
		CsumOffset: link.UDPChecksumOffset,
	}
	vh.Encode(s)
	tx.iov(s[:vnet.HdrLen])
	tx.packetSlices(pkt).Each(0, pkt.Size(), tx.iov)
	segs := (pkt.Data().Size() + mss - 1) / mss
	tx.push(pkt, afpGSO, segs, start, true)
}

// addSegments cuts a link.GSOUDPL4 job into datagrams, each a message with its
// own copy of the headers.
func (tx *afpTx) addSegments(pkt *stack.PacketBuffer) {
	e := tx.e
	ll, nl := afpHeaderLens(pkt)
	l4 := ll + nl
	hl := l4 + header.UDPMinimumSize
	mss := int(pkt.GSOOptions.MSS)
	total := pkt.Data().Size()
	if hl+e.vnetLen > afpHdrSlot || mss <= 0 || len(pkt.TransportHeader().Slice()) != header.UDPMinimumSize {
		e.stats.txErrors.Add(1)
		tx.failed++
		return
	}
	data := tx.packetSlices(pkt)
	dataStart := pkt.HeaderSize()
	offload := e.txCsum.Load()
	e.stats.txSoftwareSegmented.Add(1)
	for idx, done := 0, 0; done < total; idx, done = idx+1, done+mss {
		m := min(mss, total-done)
		s := tx.slot()
		start := len(tx.iovs)
		h := s[e.vnetLen : e.vnetLen+hl]
		k := copy(h, pkt.LinkHeader().Slice())
		k += copy(h[k:], pkt.NetworkHeader().Slice())
		copy(h[k:], pkt.TransportHeader().Slice())
		pseudo := link.SegmentHeader(h, ll, l4, link.ProtoUDP, idx, done, m, done+m >= total)
		var vh vnet.Hdr
		if offload {
			header.UDP(h[l4:]).SetChecksum(pseudo)
			vh = vnet.Hdr{Flags: vnet.FNeedsCsum, HdrLen: uint16(hl), CsumStart: uint16(l4), CsumOffset: link.UDPChecksumOffset}
		} else {
			link.FinishChecksum(h[l4:], link.ProtoUDP, pseudo, data.Checksum(dataStart+done, m))
		}
		if e.vnetLen != 0 {
			vh.Encode(s)
		}
		tx.iov(s[:e.vnetLen+hl])
		data.Each(dataStart+done, m, tx.iov)
		tx.push(pkt, afpSeg, 1, start, offload)
	}
}

// addTunnelJob cuts a UDP-tunnel segmentation job (link.GSOUDPTunnel: one
// UDP datagram holding a Geneve header and an inner TCP super-packet) into
// UDP_L4 frames of up to afpMaxSegments Geneve datagrams each: every
// segment's Geneve and inner headers are the job's, rewritten for it
// (tunneljob), in tx.jobHdrs; its payload is gathered from the job's views;
// each frame's outer headers are the job's with the lengths, IPv4 ID and
// checksums of its first datagram, and the kernel (or the veth's peer)
// cuts it. Without UDP GSO every datagram is a frame of its own.
func (tx *afpTx) addTunnelJob(pkt *stack.PacketBuffer) {
	e := tx.e
	ll, nl := afpHeaderLens(pkt)
	l4 := ll + nl
	hl := l4 + header.UDPMinimumSize
	g := &pkt.GSOOptions
	data := tx.packetSlices(pkt)
	dataStart := pkt.HeaderSize()
	size := pkt.Data().Size()
	vl, off := pkt.AsViewList()
	tx.jobSlices = tx.jobSlices[:0].AppendViews(vl, off+dataStart)
	defer clear(tx.jobSlices)
	var tmpl [tunneljob.MaxHdrLen]byte
	n := tx.jobSlices.CopyOut(tmpl[:])
	j, ok := tunneljob.Parse(tmpl[:min(n, size)], size, g.MSS)
	segSize := j.HdrLen + j.MSS
	if !ok || hl+e.vnetLen > afpHdrSlot || len(pkt.TransportHeader().Slice()) != header.UDPMinimumSize ||
		segSize > int(e.mtu.Load())-nl-header.UDPMinimumSize {
		e.stats.txErrors.Add(1)
		tx.failed++
		return
	}
	gso := e.udpGSO.Load() && e.txCsum.Load() && g.NeedsCsum
	offload := e.txCsum.Load() && g.NeedsCsum
	perFrame := 1
	if gso {
		perFrame = min(afpMaxSegments, (0xffff-nl-header.UDPMinimumSize)/segSize)
	}
	nseg := j.Segments()
	if need := len(tx.jobHdrs) + nseg*j.HdrLen; need > cap(tx.jobHdrs) {
		// The iovecs queued so far keep the old buffer alive.
		nb := make([]byte, len(tx.jobHdrs), max(need, 2*cap(tx.jobHdrs), 16<<10))
		copy(nb, tx.jobHdrs)
		tx.jobHdrs = nb
	}
	if !gso {
		e.stats.txSoftwareSegmented.Add(1)
	}
	for first := 0; first < nseg; first += perFrame {
		last := min(first+perFrame, nseg)
		s := tx.slot()
		start := len(tx.iovs)
		// The segments' headers first, to know the frame's size.
		at := len(tx.jobHdrs)
		payload := 0
		for idx := first; idx < last; idx++ {
			h := tx.jobHdrs[len(tx.jobHdrs) : len(tx.jobHdrs)+j.HdrLen]
			tx.jobHdrs = tx.jobHdrs[:len(tx.jobHdrs)+j.HdrLen]
			_, m := j.Segment(h, tmpl[:], tx.jobSlices, idx)
			payload += j.HdrLen + m
		}
		h := s[e.vnetLen : e.vnetLen+hl]
		k := copy(h, pkt.LinkHeader().Slice())
		k += copy(h[k:], pkt.NetworkHeader().Slice())
		copy(h[k:], pkt.TransportHeader().Slice())
		pseudo := link.SegmentHeader(h, ll, l4, link.ProtoUDP, first, 0, payload, true)
		var vh vnet.Hdr
		switch {
		case !g.NeedsCsum:
			header.UDP(h[l4:]).SetChecksum(0) // zero checksums configured
		case offload:
			header.UDP(h[l4:]).SetChecksum(pseudo)
			vh = vnet.Hdr{Flags: vnet.FNeedsCsum, HdrLen: uint16(hl), CsumStart: uint16(l4), CsumOffset: link.UDPChecksumOffset}
			if last-first > 1 {
				vh.GSOType = vnet.GSOUDPL4
				vh.GSOSize = uint16(segSize)
			}
		}
		if e.vnetLen != 0 {
			vh.Encode(s)
		}
		tx.iov(s[:e.vnetLen+hl])
		var c csum.Checksumer
		for idx := first; idx < last; idx++ {
			sh := tx.jobHdrs[at+(idx-first)*j.HdrLen : at+(idx-first+1)*j.HdrLen]
			tx.iov(sh)
			off := idx * j.MSS
			m := min(j.MSS, j.DataLen-off)
			data.Each(dataStart+j.HdrLen+off, m, tx.iov)
			if g.NeedsCsum && !offload {
				c.Add(sh)
				data.Each(dataStart+j.HdrLen+off, m, c.Add)
			}
		}
		if g.NeedsCsum && !offload {
			link.FinishChecksum(h[l4:], link.ProtoUDP, pseudo, c.Checksum())
		}
		kind := uint8(afpSeg)
		if last-first > 1 {
			kind = afpTunnelGSO
		}
		tx.push(pkt, kind, last-first, start, offload)
	}
	e.stats.txTunnelJobs.Add(1)
}

// iov appends one iovec.
func (tx *afpTx) iov(b []byte) {
	tx.iovs = append(tx.iovs, unix.Iovec{Base: &b[0]})
	tx.iovs[len(tx.iovs)-1].SetLen(len(b))
}

// packetSlices points tx.slices at the bytes of pkt, from its link header
// on, and returns them.
func (tx *afpTx) packetSlices(pkt *stack.PacketBuffer) link.Slices {
	vl, off := pkt.AsViewList()
	tx.slices = tx.slices[:0].AppendViews(vl, off)
	return tx.slices
}

// push records a message built from the iovecs since start.
func (tx *afpTx) push(pkt *stack.PacketBuffer, kind uint8, segs, start int, csum bool) {
	tx.meta[tx.nm] = afpMeta{pkt: pkt, kind: kind, csum: csum, segs: segs, iovStart: start, iovN: len(tx.iovs) - start}
	tx.nm++
}

// flush sends the queued messages.
func (tx *afpTx) flush() {
	e := tx.e
	if tx.nm == 0 {
		return
	}
	// tx.iovs may have grown while building: point the messages at it now.
	for k := 0; k < tx.nm; k++ {
		h := &tx.msgs[k].Hdr
		m := &tx.meta[k]
		h.Iov = &tx.iovs[m.iovStart]
		h.SetIovlen(m.iovN)
	}
	tx.i, tx.n = 0, tx.nm
	for tx.i < tx.n {
		tx.errno, tx.blocked = 0, false
		err := e.txConn.Control(tx.controlFn)
		if err == nil && tx.blocked {
			err = e.txConn.Control(tx.waitFn)
		}
		if err != nil { // closed
			for k := tx.i; k < tx.n; k++ {
				tx.fail(&tx.meta[k], unix.EBADF)
			}
			break
		}
		if tx.errno == 0 {
			continue
		}
		tx.refused(&tx.meta[tx.i], tx.errno)
		tx.i++
	}
	for k := 0; k < tx.nm; k++ {
		m := &tx.meta[k]
		if !m.failed {
			e.stats.txFrames.Add(1)
			if m.csum {
				e.stats.txChecksumOffloaded.Add(1)
			}
			if m.kind == afpGSO || m.kind == afpTunnelGSO {
				e.stats.txGSOFrames.Add(1)
				e.stats.txGSOSegments.Add(uint64(m.segs))
			}
		}
		*m = afpMeta{}
		tx.msgs[k].Hdr.Iov = nil
	}
	clear(tx.iovs)
	tx.iovs = tx.iovs[:0]
	tx.jobHdrs = tx.jobHdrs[:0]
	tx.nm = 0
}

// afpOffloadRefused reports errors with which the kernel refuses a frame
// because of its virtio_net_hdr.
func afpOffloadRefused(e syscall.Errno) bool {
	return e == unix.EINVAL || e == unix.EIO || e == unix.EOPNOTSUPP || e == unix.EPROTONOSUPPORT
}

// refused handles a message the kernel refused with errno.
func (tx *afpTx) refused(m *afpMeta, errno syscall.Errno) {
	e := tx.e
	if afpOffloadRefused(errno) {
		switch m.kind {
		case afpGSO:
			e.udpGSO.Store(false)
			e.stats.txOffloadFallbacks.Add(1)
			m.failed = true
			tx.redo = append(tx.redo, m.pkt)
			return
		case afpCsum:
			e.txCsum.Store(false)
			e.udpGSO.Store(false)
			e.stats.txOffloadFallbacks.Add(1)
			m.failed = true
			tx.redo = append(tx.redo, m.pkt)
			return
		case afpSeg, afpTunnelGSO:
			// A datagram cut from a job: resending the job would
			// duplicate its other datagrams, so only switch the
			// offload off for the next ones.
			e.txCsum.Store(false)
			e.udpGSO.Store(false)
		}
	}
	tx.fail(m, errno)
}

func (tx *afpTx) fail(m *afpMeta, errno syscall.Errno) {
	if m.failed {
		return
	}
	m.failed = true
	tx.e.stats.txErrors.Add(1)
	if m.pkt == nil || m.pkt != tx.lastFailed {
		tx.failed++
		tx.lastFailed = m.pkt
	}
	if tx.firstErr == 0 {
		tx.firstErr = errno
	}
}

// sendLoop sends msgs[tx.i:tx.n] (see mmsg.SendAll), recording a failure
// in tx.errno and a full socket in tx.blocked.
func (tx *afpTx) sendLoop(fd uintptr) {
	_, blocked, errno := mmsg.SendAll(fd, tx.msgs[:tx.n], &tx.i, false)
	tx.blocked = tx.blocked || blocked
	if errno != 0 {
		tx.errno = errno
	}
}
