package geneve

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/internal/pcap"
)

// hx decodes hex, ignoring spaces, newlines and '|' separators.
func hx(s string) []byte {
	s = strings.NewReplacer(" ", "", "\n", "", "\t", "", "|", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// opt is an expected option in table tests.
type opt struct {
	class uint16
	typ   uint8
	data  string // hex
}

// collectOptions iterates h's options and fails the test on malformed ones.
func collectOptions(t *testing.T, h *Header) []Option {
	t.Helper()
	var got []Option
	it := h.OptionIter()
	for o, ok := it.Next(); ok; o, ok = it.Next() {
		got = append(got, o)
	}
	if err := it.Err(); err != nil {
		t.Errorf("iterating options: %v", err)
	}
	return got
}

func checkOptions(t *testing.T, h *Header, want []opt) {
	t.Helper()
	got := collectOptions(t, h)
	if len(got) != len(want) {
		t.Fatalf("%d options, want %d: %+v", len(got), len(want), got)
	}
	total := 0
	for i, w := range want {
		g := got[i]
		if g.Class != w.class || g.Type != w.typ || !bytes.Equal(g.Data, hx(w.data)) {
			t.Errorf("option %d = {%#04x %#02x %x}, want {%#04x %#02x %s}", i, g.Class, g.Type, g.Data, w.class, w.typ, w.data)
		}
		if g.Critical() != (w.typ&0x80 != 0) {
			t.Errorf("option %d: Critical() = %v", i, g.Critical())
		}
		total += g.Len()
	}
	if total != len(h.Options) {
		t.Errorf("options iterate over %d bytes, header has %d", total, len(h.Options))
	}
}

// udpPayload extracts the Geneve bytes of a full frame with the pcap helper.
func udpPayload(t *testing.T, link uint32, frame []byte) []byte {
	t.Helper()
	_, dst, p, ok := pcap.UDPPayload(link, frame)
	if !ok {
		t.Fatalf("no UDP payload in frame")
	}
	if dst.Port() != Port {
		t.Fatalf("UDP destination port %d, want %d", dst.Port(), Port)
	}
	return p
}

// maxOption is gopacket's testMaxSizeOption: 124 bytes 00..7b.
func maxOption() string {
	var b []byte
	for i := range MaxOptionDataLen {
		b = append(b, byte(i))
	}
	return hex.EncodeToString(b)
}

// Public hex vectors, feature-table.md §4.3 (a)-(f).
func TestDecodeHexVectors(t *testing.T) {
	// (e) gopacket/gopacket layers/geneve_test.go testPacketGeneve1..4 (full frames).
	gopacket1 := hx(`00040001 0006fa16 3e23d342 00000800 45000086 87394000 40113135 c0a80053 c0a80055
		315717c1 00720000 00006558 00000000 ba09605f a091a2fe 54488851 08004500 005401f6 40004001
		b75fc0a8 0001c0a8 00020800 79df0cfa 63c4030b 50580000 0000ee2b 0d000000 00001011 12131415
		16171819 1a1b1c1d 1e1f2021 22232425 26272829 2a2b2c2d 2e2f3031 32333435 3637`)
	gopacket2 := hx(`12be4eb6 a7c70288 0a81bd6d 08004500 008620f2 00004011 0152ac10 0001ac10 000240a6
		17c10072 00000000 65580000 0a00d28c db1253d5 8eaba2a5 02f70800 45000054 381a4000 4001813b
		c0a80001 c0a80002 0800dd9d 7ede02c3 cb075158 00000000 ba8d0300 00000000 10111213 14151617
		18191a1b 1c1d1e1f 20212223 24252627 28292a2b 2c2d2e2f 30313233 34353637`)
	gopacket3 := hx(`001b213c ac30001b 213cab64 08004500 008edfad 40004011 32af1400 00011400 0002314a
		17c1007a 00000240 65580000 0a000000 80010000 000cfe71 d883724f b69ed249 51480800 45000054
		bda24000 40014104 1e000001 1e000002 08002c54 29520017 f1a2ce54 00000000 17780c00 00000000
		10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627 28292a2b 2c2d2e2f 30313233 34353637`)
	gopacket4 := hx(`001b213c ac30001b 213cab64 0800 4500 0106 dfad 4000 4011 32af 14000001 14000002
		314a 17c1 00f2 0000 20406558 00000a00 0000801f` + maxOption() + `fe71d883 724f
		b69ed249 51480800 45000054 bda24000 40014104 1e000001 1e000002 08002c54 29520017 f1a2ce54
		00000000 17780c00 00000000 10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627 28292a2b
		2c2d2e2f 30313233 34353637`)
	// (f) secdev/scapy test/contrib/geneve.uts, raw(...) results.
	scapy1 := hx(`45000032 00010000 40117cb8 7f000001 7f000001 271017c1 001e9a1c 00006558 00000000
		00010011 11110002 00222222 9000`)
	scapy2 := hx(`4500003a 00010000 40117cb0 7f000001 7f000001 271017c1 002601b4 02406558 00000000
		00018102 0a0a0b0b 00010011 11110002 00222222 9000`)
	scapy3 := hx(`ffffffff ffff0000 00000000 81000001 08004500 00560001 00004011 7c947f00 00017f00
		0001dec1 17c10042 1a860200 65580000 00000102 80010001 0002ffff ffffffff 00000000 00000800
		4500001c 00010000 40017cde 7f000001 7f000001 0800f7ff 00000000`)
	scapy4 := hx(`45000038 00010000 40117cb2 7f000001 7f000001 271017c1 0024bad2 00000800 00000000
		45000014 00010000 40007ce7 7f000001 7f000001`)
	scapy5 := hx(`4500004c 00010000 40117c9e 7f000001 7f000001 271017c1 0038a08a 000086dd 00000000
		60000000 00003b40 00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000001`)

	for _, tc := range []struct {
		name     string
		geneve   []byte // the UDP payload
		err      error
		oam      bool
		critical bool
		proto    uint16
		vni      uint32
		opts     []opt
		payload  string // hex prefix of the payload, when known
	}{
		{
			name:     "(a) tcpdump geneve.pcap frame 1",
			geneve:   hx("02 40 65 58 00 00 0a 00 | 00 00 80 01 00 00 00 0c | fe71d883724f b69ed2495148 0800"),
			critical: true, proto: ProtoEthernet, vni: 0xa,
			opts:    []opt{{0x0000, 0x80, "0000000c"}},
			payload: "fe71d883724f",
		},
		{
			name:   "(b) tcpdump geneve.pcap frame 2",
			geneve: hx("00 00 65 58 00 00 0b 00 | b69ed2495148 fe71d883724f 0800 45 00"),
			proto:  ProtoEthernet, vni: 0xb,
			payload: "b69ed2495148fe71d883724f0800",
		},
		{
			name: "(c) tcpdump geneve-gcp.pcap frame 1",
			geneve: hx(`42 01 c0 a8 64 03 42 01 c0 a8 64 fe 08 00 45 00 00 74 00 00 40 00 02 11 2e 27 c0 a8
				64 fe c0 a8 64 03 f5 fe 17 c1 00 60 00 00 0a 00 08 00 00 00 00 00 01 32 01 01 80 00 00 d1
				01 32 02 04 08 00 00 0d c0 a8 64 02 00 00 00 00 00 00 00 00 01 32 03 02 00 00 00 00 00 00
				12 34 45 00 00 28`)[0x2a:],
			proto: ProtoIPv4, vni: 0,
			opts: []opt{
				{0x0132, 0x01, "800000d1"},
				{0x0132, 0x02, "0800000dc0a864020000000000000000"},
				{0x0132, 0x03, "0000000000001234"},
			},
			payload: "45000028",
		},
		{
			name:   "(d) oxidecomputer/overwatch#14 zero-length option",
			geneve: hx("01 00 65 58 00 00 64 00 | 01 29 00 00 | 020000000001 020000000002 0800"),
			proto:  ProtoEthernet, vni: 100,
			opts:    []opt{{0x0129, 0x00, ""}},
			payload: "020000000001",
		},
		{name: "(e) gopacket testPacketGeneve1 (Linux SLL)", geneve: udpPayload(t, pcap.LinkTypeLinuxSLL, gopacket1),
			proto: ProtoEthernet, vni: 0, payload: "ba09605fa091"},
		{name: "(e) gopacket testPacketGeneve2", geneve: udpPayload(t, pcap.LinkTypeEthernet, gopacket2),
			proto: ProtoEthernet, vni: 0xa, payload: "d28cdb1253d5"},
		{name: "(e) gopacket testPacketGeneve3 = (a)", geneve: udpPayload(t, pcap.LinkTypeEthernet, gopacket3),
			critical: true, proto: ProtoEthernet, vni: 0xa, opts: []opt{{0, 0x80, "0000000c"}}, payload: "fe71d883724f"},
		{name: "(e) gopacket testPacketGeneve4 maximum single option", geneve: udpPayload(t, pcap.LinkTypeEthernet, gopacket4),
			critical: true, proto: ProtoEthernet, vni: 0xa, opts: []opt{{0, 0x80, maxOption()}}, payload: "fe71d883724f"},
		{name: "(f) scapy GENEVE()/Ether", geneve: udpPayload(t, pcap.LinkTypeRaw, scapy1),
			proto: ProtoEthernet, payload: "000100111111"},
		{
			// scapy's "options" here are 8 raw bytes whose option header
			// (class 0x0001, type 0x81, Length 2 words) claims 8 bytes of
			// data where Opt Len leaves 4: malformed by RFC 8926 §3.5
			// (Wireshark: "length of 12 is past end of options").
			name: "(f) scapy critical=1 with raw options (malformed)", geneve: udpPayload(t, pcap.LinkTypeRaw, scapy2),
			err: ErrOptionLength,
		},
		{
			// A critical option with the C bit clear: Decode reports both as
			// they are; the policy (drop on an unknown critical option) is
			// the caller's.
			name: "(f) scapy OVN option, 802.1Q underlay", geneve: udpPayload(t, pcap.LinkTypeEthernet, scapy3),
			proto: ProtoEthernet, opts: []opt{{0x0102, 0x80, "00010002"}}, payload: "ffffffffffff",
		},
		{name: "(f) scapy GENEVE()/IP", geneve: udpPayload(t, pcap.LinkTypeRaw, scapy4),
			proto: ProtoIPv4, payload: "45000014"},
		{name: "(f) scapy GENEVE()/IPv6", geneve: udpPayload(t, pcap.LinkTypeRaw, scapy5),
			proto: ProtoIPv6, payload: "60000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, off, err := Decode(tc.geneve)
			if err != tc.err {
				t.Fatalf("Decode: err = %v, want %v", err, tc.err)
			}
			if err != nil {
				if off != 0 || h.Options != nil || h.VNI != 0 {
					t.Errorf("on error: offset %d, header %+v; want zero values", off, h)
				}
				return
			}
			if h.OAM != tc.oam || h.Critical != tc.critical || h.Protocol != tc.proto || h.VNI != tc.vni {
				t.Errorf("header O=%v C=%v proto=%#04x vni=%#x, want O=%v C=%v proto=%#04x vni=%#x",
					h.OAM, h.Critical, h.Protocol, h.VNI, tc.oam, tc.critical, tc.proto, tc.vni)
			}
			if off != HeaderLen+len(h.Options) || off != h.Len() {
				t.Errorf("payload offset %d, options %d bytes", off, len(h.Options))
			}
			if !bytes.HasPrefix(tc.geneve[off:], hx(tc.payload)) {
				t.Errorf("payload starts %x, want %s", tc.geneve[off:min(off+8, len(tc.geneve))], tc.payload)
			}
			checkOptions(t, &h, tc.opts)
		})
	}
}

// §12 item 1 (and §3.4): an unknown version is an error, whatever follows.
func TestDecodeVersion(t *testing.T) {
	for _, first := range []byte{0x40, 0x80, 0xc0, 0x7f, 0x41} {
		b := hx("00 00 65 58 00 00 64 00")
		b[0] = first
		if _, _, err := Decode(b); err != ErrVersion {
			t.Errorf("first byte %#02x: err = %v, want ErrVersion", first, err)
		}
	}
	// The version check comes after the length check of the base header...
	if _, _, err := Decode([]byte{0x40, 0, 0x65}); err != ErrTruncated {
		t.Errorf("short version-1 packet: err = %v, want ErrTruncated", err)
	}
	// ...and before anything about the options.
	if _, _, err := Decode(hx("7f 00 65 58 00 00 64 00")); err != ErrVersion {
		t.Errorf("version 1 with Opt Len 63: err = %v, want ErrVersion", err)
	}
}

func TestDecodeTruncated(t *testing.T) {
	b := hx("00 00 65 58 00 00 64 00")
	for n := range HeaderLen {
		if _, _, err := Decode(b[:n]); err != ErrTruncated {
			t.Errorf("%d bytes: err = %v, want ErrTruncated", n, err)
		}
	}
	if _, _, err := Decode(nil); err != ErrTruncated {
		t.Errorf("nil: err = %v, want ErrTruncated", err)
	}
	h, off, err := Decode(b)
	if err != nil || off != HeaderLen || h.Options != nil {
		t.Errorf("exactly 8 bytes: off %d, options %x, err %v", off, h.Options, err)
	}
}

// §12 item 6: Opt Len pointing beyond the UDP payload.
func TestDecodeOptionsTruncated(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"Opt Len 1, no option bytes", hx("01 00 65 58 00 00 64 00")},
		{"Opt Len 2, one word", hx("02 00 65 58 00 00 64 00 | 01 29 00 00")},
		{"Opt Len 2, 7 bytes", hx("02 00 65 58 00 00 64 00 | 01 29 00 00 01 29 00")},
		{"Opt Len 63, 259 bytes", append(hx("3f 00 65 58 00 00 64 00"), make([]byte, 251)...)},
	} {
		if _, _, err := Decode(tc.b); err != ErrOptionsTruncated {
			t.Errorf("%s: err = %v, want ErrOptionsTruncated", tc.name, err)
		}
	}
}

