//go:build linux

package afpacket

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/nsudp"
	"github.com/gnv-project/gnv/link/qdisc"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	"github.com/gnv-project/gnv/testutil/netns"
	"github.com/gnv-project/gnv/testutil/race"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// ---- pure helpers (no root needed) ----

func TestPacketOffloadsString(t *testing.T) {
	for _, c := range []struct {
		o    link.Offloads
		want string
	}{
		{0, "none"},
		{link.OffloadVnetHdr, "vnet-hdr"},
		{link.OffloadVnetHdr | link.OffloadTxChecksum | link.OffloadUDPGSO, "vnet-hdr tx-csum udp-gso"},
	} {
		if got := c.o.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.o, got, c.want)
		}
	}
}

// afpTestFrame builds an Ethernet + IP + UDP frame with a valid checksum.
func afpTestFrame(v6 bool, payload []byte) []byte {
	var ip []byte
	ulen := header.UDPMinimumSize + len(payload)
	src4, dst4 := tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	src6 := tcpip.AddrFrom16([16]byte{0xfd, 15: 1})
	dst6 := tcpip.AddrFrom16([16]byte{0xfd, 15: 2})
	var src, dst tcpip.Address
	etype := header.IPv4ProtocolNumber
	if v6 {
		ip = make([]byte, header.IPv6MinimumSize)
		header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(ulen), TransportProtocol: udp.ProtocolNumber, HopLimit: 64, SrcAddr: src6, DstAddr: dst6})
		src, dst, etype = src6, dst6, header.IPv6ProtocolNumber
	} else {
		ip = make([]byte, header.IPv4MinimumSize)
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{TotalLength: uint16(header.IPv4MinimumSize + ulen), ID: 100, TTL: 64, Protocol: uint8(udp.ProtocolNumber), SrcAddr: src4, DstAddr: dst4})
		h.SetChecksum(^h.CalculateChecksum())
		src, dst = src4, dst4
	}
	f := make([]byte, header.EthernetMinimumSize, header.EthernetMinimumSize+len(ip)+ulen)
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: "\x02\x00\x00\x00\x00\x01", DstAddr: "\x02\x00\x00\x00\x00\x02", Type: etype})
	f = append(f, ip...)
	u := make([]byte, header.UDPMinimumSize)
	header.UDP(u).Encode(&header.UDPFields{SrcPort: 1000, DstPort: 6081, Length: uint16(ulen)})
	f = append(f, u...)
	f = append(f, payload...)
	uh := header.UDP(f[len(f)-ulen:])
	link.FinishChecksum(uh[:header.UDPMinimumSize], link.ProtoUDP, header.PseudoHeaderChecksum(udp.ProtocolNumber, src, dst, uint16(ulen)), checksum.Checksum(payload, 0))
	return f
}

func TestAFPRxChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f := afpTestFrame(v6, []byte("hello, geneve payload"))
		if !frame.RxChecksumOK(f) {
			t.Fatalf("v6=%v: good fr refused", v6)
		}
		bad := append([]byte(nil), f...)
		bad[len(bad)-1] ^= 0x40
		if frame.RxChecksumOK(bad) {
			t.Errorf("v6=%v: corrupted payload accepted", v6)
		}
		if !v6 {
			bad = append([]byte(nil), f...)
			bad[header.EthernetMinimumSize+8] ^= 1 // TTL: breaks the header checksum
			if frame.RxChecksumOK(bad) {
				t.Errorf("corrupted IPv4 header accepted")
			}
		}
		zero := append([]byte(nil), f...)
		l3, l4, _, _ := frame.L3L4(zero)
		_ = l3
		header.UDP(zero[l4:]).SetChecksum(0)
		if !frame.RxChecksumOK(zero) {
			t.Errorf("v6=%v: zero checksum refused (left to the transport)", v6)
		}
	}
}

// TestAFPSegmentHeader cuts a job's headers for each datagram and checks
// the lengths, IDs and checksums that result.
func TestAFPSegmentHeader(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := bytes.Repeat([]byte("0123456789"), 25) // 250 bytes: 100 + 100 + 50
		job := afpTestFrame(v6, payload)
		l3, l4, _, _ := frame.L3L4(job)
		hl := l4 + header.UDPMinimumSize
		for i, off := 0, 0; off < len(payload); i, off = i+1, off+100 {
			m := min(100, len(payload)-off)
			seg := append(append([]byte(nil), job[:hl]...), payload[off:off+m]...)
			pseudo := link.SegmentHeader(seg[:hl], l3, l4, link.ProtoUDP, i, off, m, off+m >= len(payload))
			link.FinishChecksum(seg[l4:hl], link.ProtoUDP, pseudo, checksum.Checksum(payload[off:off+m], 0))
			if !frame.RxChecksumOK(seg) {
				t.Errorf("v6=%v segment %d: bad checksum", v6, i)
			}
			if u := header.UDP(seg[l4:]); int(u.Length()) != header.UDPMinimumSize+m {
				t.Errorf("v6=%v segment %d: UDP length %d", v6, i, u.Length())
			}
			if v6 {
				if h := header.IPv6(seg[l3:]); int(h.PayloadLength()) != header.UDPMinimumSize+m {
					t.Errorf("segment %d: IPv6 payload length %d", i, h.PayloadLength())
				}
			} else if h := header.IPv4(seg[l3:]); int(h.TotalLength()) != len(seg)-l3 || h.ID() != uint16(100+i) || !h.IsChecksumValid() {
				t.Errorf("segment %d: IPv4 length %d ID %d checksum ok %v", i, h.TotalLength(), h.ID(), h.IsChecksumValid())
			}
		}
	}
}

