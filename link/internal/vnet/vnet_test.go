package vnet

import (
	"bytes"
	"testing"
)

func TestVirtioNetHdrLayout(t *testing.T) {
	h := Hdr{
		Flags:      FNeedsCsum,
		GSOType:    GSOUDPL4,
		HdrLen:     0x0102,
		GSOSize:    0x0304,
		CsumStart:  0x0506,
		CsumOffset: 0x0708,
	}
	var b [HdrLen]byte
	h.Encode(b[:])
	// struct virtio_net_hdr, little-endian as Linux lays it out for
	// AF_PACKET and TUN (vio_le()).
	want := []byte{1, 5, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07}
	if !bytes.Equal(b[:], want) {
		t.Fatalf("Encode: % x, want % x", b, want)
	}
	var g Hdr
	if !g.Decode(b[:]) || g != h {
		t.Fatalf("Decode: %+v, want %+v", g, h)
	}
	if g.Decode(b[:HdrLen-1]) {
		t.Errorf("Decode accepted a short header")
	}
}

func TestVirtioNetHdrString(t *testing.T) {
	for _, c := range []struct {
		h    Hdr
		want string
	}{
		{Hdr{}, "vnet{flags=[] gso=none hdr_len=0 gso_size=0 csum_start=0 csum_offset=0}"},
		{Hdr{Flags: FNeedsCsum, GSOType: GSOUDPL4, HdrLen: 42, GSOSize: 1400, CsumStart: 34, CsumOffset: 6},
			"vnet{flags=[needs-csum] gso=udp-l4 hdr_len=42 gso_size=1400 csum_start=34 csum_offset=6}"},
		{Hdr{Flags: FDataValid, GSOType: GSOTCPv4 | GSOECN},
			"vnet{flags=[data-valid] gso=tcpv4+ecn hdr_len=0 gso_size=0 csum_start=0 csum_offset=0}"},
	} {
		if got := c.h.String(); got != c.want {
			t.Errorf("String: %s, want %s", got, c.want)
		}
	}
}

func TestVirtioNetHdrTunnelLayout(t *testing.T) {
	h := TunnelHdr{
		Hdr: Hdr{
			Flags:      FNeedsCsum | FUDPTunnelCsum,
			GSOType:    GSOTCPv4 | GSOUDPTunnelIPv6,
			HdrLen:     0x0102,
			GSOSize:    0x0304,
			CsumStart:  0x0506,
			CsumOffset: 0x0708,
		},
		OuterTransportOffset: 0x090a,
		InnerNetworkOffset:   0x0b0c,
	}
	b := bytes.Repeat([]byte{0xee}, TunnelHdrLen)
	h.Encode(b)
	// struct virtio_net_hdr_v1_hash_tunnel: flags, gso_type, hdr_len,
	// gso_size, csum_start, csum_offset, num_buffers, hash_value,
	// hash_report, padding, outer_th_offset, inner_nh_offset.
	want := []byte{9, 0x41, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x09, 0x0c, 0x0b}
	if !bytes.Equal(b, want) {
		t.Fatalf("Encode: % x, want % x", b, want)
	}
	var g TunnelHdr
	if !g.Decode(b) || g != h {
		t.Fatalf("Decode: %+v, want %+v", g, h)
	}
	if g.Decode(b[:TunnelHdrLen-1]) {
		t.Errorf("Decode accepted a short header")
	}
	if got, want := h.String(), "vnet{flags=[needs-csum,udp-tunnel-csum] gso=tcpv4+udp-tunnel6 hdr_len=258 gso_size=772 csum_start=1286 csum_offset=1800}"; got != want {
		t.Errorf("String: %s, want %s", got, want)
	}
}
