//go:build linux

package tuntap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"github.com/gnv-project/gnv/testutil/race"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

var (
	devSrc4 = tcpip.AddrFrom4([4]byte{10, 9, 0, 1})
	devDst4 = tcpip.AddrFrom4([4]byte{10, 9, 0, 2})
	devSrc6 = tcpip.AddrFrom16([16]byte{0xfd, 9, 15: 1})
	devDst6 = tcpip.AddrFrom16([16]byte{0xfd, 9, 15: 2})
)

// devMkIP builds an IPv4 or IPv6 packet around the transport segment l4 (its
// checksum is filled in when fill is set) with valid IP header checksum.
// ext is an optional IPv6 extension-header chain inserted before l4 (its
// first byte must be the next header field, set by devMkIP).
func devMkIP(v6 bool, proto uint8, l4 []byte, fill bool, ext []byte) []byte {
	if fill {
		src, dst := devSrc4, devDst4
		if v6 {
			src, dst = devSrc6, devDst6
		}
		off := link.TCPChecksumOffset
		if proto == frame.ProtoUDP {
			off = link.UDPChecksumOffset
		}
		l4[off], l4[off+1] = 0, 0
		s := ^checksum.Checksum(l4, header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), src, dst, uint16(len(l4))))
		if s == 0 && proto == frame.ProtoUDP {
			s = 0xffff
		}
		binary.BigEndian.PutUint16(l4[off:], s)
	}
	if !v6 {
		b := make([]byte, 20+len(l4))
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), ID: 0x1234, TTL: 64, Protocol: proto,
			SrcAddr: devSrc4, DstAddr: devDst4,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(b[20:], l4)
		return b
	}
	b := make([]byte, 40+len(ext)+len(l4))
	next := proto
	if len(ext) > 0 {
		next = 0 // hop-by-hop
		copy(b[40:], ext)
		b[40] = proto
	}
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(ext) + len(l4)), TransportProtocol: tcpip.TransportProtocolNumber(next),
		HopLimit: 64, SrcAddr: devSrc6, DstAddr: devDst6,
	})
	copy(b[40+len(ext):], l4)
	return b
}

// devMkTCP returns a TCP segment (header with a 12-byte timestamp option, and
// payload) with a zero checksum.
func devMkTCP(seq uint32, flags header.TCPFlags, payload []byte) []byte {
	b := make([]byte, 32+len(payload))
	header.TCP(b).Encode(&header.TCPFields{
		SrcPort: 40000, DstPort: 5001, SeqNum: seq, AckNum: 77, DataOffset: 32,
		Flags: flags, WindowSize: 1000,
	})
	copy(b[20:32], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(b[32:], payload)
	return b
}

// devMkUDP returns a UDP datagram with a zero checksum.
func devMkUDP(payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: 40000, DstPort: 5002, Length: uint16(len(b))})
	copy(b[8:], payload)
	return b
}

