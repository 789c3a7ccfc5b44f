package tuntap

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// These tests run on every system: the water backend's read and write
// paths on an in-memory device, and the configuration commands it runs
// on macOS and Windows. water_linux_test.go runs it on real devices.

// fakeWater is an in-memory water device: what the test puts in rx is
// read, what the Device writes arrives on tx.
type fakeWater struct {
	rx, tx chan []byte
	done   chan struct{}
	once   sync.Once
}

var _ io.ReadWriteCloser = (*fakeWater)(nil)

func newFakeWater() *fakeWater {
	return &fakeWater{rx: make(chan []byte, 16), tx: make(chan []byte, 64), done: make(chan struct{})}
}

func (f *fakeWater) Read(b []byte) (int, error) {
	select {
	case p := <-f.rx:
		return copy(b, p), nil
	case <-f.done:
		return 0, os.ErrClosed
	}
}

func (f *fakeWater) Write(b []byte) (int, error) {
	select {
	case <-f.done:
		return 0, os.ErrClosed
	default:
	}
	f.tx <- append([]byte(nil), b...)
	return len(b), nil
}

func (f *fakeWater) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *fakeWater) written(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-f.tx:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the device")
		return nil
	}
}

// fakeHost records the MTUs a Device sets.
type fakeHost struct {
	mtus   []uint32
	closed bool
}

func (h *fakeHost) setMTU(mtu uint32) error { h.mtus = append(h.mtus, mtu); return nil }
func (h *fakeHost) close() error            { h.closed = true; return nil }

// etherEP is a channel endpoint that says it is Ethernet, for TAP.
type etherEP struct{ *channel.Endpoint }

func (etherEP) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

var (
	waterSrc = tcpip.AddrFrom4([4]byte{10, 0, 0, 1})
	waterDst = tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	waterMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}
)

// waterTCP returns an IPv4 TCP packet with payload bytes of payload and,
// if !good, a wrong IP and TCP checksum (as GRO leaves them).
func waterTCP(payload int, good bool) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+payload)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), ID: 7, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: waterSrc, DstAddr: waterDst})
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1000, AckNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 1000})
	for i := range payload {
		b[header.IPv4MinimumSize+header.TCPMinimumSize+i] = byte(i*7 + i/1000)
	}
	if good {
		ip.SetChecksum(^ip.CalculateChecksum())
		tcp.SetChecksum(^checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, waterSrc, waterDst, uint16(len(tcp)))))
	} else {
		ip.SetChecksum(0x1234)
		tcp.SetChecksum(0x5678)
	}
	return b
}

// checkTCP checks the checksums of an IPv4 TCP packet and returns its
// sequence number and payload.
func checkTCP(t *testing.T, b []byte) (uint32, []byte) {
	t.Helper()
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || int(ip.TotalLength()) != len(b) || ip.CalculateChecksum() != 0xffff {
		t.Fatalf("bad IPv4 header in %d bytes: % x", len(b), b[:20])
	}
	tcp := header.TCP(ip.Payload())
	if checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, waterSrc, waterDst, uint16(len(tcp)))) != 0xffff {
		t.Fatalf("bad TCP checksum, seq %d", tcp.SequenceNumber())
	}
	return tcp.SequenceNumber(), tcp.Payload()
}

// newFakeWaterDevice attaches a water Device on a fakeWater to a channel
// endpoint of MTU 1500.
func newFakeWaterDevice(t *testing.T, mode Mode) (*Device, *fakeWater, *fakeHost, *channel.Endpoint) {
	t.Helper()
	fw, fh := newFakeWater(), &fakeHost{}
	d := newWaterDevice(Options{Mode: mode}, fw, fh, "fake0", waterMAC, 9000, true)
	ch := channel.New(16, 1500, "")
	var ep stack.LinkEndpoint = ch
	if mode == ModeTAP {
		ep = etherEP{ch}
	}
	if err := d.Attach(ep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); ch.Close() })
	return d, fw, fh, ch
}

// inject delivers b to the Device as the endpoint would: a received
// packet, its link header (TAP) consumed.
func inject(ch *channel.Endpoint, mode Mode, b []byte, validated bool) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	defer pkt.DecRef()
	if mode == ModeTAP {
		pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	}
	pkt.RXChecksumValidated = validated
	ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
}

func waterEthernet(payload []byte) []byte {
	f := make([]byte, header.EthernetMinimumSize, header.EthernetMinimumSize+len(payload))
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: "\x02\x00\x00\x00\x00\x02", DstAddr: tcpip.LinkAddress(waterMAC), Type: header.IPv4ProtocolNumber})
	return append(f, payload...)
}