// §12 item 5: option lengths that do not add up to Opt Len.
func TestDecodeOptionLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    string
	}{
		{"option data overruns Opt Len", "01 00 65 58 00 00 64 00 | 01 29 00 01 | 11 22 33 44"},
		{"second option overruns Opt Len", "03 00 65 58 00 00 64 00 | 01 29 00 00 | ff ff 01 02 | aa bb cc dd | ee ee ee ee"},
		{"Length 31 in Opt Len 2", "02 00 65 58 00 00 64 00 | 00 00 80 1f 00 00 00 0c"},
		{"options shorter than Opt Len, non-zero remainder", "03 00 65 58 00 00 64 00 | 01 29 00 01 11 22 33 44 | 00 00 00 05"},
		{"overrun hidden by R bits", "01 00 65 58 00 00 64 00 | 01 29 e1 e1 | 11 22 33 44"},
	} {
		if _, _, err := Decode(hx(tc.b)); err != ErrOptionLength {
			t.Errorf("%s: err = %v, want ErrOptionLength", tc.name, err)
		}
		// ValidateOptions applies the same check to the Opt Len area.
		b := hx(tc.b)
		if err := ValidateOptions(b[HeaderLen : HeaderLen+int(b[0])*4]); err != ErrOptionLength {
			t.Errorf("%s: ValidateOptions = %v, want ErrOptionLength", tc.name, err)
		}
	}
	// Zero words after the options are, by construction of the format,
	// zero-length options of class 0, type 0: they fill Opt Len exactly.
	h, off, err := Decode(hx("03 00 65 58 00 00 64 00 | 01 29 00 01 11 22 33 44 | 00 00 00 00"))
	if err != nil || off != 20 {
		t.Fatalf("zero word after the options: off %d, err %v", off, err)
	}
	checkOptions(t, &h, []opt{{0x0129, 0, "11223344"}, {0, 0, ""}})
}

