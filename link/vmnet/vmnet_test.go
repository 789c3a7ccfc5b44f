package vmnet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link/vmnet"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	macVM   = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	macHost = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
)

// delivered is one frame a sink received.
type delivered struct {
	proto tcpip.NetworkProtocolNumber
	typ   tcpip.PacketType
	frame []byte // from the Ethernet header
}

// sink is a NetworkDispatcher that records frames.
type sink struct{ ch chan delivered }

func newSink() *sink { return &sink{ch: make(chan delivered, 1024)} }

func (s *sink) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if len(pkt.LinkHeader().Slice()) != header.EthernetMinimumSize {
		panic("link header not consumed")
	}
	v := pkt.ToView()
	s.ch <- delivered{proto: proto, typ: pkt.PktType, frame: bytes.Clone(v.AsSlice())}
	v.Release()
}

func (s *sink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (s *sink) next(t *testing.T) delivered {
	t.Helper()
	select {
	case d := <-s.ch:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no frame delivered")
	}
	return delivered{}
}

func (s *sink) none(t *testing.T) {
	t.Helper()
	select {
	case d := <-s.ch:
		t.Fatalf("unexpected frame %x", d.frame)
	case <-time.After(50 * time.Millisecond):
	}
}

// ethFrame builds an Ethernet frame.
func ethFrame(dst, src tcpip.LinkAddress, typ uint16, payload []byte) []byte {
	b := make([]byte, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], typ)
	copy(b[14:], payload)
	return b
}

// record prefixes f with its length, as the stream framing does.
func record(f []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(f)))
	return append(b, f...)
}

// readRecord reads one length-prefixed frame from c.
func readRecord(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var l [4]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		t.Fatalf("reading a length: %v", err)
	}
	f := make([]byte, binary.BigEndian.Uint32(l[:]))
	if _, err := io.ReadFull(c, f); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// goroutines waits for the goroutine count to come back to n.
func checkGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newStream returns an attached stream endpoint on one end of a pipe, the
// other end and the endpoint's sink.
func newStream(t *testing.T, opts vmnet.Options) (*vmnet.Endpoint, net.Conn, *sink) {
	t.Helper()
	a, b := net.Pipe()
	if opts.MAC == nil {
		opts.MAC = net.HardwareAddr(macHost)
	}
	ep, err := vmnet.NewStream(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	ep.Attach(s)
	t.Cleanup(func() { ep.Close(); b.Close() })
	return ep, b, s
}

// TestStreamReceive feeds the stream framing in awkward pieces: several
// frames in one write, a frame split byte by byte, a runt between them.
func TestStreamReceive(t *testing.T) {
	before := runtime.NumGoroutine()
	ep, vm, s := newStream(t, vmnet.Options{})
	f1 := ethFrame(macHost, macVM, 0x0800, bytes.Repeat([]byte{1}, 46))
	f2 := ethFrame(header.EthernetBroadcastAddress, macVM, 0x0806, bytes.Repeat([]byte{2}, 28))
	f3 := ethFrame("\x33\x33\x00\x00\x00\x01", macVM, 0x86dd, bytes.Repeat([]byte{3}, 1400))
	f4 := ethFrame(macVM, macVM, 0x0800, bytes.Repeat([]byte{4}, 20))
	var all []byte
	all = append(all, record(f1)...)
	all = append(all, record(f2)...)
	all = append(all, record([]byte{1, 2, 3})...) // a runt: skipped, counted
	go func() {
		vm.Write(all)
		for _, b := range record(f3) {
			vm.Write([]byte{b})
		}
		vm.Write(record(f4))
	}()
	for i, want := range []struct {
		f     []byte
		proto tcpip.NetworkProtocolNumber
		typ   tcpip.PacketType
	}{
		{f1, 0x0800, tcpip.PacketHost},
		{f2, 0x0806, tcpip.PacketBroadcast},
		{f3, 0x86dd, tcpip.PacketMulticast},
		{f4, 0x0800, tcpip.PacketOtherHost},
	} {
		d := s.next(t)
		if !bytes.Equal(d.frame, want.f) || d.proto != want.proto || d.typ != want.typ {
			t.Errorf("frame %d: got proto %#x type %d %x..., want proto %#x type %d", i+1, d.proto, d.typ, d.frame[:min(20, len(d.frame))], want.proto, want.typ)
		}
	}
	st := ep.Stats()
	if st.RxFrames != 4 || st.RxBytes != uint64(len(f1)+len(f2)+len(f3)+len(f4)) || st.Drops[vmnet.DropRunt] != 1 || st.TotalDrops() != 1 {
		t.Errorf("stats: %v", st)
	}
	ep.Close()
	vm.Close()
	checkGoroutines(t, before)
}

// TestStreamBadLength checks that a length prefix beyond the maximum frame
// size closes the endpoint, counted, with the on-close action run and no
// goroutine left.
func TestStreamBadLength(t *testing.T) {
	for _, l := range []uint32{1519, 0xffffffff} {
		before := runtime.NumGoroutine()
		ep, vm, s := newStream(t, vmnet.Options{MaxFrameSize: 1518})
		closed := make(chan struct{})
		ep.SetOnCloseAction(func() { close(closed) })
		good := ethFrame(macHost, macVM, 0x0800, make([]byte, 1504))
		go func() {
			vm.Write(record(good))
			vm.Write(binary.BigEndian.AppendUint32(nil, l))
			vm.Write(make([]byte, 64))
		}()
		if d := s.next(t); !bytes.Equal(d.frame, good) {
			t.Fatalf("length %d: first frame differs", l)
		}
		select {
		case <-ep.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("length %d: the endpoint did not close", l)
		}
		<-closed
		if err := ep.Err(); err == nil || !strings.Contains(err.Error(), "exceeds") {
			t.Errorf("length %d: Err() = %v", l, err)
		}
		if st := ep.Stats(); st.Drops[vmnet.DropFraming] != 1 || st.RxFrames != 1 {
			t.Errorf("length %d: stats %v", l, st)
		}
		// Writes after the close are refused and counted.
		pl := listOf(outbound(t, good))
		if _, err := ep.WritePackets(pl); err == nil {
			t.Error("WritePackets after close succeeded")
		}
		pl.Reset()
		vm.Close()
		checkGoroutines(t, before)
	}
}

// TestStreamEOF checks that the peer going away closes the endpoint.
func TestStreamEOF(t *testing.T) {
	before := runtime.NumGoroutine()
	ep, vm, _ := newStream(t, vmnet.Options{})
	vm.Close()
	select {
	case <-ep.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the endpoint did not close")
	}
	if err := ep.Err(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Err() = %v", err)
	}
	checkGoroutines(t, before)
}

// outbound builds an outbound PacketBuffer for frame: Ethernet header
// pushed, the rest payload. The caller releases it (listOf's list does).
func outbound(_ *testing.T, frame []byte) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(frame[14:])})
	copy(pkt.LinkHeader().Push(14), frame[:14])
	return pkt
}