func devRand(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// devCheckL4 verifies the IPv4 header checksum and the transport checksum of
// an IP packet.
func devCheckL4(t *testing.T, pkt []byte) {
	t.Helper()
	p, ok := frame.ParseIP(pkt, len(pkt))
	if !ok {
		t.Fatalf("not an IP packet: % x", pkt[:min(len(pkt), 40)])
	}
	if p.TotalLen != len(pkt) {
		t.Errorf("IP length %d, packet %d bytes", p.TotalLen, len(pkt))
	}
	if p.Version == 4 && checksum.Checksum(pkt[:p.HdrLen], 0) != 0xffff {
		t.Errorf("bad IPv4 header checksum")
	}
	l4 := pkt[p.HdrLen:p.TotalLen]
	if s := checksum.Checksum(l4, link.PseudoHeaderSum(pkt, p.Proto, len(l4))); s != 0xffff {
		t.Errorf("bad transport checksum (sum %#04x)", s)
	}
}

func TestDevParseIP(t *testing.T) {
	tcp := devMkIP(false, frame.ProtoTCP, devMkTCP(1, header.TCPFlagAck, []byte("hello")), true, nil)
	hbh := make([]byte, 8)
	tcp6 := devMkIP(true, frame.ProtoTCP, devMkTCP(1, header.TCPFlagAck, []byte("hello")), true, hbh)
	udp6 := devMkIP(true, frame.ProtoUDP, devMkUDP([]byte("x")), true, nil)
	frag := devMkIP(false, frame.ProtoUDP, devMkUDP([]byte("x")), true, nil)
	frag[6] = 0x20 // more fragments
	for _, tc := range []struct {
		name string
		b    []byte
		size int
		ok   bool
		want frame.IP
	}{
		{"tcp4", tcp, len(tcp), true, frame.IP{Version: 4, HdrLen: 20, TotalLen: len(tcp), Proto: 6, L4Len: 32}},
		{"tcp4-headers-only", tcp[:52], len(tcp), true, frame.IP{Version: 4, HdrLen: 20, TotalLen: len(tcp), Proto: 6, L4Len: 32}},
		{"tcp4-short-copy", tcp[:40], len(tcp), true, frame.IP{Version: 4, HdrLen: 20, TotalLen: len(tcp), Proto: 6}},
		{"tcp4-truncated", tcp[:50], 50, false, frame.IP{}},
		{"tcp6-hop-by-hop", tcp6, len(tcp6), true, frame.IP{Version: 6, HdrLen: 48, TotalLen: len(tcp6), Proto: 6, L4Len: 32}},
		{"udp6", udp6, len(udp6), true, frame.IP{Version: 6, HdrLen: 40, TotalLen: len(udp6), Proto: 17, L4Len: 8}},
		{"fragment", frag, len(frag), true, frame.IP{Version: 4, HdrLen: 20, TotalLen: len(frag), Proto: 17, Fragment: true}},
		{"garbage", []byte(strings.Repeat("\x00", 40)), 40, false, frame.IP{}},
	} {
		got, ok := frame.ParseIP(tc.b, tc.size)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("%s: got %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDevFinishChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{frame.ProtoTCP, frame.ProtoUDP} {
			for _, n := range []int{0, 1, 7, 1000} {
				var l4 []byte
				off := link.TCPChecksumOffset
				if proto == frame.ProtoTCP {
					l4 = devMkTCP(9, header.TCPFlagAck|header.TCPFlagPsh, devRand(n, uint64(n)))
				} else {
					l4 = devMkUDP(devRand(n, uint64(n)))
					off = link.UDPChecksumOffset
				}
				pkt := devMkIP(v6, proto, l4, true, nil)
				want := append([]byte(nil), pkt...)
				ipLen := 20
				if v6 {
					ipLen = 40
				}
				// What the kernel hands over with CHECKSUM_PARTIAL.
				binary.BigEndian.PutUint16(pkt[ipLen+off:], link.PseudoHeaderSum(pkt, proto, len(pkt)-ipLen))
				if !frame.FinishPartial(pkt, ipLen, off) {
					t.Fatal("devFinishChecksum failed")
				}
				if !bytes.Equal(pkt, want) {
					t.Errorf("v6=%v proto=%d n=%d: checksum %#04x, want %#04x", v6, proto, n,
						binary.BigEndian.Uint16(pkt[ipLen+off:]), binary.BigEndian.Uint16(want[ipLen+off:]))
				}
				devCheckL4(t, pkt)
			}
		}
	}
	if frame.FinishPartial(make([]byte, 20), 10, 9) {
		t.Error("out-of-range offsets accepted")
	}
}

// devSplit cuts b into slices at irregular (odd and even) places, as the views
// of a PacketBuffer might be.
func devSplit(b []byte) link.Slices {
	var s link.Slices
	for i, cut := 0, 1; len(b) > 0; i++ {
		cut = min(len(b), 1+(i*7919)%1501)
		s = append(s, b[:cut])
		b = b[cut:]
	}
	return s
}

func TestDevSegment(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{frame.ProtoTCP, frame.ProtoUDP} {
			for _, linkLen := range []int{0, 14} {
				payload := devRand(10001, 3)
				var l4 []byte
				if proto == frame.ProtoTCP {
					l4 = devMkTCP(0xfffff000, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin|header.TCPFlagCwr, payload)
				} else {
					l4 = devMkUDP(payload)
				}
				ip := devMkIP(v6, proto, l4, false, nil)
				fr := append(make([]byte, linkLen), ip...)
				p, _ := frame.ParseIP(ip, len(ip))
				hl := linkLen + p.HdrLen + p.L4Len
				src := devSplit(fr)
				const seg = 1400
				var got []byte
				nseg := 0
				for idx, off := 0, 0; off < len(payload); idx, off = idx+1, off+seg {
					n := min(seg, len(payload)-off)
					last := off+n >= len(payload)
					hdr := append([]byte(nil), fr[:hl]...)
					segment(hdr, linkLen, p.HdrLen, proto, idx, off, n, last, src.Checksum(hl+off, n))
					var pkt []byte
					pkt = append(pkt, hdr[linkLen:]...)
					for _, b := range src.AppendRange(nil, hl+off, n) {
						pkt = append(pkt, b...)
					}
					devCheckL4(t, pkt)
					q, _ := frame.ParseIP(pkt, len(pkt))
					if q.TotalLen != p.HdrLen+p.L4Len+n {
						t.Errorf("segment %d: length %d", idx, q.TotalLen)
					}
					if !v6 {
						if id := binary.BigEndian.Uint16(pkt[4:6]); id != 0x1234+uint16(idx) {
							t.Errorf("segment %d: IPv4 ID %#x", idx, id)
						}
					}
					l4 := pkt[p.HdrLen:]
					if proto == frame.ProtoTCP {
						tcp := header.TCP(l4)
						if tcp.SequenceNumber() != 0xfffff000+uint32(off) {
							t.Errorf("segment %d: seq %#x", idx, tcp.SequenceNumber())
						}
						f := tcp.Flags()
						if (f&(header.TCPFlagFin|header.TCPFlagPsh) != 0) != last {
							t.Errorf("segment %d (last %v): flags %v", idx, last, f)
						}
						if (f&header.TCPFlagCwr != 0) != (idx == 0) {
							t.Errorf("segment %d: flags %v", idx, f)
						}
					} else if header.UDP(l4).Length() != uint16(8+n) {
						t.Errorf("segment %d: UDP length %d", idx, header.UDP(l4).Length())
					}
					got = append(got, l4[p.L4Len:]...)
					nseg++
				}
				if !bytes.Equal(got, payload) || nseg != 8 {
					t.Errorf("v6=%v proto=%d: %d segments, payload mismatch %v", v6, proto, nseg, !bytes.Equal(got, payload))
				}
			}
		}
	}
}