// §12 item 7 (§3.4, §3.5): reserved fields are ignored on receipt.
func TestDecodeReservedIgnored(t *testing.T) {
	clean := hx("02 40 65 58 00 00 0a 00 | 00 00 80 01 00 00 00 0c | fe71d883724f")
	dirty := hx("02 7f 65 58 00 00 0a ff | 00 00 80 e1 00 00 00 0c | fe71d883724f")
	hc, offc, errc := Decode(clean)
	hd, offd, errd := Decode(dirty)
	if errc != nil || errd != nil {
		t.Fatalf("errors: clean %v, reserved bits set %v", errc, errd)
	}
	if offc != offd || hc.OAM != hd.OAM || hc.Critical != hd.Critical || hc.Protocol != hd.Protocol || hc.VNI != hd.VNI {
		t.Errorf("reserved bits changed the decode: %+v vs %+v", hc, hd)
	}
	checkOptions(t, &hd, []opt{{0, 0x80, "0000000c"}})
	// Re-encoding writes the reserved fields as zero.
	out := make([]byte, MaxHeaderLen)
	n, err := hd.Encode(out)
	if err != nil || !bytes.Equal(out[:n], clean[:offc]) {
		t.Errorf("re-encoded %x (%v), want %x", out[:n], err, clean[:offc])
	}
	// The reserved flag bits do not leak into O and C.
	for bit := range 6 {
		b := hx("00 00 65 58 00 00 0a 00")
		b[1] = 1 << bit
		h, _, err := Decode(b)
		if err != nil || h.OAM || h.Critical {
			t.Errorf("Rsvd bit %#02x: %+v, %v", b[1], h, err)
		}
	}
}