// ---- namespaces: netstack on AF_PACKET in A, the kernel in B ----

const (
	afpDevA, afpDevB = "gnvpa0", "gnvpb0"
	afpPort          = 6081
)

var (
	afpA4, afpB4 = netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")
	afpA6, afpB6 = netip.MustParseAddr("fd00:99::1"), netip.MustParseAddr("fd00:99::2")
)

// afpEnv is a netstack underlay on a Endpoint in namespace A and a
// kernel UDP socket in namespace B, joined by a veth pair.
type afpEnv struct {
	nsA, nsB *netns.NS
	ep       *Endpoint
	s        *stack.Stack
	tr       *nsudp.Transport
	rec      *afpRecorder
	conn     *net.UDPConn // B's kernel socket on afpPort
	a, b     netip.Addr
}

// afpRecorder keeps copies of what the transport receives.
type afpRecorder struct {
	mu        sync.Mutex
	got       [][]byte
	src       []netip.AddrPort
	countOnly bool
}

func (r *afpRecorder) Receive(batch []link.Datagram) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.countOnly {
		return
	}
	for _, d := range batch {
		r.got = append(r.got, append([]byte(nil), d.Payload...))
		r.src = append(r.src, d.Src)
	}
}

func (r *afpRecorder) wait(tb testing.TB, n int) [][]byte {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.got) >= n {
			got := append([][]byte(nil), r.got...)
			r.mu.Unlock()
			return got
		}
		k := len(r.got)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			tb.Fatalf("netstack side received %d datagrams, want %d", k, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// afpSetTxCsum turns the transmit checksum offload of dev on or off
// (ETHTOOL_STXCSUM, what ethtool -K DEV tx on|off does). With it off, the
// kernel completes partial checksums in software before the frame crosses
// the veth, so the peer verifies real checksums.
func afpSetTxCsum(tb testing.TB, ns *netns.NS, dev string, on bool) {
	tb.Helper()
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_STXCSUM}
		if on {
			v.data = 1
		}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], dev)
		ifr.data = unsafe.Pointer(&v)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return fmt.Errorf("ETHTOOL_STXCSUM %s: %w", dev, e)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func afpWriteFile(tb testing.TB, ns *netns.NS, path, v string) {
	tb.Helper()
	if err := ns.Do(func() error { return os.WriteFile(path, []byte(v), 0o644) }); err != nil {
		tb.Fatal(err)
	}
}

// newAFPEnv builds the two namespaces, the netstack underlay on a
// Endpoint in A (address .1) and a kernel socket in B (.2). A's veth
// end has transmit checksum offload off, so B's kernel verifies the
// checksums that the offloads produce.
func newAFPEnv(tb testing.TB, opts Options, v6 bool) *afpEnv {
	return newAFPEnvSegmenter(tb, opts, v6, nil)
}

