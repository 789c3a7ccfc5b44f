package geneve

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fuzzSeeds are the Geneve payloads of every shared capture (when the
// shared folder is there) plus the hex vectors and edge cases.
func fuzzSeeds(f *testing.F) [][]byte {
	seeds := [][]byte{
		hx("02 40 65 58 00 00 0a 00 00 00 80 01 00 00 00 0c fe71d883724f"), // (a)
		hx("00 00 65 58 00 00 0b 00 b69ed2495148"),                         // (b)
		hx(`0a 00 08 00 00 00 00 00 01 32 01 01 80 00 00 d1 01 32 02 04 08 00 00 0d c0 a8 64 02 00 00 00 00
			00 00 00 00 01 32 03 02 00 00 00 00 00 00 12 34 45 00 00 28`), // (c)
		hx("01 00 65 58 00 00 64 00 01 29 00 00 020000000001"),            // (d)
		hx("02 40 65 58 00 00 00 00 00 01 81 02 0a 0a 0b 0b 00 01 00 11"), // (f) malformed
		hx("02 00 65 58 00 00 00 00 01 02 80 01 00 01 00 02"),             // (f) OVN
		hx("02 7f 65 58 00 00 0a ff 00 00 80 e1 00 00 00 0c"),             // reserved bits set
		hx("41 00 65 58 00 00 64 00 01 29 00 00"),                         // version 1
		hx("03 00 65 58 00 00 64 00 01 29 00 01 11 22 33 44 00 00 00 05"), // overrun
		threeOptionPacket(),
		append(hx("3f 00 65 58 00 00 01 00"), bytes.Repeat(hx("ff 00 00 00"), 63)...), // 260 bytes
		{},
		{0x02},
	}
	if !haveShared() {
		return seeds
	}
	for _, path := range sharedCaptures(f) {
		pkts, err := readGeneve(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range pkts {
			seeds = append(seeds, p.payload)
		}
	}
	return seeds
}

// refDecodeErr is a second, deliberately naive statement of the decode
// rules (RFC 8926 §3.4, §3.5), counting in 4-byte words.
func refDecodeErr(b []byte) error {
	switch {
	case len(b) < 8:
		return ErrTruncated
	case b[0]&0xc0 != 0:
		return ErrVersion
	}
	words := int(b[0] & 0x3f)
	if 8+4*words > len(b) {
		return ErrOptionsTruncated
	}
	used := 0
	for used < words {
		optWords := 1 + int(b[8+4*used+3]&0x1f)
		if used+optWords > words {
			return ErrOptionLength
		}
		used += optWords
	}
	return nil
}

// FuzzDecode checks that Decode never panics, agrees with refDecodeErr, and
// that a decoded header re-encodes to the same bytes up to the reserved
// fields and the C bit (which Encode ORs with the options' critical bits).
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		h, off, err := Decode(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("Decode modified its input")
		}
		if ref := refDecodeErr(b); err != ref {
			t.Fatalf("Decode error %v, reference %v", err, ref)
		}
		if err != nil {
			if off != 0 || h.OAM || h.Critical || h.Protocol != 0 || h.VNI != 0 || h.Options != nil {
				t.Fatalf("on error %v: offset %d, header %+v", err, off, h)
			}
			return
		}
		if off != HeaderLen+len(h.Options) || off > len(b) || off != h.Len() {
			t.Fatalf("offset %d, %d bytes of options, input %d bytes", off, len(h.Options), len(b))
		}
		if len(h.Options)%4 != 0 || len(h.Options) > MaxOptionsLen || h.VNI > MaxVNI {
			t.Fatalf("impossible header %+v", h)
		}
		if err := ValidateOptions(h.Options); err != nil {
			t.Fatalf("ValidateOptions of decoded options: %v", err)
		}

		// The options iterate over exactly len(h.Options) bytes.
		want := bytes.Clone(b[:off])
		anyCritical := false
		pos := HeaderLen
		it := h.OptionIter()
		for o, ok := it.Next(); ok; o, ok = it.Next() {
			if len(o.Data)%4 != 0 || len(o.Data) > MaxOptionDataLen {
				t.Fatalf("option data of %d bytes", len(o.Data))
			}
			if binary.BigEndian.Uint16(b[pos:]) != o.Class || b[pos+2] != o.Type || !bytes.Equal(b[pos+4:pos+o.Len()], o.Data) {
				t.Fatalf("option at %d decoded as %+v", pos, o)
			}
			anyCritical = anyCritical || o.Critical()
			want[pos+3] &= 0x1f // R bits
			pos += o.Len()
		}
		if it.Err() != nil || pos != off {
			t.Fatalf("options iterate to %d (err %v), payload at %d", pos, it.Err(), off)
		}

		// Re-encode: reserved fields are written as 0, C is OR-ed.
		want[1] &= flagOAM | flagCritical
		if anyCritical {
			want[1] |= flagCritical
		}
		want[7] = 0
		out := make([]byte, off)
		n, err := h.Encode(out)
		if err != nil || n != off || !bytes.Equal(out, want) {
			t.Fatalf("re-encoded %x (%d, %v), want %x", out, n, err, want)
		}
		// Decoding the re-encoded header gives the same header back.
		h2, off2, err := Decode(out)
		if err != nil || off2 != off || h2.OAM != h.OAM || h2.Critical != (h.Critical || anyCritical) ||
			h2.Protocol != h.Protocol || h2.VNI != h.VNI {
			t.Fatalf("decode of re-encoded: %+v %d %v, was %+v", h2, off2, err, h)
		}
	})
}