// §12 item 12: the maximum header, Opt Len 63 = 260 bytes (the gopacket
// uint8 offset overflow).
func TestDecodeMaxHeader(t *testing.T) {
	data124 := bytes.Repeat([]byte{0xa5}, 124)
	data120 := bytes.Repeat([]byte{0x5a}, 120)
	var opts []byte
	opts, _ = AppendOption(opts, Option{Class: 0xffff, Type: 0x01, Data: data124})
	opts, _ = AppendOption(opts, Option{Class: 0x0101, Type: 0x82, Data: data120})
	if len(opts) != MaxOptionsLen {
		t.Fatalf("built %d bytes of options", len(opts))
	}
	in := Header{Protocol: ProtoEthernet, VNI: MaxVNI, Options: opts}
	b := make([]byte, MaxHeaderLen+14)
	n, err := in.Encode(b)
	if err != nil || n != MaxHeaderLen {
		t.Fatalf("Encode: %d, %v", n, err)
	}
	if b[0] != 63 || b[1] != 0x40 {
		t.Errorf("first bytes %#02x %#02x, want 0x3f 0x40", b[0], b[1])
	}
	copy(b[MaxHeaderLen:], "inner-ethernet")
	h, off, err := Decode(b)
	if err != nil || off != 260 {
		t.Fatalf("Decode: off %d, err %v", off, err)
	}
	if string(b[off:]) != "inner-ethernet" || h.VNI != MaxVNI || !h.Critical {
		t.Errorf("payload %q, header %+v", b[off:], h)
	}
	checkOptions(t, &h, []opt{{0xffff, 0x01, hex.EncodeToString(data124)}, {0x0101, 0x82, hex.EncodeToString(data120)}})

	// 63 zero-length options fill the maximum header too.
	z := append(hx("3f 00 65 58 00 00 01 00"), bytes.Repeat(hx("ff 00 00 00"), 63)...)
	h, off, err = Decode(z)
	if err != nil || off != 260 || len(collectOptions(t, &h)) != 63 {
		t.Errorf("63 zero-length options: off %d, err %v", off, err)
	}
}