// newAFPEnvSegmenter is newAFPEnv with the transport's segmenter set to seg
// (nil: the endpoint).
func newAFPEnvSegmenter(tb testing.TB, opts Options, v6 bool, seg link.UDPSegmenter) *afpEnv {
	tb.Helper()
	netns.RequireRoot(tb)
	env := &afpEnv{nsA: netns.New(tb, "gnvpa"), nsB: netns.New(tb, "gnvpb"), a: afpA4, b: afpB4}
	if v6 {
		env.a, env.b = afpA6, afpB6
	}
	netns.Veth(tb, env.nsA, afpDevA, env.nsB, afpDevB)
	afpWriteFile(tb, env.nsA, "/proc/sys/net/ipv6/conf/"+afpDevA+"/disable_ipv6", "1")
	env.nsB.MustRun(tb, "ip", "addr", "add", afpB4.String()+"/24", "dev", afpDevB)
	env.nsB.MustRun(tb, "ip", "addr", "add", afpB6.String()+"/64", "dev", afpDevB, "nodad")
	afpSetTxCsum(tb, env.nsA, afpDevA, false)

	opts.Device = afpDevA
	if err := env.nsA.Do(func() (err error) { env.ep, err = New(opts); return err }); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("AF_PACKET offloads: %s", env.ep.Offloads())
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}),
			ipv6.NewProtocolWithOptions(ipv6.Options{MLD: ipv6.MLDOptions{Enabled: true}}),
			arp.NewProtocol,
		},
		TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	env.s = s
	if terr := s.CreateNICWithOptions(1, env.ep, stack.NICOptions{Name: "underlay", QDisc: qdisc.NewDirect(env.ep)}); terr != nil {
		env.ep.Close()
		s.Destroy()
		tb.Fatal(terr)
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(afpA4, 24), netip.PrefixFrom(afpA6, 64)} {
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits()}}, stack.AddressProperties{}); terr != nil {
			s.Destroy()
			tb.Fatal(terr)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	tr, err := nsudp.New(nsudp.Options{Stack: s, NIC: 1, Local: netip.AddrPortFrom(env.a, afpPort), Segmenter: seg})
	if err != nil {
		s.Destroy()
		tb.Fatal(err)
	}
	env.tr = tr
	env.rec = &afpRecorder{}
	if err := tr.Start(env.rec); err != nil {
		tb.Fatal(err)
	}
	network := "udp4"
	if v6 {
		network = "udp6"
	}
	if err := env.nsB.Do(func() (err error) {
		env.conn, err = net.ListenUDP(network, &net.UDPAddr{Port: afpPort})
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	_ = env.conn.SetReadBuffer(8 << 20)
	tb.Cleanup(func() {
		env.conn.Close()
		tr.Close()
		s.Destroy()
	})
	return env
}

// afpPayload is a Geneve-looking datagram payload numbered i.
func afpPayload(i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint16(b[2:4], 0x6558)
	binary.BigEndian.PutUint32(b[4:8], 42<<8)
	binary.BigEndian.PutUint32(b[8:12], uint32(i))
	for k := 12; k < size; k++ {
		b[k] = byte(i*7 + k)
	}
	return b
}

// afpPackets makes packets to B with the payloads, each in two views (a
// Geneve header and the rest, as the endpoint builds them).
func (env *afpEnv) packets(payloads [][]byte) []link.Packet {
	pkts := make([]link.Packet, len(payloads))
	for i, p := range payloads {
		b := buffer.MakeWithData(p[:8])
		_ = b.Append(buffer.NewViewWithData(p[8:]))
		pkts[i] = link.Packet{Payload: b, Dst: netip.AddrPortFrom(env.b, afpPort), SrcPort: 50000, TTL: 64}
	}
	return pkts
}

func releasePackets(pkts []link.Packet) {
	for i := range pkts {
		pkts[i].Payload.Release()
	}
}

// readB reads n datagrams on B's socket.
func (env *afpEnv) readB(tb testing.TB, n int) [][]byte {
	tb.Helper()
	var got [][]byte
	buf := make([]byte, 65536)
	_ = env.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < n {
		k, from, err := env.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			tb.Fatalf("kernel side received %d datagrams, want %d: %v", len(got), n, err)
		}
		if from.Addr().Unmap() != env.a || from.Port() != 50000 {
			tb.Errorf("datagram from %v, want %v:50000", from, env.a)
		}
		got = append(got, append([]byte(nil), buf[:k]...))
	}
	return got
}

// warmUp sends B one datagram and reads it, so that B's address is
// resolved before a test counts frames. That datagram waited for ARP and
// left from the goroutine that handled the reply, which counts it only after
// sendmmsg returns, possibly after B has read it. warmUp therefore also waits
// until it is counted, so that its count cannot fall into the test's. Only a
// frame sent with NEEDS_CSUM can be told apart (TxFrames also counts ARP and
// the stack's own reports), so without tx-csum there is nothing to wait for,
// and no test counts such frames then.
func (env *afpEnv) warmUp(tb testing.TB) {
	tb.Helper()
	csum, off0 := env.ep.txCsum.Load(), env.ep.Stats().TxChecksumOffloaded
	warm := env.packets([][]byte{afpPayload(999, 64)})
	if n, err := env.tr.WriteBatch(warm); n != 1 || err != nil {
		tb.Fatalf("WriteBatch: %d, %v", n, err)
	}
	releasePackets(warm)
	env.readB(tb, 1)
	deadline := time.Now().Add(10 * time.Second)
	for csum && env.ep.Stats().TxChecksumOffloaded == off0 {
		if time.Now().After(deadline) {
			tb.Fatal("the warm-up datagram reached B but was never counted as sent with NEEDS_CSUM")
		}
		time.Sleep(time.Millisecond)
	}
}

// csumErrors returns B's UDP InCsumErrors counter (IPv4 and IPv6).
func (env *afpEnv) csumErrors(tb testing.TB) int {
	tb.Helper()
	n := 0
	out := env.nsB.MustRun(tb, "cat", "/proc/net/snmp", "/proc/net/snmp6")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Udp6InCsumErrors":
			v, _ := strconv.Atoi(f[1])
			n += v
		case len(f) > 1 && f[0] == "Udp:" && names == nil:
			names = f
		case len(f) > 1 && f[0] == "Udp:":
			for i := range f {
				if i < len(names) && names[i] == "InCsumErrors" {
					v, _ := strconv.Atoi(f[i])
					n += v
				}
			}
		}
	}
	return n
}

