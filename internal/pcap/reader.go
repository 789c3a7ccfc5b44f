package pcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/netip"
	"os"
	"time"
)

// File-header magic numbers, as read with binary.BigEndian. A file written
// on a little-endian host shows the byte-swapped value.
const (
	rdMagicMicro        = 0xa1b2c3d4 // timestamps in microseconds
	rdMagicNano         = 0xa1b23c4d // timestamps in nanoseconds
	rdMagicMicroSwapped = 0xd4c3b2a1
	rdMagicNanoSwapped  = 0x4d3cb2a1

	rdFileHeaderLen   = 24
	rdRecordHeaderLen = 16

	// rdMaxRecordLen bounds the captured length of one record (or the size
	// of one pcapng block), so that a corrupt length field cannot make Next
	// allocate gigabytes. It is well above libpcap's own limit (256 KiB for
	// most link types).
	rdMaxRecordLen = 16 << 20
)

// pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html)
// block types and constants.
const (
	rdNGSectionHeader    = 0x0a0d0d0a // the same bytes in both byte orders
	rdNGByteOrder        = 0x1a2b3c4d // byte-order magic inside the section header
	rdNGByteOrderSwapped = 0x4d3c2b1a
	rdNGInterface        = 0x00000001
	rdNGPacketObs        = 0x00000002 // obsolete Packet Block
	rdNGSimplePacket     = 0x00000003
	rdNGEnhanced         = 0x00000006

	rdNGOptEnd      = 0
	rdNGOptTSResol  = 9  // if_tsresol
	rdNGOptTSOffset = 14 // if_tsoffset
)

// Reader reads packets from a capture file. It reads classic libpcap files
// (the format of tcpdump -w): either byte order, with microsecond (magic
// 0xa1b2c3d4) or nanosecond (0xa1b23c4d) timestamps. Because tshark and
// dumpcap write pcapng even to files named *.pcap, it also reads pcapng
// files (either byte order, several sections, Enhanced, Simple and obsolete
// Packet Blocks, if_tsresol and if_tsoffset), as long as every packet is
// on an interface of the same link type.
type Reader struct {
	r        *bufio.Reader
	order    binary.ByteOrder
	linkType uint32
	snapLen  uint32

	nano bool // classic: nanosecond timestamps

	ng     bool      // the file is pcapng
	ifaces []rdIface // pcapng: interfaces of the current section
}

// rdIface is a pcapng interface: its link type and timestamp unit.
type rdIface struct {
	linkType uint32
	snapLen  uint32
	pow2     bool   // timestamp unit is 2^-exp s, else 10^-exp s
	exp      uint8  // 0..63 for pow2, 0..19 otherwise
	div      uint64 // 10^exp when !pow2
	offset   int64  // if_tsoffset, seconds
}

// NewReader reads the file header from r (for pcapng: the section header
// and the blocks up to the first interface description) and returns a
// Reader positioned at the first packet. r is read through a buffer.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{r: bufio.NewReader(r)}
	magic, err := rd.r.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("pcap: reading file header: %w", rdUnexpected(err))
	}
	if binary.BigEndian.Uint32(magic) == rdNGSectionHeader {
		if err := rd.startNG(); err != nil {
			return nil, err
		}
		return rd, nil
	}
	var fh [rdFileHeaderLen]byte
	if _, err := io.ReadFull(rd.r, fh[:]); err != nil {
		return nil, fmt.Errorf("pcap: reading file header: %w", rdUnexpected(err))
	}
	switch magic := binary.BigEndian.Uint32(fh[0:4]); magic {
	case rdMagicMicro:
		rd.order = binary.BigEndian
	case rdMagicNano:
		rd.order, rd.nano = binary.BigEndian, true
	case rdMagicMicroSwapped:
		rd.order = binary.LittleEndian
	case rdMagicNanoSwapped:
		rd.order, rd.nano = binary.LittleEndian, true
	default:
		return nil, fmt.Errorf("pcap: unknown magic number %#08x", magic)
	}
	if major := rd.order.Uint16(fh[4:6]); major != 2 {
		return nil, fmt.Errorf("pcap: unsupported file format version %d.%d", major, rd.order.Uint16(fh[6:8]))
	}
	rd.snapLen = rd.order.Uint32(fh[16:20])
	// The upper bits of the link-type word may carry FCS information
	// (libpcap's LT_LINKTYPE mask keeps the low 26 bits).
	rd.linkType = rd.order.Uint32(fh[20:24]) & 0x03ffffff
	return rd, nil
}