// §12 item 13: zero-length options (header only) are valid anywhere.
func TestDecodeZeroLengthOptions(t *testing.T) {
	b := hx("04 00 65 58 00 00 64 00 | 01 29 00 00 | ff ff 01 01 de ad be ef | 01 29 80 00 | 0800")
	h, off, err := Decode(b)
	if err != nil || off != 24 {
		t.Fatalf("off %d, err %v", off, err)
	}
	checkOptions(t, &h, []opt{{0x0129, 0, ""}, {0xffff, 0x01, "deadbeef"}, {0x0129, 0x80, ""}})
}

// Decode reports O, C, critical options and the protocol; it does not judge.
func TestDecodeMakesNoPolicy(t *testing.T) {
	for _, tc := range []struct {
		name        string
		b           string
		oam, crit   bool
		proto       uint16
		critOptions int
	}{
		{"O bit (§12 item 2)", "00 80 65 58 00 00 64 00", true, false, ProtoEthernet, 0},
		{"C bit, no options", "00 40 65 58 00 00 64 00", false, true, ProtoEthernet, 0},
		{"C bit, unknown critical option (§12 item 3)", "02 40 65 58 00 00 64 00 ff ff 87 01 01 02 03 04", false, true, ProtoEthernet, 1},
		{"no C bit, critical option", "02 00 65 58 00 00 64 00 ff ff 87 01 01 02 03 04", false, false, ProtoEthernet, 1},
		{"no C bit, non-critical option (§12 item 4)", "02 00 65 58 00 00 64 00 ff ff 07 01 01 02 03 04", false, false, ProtoEthernet, 0},
		{"O and C", "00 c0 86 dd 00 00 64 00", true, true, ProtoIPv6, 0},
		{"unknown protocol", "00 00 12 34 00 00 64 00", false, false, 0x1234, 0},
	} {
		h, _, err := Decode(hx(tc.b))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		crit := 0
		for _, o := range collectOptions(t, &h) {
			if o.Critical() {
				crit++
			}
		}
		if h.OAM != tc.oam || h.Critical != tc.crit || h.Protocol != tc.proto || crit != tc.critOptions {
			t.Errorf("%s: O=%v C=%v proto=%#04x critical options=%d", tc.name, h.OAM, h.Critical, h.Protocol, crit)
		}
	}
}

func TestDecodeAliasesInput(t *testing.T) {
	b := hx("02 00 65 58 00 00 64 00 | ff ff 01 01 de ad be ef | 01 02 03 04")
	h, off, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if &h.Options[0] != &b[HeaderLen] {
		t.Error("Options does not alias the input")
	}
	if cap(h.Options) != len(h.Options) {
		t.Errorf("Options capacity %d reaches into the payload", cap(h.Options))
	}
	_ = append(h.Options, 0xee)
	if b[off] != 0x01 {
		t.Error("append to Options overwrote the payload")
	}
}

