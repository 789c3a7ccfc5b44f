package geneve

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/internal/pcap"
)

// sharedDir is the project's shared reference folder: ../shared from the
// project root, i.e. ../../../shared from this package.
var sharedDir = filepath.Join("..", "..", "..", "shared")

// haveShared reports whether the shared folder with its captures is there.
func haveShared() bool {
	_, err := os.Stat(filepath.Join(sharedDir, "vectors"))
	return err == nil
}

func requireShared(t *testing.T) {
	t.Helper()
	if !haveShared() {
		t.Skipf("shared reference folder not found at %s (CI has it at ../shared from the project root)", sharedDir)
	}
}

// sharedCaptures lists the capture files under shared/vectors and shared/peers.
func sharedCaptures(t testing.TB) []string {
	var files []string
	for _, dir := range []string{"vectors", "peers"} {
		m, err := filepath.Glob(filepath.Join(sharedDir, dir, "*.pcap"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

// capturedGeneve is a Geneve datagram from a capture file.
type capturedGeneve struct {
	frame    int // 1-based frame number, as tcpdump and tshark count
	src, dst netip.AddrPort
	payload  []byte // the UDP payload: the Geneve header and what follows
}

// readGeneve returns the UDP datagrams to or from port 6081 in a capture,
// the ones tcpdump and tshark decode as Geneve.
func readGeneve(path string) ([]capturedGeneve, error) {
	link, frames, err := pcap.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []capturedGeneve
	for i, f := range frames {
		src, dst, p, ok := pcap.UDPPayload(link, f)
		if ok && (dst.Port() == Port || src.Port() == Port) {
			out = append(out, capturedGeneve{i + 1, src, dst, p})
		}
	}
	return out, nil
}

// expectedGeneve is what a dissector says about one Geneve packet.
type expectedGeneve struct {
	err       error // ErrVersion for a version the dissector flags
	oam, crit bool
	proto     uint16
	vni       uint32
	optLen    int // bytes of options (Opt Len * 4)
	opts      []expectedOption
}

type expectedOption struct {
	class  uint16
	typ    uint8
	length int    // option length in bytes, including its 4-byte header
	data   []byte // nil when the dissector did not show it
}

// compareGeneve decodes p and checks it against want.
func compareGeneve(t *testing.T, where string, p []byte, want expectedGeneve) {
	t.Helper()
	h, off, err := Decode(p)
	if err != want.err {
		t.Errorf("%s: Decode error %v, want %v", where, err, want.err)
		return
	}
	if err != nil {
		return
	}
	if h.OAM != want.oam || h.Critical != want.crit || h.Protocol != want.proto || h.VNI != want.vni {
		t.Errorf("%s: O=%v C=%v proto=%#04x vni=%#x, want O=%v C=%v proto=%#04x vni=%#x",
			where, h.OAM, h.Critical, h.Protocol, h.VNI, want.oam, want.crit, want.proto, want.vni)
	}
	if len(h.Options) != want.optLen || off != HeaderLen+want.optLen {
		t.Errorf("%s: %d bytes of options, payload at %d; want %d bytes of options", where, len(h.Options), off, want.optLen)
	}
	var got []Option
	it := h.OptionIter()
	for o, ok := it.Next(); ok; o, ok = it.Next() {
		got = append(got, o)
	}
	if len(got) != len(want.opts) {
		t.Errorf("%s: %d options, want %d", where, len(got), len(want.opts))
		return
	}
	for i, w := range want.opts {
		g := got[i]
		if g.Class != w.class || g.Type != w.typ || g.Len() != w.length || (w.data != nil && !bytes.Equal(g.Data, w.data)) {
			t.Errorf("%s: option %d = class %#04x type %#02x len %d data %x; want class %#04x type %#02x len %d data %x",
				where, i, g.Class, g.Type, g.Len(), g.Data, w.class, w.typ, w.length, w.data)
		}
	}
}

// tcpdump -vv output (print-geneve.c), e.g.
//
//	1  2015-02-01 22:04:33.817203 IP (tos 0x0, ...)
//	20.0.0.1.12618 > 20.0.0.2.6081: [no cksum] Geneve, Flags [C], vni 0xa, options [class Standard (0x0) type 0x80(C) len 8 data 0000000c]
var (
	tcpdumpFrame  = regexp.MustCompile(`^\s*(\d+)\s+\d{4}-\d\d-\d\d `)
	tcpdumpGeneve = regexp.MustCompile(`Geneve, Flags \[([^\]]*)\], vni 0x([0-9a-f]+)(?:, rsvd 0x[0-9a-f]+)?(?:, proto [^,\]]*)?(?:, options \[([^\]]*)\])?`)
	tcpdumpOption = regexp.MustCompile(`class [^()]*\(0x([0-9a-f]+)\) type 0x([0-9a-f]+)(?:\(C\))? len (\d+)(?: data((?: [0-9a-f]{8})*))?`)
)

// parseTcpdump returns the Geneve decodes of a tcpdump -v/-vv output file,
// by frame number. proto is the payload protocol, which tcpdump prints only
// with -e.
func parseTcpdump(t *testing.T, path string, proto uint16) map[int]expectedGeneve {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[int]expectedGeneve{}
	frame := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := tcpdumpFrame.FindStringSubmatch(line); m != nil {
			frame, _ = strconv.Atoi(m[1])
		}
		if !strings.Contains(line, "Geneve") {
			continue
		}
		if strings.Contains(line, "unknown-version") {
			want[frame] = expectedGeneve{err: ErrVersion}
			continue
		}
		m := tcpdumpGeneve.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s frame %d: cannot parse %q", path, frame, line)
		}
		vni, _ := strconv.ParseUint(m[2], 16, 32)
		e := expectedGeneve{
			oam:   strings.Contains(m[1], "O"),
			crit:  strings.Contains(m[1], "C"),
			proto: proto,
			vni:   uint32(vni),
		}
		if m[3] != "" {
			for _, om := range tcpdumpOption.FindAllStringSubmatch(m[3], -1) {
				class, _ := strconv.ParseUint(om[1], 16, 16)
				typ, _ := strconv.ParseUint(om[2], 16, 8)
				n, _ := strconv.Atoi(om[3])
				data := hx(om[4])
				e.opts = append(e.opts, expectedOption{uint16(class), uint8(typ), n, data})
				e.optLen += n
			}
			if len(e.opts) == 0 {
				t.Fatalf("%s frame %d: cannot parse options %q", path, frame, m[3])
			}
		}
		want[frame] = e
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return want
}

type tcpdumpVector struct {
	pcap, out string
	proto     uint16
}

// tcpdump's own test captures and their expected -vv decodes
// (feature-table.md §4.1). tcpdump does not print the protocol type without
// -e: geneve.pcap carries Ethernet (hex vector (a): 65 58), geneve-gcp.pcap
// bare IPv4 (vector (c): 08 00).
var tcpdumpVectors = []tcpdumpVector{
	{"tcpdump-geneve.pcap", "tcpdump-geneve-vv.out", ProtoEthernet},
	{"tcpdump-geneve-gcp.pcap", "tcpdump-geneve-gcp.out", ProtoIPv4},
}

func TestVectorsTcpdump(t *testing.T) {
	requireShared(t)
	for _, v := range tcpdumpVectors {
		t.Run(v.pcap, func(t *testing.T) {
			want := parseTcpdump(t, filepath.Join(sharedDir, "vectors", v.out), v.proto)
			pkts, err := readGeneve(filepath.Join(sharedDir, "vectors", v.pcap))
			if err != nil {
				t.Fatal(err)
			}
			if len(pkts) != len(want) || len(pkts) == 0 {
				t.Errorf("%d Geneve packets in the capture, %d in tcpdump's output", len(pkts), len(want))
			}
			for _, p := range pkts {
				w, ok := want[p.frame]
				if !ok {
					t.Errorf("frame %d: not a Geneve packet for tcpdump", p.frame)
					continue
				}
				compareGeneve(t, fmt.Sprintf("frame %d", p.frame), p.payload, w)
			}
		})
	}
	// Every capture in vectors/ must have its expected decode here.
	m, _ := filepath.Glob(filepath.Join(sharedDir, "vectors", "*.pcap"))
	for _, f := range m {
		if !slices.ContainsFunc(tcpdumpVectors, func(v tcpdumpVector) bool { return v.pcap == filepath.Base(f) }) {
			t.Errorf("%s has no entry in tcpdumpVectors", f)
		}
	}
}

// tsharkFields are the fields compared with tshark. geneve.option.length
// lists the total options length first, then each option's length in bytes
// (header included); option data is shown only for options tshark does not
// dissect itself.
var tsharkFields = []string{
	"frame.number", "geneve.version", "geneve.flags.oam", "geneve.flags.critical",
	"geneve.proto_type", "geneve.vni", "geneve.option.class", "geneve.option.type",
	"geneve.option.length", "geneve.option.unknown.data",
}

// tsharkBool accepts tshark 4.0's 0/1 and the True/False of later versions.
func tsharkBool(s string) (bool, error) {
	switch s {
	case "1", "True", "true":
		return true, nil
	case "0", "False", "false", "":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}

func tsharkList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// parseTshark turns one line of tshark -T fields output into a frame
// number and the expected decode.
func parseTshark(line string) (int, expectedGeneve, error) {
	f := strings.Split(line, "\t")
	if len(f) != len(tsharkFields) {
		return 0, expectedGeneve{}, fmt.Errorf("%d fields, want %d", len(f), len(tsharkFields))
	}
	var e expectedGeneve
	frame, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, e, err
	}
	ver, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, e, fmt.Errorf("version: %w", err)
	}
	if ver != 0 {
		e.err = ErrVersion
		return frame, e, nil
	}
	if e.oam, err = tsharkBool(f[2]); err != nil {
		return 0, e, err
	}
	if e.crit, err = tsharkBool(f[3]); err != nil {
		return 0, e, err
	}
	proto, err := strconv.ParseUint(f[4], 0, 16)
	if err != nil {
		return 0, e, fmt.Errorf("proto_type: %w", err)
	}
	vni, err := strconv.ParseUint(f[5], 0, 24)
	if err != nil {
		return 0, e, fmt.Errorf("vni: %w", err)
	}
	e.proto, e.vni = uint16(proto), uint32(vni)
	classes, types, lengths, data := tsharkList(f[6]), tsharkList(f[7]), tsharkList(f[8]), tsharkList(f[9])
	if len(lengths) != len(classes)+1 || len(types) != len(classes) {
		return 0, e, fmt.Errorf("%d classes, %d types, %d lengths", len(classes), len(types), len(lengths))
	}
	if e.optLen, err = strconv.Atoi(lengths[0]); err != nil {
		return 0, e, err
	}
	for i := range classes {
		class, err1 := strconv.ParseUint(classes[i], 0, 16)
		typ, err2 := strconv.ParseUint(types[i], 0, 8)
		n, err3 := strconv.Atoi(lengths[i+1])
		if err1 != nil || err2 != nil || err3 != nil {
			return 0, e, fmt.Errorf("option %d: %q %q %q", i, classes[i], types[i], lengths[i+1])
		}
		o := expectedOption{class: uint16(class), typ: uint8(typ), length: n}
		if len(data) == len(classes) { // all options shown as unknown data
			if o.data, err = hex.DecodeString(data[i]); err != nil {
				return 0, e, err
			}
		}
		e.opts = append(e.opts, o)
	}
	return frame, e, nil
}

// TestVectorsTshark compares the decoder with tshark on every capture in
// shared/vectors and shared/peers.
func TestVectorsTshark(t *testing.T) {
	requireShared(t)
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark is not on PATH: skipping the comparison with Wireshark's dissector (CI installs it: apt-get install -y tshark)")
	}
	for _, path := range sharedCaptures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			args := []string{"-r", path, "-Y", "geneve", "-T", "fields"}
			for _, f := range tsharkFields {
				args = append(args, "-e", f)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(tshark, args...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, stderr.Bytes())
			}
			want := map[int]expectedGeneve{}
			for line := range strings.Lines(string(out)) {
				line = strings.TrimRight(line, "\r\n")
				if line == "" {
					continue
				}
				frame, e, err := parseTshark(line)
				if err != nil {
					t.Fatalf("tshark line %q: %v", line, err)
				}
				want[frame] = e
			}
			pkts, err := readGeneve(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(pkts) != len(want) || len(pkts) == 0 {
				t.Errorf("%d UDP/6081 packets in the capture, tshark decodes %d as Geneve", len(pkts), len(want))
			}
			for _, p := range pkts {
				w, ok := want[p.frame]
				if !ok {
					t.Errorf("frame %d: not Geneve for tshark", p.frame)
					continue
				}
				compareGeneve(t, fmt.Sprintf("frame %d", p.frame), p.payload, w)
			}
		})
	}
}