// rdUnexpected turns io.EOF into io.ErrUnexpectedEOF: for reads that must
// not hit the end of the file.
func rdUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// LinkType returns the link-layer header type of the packets, e.g.
// LinkTypeEthernet. For pcapng it is the link type of the first interface,
// or 0 if the file describes no interface.
func (rd *Reader) LinkType() uint32 { return rd.linkType }

// SnapLen returns the snapshot length recorded in the file header (for
// pcapng: that of the first interface).
func (rd *Reader) SnapLen() uint32 { return rd.snapLen }

// Next returns the next packet's captured bytes and timestamp. The slice is
// newly allocated and owned by the caller. At the end of the file Next
// returns io.EOF; a file that ends inside a record gives io.ErrUnexpectedEOF
// (wrapped).
func (rd *Reader) Next() (data []byte, ts time.Time, err error) {
	if rd.ng {
		return rd.nextNG()
	}
	var hdr [rdRecordHeaderLen]byte
	if _, err := io.ReadFull(rd.r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, time.Time{}, io.EOF
		}
		return nil, time.Time{}, fmt.Errorf("pcap: reading record header: %w", rdUnexpected(err))
	}
	sec := rd.order.Uint32(hdr[0:4])
	frac := rd.order.Uint32(hdr[4:8])
	capLen := rd.order.Uint32(hdr[8:12])
	if capLen > rdMaxRecordLen {
		return nil, time.Time{}, fmt.Errorf("pcap: record length %d exceeds %d", capLen, rdMaxRecordLen)
	}
	data = make([]byte, capLen)
	if _, err := io.ReadFull(rd.r, data); err != nil {
		return nil, time.Time{}, fmt.Errorf("pcap: reading %d-byte record: %w", capLen, rdUnexpected(err))
	}
	nsec := int64(frac)
	if !rd.nano {
		nsec *= 1000
	}
	return data, time.Unix(int64(sec), nsec), nil
}

// startNG reads the section header block and every block up to the first
// interface description block, which gives the Reader its link type.
func (rd *Reader) startNG() error {
	rd.ng = true
	for {
		typ, body, err := rd.block()
		if err == io.EOF {
			return nil // no interface, hence no packet: Next returns io.EOF
		}
		if err != nil {
			return err
		}
		switch typ {
		case rdNGSectionHeader:
			if err := rd.section(body); err != nil {
				return err
			}
		case rdNGInterface:
			if err := rd.iface(body); err != nil {
				return err
			}
			rd.linkType, rd.snapLen = rd.ifaces[0].linkType, rd.ifaces[0].snapLen
			return nil
		case rdNGEnhanced, rdNGSimplePacket, rdNGPacketObs:
			return errors.New("pcap: pcapng packet block before any interface description")
		}
	}
}

// block reads one pcapng block and returns its type and body (without the
// type and the two length fields). At a clean end of file it returns io.EOF.
// A section header block switches the Reader's byte order.
func (rd *Reader) block() (typ uint32, body []byte, err error) {
	var h [12]byte
	if _, err := io.ReadFull(rd.r, h[:8]); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("pcap: reading pcapng block header: %w", rdUnexpected(err))
	}
	pre := 0 // body bytes already read
	if binary.BigEndian.Uint32(h[:4]) == rdNGSectionHeader {
		if _, err := io.ReadFull(rd.r, h[8:12]); err != nil {
			return 0, nil, fmt.Errorf("pcap: reading pcapng section header: %w", rdUnexpected(err))
		}
		switch binary.BigEndian.Uint32(h[8:12]) {
		case rdNGByteOrder:
			rd.order = binary.BigEndian
		case rdNGByteOrderSwapped:
			rd.order = binary.LittleEndian
		default:
			return 0, nil, fmt.Errorf("pcap: bad pcapng byte-order magic %#x", h[8:12])
		}
		pre = 4
	} else if rd.order == nil {
		return 0, nil, errors.New("pcap: pcapng file does not start with a section header")
	}
	typ = rd.order.Uint32(h[0:4])
	total := rd.order.Uint32(h[4:8])
	if total < uint32(12+pre) || total%4 != 0 || total > rdMaxRecordLen {
		return 0, nil, fmt.Errorf("pcap: bad pcapng block length %d (type %#x)", total, typ)
	}
	body = make([]byte, total-12)
	copy(body, h[8:8+pre])
	if _, err := io.ReadFull(rd.r, body[pre:]); err != nil {
		return 0, nil, fmt.Errorf("pcap: reading %d-byte pcapng block: %w", total, rdUnexpected(err))
	}
	var trailer [4]byte
	if _, err := io.ReadFull(rd.r, trailer[:]); err != nil {
		return 0, nil, fmt.Errorf("pcap: reading pcapng block trailer: %w", rdUnexpected(err))
	}
	if t := rd.order.Uint32(trailer[:]); t != total {
		return 0, nil, fmt.Errorf("pcap: pcapng block length %d does not match its trailer %d", total, t)
	}
	return typ, body, nil
}