// exchange sends datagrams both ways and checks them: netstack → kernel
// one by one (sizes differ), a run of equal ones as one job, and kernel →
// netstack.
func (env *afpEnv) exchange(t *testing.T, wantGSO bool) {
	env.warmUp(t)

	// Datagrams of different sizes: one by one, checksum offloaded if
	// the endpoint can.
	var payloads [][]byte
	for i := 0; i < 10; i++ {
		payloads = append(payloads, afpPayload(i, 100+i*137))
	}
	pkts := env.packets(payloads)
	n, err := env.tr.WriteBatch(pkts)
	releasePackets(pkts)
	if n != len(pkts) || err != nil {
		t.Fatalf("WriteBatch: %d, %v", n, err)
	}
	for i, d := range env.readB(t, len(payloads)) {
		if !bytes.Equal(d, payloads[i]) {
			t.Errorf("datagram %d: %d bytes differ from the %d sent", i, len(d), len(payloads[i]))
		}
	}

	// A run of 20 equal datagrams: one segmentation job.
	jobs0, frames0 := env.tr.Stats().TxGSOJobs, env.ep.Stats().TxGSOFrames
	payloads = payloads[:0]
	for i := 0; i < 20; i++ {
		payloads = append(payloads, afpPayload(100+i, 1400))
	}
	pkts = env.packets(payloads)
	n, err = env.tr.WriteBatch(pkts)
	releasePackets(pkts)
	if n != len(pkts) || err != nil {
		t.Fatalf("WriteBatch: %d, %v", n, err)
	}
	for i, d := range env.readB(t, len(payloads)) {
		if !bytes.Equal(d, payloads[i]) {
			t.Errorf("run datagram %d: %d bytes differ from the %d sent", i, len(d), len(payloads[i]))
		}
	}
	jobs, frames := env.tr.Stats().TxGSOJobs-jobs0, env.ep.Stats().TxGSOFrames-frames0
	t.Logf("run of 20: transport jobs %d, UDP_L4 frames %d", jobs, frames)
	if wantGSO && (jobs != 1 || frames != 1) {
		t.Errorf("run of 20 went as %d jobs / %d GSO frames, want 1 / 1", jobs, frames)
	}
	if !wantGSO && (jobs != 0 || frames != 0) {
		t.Errorf("run of 20 went as %d jobs / %d GSO frames with udp-gso off", jobs, frames)
	}

	// Kernel → netstack, with partial checksums (B's veth offloads them)
	// and then with complete ones that the endpoint verifies.
	var sent [][]byte
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.a, afpPort))
	for i := 0; i < 10; i++ {
		if i == 5 {
			afpSetTxCsum(t, env.nsB, afpDevB, false)
		}
		p := afpPayload(200+i, 200+i*50)
		if _, err := env.conn.WriteToUDP(p, to); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, p)
	}
	got := env.rec.wait(t, len(sent))
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Errorf("kernel → netstack datagram %d differs", i)
		}
	}
	if c := env.csumErrors(t); c != 0 {
		t.Errorf("B counted %d UDP checksum errors", c)
	}
	if c := env.ep.Stats().RxChecksumErrors; c != 0 {
		t.Errorf("the endpoint counted %d checksum errors", c)
	}
}

func afpFamily(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

// TestPacketEndpointOffloads exchanges datagrams between netstack on
// AF_PACKET and a kernel socket with the offloads the kernel accepts.
func TestPacketEndpointOffloads(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(afpFamily(v6), func(t *testing.T) {
			env := newAFPEnv(t, Options{}, v6)
			o := env.ep.Offloads()
			if !o.Has(link.OffloadVnetHdr) || !o.Has(link.OffloadTxChecksum) {
				t.Logf("kernel refused offloads (%s): checking the fallback only", o)
			}
			if o.Has(link.OffloadTxChecksum) && env.ep.Capabilities()&stack.CapabilityTXChecksumOffload == 0 {
				t.Errorf("tx-csum on but CapabilityTXChecksumOffload not advertised")
			}
			env.exchange(t, o.Has(link.OffloadUDPGSO))
			if o.Has(link.OffloadTxChecksum) && env.ep.Stats().TxChecksumOffloaded == 0 {
				t.Errorf("no fr went with NEEDS_CSUM")
			}
		})
	}
}

// TestPacketEndpointSoftware is the same exchange with the offloads turned
// off by option: checksums in software, then no virtio_net_hdr at all.
func TestPacketEndpointSoftware(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		want string
	}{
		{"no-tx-offload", Options{NoTxChecksumOffload: true, NoUDPGSO: true}, "vnet-hdr"},
		{"no-vnet-hdr", Options{NoVnetHdr: true}, "none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := newAFPEnv(t, c.opts, false)
			if got := env.ep.Offloads().String(); got != c.want {
				t.Errorf("offloads %q, want %q", got, c.want)
			}
			if env.ep.Capabilities()&stack.CapabilityTXChecksumOffload != 0 {
				t.Errorf("CapabilityTXChecksumOffload advertised with tx offload off")
			}
			env.exchange(t, false)
			if n := env.ep.Stats().TxChecksumOffloaded; n != 0 {
				t.Errorf("%d frames went with NEEDS_CSUM", n)
			}
		})
	}
}

// afpForceJobs says yes to segmentation jobs whatever the endpoint does.
type afpForceJobs struct{}

func (afpForceJobs) UDPSegmentation() (int, bool) { return 64, true }