// peerCaptures restates, without tshark, what shared/peers/README.md says
// about the OVS captures, frame by frame (frame numbers as tshark counts
// them). Frames not listed are version 0, no flags, Ethernet payload, the
// file's VNI, no options.
var peerCaptures = []struct {
	file    string
	frames  int
	vni     uint32
	special map[int]expectedGeneve
}{
	{"ovs-geneve-sample.pcap", 21, 100, nil},
	{"ovs-geneve-ipv6-sample.pcap", 8, 200, nil},
	{"ovs-geneve-options.pcap", 9, 100, map[int]expectedGeneve{
		1: {proto: ProtoEthernet, vni: 100, optLen: 8, opts: []expectedOption{{0xffff, 0x01, 8, hx("11223344")}}},
		3: {proto: ProtoEthernet, vni: 100, optLen: 20, opts: []expectedOption{
			{0xffff, 0x01, 8, hx("11223344")}, {0x0103, 0x02, 12, hx("0102030405060708")}}},
		4: {proto: ProtoEthernet, vni: 100, optLen: 16, opts: []expectedOption{{0xffff, 0x02, 16, hx("aabbccddeeff001122334455")}}},
		5: {crit: true, proto: ProtoEthernet, vni: 100, optLen: 12, opts: []expectedOption{{0xffff, 0x81, 12, hx("deadbeefcafef00d")}}},
		7: {crit: true, proto: ProtoEthernet, vni: 100, optLen: 12, opts: []expectedOption{{0xffff, 0x81, 12, hx("deadbeefcafef00d")}}},
	}},
	{"nonovs-probe-v4.pcap", 25, 100, probeFrames(100, false)},
	// The IPv6 probe interleaves OVS's link-local chatter: same sequence, shifted.
	{"nonovs-probe-v6.pcap", 30, 200, probeFrames(200, true)},
}