// section handles a section header block body: a new section forgets the
// interfaces of the previous one.
func (rd *Reader) section(body []byte) error {
	if len(body) < 16 {
		return errors.New("pcap: short pcapng section header")
	}
	if major := rd.order.Uint16(body[4:6]); major != 1 {
		return fmt.Errorf("pcap: unsupported pcapng version %d.%d", major, rd.order.Uint16(body[6:8]))
	}
	rd.ifaces = rd.ifaces[:0]
	return nil
}

// iface parses an interface description block body.
func (rd *Reader) iface(body []byte) error {
	if len(body) < 8 {
		return errors.New("pcap: short pcapng interface description")
	}
	ifc := rdIface{
		linkType: uint32(rd.order.Uint16(body[0:2])),
		snapLen:  rd.order.Uint32(body[4:8]),
		exp:      6,
		div:      1e6,
	}
	for opts := body[8:]; len(opts) >= 4; {
		code, n := rd.order.Uint16(opts[0:2]), int(rd.order.Uint16(opts[2:4]))
		if code == rdNGOptEnd {
			break
		}
		padded := (n + 3) &^ 3
		if 4+padded > len(opts) {
			return errors.New("pcap: pcapng interface option overruns its block")
		}
		val := opts[4 : 4+n]
		switch {
		case code == rdNGOptTSResol && n == 1:
			ifc.pow2, ifc.exp = val[0]&0x80 != 0, val[0]&0x7f
			if ifc.pow2 && ifc.exp > 63 || !ifc.pow2 && ifc.exp > 19 {
				return fmt.Errorf("pcap: unsupported pcapng timestamp resolution %#x", val[0])
			}
			ifc.div = 1
			for range ifc.exp {
				ifc.div *= 10
			}
		case code == rdNGOptTSOffset && n == 8:
			ifc.offset = int64(rd.order.Uint64(val))
		}
		opts = opts[4+padded:]
	}
	rd.ifaces = append(rd.ifaces, ifc)
	return nil
}

// time converts a pcapng timestamp in the interface's unit.
func (ifc *rdIface) time(ts uint64) time.Time {
	var sec, nsec uint64
	if ifc.pow2 {
		n := uint(ifc.exp)
		sec = ts >> n
		hi, lo := bits.Mul64(ts&(1<<n-1), 1e9)
		nsec = hi<<(64-n) | lo>>n
	} else {
		sec = ts / ifc.div
		hi, lo := bits.Mul64(ts%ifc.div, 1e9)
		nsec, _ = bits.Div64(hi, lo, ifc.div)
	}
	return time.Unix(int64(sec)+ifc.offset, int64(nsec))
}

// nextNG returns the next packet of a pcapng file.
func (rd *Reader) nextNG() ([]byte, time.Time, error) {
	for {
		typ, body, err := rd.block()
		if err != nil {
			return nil, time.Time{}, err
		}
		var id int
		var ts uint64
		var data []byte
		switch typ {
		case rdNGSectionHeader:
			if err := rd.section(body); err != nil {
				return nil, time.Time{}, err
			}
			continue
		case rdNGInterface:
			if err := rd.iface(body); err != nil {
				return nil, time.Time{}, err
			}
			continue
		case rdNGEnhanced, rdNGPacketObs:
			if len(body) < 20 {
				return nil, time.Time{}, errors.New("pcap: short pcapng packet block")
			}
			if typ == rdNGEnhanced {
				id = int(rd.order.Uint32(body[0:4]))
			} else {
				id = int(rd.order.Uint16(body[0:2]))
			}
			ts = uint64(rd.order.Uint32(body[4:8]))<<32 | uint64(rd.order.Uint32(body[8:12]))
			capLen := rd.order.Uint32(body[12:16])
			if uint64(capLen) > uint64(len(body)-20) {
				return nil, time.Time{}, fmt.Errorf("pcap: pcapng packet length %d overruns its block", capLen)
			}
			data = body[20 : 20+capLen : 20+capLen]
		case rdNGSimplePacket:
			if len(body) < 4 {
				return nil, time.Time{}, errors.New("pcap: short pcapng simple packet block")
			}
			data = body[4:]
			if orig := rd.order.Uint32(body[0:4]); uint64(orig) < uint64(len(data)) {
				data = data[:orig] // drop the padding
			}
			if len(rd.ifaces) > 0 && rd.ifaces[0].snapLen != 0 && uint64(len(data)) > uint64(rd.ifaces[0].snapLen) {
				data = data[:rd.ifaces[0].snapLen]
			}
		default:
			continue // statistics, name resolution, comments, ...
		}
		if id >= len(rd.ifaces) {
			return nil, time.Time{}, fmt.Errorf("pcap: pcapng packet on undeclared interface %d", id)
		}
		ifc := &rd.ifaces[id]
		if ifc.linkType != rd.linkType {
			return nil, time.Time{}, fmt.Errorf("pcap: pcapng interface %d has link type %d, the file's first interface %d", id, ifc.linkType, rd.linkType)
		}
		if typ == rdNGSimplePacket {
			return data, time.Time{}, nil // no timestamp
		}
		return data, ifc.time(ts), nil
	}
}