// TestPacketEndpointSoftwareSegmentation has the endpoint cut jobs into
// datagrams itself, as after udp-gso was refused at run time: with the
// checksum offloaded (the transport builds the jobs while told that
// segmentation is on), then with the checksums computed by the endpoint (a
// job written straight to the route, as one queued while the offloads were
// still on would be).
func TestPacketEndpointSoftwareSegmentation(t *testing.T) {
	env := newAFPEnvSegmenter(t, Options{}, false, afpForceJobs{})
	env.ep.udpGSO.Store(false)
	env.warmUp(t)
	for _, csum := range []bool{true, false} {
		if csum && !env.ep.txCsum.Load() {
			continue
		}
		env.ep.txCsum.Store(csum)
		var payloads [][]byte
		for i := 0; i < 21; i++ {
			size := 1000
			if i == 20 {
				size = 333 // a shorter last datagram
			}
			payloads = append(payloads, afpPayload(i, size))
		}
		seg0, off0 := env.ep.Stats().TxSoftwareSegmented, env.ep.Stats().TxChecksumOffloaded
		if csum {
			pkts := env.packets(payloads)
			n, err := env.tr.WriteBatch(pkts)
			releasePackets(pkts)
			if n != len(pkts) || err != nil {
				t.Fatalf("WriteBatch: %d, %v", n, err)
			}
		} else {
			env.writeJob(t, payloads, 1000)
		}
		for i, d := range env.readB(t, len(payloads)) {
			if !bytes.Equal(d, payloads[i]) {
				t.Errorf("csum offload %v: datagram %d differs", csum, i)
			}
		}
		if got := env.ep.Stats().TxSoftwareSegmented - seg0; got != 1 {
			t.Errorf("csum offload %v: %d jobs segmented in software, want 1", csum, got)
		}
		if got := env.ep.Stats().TxChecksumOffloaded - off0; csum != (got == uint64(len(payloads))) {
			t.Errorf("csum offload %v: %d datagrams sent with NEEDS_CSUM", csum, got)
		}
	}
	if c := env.csumErrors(t); c != 0 {
		t.Errorf("B counted %d UDP checksum errors", c)
	}
}

// TestPacketEndpointGSORefused makes the kernel refuse a UDP_L4 frame at
// run time (more segments than UDP_MAX_SEGMENTS: EINVAL): the endpoint must
// switch udp-gso off and send the job again as separate datagrams.
func TestPacketEndpointGSORefused(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	if !env.ep.Offloads().Has(link.OffloadUDPGSO) {
		t.Skip("udp-gso not accepted by this kernel")
	}
	env.warmUp(t)
	var payloads [][]byte
	for i := 0; i < 300; i++ {
		payloads = append(payloads, afpPayload(i, 16))
	}
	env.writeJob(t, payloads, 16)
	for i, d := range env.readB(t, len(payloads)) {
		if !bytes.Equal(d, payloads[i]) {
			t.Errorf("datagram %d differs", i)
		}
	}
	st := env.ep.Stats()
	if st.TxOffloadFallbacks != 1 || st.TxSoftwareSegmented != 1 || env.ep.Offloads().Has(link.OffloadUDPGSO) {
		t.Errorf("fallbacks %d, software jobs %d, offloads %q", st.TxOffloadFallbacks, st.TxSoftwareSegmented, env.ep.Offloads())
	}
	if _, ok := env.ep.UDPSegmentation(); ok {
		t.Errorf("UDPSegmentation still says yes")
	}
	if c := env.csumErrors(t); c != 0 {
		t.Errorf("B counted %d UDP checksum errors", c)
	}
}

// writeJob writes a link.GSOUDPL4 job of payloads (each size bytes but the last)
// to B straight through a netstack route.
func (env *afpEnv) writeJob(tb testing.TB, payloads [][]byte, size int) {
	tb.Helper()
	r, terr := env.s.FindRoute(1, tcpip.AddrFrom4(env.a.As4()), tcpip.AddrFrom4(env.b.As4()), ipv4.ProtocolNumber, false)
	if terr != nil {
		tb.Fatal(terr)
	}
	defer r.Release()
	var payload buffer.Buffer
	for _, p := range payloads {
		_ = payload.Append(buffer.NewViewWithData(p))
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: int(r.MaxHeaderLength()) + header.UDPMinimumSize, Payload: payload})
	defer pkt.DecRef()
	length := uint16(pkt.Size() + header.UDPMinimumSize)
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	u.Encode(&header.UDPFields{SrcPort: 50000, DstPort: afpPort, Length: length})
	u.SetChecksum(r.PseudoHeaderChecksum(udp.ProtocolNumber, length))
	pkt.TransportProtocolNumber = udp.ProtocolNumber
	pkt.GSOOptions = stack.GSO{Type: link.GSOUDPL4, NeedsCsum: true, CsumOffset: link.UDPChecksumOffset, MSS: uint16(size), L3HdrLen: header.IPv4MinimumSize}
	if terr := r.WritePacket(stack.NetworkHeaderParams{Protocol: udp.ProtocolNumber, TTL: 64, DF: true}, pkt); terr != nil {
		tb.Fatal(terr)
	}
}

// TestPacketEndpointRxGSO has B's kernel send with UDP GSO (UDP_SEGMENT):
// the veth hands the super-datagram to AF_PACKET unsegmented, and the
// endpoint must cut it back into datagrams.
func TestPacketEndpointRxGSO(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	if !env.ep.Offloads().Has(link.OffloadVnetHdr) {
		t.Skip("no virtio_net_hdr")
	}
	rc, err := env.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1000) }); err != nil || serr != nil {
		t.Skipf("UDP_SEGMENT: %v %v", err, serr)
	}
	var all []byte
	for i := 0; i < 7; i++ {
		all = append(all, afpPayload(i, 1000)...)
	}
	all = append(all, afpPayload(7, 250)...)
	if _, err := env.conn.WriteToUDP(all, net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.a, afpPort))); err != nil {
		t.Fatal(err)
	}
	got := env.rec.wait(t, 8)
	for i := 0; i < 8; i++ {
		size := 1000
		if i == 7 {
			size = 250
		}
		if !bytes.Equal(got[i], afpPayload(i, size)) {
			t.Errorf("datagram %d differs (%d bytes)", i, len(got[i]))
		}
	}
	if n := env.ep.Stats().RxGSOSplit; n == 0 {
		t.Logf("the kernel segmented before AF_PACKET saw it (no super-fr to split)")
	} else {
		t.Logf("%d super-frames split", n)
	}
}

