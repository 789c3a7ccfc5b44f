//go:build linux

package tapnic

import (
	"encoding/binary"
	"testing"

	"github.com/gnv-project/gnv/link/internal/vnet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tunnelFrame builds the headers of a UDP-tunnel job: Ethernet, outer IP
// (v4 or v6), UDP, Geneve with optWords words of options and protocol
// proto, then inner headers.
func tunnelFrame(outer6 bool, optWords int, proto uint16, inner []byte) (fr []byte, l4 int) {
	b := make([]byte, 14)
	if outer6 {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0], ip[6] = 0x60, 17
		b = append(b, ip...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0], ip[9] = 0x45, 17
		b = append(b, ip...)
	}
	l4 = len(b)
	b = append(b, make([]byte, 8)...) // UDP
	g := make([]byte, 8+4*optWords)
	g[0] = byte(optWords)
	binary.BigEndian.PutUint16(g[2:], proto)
	b = append(b, g...)
	return append(b, inner...), l4
}

func innerIPTCP(v6 bool, flags byte) []byte {
	var ip []byte
	if v6 {
		ip = make([]byte, 40)
		ip[0], ip[6] = 0x60, 6
		binary.BigEndian.PutUint16(ip[4:], 32+1000)
	} else {
		ip = make([]byte, 20)
		ip[0], ip[9] = 0x45, 6
		binary.BigEndian.PutUint16(ip[2:], 20+32+1000)
	}
	tcp := make([]byte, 32)
	tcp[12] = 8 << 4 // 32-byte header
	tcp[13] = flags
	return append(ip, tcp...)
}

func TestTapTunnelHdr(t *testing.T) {
	eth := func(types ...uint16) []byte {
		b := make([]byte, 12)
		for _, ty := range types {
			b = binary.BigEndian.AppendUint16(b, ty)
			if ty == 0x8100 {
				b = append(b, 0, 5) // VLAN 5
			}
		}
		return b
	}
	for _, c := range []struct {
		name            string
		outer6, inner6  bool
		optWords        int
		proto           uint16
		innerLink       []byte
		csum, cwr       bool
		wantGSO         uint8
		wantFlags       uint8
		wantInnerLinkSz int
	}{
		{"l2-v4-in-v4", false, false, 0, 0x6558, eth(0x0800), true, false,
			vnet.GSOTCPv4 | vnet.GSOUDPTunnelIPv4, vnet.FNeedsCsum | vnet.FUDPTunnelCsum, 14},
		{"l2-vlan-v6-in-v6-options-ecn", true, true, 3, 0x6558, eth(0x8100, 0x86dd), false, true,
			vnet.GSOTCPv6 | vnet.GSOUDPTunnelIPv6 | vnet.GSOECN, vnet.FNeedsCsum, 18},
		{"l3-v6-in-v4", false, true, 1, 0x86dd, nil, true, false,
			vnet.GSOTCPv6 | vnet.GSOUDPTunnelIPv4, vnet.FNeedsCsum | vnet.FUDPTunnelCsum, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var flags byte = 0x10
			if c.cwr {
				flags |= byte(header.TCPFlagCwr)
			}
			inner := append(append([]byte{}, c.innerLink...), innerIPTCP(c.inner6, flags)...)
			fr, l4 := tunnelFrame(c.outer6, c.optWords, c.proto, inner)
			vh, ok := tapTunnelHdr(fr, 1400, c.csum)
			if !ok {
				t.Fatal("headers did not parse")
			}
			nh := l4 + 8 + 8 + 4*c.optWords + c.wantInnerLinkSz
			ipLen := 20
			if c.inner6 {
				ipLen = 40
			}
			want := vnet.TunnelHdr{
				Hdr: vnet.Hdr{
					Flags: c.wantFlags, GSOType: c.wantGSO, HdrLen: uint16(nh + ipLen + 32), GSOSize: 1400,
					CsumStart: uint16(nh + ipLen), CsumOffset: 16,
				},
				OuterTransportOffset: uint16(l4),
				InnerNetworkOffset:   uint16(nh),
			}
			if vh != want {
				t.Errorf("got  %v outer_th=%d inner_nh=%d\nwant %v outer_th=%d inner_nh=%d",
					vh.Hdr, vh.OuterTransportOffset, vh.InnerNetworkOffset, want.Hdr, want.OuterTransportOffset, want.InnerNetworkOffset)
			}
			for cut := 1; cut < len(fr); cut += 7 {
				if _, ok := tapTunnelHdr(fr[:cut], 1400, c.csum); ok && cut < int(want.HdrLen) {
					t.Fatalf("accepted headers cut at %d of %d", cut, want.HdrLen)
				}
			}
		})
	}
	// Not a job: an inner UDP packet, an unknown Geneve protocol, an inner
	// frame that is not IP, an outer packet that is not UDP.
	udpInner := innerIPTCP(false, 0)
	udpInner[9] = 17
	notIP, _ := tunnelFrame(false, 0, 0x6558, append(eth(0x0806), innerIPTCP(false, 0)...))
	unknown, _ := tunnelFrame(false, 0, 0x88b5, innerIPTCP(false, 0))
	udp, _ := tunnelFrame(false, 0, 0x0800, udpInner)
	notUDP, _ := tunnelFrame(false, 0, 0x0800, innerIPTCP(false, 0))
	notUDP[14+9] = 6
	for name, f := range map[string][]byte{"inner udp": udp, "unknown protocol": unknown, "inner arp": notIP, "outer tcp": notUDP} {
		if _, ok := tapTunnelHdr(f, 1400, true); ok {
			t.Errorf("%s: taken as a job", name)
		}
	}
}