func TestDevPermissionError(t *testing.T) {
	err := netdev.DeviceError("creating", ModeTAP.kind(), "gnv0", syscall.EPERM)
	want := "creating TAP device gnv0 needs CAP_NET_ADMIN (run as root or grant the capability)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("error %q names a command-line flag", err)
	}
	var perm *PermissionError
	if !errors.As(err, &perm) || perm.Op != "creating" || perm.Kind != "TAP" || perm.Name != "gnv0" {
		t.Errorf("errors.As(%v, *PermissionError) = %+v", err, perm)
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("errors.Is(%v, os.ErrPermission) = false", err)
	}
	err = netdev.DeviceError("creating", ModeTUN.kind(), "gnv1", &os.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.EACCES})
	if !strings.Contains(err.Error(), "creating TUN device gnv1 needs CAP_NET_ADMIN") {
		t.Errorf("EACCES: %v", err)
	}
	err = netdev.DeviceError("creating", ModeTUN.kind(), "gnv1", &os.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.ENOENT})
	if !strings.Contains(err.Error(), "modprobe tun") || !errors.Is(err, ErrNoTUN) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ENOENT: %v", err)
	}
	if err := netdev.DeviceError("creating", ModeTUN.kind(), "x", syscall.EINVAL); strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("EINVAL: %v", err)
	}
}

func TestDeviceOffloadsString(t *testing.T) {
	if s := link.Offloads(0).String(); s != "none" {
		t.Errorf("zero: %q", s)
	}
	o := link.OffloadVnetHdr | link.OffloadRxChecksum | link.OffloadTSO4 | link.OffloadTSO6
	if s := o.String(); s != "vnet-hdr tso4 tso6 csum" {
		t.Errorf("%+v: %q", o, s)
	}
}