// TestPacketEndpointBadChecksum sends netstack a datagram with a broken
// UDP checksum from a raw socket in B: the endpoint (which cannot rely on
// netstack, whose NIC has RX checksum offload) must drop it.
func TestPacketEndpointBadChecksum(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	if !env.ep.Offloads().Has(link.OffloadVnetHdr) {
		t.Skip("no virtio_net_hdr: every fr is trusted")
	}
	// Learn the MACs: B pings A.
	netns.RequireTools(t, "ping")
	env.nsB.MustRun(t, "ping", "-c", "1", "-W", "2", afpA4.String())
	fr := afpTestFrame(false, []byte("corrupted on the way"))
	l3, _, _, _ := frame.L3L4(fr)
	ip := header.IPv4(fr[l3:])
	ip.SetSourceAddress(tcpip.AddrFrom4(afpB4.As4()))
	ip.SetDestinationAddress(tcpip.AddrFrom4(afpA4.As4()))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum()) // the UDP checksum is now wrong
	var macB net.HardwareAddr
	if err := env.nsB.Do(func() error {
		ifi, err := net.InterfaceByName(afpDevB)
		if err != nil {
			return err
		}
		macB = ifi.HardwareAddr
		eth := header.Ethernet(fr)
		eth.Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(macB), DstAddr: env.ep.LinkAddress(), Type: header.IPv4ProtocolNumber})
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, fr, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for env.ep.Stats().RxChecksumErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the corrupted datagram was not counted as a checksum error")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := env.tr.Stats().RxDatagrams; n != 0 {
		t.Errorf("the transport received %d datagrams", n)
	}
}