func TestEncode(t *testing.T) {
	// Vector (a), built from parts: the C bit comes from the critical option.
	opts, err := AppendOption(nil, Option{Class: 0, Type: 0x80, Data: hx("0000000c")})
	if err != nil {
		t.Fatal(err)
	}
	h := Header{Protocol: ProtoEthernet, VNI: 0xa, Options: opts}
	b := make([]byte, 64)
	n, err := h.Encode(b)
	if want := hx("02 40 65 58 00 00 0a 00 00 00 80 01 00 00 00 0c"); err != nil || !bytes.Equal(b[:n], want) {
		t.Errorf("Encode = %x, %v; want %x", b[:n], err, want)
	}
	if n != h.Len() {
		t.Errorf("Encode wrote %d bytes, Len() = %d", n, h.Len())
	}

	// Vector (c): three Google options, IPv4 payload, VNI 0, exact bytes.
	var gcp []byte
	for _, o := range []Option{
		{Class: 0x0132, Type: 1, Data: hx("800000d1")},
		{Class: 0x0132, Type: 2, Data: hx("0800000dc0a864020000000000000000")},
		{Class: 0x0132, Type: 3, Data: hx("0000000000001234")},
	} {
		if gcp, err = AppendOption(gcp, o); err != nil {
			t.Fatal(err)
		}
	}
	h = Header{Protocol: ProtoIPv4, Options: gcp}
	n, err = h.Encode(b)
	want := hx(`0a 00 08 00 00 00 00 00 01 32 01 01 80 00 00 d1 01 32 02 04 08 00 00 0d c0 a8 64 02 00 00 00 00
		00 00 00 00 01 32 03 02 00 00 00 00 00 00 12 34`)
	if err != nil || !bytes.Equal(b[:n], want) {
		t.Errorf("Encode = %x, %v; want %x", b[:n], err, want)
	}

	// Flags, a full VNI, no options: an exact-size buffer is enough.
	h = Header{OAM: true, Critical: true, Protocol: ProtoIPv6, VNI: 0xabcdef}
	b8 := make([]byte, HeaderLen)
	if n, err := h.Encode(b8); err != nil || n != 8 || !bytes.Equal(b8, hx("00 c0 86 dd ab cd ef 00")) {
		t.Errorf("Encode = %x, %d, %v", b8, n, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	good, _ := AppendOption(nil, Option{Class: 1, Type: 2, Data: hx("01020304")})
	for _, tc := range []struct {
		name string
		h    Header
		buf  int
		err  error
	}{
		{"VNI 2^24", Header{VNI: MaxVNI + 1}, 64, ErrVNI},
		{"VNI max uint32", Header{VNI: ^uint32(0)}, 64, ErrVNI},
		{"options 3 bytes", Header{Options: []byte{1, 2, 3}}, 64, ErrOptionsSize},
		{"options 6 bytes", Header{Options: []byte{1, 2, 0, 0, 5, 6}}, 64, ErrOptionsSize},
		{"options 256 bytes", Header{Options: bytes.Repeat([]byte{0xff, 0xff, 0, 0}, 64)}, 300, ErrOptionsSize},
		{"option overruns", Header{Options: hx("01 02 03 02 00 00 00 00")}, 64, ErrOptionLength},
		{"second option overruns", Header{Options: append(bytes.Clone(good), hx("01 02 03 01")...)}, 64, ErrOptionLength},
		{"buffer too short", Header{Options: good}, HeaderLen + len(good) - 1, ErrShortBuffer},
		{"buffer too short, no options", Header{}, HeaderLen - 1, ErrShortBuffer},
		{"nil buffer", Header{}, 0, ErrShortBuffer},
	} {
		b := bytes.Repeat([]byte{0xee}, tc.buf)
		n, err := tc.h.Encode(b)
		if err != tc.err || n != 0 {
			t.Errorf("%s: Encode = %d, %v; want 0, %v", tc.name, n, err, tc.err)
		}
		if !bytes.Equal(b, bytes.Repeat([]byte{0xee}, tc.buf)) {
			t.Errorf("%s: Encode modified the buffer on error", tc.name)
		}
	}
	// The maximum options length encodes; one word more does not.
	max := bytes.Repeat([]byte{0xff, 0xff, 0x01, 0x00}, 63)
	if _, err := (&Header{Options: max}).Encode(make([]byte, MaxHeaderLen)); err != nil {
		t.Errorf("252 bytes of options: %v", err)
	}
}

// Encode clears the R bits of options, and works in place.
func TestEncodeInPlace(t *testing.T) {
	b := hx("02 bf 65 58 00 00 0a ff | 00 00 80 e1 00 00 00 0c | fe71d883724f")
	h, off, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.Encode(b)
	if err != nil || n != off {
		t.Fatalf("Encode in place: %d, %v", n, err)
	}
	if want := hx("02 c0 65 58 00 00 0a 00 | 00 00 80 01 00 00 00 0c | fe71d883724f"); !bytes.Equal(b, want) {
		t.Errorf("in place: %x, want %x", b, want)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	var three []byte
	for i, o := range []Option{
		{Class: 0xffff, Type: 0x01, Data: hx("11223344")},
		{Class: 0x0103, Type: 0x02, Data: hx("0102030405060708")},
		{Class: 0xfff0, Type: 0x11},
	} {
		var err error
		if three, err = AppendOption(three, o); err != nil {
			t.Fatalf("option %d: %v", i, err)
		}
	}
	crit, _ := AppendOption(nil, Option{Class: 0xffff, Type: 0x81, Data: hx("deadbeefcafef00d")})
	for _, in := range []Header{
		{},
		{Protocol: ProtoEthernet, VNI: 100},
		{OAM: true, Protocol: ProtoIPv4, VNI: 1},
		{Critical: true, Protocol: ProtoIPv6, VNI: MaxVNI},
		{Protocol: ProtoEthernet, VNI: 200, Options: three},
		{Protocol: ProtoEthernet, VNI: 300, Options: crit},
		{OAM: true, Critical: true, Protocol: 0xffff, VNI: 0x123456, Options: append(bytes.Clone(three), crit...)},
	} {
		b := make([]byte, in.Len()+4)
		n, err := in.Encode(b)
		if err != nil || n != in.Len() {
			t.Fatalf("%+v: Encode %d, %v", in, n, err)
		}
		out, off, err := Decode(b)
		if err != nil || off != n {
			t.Fatalf("%+v: Decode off %d, err %v", in, off, err)
		}
		wantCrit := in.Critical
		it := in.OptionIter()
		for o, ok := it.Next(); ok; o, ok = it.Next() {
			wantCrit = wantCrit || o.Critical()
		}
		if out.OAM != in.OAM || out.Critical != wantCrit || out.Protocol != in.Protocol || out.VNI != in.VNI ||
			!bytes.Equal(out.Options, in.Options) {
			t.Errorf("round trip: %+v -> %+v", in, out)
		}
	}
}

func TestAppendOption(t *testing.T) {
	prefix := []byte{0xaa}
	b, err := AppendOption(prefix, Option{Class: 0x0102, Type: 0x80, Data: hx("00010002")})
	if err != nil || !bytes.Equal(b, hx("aa 01 02 80 01 00 01 00 02")) {
		t.Errorf("AppendOption = %x, %v", b, err)
	}
	b, err = AppendOption(nil, Option{Class: 0x0129})
	if err != nil || !bytes.Equal(b, hx("01 29 00 00")) {
		t.Errorf("zero-length option = %x, %v", b, err)
	}
	b, err = AppendOption(nil, Option{Class: 0, Type: 0x80, Data: hx(maxOption())})
	if err != nil || len(b) != 128 || b[3] != 31 {
		t.Errorf("124-byte option: len %d, length byte %#x, %v", len(b), b[3], err)
	}
	for _, n := range []int{1, 2, 3, 5, 123, 125, 128, 252} {
		dst := []byte{1, 2, 3}
		got, err := AppendOption(dst, Option{Class: 1, Type: 1, Data: make([]byte, n)})
		if err != ErrOptionDataSize || !bytes.Equal(got, dst) {
			t.Errorf("%d bytes of data: %x, %v; want dst unchanged and ErrOptionDataSize", n, got, err)
		}
	}
}

func TestValidateOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		err  error
	}{
		{"nil", nil, nil},
		{"one zero-length option", hx("01 29 00 00"), nil},
		{"R bits set", hx("01 29 e0 e0"), nil},
		{"two options", hx("ff ff 01 01 de ad be ef 01 29 00 00"), nil},
		{"252 bytes", bytes.Repeat(hx("01 29 00 00"), 63), nil},
		{"256 bytes", bytes.Repeat(hx("01 29 00 00"), 64), ErrOptionsSize},
		{"2 bytes", []byte{1, 2}, ErrOptionsSize},
		{"5 bytes", hx("01 29 00 00 00"), ErrOptionsSize},
		{"overrun", hx("ff ff 01 02 de ad be ef"), ErrOptionLength},
		{"overrun by Length 31", hx("ff ff 01 1f de ad be ef"), ErrOptionLength},
	} {
		if err := ValidateOptions(tc.raw); err != tc.err {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
}

func TestOptionIterator(t *testing.T) {
	var zero OptionIterator
	if _, ok := zero.Next(); ok || zero.Err() != nil {
		t.Error("zero OptionIterator yields an option or an error")
	}
	// Unvalidated raw bytes: iteration stops at the first bad option.
	for _, tc := range []struct {
		name string
		raw  []byte
		n    int
	}{
		{"overrun", hx("ff ff 01 01 de ad be ef | 01 29 00 02 00 00 00 00"), 1},
		{"stray bytes", hx("ff ff 01 00 | 01 29"), 1},
		{"first option", hx("ff ff 01 01"), 0},
	} {
		it := Options(tc.raw)
		n := 0
		for _, ok := it.Next(); ok; _, ok = it.Next() {
			n++
		}
		if n != tc.n || it.Err() != ErrOptionLength {
			t.Errorf("%s: %d options, Err %v; want %d, ErrOptionLength", tc.name, n, it.Err(), tc.n)
		}
		if _, ok := it.Next(); ok {
			t.Errorf("%s: Next after the end yields an option", tc.name)
		}
	}
	// Option data is capped: appending to it cannot clobber the next option.
	raw := hx("ff ff 01 01 de ad be ef | 01 29 00 00")
	it := Options(raw)
	o, _ := it.Next()
	_ = append(o.Data, 0)
	if !bytes.Equal(raw[8:], hx("01 29 00 00")) {
		t.Error("append to Option.Data overwrote the next option")
	}
}

func TestErrorsDistinct(t *testing.T) {
	errs := []error{ErrTruncated, ErrVersion, ErrOptionsTruncated, ErrOptionLength,
		ErrShortBuffer, ErrVNI, ErrOptionsSize, ErrOptionDataSize}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v is %v", a, b)
			}
		}
	}
}