func listOf(pkts ...*stack.PacketBuffer) stack.PacketBufferList {
	var l stack.PacketBufferList
	for _, p := range pkts {
		l.PushBack(p)
	}
	return l
}

// write hands pkts to ep and releases them.
func write(t *testing.T, ep *vmnet.Endpoint, pkts ...*stack.PacketBuffer) {
	t.Helper()
	l := listOf(pkts...)
	if _, err := ep.WritePackets(l); err != nil {
		t.Fatalf("WritePackets: %v", err)
	}
	l.Reset()
}

// TestStreamWrite checks plain frames on the way out: prefix and bytes.
func TestStreamWrite(t *testing.T) {
	ep, vm, _ := newStream(t, vmnet.Options{})
	f1 := ethFrame(macVM, macHost, 0x0806, bytes.Repeat([]byte{7}, 28))
	f2 := ethFrame(macVM, macHost, 0x0800, bytes.Repeat([]byte{8}, 1000)) // not IP inside: written as is
	write(t, ep, outbound(t, f1), outbound(t, f2))
	for i, want := range [][]byte{f1, f2} {
		if got := readRecord(t, vm); !bytes.Equal(got, want) {
			t.Errorf("frame %d differs", i+1)
		}
	}
	waitStats(t, ep, func(s vmnet.Stats) bool { return s.TxFrames == 2 && s.TxBytes == uint64(len(f1)+len(f2)) })
}