// The tests below drive a Device's data path without /dev/net/tun or
// privileges: the "device" is one end of a SOCK_SEQPACKET socket pair (one
// message per frame, like a TAP/TUN descriptor) and the test plays the
// kernel on the other end. The endpoint is a gVisor channel endpoint
// (wrapped in ethernet.Endpoint for TAP).

var devTestMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}

// devTestEthernet is the Ethernet header of frames for the test device.
func devTestEthernet(v6 bool) []byte {
	eth := make([]byte, 14)
	copy(eth[0:6], devTestMAC)
	copy(eth[6:12], []byte{0x02, 0, 0, 0, 0, 0x02})
	et := uint16(header.IPv4ProtocolNumber)
	if v6 {
		et = uint16(header.IPv6ProtocolNumber)
	}
	binary.BigEndian.PutUint16(eth[12:], et)
	return eth
}

type devTestDevice struct {
	d    *Device
	peer *os.File
	ch   *channel.Endpoint
}

func devNewTestDevice(t *testing.T, mode Mode, withVnet bool, mtu uint32) *devTestDevice {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	d := &Device{opts: Options{Name: "test0", Mode: mode, MTU: mtu}, name: "test0", created: true}
	d.offloads = offloadsIf(withVnet)
	d.mtu.Store(mtu)
	d.sys.f = os.NewFile(uintptr(fds[0]), "test-device")
	d.sys.rc, _ = d.sys.f.SyscallConn()
	td := &devTestDevice{d: d, peer: os.NewFile(uintptr(fds[1]), "test-kernel")}
	var ep stack.LinkEndpoint
	if mode == ModeTAP {
		d.mac = devTestMAC
		td.ch = channel.New(256, mtu+14, "")
		ep = ethernet.New(td.ch)
	} else {
		td.ch = channel.New(256, mtu, "")
		ep = td.ch
	}
	if err := d.Attach(ep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		td.peer.Close()
		td.ch.Drain()
	})
	return td
}

// send plays the kernel: one frame into the device.
func (td *devTestDevice) send(t *testing.T, vh *vnet.Hdr, fr []byte) {
	t.Helper()
	var msg []byte
	if vh != nil {
		msg = make([]byte, vnet.HdrLen)
		vh.Encode(msg)
	}
	if _, err := td.peer.Write(append(msg, fr...)); err != nil {
		t.Fatal(err)
	}
}

// recv returns the next frame the device wrote (with its vnet header).
func (td *devTestDevice) recv(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, 1<<17)
	_ = td.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := td.peer.Read(buf)
	if err != nil {
		t.Fatalf("reading what the device wrote: %v", err)
	}
	return buf[:n]
}

