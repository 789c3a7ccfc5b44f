package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readerSharedDir returns the shared reference folder (../shared from the
// project root, i.e. ../../../shared from this package), or skips the test.
func readerSharedDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared")
	if _, err := os.Stat(filepath.Join(dir, "vectors")); err != nil {
		t.Skipf("shared reference folder not found at %s (expected ../shared from the project root): %v", dir, err)
	}
	return dir
}

// readerTestFile builds a classic pcap file in memory.
func readerTestFile(order binary.ByteOrder, nano bool, linkType uint32, recs [][]byte, ts []time.Time) []byte {
	var b bytes.Buffer
	magic := uint32(rdMagicMicro)
	if nano {
		magic = rdMagicNano
	}
	hdr := make([]byte, rdFileHeaderLen)
	order.PutUint32(hdr[0:], magic)
	order.PutUint16(hdr[4:], 2)
	order.PutUint16(hdr[6:], 4)
	order.PutUint32(hdr[16:], 65535)
	order.PutUint32(hdr[20:], linkType)
	b.Write(hdr)
	for i, r := range recs {
		rh := make([]byte, rdRecordHeaderLen)
		frac := ts[i].Nanosecond()
		if !nano {
			frac /= 1000
		}
		order.PutUint32(rh[0:], uint32(ts[i].Unix()))
		order.PutUint32(rh[4:], uint32(frac))
		order.PutUint32(rh[8:], uint32(len(r)))
		order.PutUint32(rh[12:], uint32(len(r)))
		b.Write(rh)
		b.Write(r)
	}
	return b.Bytes()
}