func waitStats(t *testing.T, ep *vmnet.Endpoint, ok func(vmnet.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(ep.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats: %v", ep.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tcpPacket builds an outbound Ethernet/IPv4-or-IPv6/TCP packet with
// payload, headers pushed as a netstack does, checksums left as the caller
// wants them (zero).
func tcpPacket(v6 bool, payload []byte, flags header.TCPFlags) *stack.PacketBuffer {
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14 + ipLen + 20, Payload: buffer.MakeWithData(payload)})
	tcp := header.TCP(pkt.TransportHeader().Push(20))
	tcp.Encode(&header.TCPFields{SrcPort: 1234, DstPort: 80, SeqNum: 1000, AckNum: 7, DataOffset: 20, Flags: flags, WindowSize: 1000})
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	src, dst := tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	proto := header.IPv4ProtocolNumber
	if v6 {
		src, dst = tcpip.AddrFrom16([16]byte{0xfd, 15: 1}), tcpip.AddrFrom16([16]byte{0xfd, 15: 2})
		ip := header.IPv6(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv6Fields{PayloadLength: uint16(20 + len(payload)), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		proto = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(ipLen + 20 + len(payload)), ID: 100, Flags: header.IPv4FlagDontFragment, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	}
	pkt.NetworkProtocolNumber = proto
	eth := header.Ethernet(pkt.LinkHeader().Push(14))
	eth.Encode(&header.EthernetFields{SrcAddr: macHost, DstAddr: macVM, Type: proto})
	return pkt
}

// checkFrame verifies a frame's IP header checksum and TCP/UDP checksum
// and returns its IP version, transport header and payload.
func checkFrame(t *testing.T, f []byte) (header.TCP, []byte) {
	t.Helper()
	ipb := f[14:]
	var src, dst tcpip.Address
	var l4 []byte
	switch ipb[0] >> 4 {
	case 4:
		ip := header.IPv4(ipb)
		if !ip.IsChecksumValid() {
			t.Fatalf("bad IPv4 header checksum")
		}
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		l4 = ipb[ip.HeaderLength():ip.TotalLength()]
	case 6:
		ip := header.IPv6(ipb)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		l4 = ipb[40 : 40+int(ip.PayloadLength())]
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(l4)))
	if checksum.Checksum(l4, sum) != 0xffff {
		t.Fatalf("bad TCP checksum")
	}
	tcp := header.TCP(l4)
	return tcp, l4[tcp.DataOffset():]
}

// TestSegment checks that TCP super-packets (a netstack's host GSO, or
// packets a link coalesced and vouched for) leave as MTU-sized segments
// with every checksum right and the payload in order; and that a small
// packet with a partial checksum leaves whole with a complete one.
func TestSegment(t *testing.T) {
	for _, c := range []struct {
		name  string
		v6    bool
		gso   bool // else: received, validated, coalesced
		size  int
		mss   uint16
		nsegs int
	}{
		{"gso4", false, true, 10000, 1000, 10},
		{"gso6", true, true, 4500, 1000, 5},
		{"gso4-mtu", false, true, 5000, 0, 4}, // MSS from the MTU: 1500-40
		{"coalesced4", false, false, 5000, 0, 4},
		{"coalesced6", true, false, 3000, 0, 3},
		{"small-partial", false, true, 100, 1000, 1},
		{"ack-partial", true, true, 0, 1000, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ep, vm, _ := newStream(t, vmnet.Options{})
			payload := make([]byte, c.size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			pkt := tcpPacket(c.v6, payload, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin)
			if c.gso {
				typ := stack.GSOTCPv4
				if c.v6 {
					typ = stack.GSOTCPv6
				}
				pkt.GSOOptions = stack.GSO{Type: typ, NeedsCsum: true, CsumOffset: 16, MSS: c.mss, L3HdrLen: 20}
			} else {
				pkt.RXChecksumValidated = true
			}
			write(t, ep, pkt)
			var got []byte
			for i := 0; i < c.nsegs; i++ {
				f := readRecord(t, vm)
				tcp, data := checkFrame(t, f)
				if len(f)-14 > 1500 {
					t.Errorf("segment %d: %d bytes", i, len(f)-14)
				}
				if tcp.SequenceNumber() != 1000+uint32(len(got)) {
					t.Errorf("segment %d: seq %d, want %d", i, tcp.SequenceNumber(), 1000+len(got))
				}
				last := i == c.nsegs-1
				if fin := tcp.Flags()&header.TCPFlagFin != 0; fin != last {
					t.Errorf("segment %d: FIN %v", i, fin)
				}
				got = append(got, data...)
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("payload differs: %d bytes, want %d", len(got), len(payload))
			}
			st := ep.Stats()
			if st.TxChecksums != uint64(c.nsegs) || (c.nsegs > 1) != (st.TxSegments == uint64(c.nsegs)) {
				t.Errorf("stats: %v", st)
			}
		})
	}
}

// TestTxQueueFull checks that a VM that does not read makes frames drop,
// counted, instead of blocking the writer.
func TestTxQueueFull(t *testing.T) {
	ep, vm, _ := newStream(t, vmnet.Options{TxQueueBytes: 4096})
	f := ethFrame(macVM, macHost, 0x0806, make([]byte, 1000))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			write(t, ep, outbound(t, f))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WritePackets blocked on a VM that does not read")
	}
	if st := ep.Stats(); st.Drops[vmnet.DropTxQueueFull] == 0 {
		t.Errorf("no queue-full drops: %v", st)
	}
	// The VM reads again: the queued frames arrive intact.
	for i := 0; i < 3; i++ {
		if got := readRecord(t, vm); !bytes.Equal(got, f) {
			t.Fatalf("frame %d differs", i)
		}
	}
}

// unixgramPair returns two unix datagram sockets bound to paths in a
// temporary directory.
func unixgramPair(t *testing.T) (gnv, vm *net.UnixConn) {
	t.Helper()
	dir := t.TempDir()
	var err error
	gnv, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "gnv.sock"), Net: "unixgram"})
	if err != nil {
		t.Skipf("unix datagram sockets: %v", err)
	}
	vm, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "vm.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gnv.Close(); vm.Close() })
	return gnv, vm
}

