//go:build linux

package kudp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/mmsg"
	"github.com/gnv-project/gnv/link/internal/tunneljob"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
)

// sendCtrlSize is the control buffer per send message: a TOS/TCLASS int, a
// TTL/HOPLIMIT int and a UDP_SEGMENT uint16, rounded up to 8 bytes.
var sendCtrlSize = (2*unix.CmsgSpace(4) + unix.CmsgSpace(2) + 7) &^ 7

// sendMeta ties a built message to the packets it carries.
type sendMeta struct {
	first, count int // packets [first, first+count)
	bytes        int // payload bytes
	iovStart     int
	iovN         int
	// datagrams is how many datagrams the message sends (count, or the
	// segments of a job's part).
	datagrams int
	// job: the message is part of the UDP-tunnel job pkts[first]; count
	// is 1 on its last part only.
	job bool
}

// udpSender holds the preallocated state of one WriteBatch call.
type udpSender struct {
	t     *Transport
	msgs  []unix.Mmsghdr
	addrs []unix.RawSockaddrInet6
	ctrl  []byte
	meta  []sendMeta
	iovs  []unix.Iovec

	// UDP-tunnel jobs: the headers of their segments, and a job's views.
	jobHdrs   []byte
	jobSlices link.Slices

	// Build results: datagrams with an unusable Dst, among the packets
	// of the current run below scanned (a GSO fallback rebuilds packets
	// already scanned). badDst, badErr and badFirst cover the whole batch.
	scanned  int
	badDst   int
	badErr   error
	badFirst netip.AddrPort

	// WriteBatch results, accumulated over the runs of one batch.
	sent, datagrams, bytes, errs, gsoSends, fallbacks int
	firstErr                                          error // first refused datagram
	firstErrDst                                       netip.AddrPort
	stopErr                                           error // closed or broken socket
	stopDst                                           netip.AddrPort

	// Syscall loop state, shared with the RawConn callbacks.
	i, n    int
	errno   syscall.Errno
	blocked bool

	controlFn func(fd uintptr)
	writeFn   func(fd uintptr) bool
	waitFn    func(fd uintptr)
}

func newUDPSender(t *Transport) *udpSender {
	b := t.cfg.BatchSize
	s := &udpSender{
		t:     t,
		msgs:  make([]unix.Mmsghdr, b),
		addrs: make([]unix.RawSockaddrInet6, b),
		meta:  make([]sendMeta, b),
		iovs:  make([]unix.Iovec, 0, 2*b),
	}
	s.ctrl = alignedBytes(b * sendCtrlSize)
	s.controlFn = func(fd uintptr) { s.sendLoop(fd, false) }
	s.writeFn = func(fd uintptr) bool { return s.sendLoop(fd, true) }
	// For the source-port sockets, which are not in the runtime poller
	// (see openSourcePorts).
	s.waitFn = func(fd uintptr) { mmsg.WaitWritable(fd, t.closed.Load) }
	return s
}

func (t *Transport) getSender() *udpSender {
	select {
	case s := <-t.senders:
		return s
	default:
		return newUDPSender(t)
	}
}

func (t *Transport) putSender(s *udpSender) {
	select {
	case t.senders <- s:
	default:
	}
}

// WriteBatch sends pkts with sendmmsg, as GSO super-datagrams where
// possible. It returns the number of packets the kernel accepted. A datagram
// the kernel refuses is skipped and counted; the first such error is
// returned after the rest of the batch has been attempted. A packet with a
// non-zero Packet.SrcPort leaves from the source-port socket SrcPort % n of
// the pool (Options.SourcePorts), others from the bound socket;
// maximal runs of consecutive packets for the same socket are sent
// together. Packet.DF is ignored (see Options.DontFragment). Safe
// for concurrent use.
func (t *Transport) WriteBatch(pkts []link.Packet) (int, error) {
	if t.closed.Load() {
		return 0, net.ErrClosed
	}
	if len(pkts) == 0 {
		return 0, nil
	}
	s := t.getSender()
	defer t.putSender(s)
	s.resetResult()
	n := len(t.srcRCs)
	if n == 0 {
		t.writeRun(s, t.rc, pkts)
		return t.finishWrite(s)
	}
	for p := 0; p < len(pkts); {
		k := srcSockIndex(pkts[p].SrcPort, n)
		q := p + 1
		for q < len(pkts) && srcSockIndex(pkts[q].SrcPort, n) == k {
			q++
		}
		rc := t.rc
		if k >= 0 {
			rc = t.srcRCs[k]
		}
		if !t.writeRun(s, rc, pkts[p:q]) {
			break
		}
		p = q
	}
	return t.finishWrite(s)
}

// srcSockIndex maps a Packet.SrcPort to a pool of n source-port sockets:
// -1 means the main socket.
func srcSockIndex(srcPort uint16, n int) int {
	if srcPort == 0 {
		return -1
	}
	return int(srcPort) % n
}