// TestPacketEndpointNeighbours checks ARP and ND both ways: the kernel
// pings netstack (it resolves netstack's MAC; netstack resolves it to
// answer), for IPv4 and IPv6.
func TestPacketEndpointNeighbours(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	netns.RequireTools(t, "ping")
	env.nsB.MustRun(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", afpA4.String())
	env.nsB.MustRun(t, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", afpA6.String())
	out := env.nsB.MustRun(t, "ip", "neigh", "show", "dev", afpDevB)
	mac := net.HardwareAddr(env.ep.LinkAddress()).String()
	if strings.Count(out, mac) < 2 {
		t.Errorf("B's neighbour table does not map both addresses to netstack's MAC %s:\n%s", mac, out)
	}
	for _, proto := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
		ns, terr := env.s.Neighbors(1, proto)
		if terr != nil || len(ns) == 0 {
			t.Errorf("netstack's neighbour table (proto %#x): %v %v", proto, ns, terr)
		}
	}
}

// TestPacketEndpointIGMP joins a group on the netstack side and watches
// B's wire for the IGMPv3 report.
func TestPacketEndpointIGMP(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	var fd int
	if err := env.nsB.Do(func() error {
		ifi, err := net.InterfaceByName(afpDevB)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(afpHtons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: afpHtons(unix.ETH_P_IP), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	group := netip.MustParseAddr("239.1.2.3")
	if err := env.tr.JoinGroup(group); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if n < header.EthernetMinimumSize+header.IPv4MinimumSize {
			continue
		}
		ip := header.IPv4(buf[header.EthernetMinimumSize:n])
		if !ip.IsValid(len(ip)) || ip.Protocol() != uint8(header.IGMPProtocolNumber) {
			continue
		}
		igmp := ip[ip.HeaderLength():]
		if ip.DestinationAddress() == tcpip.AddrFrom4([4]byte{224, 0, 0, 22}) && len(igmp) >= 16 && igmp[0] == 0x22 &&
			ip.SourceAddress() == tcpip.AddrFrom4(afpA4.As4()) && bytes.Equal(igmp[12:16], group.AsSlice()) {
			t.Logf("IGMPv3 report from %s for %s seen in B", ip.SourceAddress(), group)
			return
		}
	}
	t.Fatal("no IGMPv3 report for the group on the wire")
}

// TestCheckPacketHost checks the host-setup check on both ends.
func TestCheckPacketHost(t *testing.T) {
	netns.RequireRoot(t)
	nsA, nsB := netns.New(t, "gnvpa"), netns.New(t, "gnvpb")
	netns.Veth(t, nsA, afpDevA, nsB, afpDevB)
	afpWriteFile(t, nsA, "/proc/sys/net/ipv6/conf/"+afpDevA+"/disable_ipv6", "1")
	nsB.MustRun(t, "ip", "addr", "add", afpB4.String()+"/24", "dev", afpDevB)
	check := func(ns *netns.NS, dev string, addr netip.Addr) (w []string, err error) {
		if e := ns.Do(func() error { w, err = CheckHost(dev, addr); return nil }); e != nil {
			t.Fatal(e)
		}
		return w, err
	}
	if w, err := check(nsA, afpDevA, afpA4); err != nil || len(w) != 0 {
		t.Errorf("clean interface: warnings %q, error %v", w, err)
	}
	if _, err := check(nsB, afpDevB, afpB4); err == nil || !strings.Contains(err.Error(), afpB4.String()) {
		t.Errorf("kernel has the address: error %v", err)
	}
	if _, err := check(nsB, afpDevB, netip.MustParseAddr("10.99.0.77")); err == nil || !strings.Contains(err.Error(), "subnet") {
		t.Errorf("kernel has the subnet: error %v", err)
	}
	if w, _ := check(nsB, afpDevB, netip.MustParseAddr("192.0.2.1")); len(w) == 0 || !strings.Contains(w[0], "IPv6") {
		t.Errorf("IPv6 enabled: warnings %q", w)
	}
	nsA.MustRun(t, "ip", "link", "set", afpDevA, "down")
	if _, err := check(nsA, afpDevA, afpA4); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("interface down: error %v", err)
	}
	if err := nsA.Do(func() error { _, err := New(Options{Device: afpDevA}); return err }); err == nil {
		t.Errorf("New on a down interface succeeded")
	}
	if _, err := check(nsA, "nosuchdev0", afpA4); err == nil {
		t.Errorf("missing interface: no error")
	}
}

// TestPacketEndpointClose checks that destroying the stack stops the
// receive goroutine, closes the endpoint and leaks no packet.
func TestPacketEndpointClose(t *testing.T) {
	env := newAFPEnv(t, Options{}, false)
	env.exchangeBrief(t)
	// Keep netstack busy answering with ICMP port unreachable (which looks
	// up a route under the stack's lock) while the stack is destroyed: the
	// endpoint must not wait for its receive goroutine under that lock.
	stopFlood := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.a, 9))
		for {
			select {
			case <-stopFlood:
				return
			default:
			}
			_, _ = env.conn.WriteToUDP([]byte("to a closed port"), to)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	// The receive goroutine (the shared NIC's) runs now, so the wait for it
	// to be gone below means something.
	const rxLoop = "ethnic.(*NIC).receive"
	if buf := make([]byte, 1<<20); !strings.Contains(string(buf[:runtime.Stack(buf, true)]), rxLoop) {
		t.Fatalf("no %s goroutine while the endpoint is attached", rxLoop)
	}
	env.tr.Close()
	destroyed := make(chan struct{})
	go func() { env.s.Destroy(); close(destroyed) }()
	select {
	case <-destroyed:
	case <-time.After(20 * time.Second):
		// Not t.Fatal: the test's cleanup would hang on the same lock.
		panic("Stack.Destroy hangs (the endpoint waits for its receive goroutine under the stack's lock?)")
	}
	close(stopFlood)
	<-flooded
	env.conn.Close()
	if env.ep.IsAttached() || !env.ep.Closed() {
		t.Errorf("after Destroy: attached %v closed %v", env.ep.IsAttached(), env.ep.Closed())
	}
	if _, terr := env.ep.WritePackets(stack.PacketBufferList{}); terr == nil {
		t.Errorf("WritePackets after Close succeeded")
	}
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(st, rxLoop) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receive goroutine still running:\n%s", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	leakcheck.Check(t)
}

// exchangeBrief sends a few datagrams each way.
func (env *afpEnv) exchangeBrief(tb testing.TB) {
	pkts := env.packets([][]byte{afpPayload(1, 300), afpPayload(2, 300), afpPayload(3, 300)})
	if _, err := env.tr.WriteBatch(pkts); err != nil {
		tb.Fatal(err)
	}
	releasePackets(pkts)
	env.readB(tb, 3)
	if _, err := env.conn.WriteToUDP(afpPayload(4, 100), net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.a, afpPort))); err != nil {
		tb.Fatal(err)
	}
	env.rec.wait(tb, 1)
}