// TestDatagram checks the datagram framing: the peer learned from the
// first datagram after the vfkit handshake, one frame per datagram both
// ways, oversized and runt datagrams counted.
func TestDatagram(t *testing.T) {
	before := runtime.NumGoroutine()
	gnv, vm := unixgramPair(t)
	ep, err := vmnet.NewDatagram(gnv, vmnet.Options{MaxFrameSize: 2000, MAC: net.HardwareAddr(macHost)})
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	ep.Attach(s)
	// Nothing to send to yet.
	f := ethFrame(macVM, macHost, 0x0806, make([]byte, 28))
	write(t, ep, outbound(t, f))
	waitStats(t, ep, func(s vmnet.Stats) bool { return s.Drops[vmnet.DropTxNoPeer] == 1 })

	to := gnv.LocalAddr()
	vm.WriteTo([]byte("VFKT"), to)
	in := ethFrame(macHost, macVM, 0x0800, bytes.Repeat([]byte{9}, 100))
	vm.WriteTo(in, to)
	vm.WriteTo(make([]byte, 2001), to) // too big
	vm.WriteTo(make([]byte, 10), to)   // runt
	if d := s.next(t); !bytes.Equal(d.frame, in) || d.typ != tcpip.PacketHost {
		t.Fatalf("received %x", d.frame)
	}
	if got := ep.RemoteAddr(); got == nil || got.String() != vm.LocalAddr().String() {
		t.Errorf("peer %v, want %v", got, vm.LocalAddr())
	}
	write(t, ep, outbound(t, f))
	buf := make([]byte, 4000)
	_ = vm.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := vm.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], f) {
		t.Fatalf("VM received %x, %v", buf[:n], err)
	}
	waitStats(t, ep, func(st vmnet.Stats) bool {
		return st.RxFrames == 1 && st.TxFrames == 1 && st.PeerChanges == 1 &&
			st.Drops[vmnet.DropTooBig] == 1 && st.Drops[vmnet.DropRunt] == 1
	})
	ep.Close()
	checkGoroutines(t, before)
}

// TestDatagramFixedPeer checks that with a configured peer, datagrams from
// elsewhere are dropped.
func TestDatagramFixedPeer(t *testing.T) {
	gnv, vm := unixgramPair(t)
	other, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "other.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ep, err := vmnet.NewDatagram(gnv, vmnet.Options{Peer: vm.LocalAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	s := newSink()
	ep.Attach(s)
	in := ethFrame(macHost, macVM, 0x0800, make([]byte, 50))
	other.WriteTo(in, gnv.LocalAddr())
	vm.WriteTo(in, gnv.LocalAddr())
	if d := s.next(t); !bytes.Equal(d.frame, in) {
		t.Fatal("frame differs")
	}
	s.none(t)
	if st := ep.Stats(); st.Drops[vmnet.DropForeignPeer] != 1 || st.RxFrames != 1 || st.PeerChanges != 0 {
		t.Errorf("stats: %v", st)
	}
}

// TestCloseFromAction checks that Close may be called from the on-close
// action, as a stack's NIC removal does, and more than once.
func TestCloseFromAction(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := net.Pipe()
	defer b.Close()
	ep, err := vmnet.NewStream(a, vmnet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep.Attach(newSink())
	var once sync.Once
	ran := 0
	ep.SetOnCloseAction(func() { ran++; once.Do(ep.Close) })
	ep.Close()
	ep.Close()
	if ran != 1 {
		t.Errorf("on-close action ran %d times", ran)
	}
	if ep.Err() != nil {
		t.Errorf("Err() after Close = %v", ep.Err())
	}
	checkGoroutines(t, before)
	// Never attached: Close still works.
	c, d := net.Pipe()
	defer d.Close()
	ep2, _ := vmnet.NewStream(c, vmnet.Options{})
	ep2.Close()
}

// TestOptions checks that invalid options are refused.
func TestOptions(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, o := range []vmnet.Options{
		{MTU: 10},
		{MaxFrameSize: 5},
		{TxQueueBytes: -1},
		{MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}},
	} {
		if _, err := vmnet.NewStream(a, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := vmnet.NewStream(nil, vmnet.Options{}); err == nil {
		t.Error("nil conn accepted")
	}
}