func TestReaderByteOrdersAndResolutions(t *testing.T) {
	recs := [][]byte{{1, 2, 3}, {}, bytes.Repeat([]byte{0xab}, 1500)}
	ts := []time.Time{
		time.Unix(1422828273, 817203000),
		time.Unix(1422828274, 123456789),
		time.Unix(0, 0),
	}
	for _, tc := range []struct {
		name  string
		order binary.ByteOrder
		nano  bool
	}{
		{"little-micro", binary.LittleEndian, false},
		{"big-micro", binary.BigEndian, false},
		{"little-nano", binary.LittleEndian, true},
		{"big-nano", binary.BigEndian, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := readerTestFile(tc.order, tc.nano, LinkTypeRaw, recs, ts)
			rd, err := NewReader(bytes.NewReader(file))
			if err != nil {
				t.Fatal(err)
			}
			if rd.LinkType() != LinkTypeRaw {
				t.Errorf("LinkType = %d, want %d", rd.LinkType(), LinkTypeRaw)
			}
			if rd.SnapLen() != 65535 {
				t.Errorf("SnapLen = %d, want 65535", rd.SnapLen())
			}
			for i, want := range recs {
				data, got, err := rd.Next()
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if !bytes.Equal(data, want) {
					t.Errorf("record %d: data %x, want %x", i, data, want)
				}
				wantTS := ts[i]
				if !tc.nano {
					wantTS = wantTS.Truncate(time.Microsecond)
				}
				if !got.Equal(wantTS) {
					t.Errorf("record %d: ts %v, want %v", i, got, wantTS)
				}
			}
			if _, _, err := rd.Next(); err != io.EOF {
				t.Errorf("after last record: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	good := readerTestFile(binary.LittleEndian, false, LinkTypeEthernet, [][]byte{{1, 2, 3, 4}}, []time.Time{time.Unix(1, 0)})

	if _, err := NewReader(bytes.NewReader(good[:10])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short file header: err = %v, want ErrUnexpectedEOF", err)
	}
	if _, err := NewReader(bytes.NewReader(nil)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("empty file: err = %v, want ErrUnexpectedEOF", err)
	}
	bad := bytes.Clone(good)
	copy(bad, []byte{0, 0, 0, 0})
	if _, err := NewReader(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("bad magic: err = %v", err)
	}
	ver := bytes.Clone(good)
	binary.LittleEndian.PutUint16(ver[4:], 1)
	if _, err := NewReader(bytes.NewReader(ver)); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("version 1.x: err = %v", err)
	}

	// A file cut inside a record header or inside the data.
	for _, cut := range []int{rdFileHeaderLen + 5, len(good) - 1} {
		rd, err := NewReader(bytes.NewReader(good[:cut]))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := rd.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: err = %v, want ErrUnexpectedEOF", cut, err)
		}
	}

	// An absurd record length is refused before allocating.
	huge := bytes.Clone(good)
	binary.LittleEndian.PutUint32(huge[rdFileHeaderLen+8:], 0xffffffff)
	rd, err := NewReader(bytes.NewReader(huge))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rd.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("huge record: err = %v, want a length error", err)
	}

	// The FCS bits above the link type are masked off.
	fcs := bytes.Clone(good)
	binary.LittleEndian.PutUint32(fcs[20:], 1<<28|LinkTypeEthernet)
	if rd, err := NewReader(bytes.NewReader(fcs)); err != nil || rd.LinkType() != LinkTypeEthernet {
		t.Errorf("link type with FCS bits: %v", err)
	}

	if _, _, err := ReadFile(filepath.Join(t.TempDir(), "missing.pcap")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: err = %v", err)
	}
}

// readerTestOrder is binary.LittleEndian or binary.BigEndian.
type readerTestOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// readerTestBlock appends one pcapng block.
func readerTestBlock(b []byte, order readerTestOrder, typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	total := uint32(12 + len(body))
	b = order.AppendUint32(b, typ)
	b = order.AppendUint32(b, total)
	b = append(b, body...)
	return order.AppendUint32(b, total)
}

func readerTestSHB(b []byte, order readerTestOrder) []byte {
	body := order.AppendUint32(nil, rdNGByteOrder)
	body = order.AppendUint16(body, 1)
	body = order.AppendUint16(body, 0)
	body = order.AppendUint64(body, ^uint64(0)) // section length unknown
	return readerTestBlock(b, order, rdNGSectionHeader, body)
}

// readerTestIDB appends an interface description; tsresol < 0 leaves the
// option out (default microseconds).
func readerTestIDB(b []byte, order readerTestOrder, link uint16, tsresol int, tsoffset int64) []byte {
	body := order.AppendUint16(nil, link)
	body = order.AppendUint16(body, 0)
	body = order.AppendUint32(body, 0) // snaplen 0: unlimited
	body = order.AppendUint16(body, 2) // if_name, 3 bytes + padding
	body = order.AppendUint16(body, 3)
	body = append(body, 'e', 't', 'h', 0)
	if tsresol >= 0 {
		body = order.AppendUint16(body, rdNGOptTSResol)
		body = order.AppendUint16(body, 1)
		body = append(body, byte(tsresol), 0, 0, 0)
	}
	if tsoffset != 0 {
		body = order.AppendUint16(body, rdNGOptTSOffset)
		body = order.AppendUint16(body, 8)
		body = order.AppendUint64(body, uint64(tsoffset))
	}
	body = order.AppendUint32(body, 0) // opt_endofopt
	return readerTestBlock(b, order, rdNGInterface, body)
}

func readerTestEPB(b []byte, order readerTestOrder, iface uint32, ts uint64, data []byte) []byte {
	body := order.AppendUint32(nil, iface)
	body = order.AppendUint32(body, uint32(ts>>32))
	body = order.AppendUint32(body, uint32(ts))
	body = order.AppendUint32(body, uint32(len(data)))
	body = order.AppendUint32(body, uint32(len(data)))
	body = append(body, data...)
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	body = order.AppendUint16(body, 1) // opt_comment
	body = order.AppendUint16(body, 2)
	body = append(body, 'h', 'i', 0, 0)
	body = order.AppendUint32(body, 0)
	return readerTestBlock(b, order, rdNGEnhanced, body)
}

func TestReaderPcapng(t *testing.T) {
	for _, order := range []readerTestOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(order.String(), func(t *testing.T) {
			var f []byte
			f = readerTestSHB(f, order)
			f = readerTestBlock(f, order, 0x00000004, make([]byte, 8))  // name resolution: skipped
			f = readerTestIDB(f, order, LinkTypeEthernet, -1, 0)        // microseconds
			f = readerTestIDB(f, order, LinkTypeEthernet, 9, 0)         // nanoseconds
			f = readerTestIDB(f, order, LinkTypeEthernet, 0x80|10, 100) // 2^-10 s, offset 100 s
			f = readerTestEPB(f, order, 0, 1422828273817203, []byte{1, 2, 3})
			f = readerTestEPB(f, order, 1, 1422828273123456789, []byte{4, 5, 6, 7, 8})
			f = readerTestEPB(f, order, 2, 5<<10|512, []byte{9})
			spb := order.AppendUint32(nil, 2)
			spb = append(spb, 0xaa, 0xbb, 0, 0)
			f = readerTestBlock(f, order, rdNGSimplePacket, spb)
			f = readerTestBlock(f, order, 0x00000005, make([]byte, 20)) // interface statistics: skipped
			// A second section in the other byte order, with a fresh interface list.
			other := readerTestOrder(binary.BigEndian)
			if order == binary.BigEndian {
				other = binary.LittleEndian
			}
			f = readerTestSHB(f, other)
			f = readerTestIDB(f, other, LinkTypeEthernet, 3, 0) // milliseconds
			f = readerTestEPB(f, other, 0, 1500, []byte{0xcc})

			rd, err := NewReader(bytes.NewReader(f))
			if err != nil {
				t.Fatal(err)
			}
			if rd.LinkType() != LinkTypeEthernet {
				t.Errorf("LinkType = %d", rd.LinkType())
			}
			want := []struct {
				data []byte
				ts   time.Time
			}{
				{[]byte{1, 2, 3}, time.Unix(1422828273, 817203000)},
				{[]byte{4, 5, 6, 7, 8}, time.Unix(1422828273, 123456789)},
				{[]byte{9}, time.Unix(105, 500000000)},
				{[]byte{0xaa, 0xbb}, time.Time{}},
				{[]byte{0xcc}, time.Unix(1, 500000000)},
			}
			for i, w := range want {
				data, ts, err := rd.Next()
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				if !bytes.Equal(data, w.data) || !ts.Equal(w.ts) {
					t.Errorf("packet %d: %x at %v, want %x at %v", i, data, ts, w.data, w.ts)
				}
			}
			if _, _, err := rd.Next(); err != io.EOF {
				t.Errorf("at the end: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderPcapngErrors(t *testing.T) {
	le := binary.LittleEndian
	shb := readerTestSHB(nil, le)
	idb := readerTestIDB(nil, le, LinkTypeEthernet, -1, 0)
	epb := readerTestEPB(nil, le, 0, 0, []byte{1, 2, 3, 4})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	// Errors from NewReader.
	badOrder := bytes.Clone(shb)
	copy(badOrder[8:], []byte{1, 2, 3, 4})
	badTrailer := cat(shb, idb)
	badTrailer[len(badTrailer)-1] ^= 0xff
	epbFirst := cat(shb, epb)
	for name, f := range map[string][]byte{
		"byte-order magic":        badOrder,
		"trailer mismatch":        badTrailer,
		"packet before interface": epbFirst,
		"cut section header":      shb[:10],
		"cut interface":           cat(shb, idb[:len(idb)-2]),
	} {
		if _, err := NewReader(bytes.NewReader(f)); err == nil {
			t.Errorf("%s: NewReader succeeded", name)
		}
	}

	// No interface at all: no packets.
	rd, err := NewReader(bytes.NewReader(shb))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rd.Next(); err != io.EOF || rd.LinkType() != 0 {
		t.Errorf("section without interfaces: err = %v, link type %d", err, rd.LinkType())
	}

	// Errors from Next.
	wrongIface := readerTestEPB(nil, le, 1, 0, []byte{1})
	otherLink := readerTestIDB(nil, le, LinkTypeRaw, -1, 0)
	overrun := bytes.Clone(epb)
	le.PutUint32(overrun[8+12:], 1000)
	for name, f := range map[string][]byte{
		"undeclared interface": cat(shb, idb, wrongIface),
		"mixed link types":     cat(shb, idb, otherLink, readerTestEPB(nil, le, 1, 0, []byte{1})),
		"caplen overrun":       cat(shb, idb, overrun),
		"cut packet":           cat(shb, idb, epb[:len(epb)-4]),
	} {
		rd, err := NewReader(bytes.NewReader(f))
		if err != nil {
			t.Fatalf("%s: NewReader: %v", name, err)
		}
		if _, _, err := rd.Next(); err == nil || err == io.EOF {
			t.Errorf("%s: Next: err = %v, want an error", name, err)
		}
	}
}

func TestReaderReadFileShared(t *testing.T) {
	dir := readerSharedDir(t)
	for _, tc := range []struct {
		file     string
		link     uint32
		n        int
		src, dst netip.Addr
	}{
		// Counts from feature-table.md §4.1 and peers/README.md.
		{"vectors/tcpdump-geneve.pcap", LinkTypeEthernet, 39, netip.MustParseAddr("20.0.0.1"), netip.MustParseAddr("20.0.0.2")},
		{"vectors/tcpdump-geneve-gcp.pcap", LinkTypeEthernet, 1, netip.MustParseAddr("192.168.100.254"), netip.MustParseAddr("192.168.100.3")},
		{"peers/ovs-geneve-sample.pcap", LinkTypeEthernet, 21, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")},
		{"peers/ovs-geneve-ipv6-sample.pcap", LinkTypeEthernet, 8, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")},
		{"peers/nonovs-probe-v4.pcap", LinkTypeEthernet, 25, netip.Addr{}, netip.Addr{}},
		{"peers/nonovs-probe-v6.pcap", LinkTypeEthernet, 30, netip.Addr{}, netip.Addr{}},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			link, pkts, err := ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if link != tc.link {
				t.Errorf("link type %d, want %d", link, tc.link)
			}
			if len(pkts) != tc.n {
				t.Errorf("%d packets, want %d", len(pkts), tc.n)
			}
			for i, p := range pkts {
				src, dst, payload, ok := UDPPayload(link, p)
				if !ok {
					t.Errorf("packet %d: no UDP payload found", i+1)
					continue
				}
				if src.Port() != 6081 && dst.Port() != 6081 {
					t.Errorf("packet %d: ports %d > %d, want one of them 6081", i+1, src.Port(), dst.Port())
				}
				if len(payload) < 8 {
					t.Errorf("packet %d: payload of %d bytes", i+1, len(payload))
				}
				if tc.src.IsValid() {
					a, b := src.Addr(), dst.Addr()
					if !(a == tc.src && b == tc.dst) && !(a == tc.dst && b == tc.src) {
						t.Errorf("packet %d: %v > %v, want between %v and %v", i+1, src, dst, tc.src, tc.dst)
					}
				}
			}
		})
	}
}

// readerTestUDP builds a UDP header plus payload.
func readerTestUDP(sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(u, payload...)
}

// readerTestIPv4 builds an IPv4 header with optLen bytes of options (NOPs).
func readerTestIPv4(proto byte, optLen int, l4 []byte) []byte {
	ihl := 20 + optLen
	ip := make([]byte, ihl, ihl+len(l4))
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(l4)))
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	for i := 20; i < ihl; i++ {
		ip[i] = 1
	}
	return append(ip, l4...)
}

func readerTestIPv6(next byte, l4 []byte) []byte {
	ip := make([]byte, 40, 40+len(l4))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = next
	ip[7] = 64
	a, b := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8::2").As16()
	copy(ip[8:], a[:])
	copy(ip[24:], b[:])
	return append(ip, l4...)
}

func readerTestEther(etherTypes []uint16, l3 []byte) []byte {
	f := make([]byte, 12)
	for i, et := range etherTypes {
		f = binary.BigEndian.AppendUint16(f, et)
		if i < len(etherTypes)-1 {
			f = append(f, 0, 5) // TCI: VLAN 5
		}
	}
	return append(f, l3...)
}

func TestUDPPayload(t *testing.T) {
	payload := []byte("geneve!!")
	udp := readerTestUDP(1234, 6081, payload)
	v4 := readerTestIPv4(17, 0, udp)
	v4opts := readerTestIPv4(17, 8, udp)
	v6 := readerTestIPv6(17, udp)
	sll := append([]byte{0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00}, v4...)
	sll6 := append([]byte{0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x86, 0xdd}, v6...)

	frag := bytes.Clone(v4)
	frag[6] = 0x20 // MF
	fragOff := bytes.Clone(v4)
	fragOff[7] = 1 // offset 8
	longUDPLen := readerTestIPv4(17, 0, udp)
	binary.BigEndian.PutUint16(longUDPLen[20+4:], uint16(len(udp)+1))
	shortUDPLen := readerTestIPv4(17, 0, udp)
	binary.BigEndian.PutUint16(shortUDPLen[20+4:], 7)
	badIHL := bytes.Clone(v4)
	badIHL[0] = 0x44
	jumbo := bytes.Clone(v6)
	jumbo[4], jumbo[5] = 0, 0

	v4src := netip.MustParseAddrPort("10.0.0.1:1234")
	v4dst := netip.MustParseAddrPort("10.0.0.2:6081")
	v6src := netip.MustParseAddrPort("[2001:db8::1]:1234")
	v6dst := netip.MustParseAddrPort("[2001:db8::2]:6081")

	for _, tc := range []struct {
		name     string
		link     uint32
		frame    []byte
		ok       bool
		src, dst netip.AddrPort
	}{
		{"ether ipv4", LinkTypeEthernet, readerTestEther([]uint16{0x0800}, v4), true, v4src, v4dst},
		{"ether ipv4 padded", LinkTypeEthernet, append(readerTestEther([]uint16{0x0800}, v4), 0, 0, 0, 0), true, v4src, v4dst},
		{"ether ipv4 options", LinkTypeEthernet, readerTestEther([]uint16{0x0800}, v4opts), true, v4src, v4dst},
		{"ether 802.1Q ipv4", LinkTypeEthernet, readerTestEther([]uint16{0x8100, 0x0800}, v4), true, v4src, v4dst},
		{"ether QinQ ipv6", LinkTypeEthernet, readerTestEther([]uint16{0x88a8, 0x8100, 0x86dd}, v6), true, v6src, v6dst},
		{"ether ipv6", LinkTypeEthernet, readerTestEther([]uint16{0x86dd}, v6), true, v6src, v6dst},
		{"sll ipv4", LinkTypeLinuxSLL, sll, true, v4src, v4dst},
		{"sll ipv6", LinkTypeLinuxSLL, sll6, true, v6src, v6dst},
		{"raw ipv4", LinkTypeRaw, v4, true, v4src, v4dst},
		{"raw ipv6", LinkTypeRaw, v6, true, v6src, v6dst},
		{"linktype ipv4", rdLinkTypeIPv4, v4, true, v4src, v4dst},
		{"linktype ipv6", rdLinkTypeIPv6, v6, true, v6src, v6dst},

		{"ether arp", LinkTypeEthernet, readerTestEther([]uint16{0x0806}, make([]byte, 28)), false, netip.AddrPort{}, netip.AddrPort{}},
		{"ether short", LinkTypeEthernet, make([]byte, 13), false, netip.AddrPort{}, netip.AddrPort{}},
		{"ether vlan short", LinkTypeEthernet, readerTestEther([]uint16{0x8100}, []byte{0, 1}), false, netip.AddrPort{}, netip.AddrPort{}},
		{"sll short", LinkTypeLinuxSLL, sll[:15], false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv4 tcp", LinkTypeRaw, readerTestIPv4(6, 0, udp), false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv6 tcp", LinkTypeRaw, readerTestIPv6(6, udp), false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv6 ext header", LinkTypeRaw, readerTestIPv6(0, udp), false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv6 jumbo", LinkTypeRaw, jumbo, false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv4 MF", LinkTypeRaw, frag, false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv4 frag offset", LinkTypeRaw, fragOff, false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv4 truncated", LinkTypeRaw, v4[:len(v4)-1], false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv6 truncated", LinkTypeRaw, v6[:len(v6)-1], false, netip.AddrPort{}, netip.AddrPort{}},
		{"ipv4 bad ihl", LinkTypeRaw, badIHL, false, netip.AddrPort{}, netip.AddrPort{}},
		{"udp length too long", LinkTypeRaw, longUDPLen, false, netip.AddrPort{}, netip.AddrPort{}},
		{"udp length below 8", LinkTypeRaw, shortUDPLen, false, netip.AddrPort{}, netip.AddrPort{}},
		{"udp header cut", LinkTypeRaw, readerTestIPv4(17, 0, udp[:7]), false, netip.AddrPort{}, netip.AddrPort{}},
		{"ip version 5", LinkTypeRaw, append([]byte{0x50}, v4[1:]...), false, netip.AddrPort{}, netip.AddrPort{}},
		{"empty raw", LinkTypeRaw, nil, false, netip.AddrPort{}, netip.AddrPort{}},
		{"unknown link type", 147, v4, false, netip.AddrPort{}, netip.AddrPort{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst, p, ok := UDPPayload(tc.link, tc.frame)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if src != tc.src || dst != tc.dst {
				t.Errorf("%v > %v, want %v > %v", src, dst, tc.src, tc.dst)
			}
			if !bytes.Equal(p, payload) {
				t.Errorf("payload %q, want %q", p, payload)
			}
		})
	}
}