func TestWaterDevice(t *testing.T) {
	for _, mode := range []Mode{ModeTUN, ModeTAP} {
		t.Run(mode.String(), func(t *testing.T) {
			d, fw, fh, ch := newFakeWaterDevice(t, mode)
			linkLen := 0
			frame := func(b []byte) []byte { return b }
			if mode == ModeTAP {
				linkLen, frame = header.EthernetMinimumSize, waterEthernet
			}
			if got := fh.mtus; !reflect.DeepEqual(got, []uint32{1500}) || d.MTU() != 1500 {
				t.Errorf("MTUs set %v, MTU %d: want the endpoint's 1500", got, d.MTU())
			}
			if d.Offloads() != 0 {
				t.Errorf("offloads %s, want none", d.Offloads())
			}
			if mode == ModeTAP && d.MAC().String() != waterMAC.String() {
				t.Errorf("MAC %s", d.MAC())
			}

			// Read path: a packet from the device reaches the endpoint
			// with its headers parsed.
			in := frame(waterTCP(100, true))
			fw.rx <- append(in, 0, 0, 0) // with padding
			var pkt *stack.PacketBuffer
			for deadline := time.Now().Add(5 * time.Second); pkt == nil && time.Now().Before(deadline); {
				if pkt = ch.Read(); pkt == nil {
					time.Sleep(time.Millisecond)
				}
			}
			if pkt == nil {
				t.Fatal("the endpoint got nothing")
			}
			if pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber || pkt.TransportProtocolNumber != header.TCPProtocolNumber ||
				len(pkt.LinkHeader().Slice()) != linkLen || len(pkt.NetworkHeader().Slice()) != 20 || len(pkt.TransportHeader().Slice()) != 20 {
				t.Errorf("packet: proto %d/%d, headers %d/%d/%d", pkt.NetworkProtocolNumber, pkt.TransportProtocolNumber,
					len(pkt.LinkHeader().Slice()), len(pkt.NetworkHeader().Slice()), len(pkt.TransportHeader().Slice()))
			}
			v := pkt.ToView()
			if got := v.AsSlice(); !bytes.Equal(got, in) {
				t.Errorf("the endpoint got %d bytes, want the %d read (padding dropped)", len(got), len(in))
			}
			v.Release()
			pkt.DecRef()

			// Write path: a packet the endpoint did not validate is
			// written as it came.
			bad := waterTCP(100, false)
			inject(ch, mode, frame(bad), false)
			if got := fw.written(t); !bytes.Equal(got, frame(bad)) {
				t.Errorf("an unvalidated packet was changed on its way to the device")
			}
			// A validated one gets fresh checksums.
			inject(ch, mode, frame(bad), true)
			if _, p := checkTCP(t, fw.written(t)[linkLen:]); len(p) != 100 {
				t.Errorf("payload %d bytes, want 100", len(p))
			}
			// One that GRO made larger than the MTU is split into
			// segments of MTU-40 bytes that fit the device.
			big := waterTCP(4000, false)
			inject(ch, mode, frame(big), true)
			var got []byte
			for i, seq := 0, uint32(1000); len(got) < 4000; i++ {
				w := fw.written(t)
				if len(w)-linkLen > 1500 || !bytes.Equal(w[:linkLen], frame(big)[:linkLen]) {
					t.Fatalf("segment %d: %d bytes, link header % x", i, len(w), w[:linkLen])
				}
				s, p := checkTCP(t, w[linkLen:])
				if s != seq || header.IPv4(w[linkLen:]).ID() != uint16(7+i) {
					t.Errorf("segment %d: seq %d id %d, want %d %d", i, s, header.IPv4(w[linkLen:]).ID(), seq, 7+i)
				}
				seq += uint32(len(p))
				got = append(got, p...)
			}
			if !bytes.Equal(got, big[40:]) {
				t.Errorf("the segments do not carry the packet's payload")
			}

			st := d.Stats()
			if st.ReadFrames != 1 || st.ReadPackets != 1 || st.WrittenPackets != 5 || st.WrittenSplit != 1 || st.ReadDrops+st.WriteDrops+st.ReadErrors+st.WriteErrors != 0 {
				t.Errorf("stats %+v", st)
			}
			if err := d.Close(); err != nil || !fh.closed {
				t.Errorf("Close: %v, host closed %v", err, fh.closed)
			}
			d.water.wg.Wait() // the read goroutine is gone
		})
	}
}

func TestWaterReadDrops(t *testing.T) {
	d, fw, _, ch := newFakeWaterDevice(t, ModeTUN)
	fw.rx <- []byte{0x50, 1, 2, 3} // neither IPv4 nor IPv6
	for deadline := time.Now().Add(5 * time.Second); d.Stats().ReadDrops == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if st := d.Stats(); st.ReadDrops != 1 || st.ReadPackets != 0 {
		t.Errorf("stats %+v, want one drop", st)
	}
	if pkt := ch.Read(); pkt != nil {
		pkt.DecRef()
		t.Error("a packet reached the endpoint")
	}
}