// resetResult clears the per-WriteBatch results.
func (s *udpSender) resetResult() {
	s.badDst, s.badErr, s.badFirst = 0, nil, netip.AddrPort{}
	s.sent, s.datagrams, s.bytes, s.errs, s.gsoSends, s.fallbacks = 0, 0, 0, 0, 0, 0
	s.firstErr, s.firstErrDst, s.stopErr, s.stopDst = nil, netip.AddrPort{}, nil, netip.AddrPort{}
}

// fail records n datagrams to dst refused with err.
func (s *udpSender) fail(err error, dst netip.AddrPort, n int) {
	if s.firstErr == nil {
		s.firstErr, s.firstErrDst = err, dst
	}
	s.errs += n
}

// writeRun sends pkts on the socket rc, adding to the results in s. It
// returns false if the socket is closed or broken (s.stopErr): the rest of
// the batch is not attempted.
func (t *Transport) writeRun(s *udpSender, rc syscall.RawConn, pkts []link.Packet) bool {
	s.scanned = 0
	noGSOUntil := 0
	p := 0
	for p < len(pkts) {
		nm, next := s.build(pkts, p, noGSOUntil)
		i := 0
		for i < nm {
			s.i, s.n, s.errno, s.blocked = i, nm, 0, false
			// Try without holding the fd's write lock, so concurrent
			// WriteBatch calls overlap; if the socket buffer is full,
			// retry under RawConn.Write, which waits for writability;
			// a source-port socket is not in the runtime poller (see
			// openSourcePorts): wait with poll(2) and go round again.
			werr := rc.Control(s.controlFn)
			if werr == nil && s.blocked {
				if rc == t.rc {
					werr = rc.Write(s.writeFn)
				} else {
					werr = rc.Control(s.waitFn)
				}
			}
			for k := i; k < s.i; k++ {
				m := &s.meta[k]
				s.sent += m.count
				s.datagrams += m.datagrams
				s.bytes += m.bytes
				if m.datagrams > 1 {
					s.gsoSends++
				}
			}
			i = s.i
			if werr != nil { // closed
				s.release(nm)
				s.stopErr, s.stopDst = net.ErrClosed, netip.AddrPort{}
				return false
			}
			if s.errno == 0 {
				continue
			}
			m := &s.meta[i]
			dst := pkts[m.first].Dst
			if isFatalSockErr(s.errno) {
				s.release(nm)
				s.stopErr, s.stopDst = s.errno, dst
				return false
			}
			if m.job {
				// A job cannot be resent datagram by datagram here: it
				// is dropped (TCP retransmits it), and if the kernel
				// refuses GSO itself, the endpoint cuts jobs from now on.
				if s.errno == unix.EIO || s.errno == unix.EINVAL {
					t.gso.Store(false)
					s.fallbacks++
				}
				s.fail(s.errno, dst, 1)
				for i++; i < nm && s.meta[i].first == m.first; i++ {
				}
				continue
			}
			if m.count > 1 && (s.errno == unix.EIO || s.errno == unix.EINVAL || s.errno == unix.EMSGSIZE) {
				// The kernel refused the GSO message. EIO/EINVAL: it
				// refuses GSO itself, so stop using it. EMSGSIZE: the
				// segment size exceeds the path MTU; resend singly and
				// let each datagram succeed or fail on its own.
				if s.errno != unix.EMSGSIZE {
					t.gso.Store(false)
				}
				s.fallbacks++
				noGSOUntil = m.first + m.count
				next = m.first
				break
			}
			s.fail(s.errno, dst, m.count)
			i++
		}
		s.release(nm)
		p = next
	}
	return true
}