// ReadFile reads every packet of the capture file at path.
func ReadFile(path string) (linkType uint32, packets [][]byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	rd, err := NewReader(f)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	for {
		data, _, err := rd.Next()
		if err == io.EOF {
			return rd.LinkType(), packets, nil
		}
		if err != nil {
			return rd.LinkType(), packets, fmt.Errorf("%s: packet %d: %w", path, len(packets)+1, err)
		}
		packets = append(packets, data)
	}
}

// Link types that UDPPayload accepts besides those declared in pcap.go.
const (
	rdLinkTypeIPv4 = 228 // LINKTYPE_IPV4: raw IPv4
	rdLinkTypeIPv6 = 229 // LINKTYPE_IPV6: raw IPv6
)

// EtherTypes seen by UDPPayload.
const (
	rdEtherTypeIPv4  = 0x0800
	rdEtherTypeIPv6  = 0x86dd
	rdEtherTypeVLAN  = 0x8100 // 802.1Q
	rdEtherTypeQinQ  = 0x88a8 // 802.1ad
	rdEtherTypeQinQ2 = 0x9100 // pre-standard QinQ
)

// UDPPayload locates the UDP payload of a captured frame and returns the
// outer UDP source and destination. It understands the link types
// LinkTypeEthernet (with any number of 802.1Q/802.1ad tags),
// LinkTypeLinuxSLL and LinkTypeRaw (plus LINKTYPE_IPV4/IPV6), an IPv4
// header with options, or an IPv6 header directly followed by UDP
// (extension headers are not walked). It returns ok == false for anything
// else: other protocols, IPv4 fragments (other than a complete datagram),
// IPv6 jumbograms, and frames truncated by the capture's snap length.
// The payload is limited by the UDP length field, so link-layer padding is
// excluded; it aliases frame.
func UDPPayload(linkType uint32, frame []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	var ip []byte
	switch linkType {
	case LinkTypeEthernet:
		if len(frame) < 14 {
			return
		}
		et := binary.BigEndian.Uint16(frame[12:14])
		rest := frame[14:]
		for et == rdEtherTypeVLAN || et == rdEtherTypeQinQ || et == rdEtherTypeQinQ2 {
			if len(rest) < 4 {
				return
			}
			et = binary.BigEndian.Uint16(rest[2:4])
			rest = rest[4:]
		}
		if et != rdEtherTypeIPv4 && et != rdEtherTypeIPv6 {
			return
		}
		ip = rest
	case LinkTypeLinuxSLL:
		// 2 packet type, 2 ARPHRD, 2 address length, 8 address, 2 protocol.
		if len(frame) < 16 {
			return
		}
		if et := binary.BigEndian.Uint16(frame[14:16]); et != rdEtherTypeIPv4 && et != rdEtherTypeIPv6 {
			return
		}
		ip = frame[16:]
	case LinkTypeRaw, rdLinkTypeIPv4, rdLinkTypeIPv6:
		ip = frame
	default:
		return
	}
	if len(ip) < 1 {
		return
	}
	var srcIP, dstIP netip.Addr
	var udp []byte
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || total < ihl || total > len(ip) {
			return
		}
		// MF set or a non-zero fragment offset: not a whole datagram.
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 || ip[9] != 17 {
			return
		}
		srcIP, dstIP = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[ihl:total]
	case 6:
		if len(ip) < 40 {
			return
		}
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		if ip[6] != 17 || plen == 0 || 40+plen > len(ip) {
			return
		}
		srcIP, dstIP = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[40 : 40+plen]
	default:
		return
	}
	if len(udp) < 8 {
		return
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < 8 || ulen > len(udp) {
		return
	}
	src = netip.AddrPortFrom(srcIP, binary.BigEndian.Uint16(udp[0:2]))
	dst = netip.AddrPortFrom(dstIP, binary.BigEndian.Uint16(udp[2:4]))
	return src, dst, udp[8:ulen:ulen], true
}