// threeOptionPacket is a header with three options (4 + 8 + 124 bytes of
// data, as OVS received it in nonovs-probe-v4.pcap frame 9) plus a payload.
func threeOptionPacket() []byte {
	var opts []byte
	opts, _ = AppendOption(opts, Option{Class: 0xffff, Type: 0x07, Data: bytes.Repeat([]byte{1}, 4)})
	opts, _ = AppendOption(opts, Option{Class: 0x0103, Type: 0x01, Data: bytes.Repeat([]byte{2}, 8)})
	opts, _ = AppendOption(opts, Option{Class: 0xfff0, Type: 0x11, Data: bytes.Repeat([]byte{3}, 124)})
	h := Header{Protocol: ProtoEthernet, VNI: 100, Options: opts}
	b := make([]byte, h.Len()+64)
	h.Encode(b)
	return b
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	plain := hx("00 00 65 58 00 00 64 00 02 00 00 00 00 01")
	three := threeOptionPacket()
	allocs := testing.AllocsPerRun(1000, func() {
		for _, b := range [][]byte{plain, three, three[:20], {0x40}} {
			h, _, _ := Decode(b)
			it := h.OptionIter()
			for o, ok := it.Next(); ok; o, ok = it.Next() {
				_ = o.Critical()
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Decode + option iteration: %v allocations per run, want 0", allocs)
	}
}

var benchSink int

func BenchmarkDecode(b *testing.B) {
	b.Run("NoOptions", func(b *testing.B) {
		pkt := hx("00 00 65 58 00 00 64 00 02 00 00 00 00 01 02 00 00 00 00 02 08 00")
		b.ReportAllocs()
		b.SetBytes(HeaderLen)
		for b.Loop() {
			h, off, err := Decode(pkt)
			if err != nil {
				b.Fatal(err)
			}
			benchSink += off + int(h.VNI)
		}
	})
	b.Run("ThreeOptions+Iterate", func(b *testing.B) {
		pkt := threeOptionPacket()
		_, off, _ := Decode(pkt)
		b.ReportAllocs()
		b.SetBytes(int64(off))
		for b.Loop() {
			h, off, err := Decode(pkt)
			if err != nil {
				b.Fatal(err)
			}
			it := h.OptionIter()
			for o, ok := it.Next(); ok; o, ok = it.Next() {
				off += int(o.Class) + len(o.Data)
			}
			benchSink += off
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	pkt := threeOptionPacket()
	h, _, _ := Decode(pkt)
	out := make([]byte, MaxHeaderLen)
	b.ReportAllocs()
	b.SetBytes(int64(h.Len()))
	for b.Loop() {
		n, err := h.Encode(out)
		if err != nil {
			b.Fatal(err)
		}
		benchSink += n
	}
}