// build turns pkts[p:] into at most BatchSize messages, grouping runs of
// equal-sized datagrams into GSO messages unless the group would start
// before noGSOUntil. It returns the message count and the next packet.
func (s *udpSender) build(pkts []link.Packet, p, noGSOUntil int) (nm, next int) {
	t := s.t
	useGSO := t.gso.Load()
	s.iovs = s.iovs[:0]
	s.jobHdrs = s.jobHdrs[:0] // the last build's messages are sent
	for nm < len(s.msgs) && p < len(pkts) {
		pk := &pkts[p]
		nameLen, err := t.putSockaddr(&s.addrs[nm], pk.Dst)
		if err != nil {
			if p >= s.scanned { // not counted by an earlier build
				if s.badDst == 0 {
					s.badErr, s.badFirst = err, pk.Dst
				}
				s.badDst++
			}
			p++
			continue
		}
		size := int(pk.Payload.Size())
		if pk.InnerMSS != 0 {
			k, ok := s.buildJob(pk, p, nm, nameLen, useGSO)
			if !ok {
				if k < 0 {
					break // no room left in this batch: next time
				}
				if p >= s.scanned {
					if s.badDst == 0 {
						s.badErr, s.badFirst = errBadJob, pk.Dst
					}
					s.badDst++
				}
			}
			nm += max(k, 0)
			p++
			continue
		}
		count, total := 1, size
		if useGSO && p >= noGSOUntil && size > 0 && size <= t.maxSeg {
			vl := pk.Payload.AsViewList()
			views := vl.Len()
			for q := p + 1; q < len(pkts) && count < gsoMaxSegments; q++ {
				pq := &pkts[q]
				sz := int(pq.Payload.Size())
				if sz == 0 || sz > size || total+sz > gsoMaxBytes ||
					pq.Dst != pk.Dst || pq.TOS != pk.TOS || pq.TTL != pk.TTL {
					break
				}
				vq := pq.Payload.AsViewList()
				if views += vq.Len(); views > maxIovPerMsg {
					break
				}
				count++
				total += sz
				if sz < size {
					break // a shorter segment ends the group
				}
			}
		}

		iovStart := len(s.iovs)
		for k := p; k < p+count; k++ {
			s.appendIovs(&pkts[k].Payload)
		}

		segSize := 0
		if count > 1 {
			segSize = size
		}
		s.putHeader(nm, pk, nameLen, segSize)
		s.meta[nm] = sendMeta{first: p, count: count, datagrams: count, bytes: total, iovStart: iovStart, iovN: len(s.iovs) - iovStart}
		nm++
		p += count
	}
	// s.iovs may have grown while building: point the messages at it now.
	for m := 0; m < nm; m++ {
		h := &s.msgs[m].Hdr
		if mt := &s.meta[m]; mt.iovN > 0 {
			h.Iov = &s.iovs[mt.iovStart]
		} else {
			h.Iov = nil
		}
		h.SetIovlen(s.meta[m].iovN)
	}
	s.scanned = max(s.scanned, p)
	return nm, p
}

// putHeader fills in message nm's address and control messages for pk:
// TOS, TTL and, when segSize is not zero, UDP_SEGMENT. The address is
// already in s.addrs[nm].
func (s *udpSender) putHeader(nm int, pk *link.Packet, nameLen uint32, segSize int) {
	t := s.t
	ctrl := s.ctrl[nm*sendCtrlSize : (nm+1)*sendCtrlSize]
	cl := 0
	d, n := putCmsg(ctrl, t.ipLevel, t.tosType, 4)
	binary.NativeEndian.PutUint32(d, uint32(pk.TOS))
	cl += n
	if pk.TTL != 0 {
		d, n = putCmsg(ctrl[cl:], t.ipLevel, t.ttlType, 4)
		binary.NativeEndian.PutUint32(d, uint32(pk.TTL))
		cl += n
	}
	if segSize != 0 {
		d, n = putCmsg(ctrl[cl:], unix.IPPROTO_UDP, unix.UDP_SEGMENT, 2)
		binary.NativeEndian.PutUint16(d, uint16(segSize))
		cl += n
	}
	h := &s.msgs[nm].Hdr
	h.Name = (*byte)(unsafe.Pointer(&s.addrs[nm]))
	h.Namelen = nameLen
	h.Control = &ctrl[0]
	h.SetControllen(cl)
	h.Flags = 0
}