// packets returns the next n packets the device handed to the endpoint.
func (td *devTestDevice) packets(t *testing.T, n int) []*stack.PacketBuffer {
	t.Helper()
	var out []*stack.PacketBuffer
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n {
		if pkt := td.ch.Read(); pkt != nil {
			out = append(out, pkt)
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint got %d packets, want %d (device stats %+v)", len(out), n, td.d.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

func devPktBytes(pkt *stack.PacketBuffer) []byte {
	v := pkt.ToView()
	defer v.Release()
	return append([]byte(nil), v.AsSlice()...)
}

func TestDeviceReadPath(t *testing.T) {
	for _, mode := range []Mode{ModeTUN, ModeTAP} {
		for _, v6 := range []bool{false, true} {
			name := mode.String() + map[bool]string{false: "/ipv4", true: "/ipv6"}[v6]
			t.Run(name, func(t *testing.T) {
				td := devNewTestDevice(t, mode, true, 1500)
				var lh []byte
				proto := header.IPv4ProtocolNumber
				ipLen := 20
				gsoType := uint8(vnet.GSOTCPv4)
				wantGSO := stack.GSOTCPv4
				if v6 {
					proto, ipLen, gsoType, wantGSO = header.IPv6ProtocolNumber, 40, vnet.GSOTCPv6, stack.GSOTCPv6
				}
				if mode == ModeTAP {
					lh = devTestEthernet(v6)
				}
				ll := len(lh)

				// A TCP super-packet with a partial checksum.
				payload := devRand(5000, 1)
				ip := devMkIP(v6, frame.ProtoTCP, devMkTCP(100, header.TCPFlagAck, payload), false, nil)
				binary.BigEndian.PutUint16(ip[ipLen+16:], link.PseudoHeaderSum(ip, frame.ProtoTCP, len(ip)-ipLen))
				fr := append(append([]byte(nil), lh...), ip...)
				td.send(t, &vnet.Hdr{Flags: vnet.FNeedsCsum, GSOType: gsoType | vnet.GSOECN, HdrLen: uint16(len(fr)), GSOSize: 1400,
					CsumStart: uint16(ll + ipLen), CsumOffset: 16}, fr)
				pkt := td.packets(t, 1)[0]
				g := pkt.GSOOptions
				if g.Type != wantGSO || g.MSS != 1400 || !g.NeedsCsum || g.L3HdrLen != uint16(ipLen) || g.CsumOffset != 16 {
					t.Errorf("GSO options %+v", g)
				}
				if pkt.NetworkProtocolNumber != proto || len(pkt.LinkHeader().Slice()) != ll ||
					len(pkt.NetworkHeader().Slice()) != ipLen || len(pkt.TransportHeader().Slice()) != 32 ||
					pkt.Data().Size() != len(payload) || pkt.TransportProtocolNumber != header.TCPProtocolNumber {
					t.Errorf("packet: proto %d lh %d net %d transport %d data %d", pkt.NetworkProtocolNumber,
						len(pkt.LinkHeader().Slice()), len(pkt.NetworkHeader().Slice()), len(pkt.TransportHeader().Slice()), pkt.Data().Size())
				}
				if got := devPktBytes(pkt); !bytes.Equal(got, fr) {
					t.Error("super-packet bytes changed")
				}
				pkt.DecRef()

				// A UDP datagram with a partial checksum: finished here.
				udp := devMkIP(v6, frame.ProtoUDP, devMkUDP(devRand(333, 2)), true, nil)
				want := append(append([]byte(nil), lh...), udp...)
				binary.BigEndian.PutUint16(udp[ipLen+6:], link.PseudoHeaderSum(udp, frame.ProtoUDP, len(udp)-ipLen))
				td.send(t, &vnet.Hdr{Flags: vnet.FNeedsCsum, CsumStart: uint16(ll + ipLen), CsumOffset: 6},
					append(append([]byte(nil), lh...), udp...))
				pkt = td.packets(t, 1)[0]
				if got := devPktBytes(pkt); !bytes.Equal(got, want) {
					t.Error("UDP checksum not finished correctly")
				}
				if pkt.GSOOptions.Type != stack.GSONone || len(pkt.TransportHeader().Slice()) != 8 {
					t.Errorf("UDP packet: %+v", pkt.GSOOptions)
				}
				pkt.DecRef()

				// A UDP super-packet (USO): split here.
				upay := devRand(3500, 3)
				uso := devMkIP(v6, frame.ProtoUDP, devMkUDP(upay), false, nil)
				binary.BigEndian.PutUint16(uso[ipLen+6:], link.PseudoHeaderSum(uso, frame.ProtoUDP, len(uso)-ipLen))
				td.send(t, &vnet.Hdr{Flags: vnet.FNeedsCsum, GSOType: vnet.GSOUDPL4, HdrLen: uint16(ll + ipLen + 8), GSOSize: 1000,
					CsumStart: uint16(ll + ipLen), CsumOffset: 6}, append(append([]byte(nil), lh...), uso...))
				var got []byte
				for i, pkt := range td.packets(t, 4) {
					b := devPktBytes(pkt)
					if !bytes.Equal(b[:ll], lh) {
						t.Errorf("segment %d: lh header % x", i, b[:ll])
					}
					devCheckL4(t, b[ll:])
					got = append(got, b[ll+ipLen+8:]...)
					if len(pkt.NetworkHeader().Slice()) != ipLen || len(pkt.TransportHeader().Slice()) != 8 {
						t.Errorf("segment %d: headers %d/%d", i, len(pkt.NetworkHeader().Slice()), len(pkt.TransportHeader().Slice()))
					}
					pkt.DecRef()
				}
				if !bytes.Equal(got, upay) {
					t.Error("USO payload mismatch")
				}

				// Malformed: TCP GSO type on a UDP packet.
				td.send(t, &vnet.Hdr{GSOType: gsoType, GSOSize: 100}, append(append([]byte(nil), lh...), udp...))
				// And a plain packet without any offload.
				td.send(t, &vnet.Hdr{}, want)
				pkt = td.packets(t, 1)[0]
				if got := devPktBytes(pkt); !bytes.Equal(got, want) {
					t.Error("plain packet changed")
				}
				pkt.DecRef()
				st := td.d.Stats()
				if st.ReadFrames != 5 || st.ReadPackets != 7 || st.ReadTSO != 1 || st.ReadUSO != 1 || st.ReadChecksums != 1 || st.ReadDrops != 1 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

// devGROSegments feeds n full-sized TCP segments (plus a short last one) of a
// flow through gVisor's GRO into the device, as the endpoint does, and
// returns the payload.
func devGROSegments(t *testing.T, d *Device, v6 bool, segSize, n, last int) []byte {
	t.Helper()
	var g gro.GRO
	g.Init(true)
	g.Dispatcher = (*devDispatcher)(d)
	payload := devRand(segSize*n+last, 7)
	proto := header.IPv4ProtocolNumber
	if v6 {
		proto = header.IPv6ProtocolNumber
	}
	for off := 0; off < len(payload); off += segSize {
		end := min(off+segSize, len(payload))
		flags := header.TCPFlagAck
		if end == len(payload) {
			flags |= header.TCPFlagPsh
		}
		fr := devMkIP(v6, frame.ProtoTCP, devMkTCP(5000+uint32(off), flags, payload[off:end]), true, nil)
		if d.opts.Mode == ModeTAP {
			fr = append(devTestEthernet(v6), fr...)
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(fr)})
		if d.opts.Mode == ModeTAP {
			pkt.LinkHeader().Consume(14)
		}
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	g.Flush()
	return payload
}

// devLayout returns the link and IP header lengths of the test frames for
// mode and family, and the TCP segment size (32-byte TCP headers) that the
// MTU allows.
func devLayout(mode Mode, v6 bool, mtu int) (ll, ipLen, seg int) {
	ll, ipLen = 0, 20
	if mode == ModeTAP {
		ll = 14
	}
	if v6 {
		ipLen = 40
	}
	return ll, ipLen, mtu - ipLen - 32
}

func TestDeviceWritePath(t *testing.T) {
	for _, mode := range []Mode{ModeTUN, ModeTAP} {
		for _, withVnet := range []bool{true, false} {
			for _, v6 := range []bool{false, true} {
				name := mode.String() + map[bool]string{false: "/plain", true: "/vnet"}[withVnet] + map[bool]string{false: "/ipv4", true: "/ipv6"}[v6]
				t.Run(name, func(t *testing.T) {
					const mtu = 1500
					td := devNewTestDevice(t, mode, withVnet, mtu)
					ll, ipLen, seg := devLayout(mode, v6, mtu)
					payload := devGROSegments(t, td.d, v6, seg, 6, 100)
					var got []byte
					if withVnet {
						msg := td.recv(t)
						var vh vnet.Hdr
						vh.Decode(msg)
						fr := msg[vnet.HdrLen:]
						wantType := uint8(vnet.GSOTCPv4)
						if v6 {
							wantType = vnet.GSOTCPv6
						}
						if vh.Flags != vnet.FNeedsCsum || vh.GSOType != wantType || int(vh.GSOSize) != seg ||
							int(vh.CsumStart) != ll+ipLen || vh.CsumOffset != 16 || int(vh.HdrLen) != ll+ipLen+32 {
							t.Errorf("vnet header %+v", vh)
						}
						ip := append([]byte(nil), fr[ll:]...)
						// Finish the partial checksum as the kernel would.
						frame.FinishPartial(ip, ipLen, 16)
						devCheckL4(t, ip)
						got = ip[ipLen+32:]
					} else {
						for i := 0; i < 7; i++ {
							fr := td.recv(t)
							if len(fr)-ll > mtu {
								t.Errorf("segment %d: %d bytes exceed the MTU", i, len(fr)-ll)
							}
							devCheckL4(t, fr[ll:])
							tcp := header.TCP(fr[ll+ipLen:])
							if tcp.SequenceNumber() != 5000+uint32(len(got)) {
								t.Errorf("segment %d: seq %d", i, tcp.SequenceNumber())
							}
							got = append(got, fr[ll+ipLen+32:]...)
						}
					}
					if !bytes.Equal(got, payload) {
						t.Errorf("payload mismatch: %d bytes, want %d", len(got), len(payload))
					}

					// Two small segments coalesced: within the MTU, but the
					// TCP checksum GRO left is stale.
					payload = devGROSegments(t, td.d, v6, 100, 2, 0)
					msg := td.recv(t)
					if withVnet {
						var vh vnet.Hdr
						vh.Decode(msg)
						if vh.Flags != vnet.FNeedsCsum || vh.GSOType != vnet.GSONone {
							t.Errorf("small coalesced: vnet header %+v", vh)
						}
						msg = msg[vnet.HdrLen:]
						frame.FinishPartial(msg, ll+ipLen, 16)
					}
					devCheckL4(t, msg[ll:])
					if !bytes.Equal(msg[ll+ipLen+32:], payload) {
						t.Error("small coalesced: payload mismatch")
					}

					// A validated UDP datagram: DATA_VALID; an unvalidated
					// one: no flags.
					for _, validated := range []bool{true, false} {
						fr := devMkIP(v6, frame.ProtoUDP, devMkUDP(devRand(200, 5)), true, nil)
						if mode == ModeTAP {
							fr = append(devTestEthernet(v6), fr...)
						}
						pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(fr)})
						pkt.LinkHeader().Consume(ll)
						pkt.RXChecksumValidated = validated
						(*devDispatcher)(td.d).DeliverNetworkPacket(0, pkt)
						pkt.DecRef()
						msg := td.recv(t)
						if withVnet {
							var vh vnet.Hdr
							vh.Decode(msg)
							if want := (vnet.Hdr{Flags: map[bool]uint8{true: vnet.FDataValid}[validated]}); vh != want {
								t.Errorf("UDP validated=%v: vnet header %+v", validated, vh)
							}
							msg = msg[vnet.HdrLen:]
						}
						if !bytes.Equal(msg, fr) {
							t.Errorf("UDP validated=%v: fr changed", validated)
						}
					}
					st := td.d.Stats()
					if withVnet && (st.WrittenGSO != 1 || st.WrittenPackets != 4) || !withVnet && (st.WrittenSplit != 1 || st.WrittenPackets != 10) || st.WriteErrors+st.WriteDrops != 0 {
						t.Errorf("stats %+v", st)
					}
				})
			}
		}
	}
}

func TestDeviceZeroAlloc(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items)")
	}
	for _, withVnet := range []bool{true, false} {
		td := devNewTestDevice(t, ModeTUN, withVnet, 1500)
		d := td.d
		// Write path: a validated TCP segment, checksummed on the way out.
		fr := devMkIP(false, frame.ProtoTCP, devMkTCP(1, header.TCPFlagAck, devRand(1400, 1)), true, nil)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(fr)})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		pkt.RXChecksumValidated = true
		buf := make([]byte, 1<<16)
		fd := int(td.peer.Fd())
		if n := testing.AllocsPerRun(200, func() {
			(*devDispatcher)(d).DeliverNetworkPacket(0, pkt)
			_, _ = unix.Read(fd, buf)
		}); n != 0 {
			t.Errorf("vnet=%v: write path: %v allocations per packet", withVnet, n)
		}
		pkt.DecRef()

		// Read path: a TCP super-packet into a PacketBuffer.
		ip := devMkIP(false, frame.ProtoTCP, devMkTCP(1, header.TCPFlagAck, devRand(30000, 1)), true, nil)
		var in []byte
		if withVnet {
			in = make([]byte, vnet.HdrLen)
			(&vnet.Hdr{Flags: vnet.FNeedsCsum, GSOType: vnet.GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}).Encode(in)
		}
		in = append(in, ip...)
		// A device without a read goroutine, so that the test owns the batch.
		rd := &Device{opts: Options{Mode: ModeTUN, MTU: 1500}}
		rd.offloads = offloadsIf(withVnet)
		rd.mtu.Store(1500)
		rd.initRead()
		defer rd.sys.releaseRead()
		if n := testing.AllocsPerRun(200, func() {
			rd.readFrame(fakeRead(&rd.sys, in))
			if rd.sys.batch.Len() != 1 {
				t.Fatalf("batch holds %d packets", rd.sys.batch.Len())
			}
			rd.sys.batch.Reset()
			rd.sys.batchDone()
		}); n != 0 {
			t.Errorf("vnet=%v: read path: %v allocations per fr", withVnet, n)
		}
	}
}

// fakeRead scatters in over the receive views as readv would and returns
// its length.
func fakeRead(s *devSys, in []byte) int {
	n := len(in)
	for _, iov := range s.riov[s.riovFirst:] {
		c := copy(unsafe.Slice(iov.Base, iov.Len), in)
		in = in[c:]
	}
	return n
}

// offloadsIf returns the virtio-net header offload if on, else none.
func offloadsIf(on bool) link.Offloads {
	if on {
		return link.OffloadVnetHdr
	}
	return 0
}

// TestDeviceWriteSegments: a run handed over as headers and payload slices
// (link.SegmentWriter) leaves as one GSO frame whose checksums, finished as
// the kernel finishes them, are right; a device without a virtio-net
// header, or an mss above what its MTU allows, refuses it and writes
// nothing.
func TestDeviceWriteSegments(t *testing.T) {
	for _, mode := range []Mode{ModeTUN, ModeTAP} {
		for _, v6 := range []bool{false, true} {
			t.Run(mode.String()+map[bool]string{false: "/ipv4", true: "/ipv6"}[v6], func(t *testing.T) {
				const mtu = 1500
				ll, ipLen, seg := devLayout(mode, v6, mtu)
				payload := devRand(seg*5+77, 9)
				fr := devMkIP(v6, frame.ProtoTCP, devMkTCP(5000, header.TCPFlagAck|header.TCPFlagPsh, payload), true, nil)
				if mode == ModeTAP {
					fr = append(devTestEthernet(v6), fr...)
				}
				hl := ll + ipLen + 32
				hdr := append([]byte(nil), fr[:hl]...)
				binary.BigEndian.PutUint16(hdr[ll+ipLen+16:], link.PseudoHeaderSum(hdr[ll:ll+ipLen], frame.ProtoTCP, len(fr)-ll-ipLen))
				var pays [][]byte
				for off := 0; off < len(payload); off += seg {
					pays = append(pays, payload[off:min(off+seg, len(payload))])
				}

				plain := devNewTestDevice(t, mode, false, mtu)
				if (*devDispatcher)(plain.d).WriteSegments(hdr, pays, seg) {
					t.Error("a device without a virtio-net header took a run")
				}
				td := devNewTestDevice(t, mode, true, mtu)
				w := (*devDispatcher)(td.d)
				if w.WriteSegments(hdr, pays, seg+1) {
					t.Error("took a run whose mss exceeds the MTU")
				}
				if !w.WriteSegments(hdr, pays, seg) {
					t.Fatal("refused a run")
				}
				msg := td.recv(t)
				var vh vnet.Hdr
				vh.Decode(msg)
				wantType := uint8(vnet.GSOTCPv4)
				if v6 {
					wantType = vnet.GSOTCPv6
				}
				if vh.Flags != vnet.FNeedsCsum || vh.GSOType != wantType || int(vh.GSOSize) != seg ||
					int(vh.CsumStart) != ll+ipLen || vh.CsumOffset != 16 || int(vh.HdrLen) != hl {
					t.Errorf("vnet header %+v", vh)
				}
				got := msg[vnet.HdrLen:]
				if len(got) != len(fr) {
					t.Fatalf("wrote %d bytes, want %d", len(got), len(fr))
				}
				ip := append([]byte(nil), got[ll:]...)
				frame.FinishPartial(ip, ipLen, 16)
				devCheckL4(t, ip)
				if !bytes.Equal(ip, fr[ll:]) {
					t.Error("the frame differs from the packet the run stands for")
				}
				if st := td.d.Stats(); st.WrittenGSO != 1 || st.WrittenPackets != 1 || int(st.WrittenBytes) != len(fr) || st.WriteErrors+st.WriteDrops != 0 {
					t.Errorf("stats %+v", st)
				}
				if st := plain.d.Stats(); st.WrittenPackets != 0 {
					t.Errorf("the plain device wrote: %+v", st)
				}
			})
		}
	}
}
