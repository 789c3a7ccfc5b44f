// Package tunneljob cuts UDP-tunnel segmentation jobs (link.Packet with
// InnerMSS: a Geneve header and an inner TCP super-packet whose checksum is
// partial) into the Geneve datagrams they stand for, for transports that
// send the segments themselves (a kernel UDP socket with UDP GSO, an
// AF_PACKET socket with UDP_L4 virtio-net headers): every
// segment's headers are a copy of the job's, rewritten by
// link.SegmentHeader, and its TCP checksum is finished over its own
// payload. The payload is never copied: transports gather it from the
// job's views.
package tunneljob

import (
	"encoding/binary"

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
	return j, true
}

// Segments returns how many segments the job is cut into.
func (j *Job) Segments() int { return (j.DataLen + j.MSS - 1) / j.MSS }

// Segment writes the headers of segment idx into dst (HdrLen bytes) from
// tmpl (the job's first HdrLen bytes) and finishes its TCP checksum; pkt is
// the whole job. It returns where the segment's payload lies in the job.
func (j *Job) Segment(dst, tmpl []byte, pkt link.Slices, idx int) (off, n int) {
	off = idx * j.MSS
	n = min(j.MSS, j.DataLen-off)
	copy(dst[:j.HdrLen], tmpl[:j.HdrLen])
	h := dst[:j.HdrLen]
	pseudo := link.SegmentHeader(h, j.L3, j.L4, link.ProtoTCP, idx, off, n, off+n == j.DataLen)
	link.FinishChecksum(h[j.L4:], link.ProtoTCP, pseudo, pkt.Checksum(j.HdrLen+off, n))
	return j.HdrLen + off, n
}
