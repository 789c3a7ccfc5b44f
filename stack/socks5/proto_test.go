package socks5_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/stack/socks5"
)

func TestReadRequest(t *testing.T) {
	cases := []struct {
		in   []byte
		want socks5.Request
		err  string
	}{
		{[]byte{5, 1, 0, 1, 10, 0, 0, 2, 0, 80}, socks5.Request{Command: socks5.Connect, Addr: socks5.Addr{IP: netip.MustParseAddr("10.0.0.2"), Port: 80}}, ""},
		{append(append([]byte{5, 3, 0, 4}, netip.MustParseAddr("fd00::2").AsSlice()...), 0, 53), socks5.Request{Command: socks5.UDPAssociate, Addr: socks5.Addr{IP: netip.MustParseAddr("fd00::2"), Port: 53}}, ""},
		{[]byte{5, 1, 0, 3, 8, '1', '0', '.', '0', '.', '0', '.', '2', 1, 187}, socks5.Request{Command: socks5.Connect, Addr: socks5.Addr{Name: "10.0.0.2", Port: 443}}, ""},
		{[]byte{4, 1, 0, 1, 10, 0, 0, 2, 0, 80}, socks5.Request{}, "version 4"},
		{[]byte{5, 1, 0, 9, 10, 0, 0, 2, 0, 80}, socks5.Request{}, "unknown address type"},
		{[]byte{5, 1, 0, 3, 0, 0, 80}, socks5.Request{}, "empty domain name"},
		{[]byte{5, 1, 0, 1, 10, 0}, socks5.Request{}, "unexpected EOF"},
	}
	for _, c := range cases {
		got, err := socks5.ReadRequest(bytes.NewReader(c.in))
		if c.err != "" {
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.err)) {
				t.Errorf("ReadRequest(%v) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ReadRequest(%v) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if b, err := got.AppendBinary(nil); err != nil || !bytes.Equal(b, c.in) {
			t.Errorf("AppendBinary(%+v) = %v, %v; want %v", got, b, err, c.in)
		}
	}
	if _, err := socks5.ReadRequest(bytes.NewReader([]byte{5, 1, 0, 7})); !errors.Is(err, socks5.ErrAddressType) {
		t.Errorf("address type 7: %v", err)
	}
}

func TestParseUDPDatagram(t *testing.T) {
	b := []byte{0, 0, 0, 1, 10, 0, 0, 2, 0, 7, 'h', 'i'}
	h, p, err := socks5.ParseUDPDatagram(b)
	if err != nil || h.Frag != 0 || h.Addr.String() != "10.0.0.2:7" || string(p) != "hi" {
		t.Errorf("ParseUDPDatagram = %+v, %q, %v", h, p, err)
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {0, 0, 0, 1, 10, 0}, {0, 0, 0, 4, 1}, {0, 0, 0, 5, 0, 0}} {
		if _, _, err := socks5.ParseUDPDatagram(bad); err == nil {
			t.Errorf("ParseUDPDatagram(%v) succeeded", bad)
		}
	}
	if got := socks5.AppendReply(nil, socks5.HostUnreachable, socks5.Addr{}); !bytes.Equal(got, []byte{5, 4, 0, 1, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("AppendReply = %v", got)
	}
}

// FuzzRequest: ReadRequest never panics and never reads past the request;
// what it accepts encodes back to the bytes it read (RSV aside).
func FuzzRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 1, 10, 0, 0, 2, 0, 80})
	f.Add([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add([]byte{5, 1, 0, 3, 11, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', 1, 187})
	f.Add(append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("fd00::2").AsSlice()...), 0, 80))
	f.Add([]byte{5, 2, 0, 1, 127, 0, 0, 1, 0, 0})
	f.Add([]byte{5, 1, 0, 3, 0})
	f.Add([]byte{5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		req, err := socks5.ReadRequest(r)
		if err != nil {
			return
		}
		used := data[:len(data)-r.Len()]
		b, err := req.AppendBinary(nil)
		if err != nil {
			t.Fatalf("accepted %v but cannot encode %+v: %v", used, req, err)
		}
		want := append([]byte(nil), used...)
		want[2] = 0
		if !bytes.Equal(b, want) {
			t.Fatalf("read %v as %+v, which encodes as %v", used, req, b)
		}
	})
}

// FuzzUDPHeader: ParseUDPDatagram never panics; what it accepts encodes
// back to the same header, and the payload is the rest.
func FuzzUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 10, 0, 0, 2, 0, 7, 'h', 'i'})
	f.Add([]byte{0, 0, 1, 1, 10, 0, 0, 2, 0, 7})
	f.Add(append(append([]byte{0, 0, 0, 4}, netip.MustParseAddr("fd00::2").AsSlice()...), 0, 53, 1, 2, 3))
	f.Add([]byte{0, 0, 0, 3, 4, 'h', 'o', 's', 't', 0, 53, 'q'})
	f.Add([]byte{0, 0, 0, 3, 0, 0, 53})
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, payload, err := socks5.ParseUDPDatagram(data)
		if err != nil {
			return
		}
		b, err := h.AppendBinary(nil)
		if err != nil {
			t.Fatalf("accepted %v but cannot encode %+v: %v", data, h, err)
		}
		want := append([]byte(nil), data[:len(data)-len(payload)]...)
		want[0], want[1] = 0, 0
		if !bytes.Equal(b, want) {
			t.Fatalf("header %v parsed as %+v encodes as %v", want, h, b)
		}
	})
}