// fuzzOptions builds well-formed options from arbitrary bytes: each option
// takes a class, a type and a word count from the stream, then as much data
// as is left (rounded down to words), within MaxOptionsLen.
func fuzzOptions(t *testing.T, seed []byte) ([]byte, []Option) {
	var raw []byte
	var opts []Option
	for len(seed) >= 4 {
		o := Option{Class: binary.BigEndian.Uint16(seed), Type: seed[2]}
		n := min(int(seed[3]&0x1f)*4, len(seed[4:])&^3)
		o.Data, seed = seed[4:4+n], seed[4+n:]
		if len(raw)+o.Len() > MaxOptionsLen {
			break
		}
		var err error
		if raw, err = AppendOption(raw, o); err != nil {
			t.Fatalf("AppendOption(%+v): %v", o, err)
		}
		opts = append(opts, o)
	}
	return raw, opts
}

// FuzzEncodeDecode checks Encode/Decode round trips: of well-formed headers
// built with AppendOption, and of arbitrary raw options, which Encode must
// accept exactly when ValidateOptions does.
func FuzzEncodeDecode(f *testing.F) {
	f.Add(false, false, ProtoEthernet, uint32(100), []byte{})
	f.Add(true, true, ProtoIPv4, uint32(MaxVNI), hx("ff ff 81 02 de ad be ef ca fe f0 0d"))
	f.Add(false, false, ProtoIPv6, uint32(1<<24), hx("01 29 00 00 01 32 01 01 80 00 00 d1"))
	f.Add(false, true, uint16(0x1234), uint32(0xa), bytes.Repeat([]byte{0x1f}, 300))
	f.Fuzz(func(t *testing.T, oam, critical bool, proto uint16, vni uint32, seed []byte) {
		// Arbitrary raw options and VNI.
		h := Header{OAM: oam, Critical: critical, Protocol: proto, VNI: vni, Options: seed}
		buf := make([]byte, HeaderLen+len(seed))
		n, err := h.Encode(buf)
		switch {
		case vni > MaxVNI:
			if err != ErrVNI {
				t.Fatalf("VNI %#x: Encode error %v", vni, err)
			}
		case ValidateOptions(seed) != nil:
			if err != ValidateOptions(seed) {
				t.Fatalf("Encode error %v, ValidateOptions %v", err, ValidateOptions(seed))
			}
		case err != nil || n != len(buf):
			t.Fatalf("Encode of a valid header: %d, %v", n, err)
		}
		if err == nil {
			if _, _, err := Decode(buf); err != nil {
				t.Fatalf("Decode of encoded %x: %v", buf, err)
			}
		}

		// Well-formed options, VNI in range.
		raw, opts := fuzzOptions(t, seed)
		h = Header{OAM: oam, Critical: critical, Protocol: proto, VNI: vni & MaxVNI, Options: raw}
		buf = make([]byte, h.Len()+3)
		if n, err = h.Encode(buf); err != nil || n != h.Len() {
			t.Fatalf("Encode %+v: %d, %v", h, n, err)
		}
		got, off, err := Decode(buf)
		if err != nil || off != n {
			t.Fatalf("Decode %x: offset %d, %v", buf, off, err)
		}
		anyCritical := false
		it := got.OptionIter()
		for i, want := range opts {
			o, ok := it.Next()
			if !ok || o.Class != want.Class || o.Type != want.Type || !bytes.Equal(o.Data, want.Data) {
				t.Fatalf("option %d: %+v, want %+v", i, o, want)
			}
			anyCritical = anyCritical || want.Critical()
		}
		if _, ok := it.Next(); ok {
			t.Fatal("more options decoded than encoded")
		}
		if got.OAM != oam || got.Critical != (critical || anyCritical) || got.Protocol != proto || got.VNI != vni&MaxVNI ||
			!bytes.Equal(got.Options, raw) {
			t.Fatalf("round trip %+v -> %+v", h, got)
		}
	})
}