// buildJob turns the UDP-tunnel job pk (pkts[p]) into UDP GSO messages
// from message nm on: the headers of every segment are rewritten from the
// job's and written into s.jobHdrs, its payload is gathered from the job's
// views. It returns the messages used and true; 0 and false if the job is
// malformed or cannot be sent as GSO messages (it is dropped); -1 and
// false if it needs more messages than are left in this batch.
func (s *udpSender) buildJob(pk *link.Packet, p, nm int, nameLen uint32, useGSO bool) (int, bool) {
	t := s.t
	size := int(pk.Payload.Size())
	var tmpl [tunneljob.MaxHdrLen]byte
	s.jobSlices = s.jobSlices.AppendViews(pk.Payload.AsViewList(), 0)
	defer func() {
		clear(s.jobSlices)
		s.jobSlices = s.jobSlices[:0]
	}()
	s.jobSlices.CopyOut(tmpl[:])
	j, ok := tunneljob.Parse(tmpl[:min(size, len(tmpl))], size, pk.InnerMSS)
	segSize := j.HdrLen + j.MSS
	if !ok || !useGSO || segSize > t.maxSeg {
		return 0, false
	}
	nseg := j.Segments()
	perMsg := min(gsoMaxSegments, gsoMaxBytes/segSize)
	msgs := (nseg + perMsg - 1) / perMsg
	if nm+msgs > len(s.msgs) {
		if nm == 0 {
			return 0, false // never fits
		}
		return -1, false
	}
	// The headers of all segments, in memory that stays put while the
	// messages point at it (a larger buffer replaces it for good; the old
	// one stays alive as long as iovecs point at it).
	need := len(s.jobHdrs) + nseg*j.HdrLen
	if need > cap(s.jobHdrs) {
		nb := make([]byte, len(s.jobHdrs), max(need, 2*cap(s.jobHdrs), 16<<10))
		copy(nb, s.jobHdrs)
		s.jobHdrs = nb
	}
	for m := 0; m < msgs; m++ {
		first := m * perMsg
		last := min(first+perMsg, nseg)
		iovStart := len(s.iovs)
		bytes := 0
		for idx := first; idx < last; idx++ {
			at := len(s.jobHdrs)
			s.jobHdrs = s.jobHdrs[:at+j.HdrLen]
			h := s.jobHdrs[at:]
			off, n := j.Segment(h, tmpl[:], s.jobSlices, idx)
			s.iovs = append(s.iovs, unix.Iovec{Base: &h[0]})
			s.iovs[len(s.iovs)-1].SetLen(j.HdrLen)
			s.jobSlices.Each(off, n, func(b []byte) {
				s.iovs = append(s.iovs, unix.Iovec{Base: &b[0]})
				s.iovs[len(s.iovs)-1].SetLen(len(b))
			})
			bytes += j.HdrLen + n
		}
		if m > 0 {
			s.addrs[nm+m] = s.addrs[nm]
		}
		seg := 0
		if last-first > 1 {
			seg = segSize
		}
		s.putHeader(nm+m, pk, nameLen, seg)
		s.meta[nm+m] = sendMeta{first: p, bytes: bytes, datagrams: last - first, iovStart: iovStart, iovN: len(s.iovs) - iovStart, job: true}
	}
	s.meta[nm+msgs-1].count = 1
	return msgs, true
}

// putCmsg writes a control message header for level/typ with datalen bytes
// of data at the start of b and returns the data slice and the space used.
func putCmsg(b []byte, level, typ int32, datalen int) ([]byte, int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = level
	h.Type = typ
	h.SetLen(unix.CmsgLen(datalen))
	off := unix.CmsgLen(0)
	return b[off : off+datalen], unix.CmsgSpace(datalen)
}

// appendIovs adds one iovec per non-empty view of b, without copying.
func (s *udpSender) appendIovs(b *buffer.Buffer) {
	vl := b.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		sl := v.AsSlice()
		if len(sl) == 0 {
			continue
		}
		s.iovs = append(s.iovs, unix.Iovec{Base: &sl[0]})
		s.iovs[len(s.iovs)-1].SetLen(len(sl))
	}
}

// release drops references to the caller's payload memory.
func (s *udpSender) release(nm int) {
	clear(s.iovs)
	for m := 0; m < nm; m++ {
		s.msgs[m].Hdr.Iov = nil
	}
}

// sendLoop sends msgs[s.i:s.n] (see mmsg.SendAll), recording a failure in
// s.errno and a full socket in s.blocked.
func (s *udpSender) sendLoop(fd uintptr, canWait bool) bool {
	done, blocked, errno := mmsg.SendAll(fd, s.msgs[:s.n], &s.i, canWait)
	s.blocked = s.blocked || blocked
	if errno != 0 {
		s.errno = errno
	}
	return done
}

// finishWrite updates the counters and forms WriteBatch's result.
func (t *Transport) finishWrite(s *udpSender) (int, error) {
	st := &t.stats
	sent := s.sent
	if s.datagrams > 0 {
		st.sent.Add(uint64(s.datagrams))
		st.bytesSent.Add(uint64(s.bytes))
	}
	if errs := s.errs + s.badDst; errs > 0 {
		st.sendErrs.Add(uint64(errs))
	}
	if s.gsoSends > 0 {
		st.gsoSends.Add(uint64(s.gsoSends))
	}
	if s.fallbacks > 0 {
		st.gsoFallbacks.Add(uint64(s.fallbacks))
	}
	err, dst := s.stopErr, s.stopDst
	if err == nil {
		err, dst = s.firstErr, s.firstErrDst
	}
	if err == nil && s.badErr != nil {
		err, dst = s.badErr, s.badFirst
	}
	// Drop references to errors and addresses until the next call.
	s.firstErr, s.stopErr, s.badErr = nil, nil, nil
	switch {
	case err == nil:
		return sent, nil
	case errors.Is(err, net.ErrClosed):
		return sent, err
	default:
		return sent, &net.OpError{Op: "write", Net: t.netName(), Source: net.UDPAddrFromAddrPort(t.local), Addr: net.UDPAddrFromAddrPort(dst), Err: os.NewSyscallError("sendmmsg", err)}
	}
}

func (t *Transport) netName() string {
	if t.cfg.v6 {
		return "udp6"
	}
	return "udp4"
}
