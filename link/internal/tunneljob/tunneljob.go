// Package tunneljob cuts UDP-tunnel segmentation jobs (link.Packet with
// InnerMSS: a Geneve header and an inner TCP super-packet whose checksum is
// partial) into the Geneve datagrams they stand for, for transports that
// send the segments themselves (a kernel UDP socket with UDP GSO, an
// AF_PACKET socket with UDP_L4 virtio-net headers): every
// segment's headers are a copy of the job's with the fields that differ
// rewritten, and its TCP checksum is finished over its own payload. The
// sums of the header bytes that every segment shares are taken once per
// job, so a segment's IPv4 header checksum, pseudo-header sum and TCP
// header sum are a few additions (RFC 1624). The payload is never copied:
// transports gather it from the job's views.
package tunneljob

import (
	"encoding/binary"

	"github.com/gnv-project/gnv/internal/csum"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
)

// MaxHdrLen bounds the headers copied in front of every segment: Geneve
// with the largest options (260), an Ethernet header with two VLAN tags
// (22), IPv6 with extension headers and TCP with options.
const MaxHdrLen = 640

// Geneve protocol types the jobs carry.
const (
	protoEthernet = 0x6558
	protoIPv4     = 0x0800
	protoIPv6     = 0x86dd
	etherVLAN     = 0x8100
	etherQinQ     = 0x88a8
)

// Job is the layout of one job.
type Job struct {
	// HdrLen is how many leading bytes every segment repeats: the Geneve
	// header and options, the inner link header (L2), the inner IP and
	// TCP headers.
	HdrLen int
	// L3 and L4 are the offsets of the inner IP and TCP headers.
	L3, L4 int
	// MSS is the TCP payload of every segment but the last.
	MSS int
	// DataLen is the TCP payload of the whole job.
	DataLen int

	// The job's header fields that segments change, and the sums of the
	// header bytes they share (see sums).
	v4      bool
	id      uint16 // IPv4 identification
	seq     uint32 // TCP sequence number
	flags   uint16 // TCP data offset and flags
	ipSum   uint16 // IPv4 header without length, ID and checksum
	pseudo  uint16 // pseudo-header without the TCP length
	tcpSum  uint16 // TCP header without sequence number, flags and checksum
	ipExtra int    // IPv6: extension header bytes before TCP
}

// Parse finds the layout of a job of size bytes whose first bytes are hdr
// (at least the headers; a copy, say) and whose segments carry mss bytes.
// It reports false if the headers do not parse or the inner packet is not
// TCP.
func Parse(hdr []byte, size int, mss uint16) (Job, bool) {
	var j Job
	if len(hdr) < 8 || mss == 0 {
		return j, false
	}
	l3 := 8 + int(hdr[0]&0x3f)*4
	switch binary.BigEndian.Uint16(hdr[2:4]) {
	case protoEthernet:
		l3 += 14
		if len(hdr) < l3 {
			return j, false
		}
		et := binary.BigEndian.Uint16(hdr[l3-2:])
		for et == etherVLAN || et == etherQinQ {
			l3 += 4
			if len(hdr) < l3 {
				return j, false
			}
			et = binary.BigEndian.Uint16(hdr[l3-2:])
		}
		if et != protoIPv4 && et != protoIPv6 {
			return j, false
		}
	case protoIPv4, protoIPv6:
	default:
		return j, false
	}
	if len(hdr) < l3 {
		return j, false
	}
	ip, ok := frame.ParseIP(hdr[l3:], size-l3)
	if !ok || ip.Fragment || ip.Proto != frame.ProtoTCP || ip.L4Len == 0 || l3+ip.TotalLen != size {
		return j, false
	}
	j = Job{HdrLen: l3 + ip.HdrLen + ip.L4Len, L3: l3, L4: l3 + ip.HdrLen, MSS: int(mss)}
	j.DataLen = size - j.HdrLen
	if j.HdrLen > MaxHdrLen || j.DataLen <= 0 {
		return Job{}, false
	}
	j.sums(hdr)
	return j, true
}

// sums takes, from the job's headers hdr, the fields that differ between
// segments and the ones' complement sums of the bytes that do not. Zeroed
// fields add nothing to a sum, and the order of the additions does not
// change it, so a segment's sums are these plus its own fields.
func (j *Job) sums(hdr []byte) {
	ip, th := hdr[j.L3:j.L4], hdr[j.L4:j.HdrLen]
	j.v4 = ip[0]>>4 == 4
	if j.v4 {
		j.id = binary.BigEndian.Uint16(ip[4:6])
		j.ipSum = csum.Checksum(ip[12:], csum.Checksum(ip[6:10], csum.Checksum(ip[0:2], 0)))
		j.pseudo = csum.Checksum(ip[12:20], link.ProtoTCP)
	} else {
		j.ipExtra = len(ip) - 40
		j.pseudo = csum.Checksum(ip[8:40], link.ProtoTCP)
	}
	j.seq = binary.BigEndian.Uint32(th[4:8])
	j.flags = binary.BigEndian.Uint16(th[12:14])
	j.tcpSum = csum.Checksum(th[18:], csum.Checksum(th[14:16], csum.Checksum(th[0:4], csum.Checksum(th[8:12], 0))))
}

// Segments returns how many segments the job is cut into.
func (j *Job) Segments() int { return (j.DataLen + j.MSS - 1) / j.MSS }

// Segment writes the headers of segment idx into dst (HdrLen bytes) from
// tmpl (the job's first HdrLen bytes, the same as given to Parse, whose
// sums it uses) and finishes its TCP checksum; pkt is the whole job. It
// returns where the segment's payload lies in the job.
func (j *Job) Segment(dst, tmpl []byte, pkt link.Slices, idx int) (off, n int) {
	off = idx * j.MSS
	n = min(j.MSS, j.DataLen-off)
	copy(dst[:j.HdrLen], tmpl[:j.HdrLen])
	ip, th := dst[j.L3:j.L4], dst[j.L4:j.HdrLen]
	tcpLen := uint16(len(th) + n)
	if j.v4 {
		// Each segment takes the next IPv4 ID, as Linux's GSO does.
		total, id := uint16(len(ip))+tcpLen, j.id+uint16(idx)
		binary.BigEndian.PutUint16(ip[2:4], total)
		binary.BigEndian.PutUint16(ip[4:6], id)
		binary.BigEndian.PutUint16(ip[10:12], ^csum.Combine(csum.Combine(j.ipSum, total), id))
	} else {
		binary.BigEndian.PutUint16(ip[4:6], uint16(j.ipExtra)+tcpLen)
	}
	seq := j.seq + uint32(off)
	flags := j.flags&0xff00 | uint16(link.SegmentTCPFlags(uint8(j.flags), idx, off+n == j.DataLen))
	binary.BigEndian.PutUint32(th[4:8], seq)
	binary.BigEndian.PutUint16(th[12:14], flags)
	sum := csum.Combine(csum.Combine(j.tcpSum, csum.Combine(j.pseudo, tcpLen)),
		csum.Combine(csum.Combine(uint16(seq>>16), uint16(seq)), flags))
	sum = csum.Combine(sum, pkt.Checksum(j.HdrLen+off, n))
	binary.BigEndian.PutUint16(th[link.TCPChecksumOffset:], ^sum)
	return j.HdrLen + off, n
}