// TestPacketEndpointAllocs checks that sending a datagram and a job, and
// receiving, allocate nothing per packet in the steady state.
func TestPacketEndpointAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("the race detector makes sync.Pool drop items: allocation counts are meaningless")
	}
	env := newAFPEnv(t, Options{}, false)
	env.exchangeBrief(t)
	// DF set: without it netstack's IPv4 draws each IP ID from its secure
	// RNG, which allocates now and then.
	one := env.packets([][]byte{afpPayload(1, 1200)})
	defer releasePackets(one)
	var run [][]byte
	for i := 0; i < 16; i++ {
		run = append(run, afpPayload(i, 1200))
	}
	job := env.packets(run)
	defer releasePackets(job)
	for i := range one {
		one[i].DF = true
	}
	for i := range job {
		job[i].DF = true
	}
	// Drain B so its socket never fills.
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, err := env.conn.Read(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	defer func() { _ = env.conn.SetReadDeadline(time.Unix(1, 0)); <-done }()
	_ = env.conn.SetReadDeadline(time.Time{})
	for name, pkts := range map[string][]link.Packet{"datagram": one, "job": job} {
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := env.tr.WriteBatch(pkts); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%s: %.2f allocations per WriteBatch", name, allocs)
		if allocs > 0.5 {
			t.Errorf("%s: %.2f allocations per WriteBatch, want 0", name, allocs)
		}
	}
	// Receive: B writes frames to netstack from a raw socket; the receiver
	// only counts. Allocations are the whole process's (the endpoint's
	// receive goroutine, netstack, the transport's receive goroutine).
	env.rec.mu.Lock()
	env.rec.countOnly = true
	env.rec.mu.Unlock()
	fr := env.frameFromB(t, afpPayload(7, 1200))
	var fd int
	if err := env.nsB.Do(func() (err error) {
		ifi, err := net.InterfaceByName(afpDevB)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: afpHtons(unix.ETH_P_IP), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	allocs := testing.AllocsPerRun(300, func() {
		want := env.tr.Stats().RxDatagrams + 1
		if _, err := unix.Write(fd, fr); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for env.tr.Stats().RxDatagrams < want {
			if time.Now().After(deadline) {
				t.Fatalf("datagram from B not received (endpoint stats: %d frames)", env.ep.Stats().RxFrames)
			}
			time.Sleep(20 * time.Microsecond) // park, so that the poller runs
		}
	})
	// nsudp.Transport's receive queue itself allocates once per datagram when
	// datagrams arrive one at a time (its receive loop hands back a
	// queue slice whose capacity shrinks); the endpoint adds nothing.
	t.Logf("receive: %.2f allocations per datagram (nsudp.Transport's queue makes 1)", allocs)
	if allocs > 1.5 {
		t.Errorf("receive: %.2f allocations per datagram, want at most 1", allocs)
	}
}

// frameFromB builds an Ethernet frame from B's kernel to netstack's Geneve
// port, with a valid checksum.
func (env *afpEnv) frameFromB(tb testing.TB, payload []byte) []byte {
	tb.Helper()
	var macB net.HardwareAddr
	if err := env.nsB.Do(func() error {
		ifi, err := net.InterfaceByName(afpDevB)
		macB = ifi.HardwareAddr
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	f := afpTestFrame(false, payload)
	l3, l4, _, _ := frame.L3L4(f)
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(macB), DstAddr: env.ep.LinkAddress(), Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(f[l3:])
	src, dst := tcpip.AddrFrom4(afpB4.As4()), tcpip.AddrFrom4(afpA4.As4())
	ip.SetSourceAddress(src)
	ip.SetDestinationAddress(dst)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(f[l4:])
	link.FinishChecksum(u[:header.UDPMinimumSize], link.ProtoUDP, header.PseudoHeaderChecksum(udp.ProtocolNumber, src, dst, u.Length()), checksum.Checksum(u.Payload(), 0))
	return f
}

// BenchmarkPacketEndpointRun measures netstack → kernel throughput over the
// veth pair for runs of 40 equal 1400-byte datagrams: sent as UDP GSO jobs
// ("gso"), or datagram by datagram with the checksum still offloaded
// ("datagram"). It reports the datagrams per second that B's socket
// received (drops excluded) and that WriteBatch accepted.
func BenchmarkPacketEndpointRun(b *testing.B) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"gso", Options{}},
		{"datagram", Options{NoUDPGSO: true}},
		{"software", Options{NoTxChecksumOffload: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			env := newAFPEnv(b, c.opts, false)
			afpSetTxCsum(b, env.nsA, afpDevA, true) // a veth as deployed: checksums left partial
			var payloads [][]byte
			for i := 0; i < 40; i++ {
				payloads = append(payloads, afpPayload(i, 1400))
			}
			pkts := env.packets(payloads)
			defer releasePackets(pkts)
			if _, err := env.tr.WriteBatch(pkts[:1]); err != nil { // resolve B
				b.Fatal(err)
			}
			env.readB(b, 1)
			var got atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 65536)
				for {
					if _, err := env.conn.Read(buf); err != nil {
						return
					}
					got.Add(1)
				}
			}()
			_ = env.conn.SetReadDeadline(time.Time{})
			b.ResetTimer()
			start := time.Now()
			sent := 0
			for i := 0; i < b.N; i++ {
				n, _ := env.tr.WriteBatch(pkts)
				sent += n
			}
			elapsed := time.Since(start)
			time.Sleep(50 * time.Millisecond) // let B drain
			b.StopTimer()
			_ = env.conn.SetReadDeadline(time.Unix(1, 0))
			<-done
			b.ReportMetric(float64(sent)/elapsed.Seconds(), "tx-dgrams/s")
			b.ReportMetric(float64(got.Load())/elapsed.Seconds(), "rx-dgrams/s")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: offloads %q, %d sent, %d received in %v; GSO frames %d", c.name, env.ep.Offloads(), sent, got.Load(), elapsed, env.ep.Stats().TxGSOFrames)
		})
	}
}

// TestFailuresCountPackets: WritePackets reports how many packets went
// out, so a packet whose several messages (the datagrams of a job) all
// fail counts once, and the one after it, which went out, is not taken
// off.
func TestFailuresCountPackets(t *testing.T) {
	tx := &afpTx{e: &Endpoint{}}
	a := stack.NewPacketBuffer(stack.PacketBufferOptions{})
	defer a.DecRef()
	b := stack.NewPacketBuffer(stack.PacketBufferOptions{})
	defer b.DecRef()
	for i := 0; i < 3; i++ {
		tx.fail(&afpMeta{pkt: a, kind: afpSeg}, unix.ENETDOWN)
	}
	tx.fail(&afpMeta{pkt: b, kind: afpSeg}, unix.EMSGSIZE)
	if tx.failed != 2 || tx.firstErr != unix.ENETDOWN {
		t.Errorf("failed %d (first %v), want 2 packets (ENETDOWN)", tx.failed, tx.firstErr)
	}
	if got := tx.e.stats.txErrors.Load(); got != 4 {
		t.Errorf("txErrors %d, want one per message (4)", got)
	}
}