// probeFrames are the notable frames of the non-OVS probes (README "What
// OVS accepts and drops"), numbered as in nonovs-probe-v4.pcap. In the IPv6
// capture, OVS's link-local chatter shifts them: by 1 before the version-1
// probe and by 4 from it on.
func probeFrames(vni uint32, v6 bool) map[int]expectedGeneve {
	at := func(v4frame int) int {
		switch {
		case !v6:
			return v4frame
		case v4frame < 12:
			return v4frame + 1
		default:
			return v4frame + 4
		}
	}
	three := []expectedOption{
		{0xffff, 0x07, 8, bytes.Repeat([]byte{1}, 4)},
		{0x0103, 0x01, 12, bytes.Repeat([]byte{2}, 8)},
		{0xfff0, 0x11, 128, bytes.Repeat([]byte{3}, 124)},
	}
	crit := []expectedOption{{0xffff, 0x87, 8, hx("01020304")}}
	return map[int]expectedGeneve{
		at(7):  {proto: ProtoEthernet, vni: vni, optLen: 8, opts: []expectedOption{{0xffff, 0x07, 8, hx("01020304")}}},
		at(9):  {proto: ProtoEthernet, vni: vni, optLen: 148, opts: three},
		at(11): {proto: ProtoEthernet, vni: vni + 1},         // wrong VNI
		at(12): {err: ErrVersion},                            // version 1
		at(13): {oam: true, proto: ProtoEthernet, vni: vni},  // O bit
		at(15): {crit: true, proto: ProtoEthernet, vni: vni}, // C bit, no options
		at(19): {proto: ProtoIPv4, vni: vni},                 // bare IPv4
		at(20): {crit: true, proto: ProtoEthernet, vni: vni, optLen: 8, opts: crit},
		at(21): {proto: ProtoEthernet, vni: vni, optLen: 8, opts: crit}, // critical option, C clear
	}
}

func TestVectorsPeersReadme(t *testing.T) {
	requireShared(t)
	for _, pc := range peerCaptures {
		t.Run(pc.file, func(t *testing.T) {
			pkts, err := readGeneve(filepath.Join(sharedDir, "peers", pc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(pkts) != pc.frames {
				t.Errorf("%d Geneve packets, want %d", len(pkts), pc.frames)
			}
			for _, p := range pkts {
				w, ok := pc.special[p.frame]
				if !ok {
					w = expectedGeneve{proto: ProtoEthernet, vni: pc.vni}
				}
				compareGeneve(t, fmt.Sprintf("frame %d", p.frame), p.payload, w)
			}
		})
	}
	m, _ := filepath.Glob(filepath.Join(sharedDir, "peers", "*.pcap"))
	if len(m) != len(peerCaptures) {
		t.Errorf("%d captures in peers/, %d described in peerCaptures", len(m), len(peerCaptures))
	}
}