func TestWaterCmds(t *testing.T) {
	p4, p6 := netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("fd00::1/64")
	for _, c := range []struct {
		got  any
		want any
	}{
		{darwinMTUCmd("utun7", 1450), []string{"ifconfig", "utun7", "mtu", "1450"}},
		{darwinAddrCmds("utun7", p4), [][]string{
			{"ifconfig", "utun7", "inet", "10.0.0.1/24", "10.0.0.1", "alias"},
			{"route", "-n", "add", "-inet", "10.0.0.0/24", "-interface", "utun7"}}},
		{darwinAddrCmds("utun7", p6), [][]string{
			{"ifconfig", "utun7", "inet6", "fd00::1/64", "alias"},
			{"route", "-n", "add", "-inet6", "fd00::/64", "-interface", "utun7"}}},
		{darwinAddrCmds("utun7", netip.MustParsePrefix("10.0.0.1/32")), [][]string{
			{"ifconfig", "utun7", "inet", "10.0.0.1/32", "10.0.0.1", "alias"}}},
		{darwinUpCmd("utun7"), []string{"ifconfig", "utun7", "up"}},
		{netshMTUCmds("TAP 2", 1450), [][]string{
			{"netsh", "interface", "ipv4", "set", "subinterface", "TAP 2", "mtu=1450", "store=active"},
			{"netsh", "interface", "ipv6", "set", "subinterface", "TAP 2", "mtu=1450", "store=active"}}},
		{netshMTUCmds("TAP 2", 1200), [][]string{
			{"netsh", "interface", "ipv4", "set", "subinterface", "TAP 2", "mtu=1200", "store=active"}}},
		{netshAddrCmd("TAP 2", p4), []string{"netsh", "interface", "ipv4", "add", "address", "TAP 2", "address=10.0.0.1", "mask=255.255.255.0", "store=active"}},
		{netshAddrCmd("TAP 2", p6), []string{"netsh", "interface", "ipv6", "add", "address", "TAP 2", "address=fd00::1/64", "store=active"}},
		{netshDelAddrCmd("TAP 2", p4), []string{"netsh", "interface", "ipv4", "delete", "address", "TAP 2", "address=10.0.0.1"}},
		{netshDelAddrCmd("TAP 2", p6), []string{"netsh", "interface", "ipv6", "delete", "address", "TAP 2", "address=fd00::1"}},
		{netshNoDADCmd("TAP 2"), []string{"netsh", "interface", "ipv6", "set", "interface", "TAP 2", "dadtransmits=0", "store=active"}},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for name, want := range map[string]bool{"utun0": true, "utun12": true, "utun": false, "utunx": false, "tun0": false, "gnv0": false, "utun-1": false} {
		if isUtunName(name) != want {
			t.Errorf("isUtunName(%q) = %v", name, !want)
		}
	}
}

func TestNoDriverError(t *testing.T) {
	cause := errors.New("Failed to find the tap device in registry")
	err := error(&noDriverError{msg: "opening TAP device: no tap-windows6 adapter", err: cause})
	if !errors.Is(err, ErrNoTUN) || !errors.Is(err, cause) || strings.Contains(err.Error(), "modprobe") {
		t.Errorf("%v: want it to match ErrNoTUN and its cause, without Linux advice", err)
	}
}

func TestBackends(t *testing.T) {
	for b, want := range map[Backend]string{BackendAuto: "auto", BackendIoctl: "ioctl", BackendWater: "water", 9: "Backend(9)"} {
		if b.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(b), b.String(), want)
		}
	}
	if _, err := New(Options{Mode: ModeTUN, Backend: 9}); err == nil || !strings.Contains(err.Error(), "valid backends are auto, ioctl and water") {
		t.Errorf("New with backend 9: %v", err)
	}
	if runtime.GOOS != "linux" {
		_, err := New(Options{Mode: ModeTUN, Backend: BackendIoctl})
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("BackendIoctl on %s: %v, want ErrUnsupported", runtime.GOOS, err)
		}
	}
	switch runtime.GOOS {
	case "linux", "darwin", "windows":
	default:
		_, err := New(Options{Mode: ModeTUN})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no "+runtime.GOOS+" support") {
			t.Errorf("New on %s: %v, want ErrUnsupported naming the system", runtime.GOOS, err)
		}
	}
	if runtime.GOOS == "darwin" {
		_, err := New(Options{Mode: ModeTAP})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "--mode l3") {
			t.Errorf("TAP on macOS: %v, want ErrUnsupported pointing to TUN", err)
		}
		if _, err := New(Options{Mode: ModeTUN, Name: "gnv0"}); err == nil || !strings.Contains(err.Error(), "utunN") {
			t.Errorf("TUN gnv0 on macOS: %v, want an error about utun names", err)
		}
	}
}
