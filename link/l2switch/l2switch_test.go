package l2switch_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link/l2switch"
	"github.com/gnv-project/gnv/testutil/leakcheck"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestMain runs every test under gVisor's reference leak checker.
func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

// sent is one frame the switch wrote to a fakePort.
type sent struct {
	frame         []byte
	netHdr, trHdr int // header lengths as the switch parsed them
	validated     bool
}

// fakePort is an Ethernet link endpoint for tests: frames the switch writes
// are recorded; Inject delivers a frame to the switch.
type fakePort struct {
	mu      sync.Mutex
	d       stack.NetworkDispatcher
	out     []sent
	onClose func()
	gso     bool
}

func (f *fakePort) MTU() uint32                      { return 1500 }
func (f *fakePort) SetMTU(uint32)                    {}
func (f *fakePort) MaxHeaderLength() uint16          { return 14 }
func (f *fakePort) LinkAddress() tcpip.LinkAddress   { return "" }
func (f *fakePort) SetLinkAddress(tcpip.LinkAddress) {}
func (f *fakePort) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}
func (f *fakePort) Wait()                                   {}
func (f *fakePort) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }
func (f *fakePort) AddHeader(*stack.PacketBuffer)           {}
func (f *fakePort) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (f *fakePort) SetOnCloseAction(a func())               { f.mu.Lock(); f.onClose = a; f.mu.Unlock() }
func (f *fakePort) GSOMaxSize() uint32                      { return map[bool]uint32{true: 65536}[f.gso] }
func (f *fakePort) IsAttached() bool                        { f.mu.Lock(); defer f.mu.Unlock(); return f.d != nil }
func (f *fakePort) Attach(d stack.NetworkDispatcher)        { f.mu.Lock(); f.d = d; f.mu.Unlock() }
func (f *fakePort) SupportedGSO() stack.SupportedGSO {
	if f.gso {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

func (f *fakePort) Close() {
	f.mu.Lock()
	a := f.onClose
	f.onClose = nil
	f.mu.Unlock()
	if a != nil {
		a()
	}
}

func (f *fakePort) WritePackets(l stack.PacketBufferList) (int, tcpip.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, pkt := range l.AsSlice() {
		v := pkt.ToView()
		f.out = append(f.out, sent{bytes.Clone(v.AsSlice()), len(pkt.NetworkHeader().Slice()), len(pkt.TransportHeader().Slice()), pkt.RXChecksumValidated})
		v.Release()
	}
	return l.Len(), nil
}

// take returns and forgets the frames written so far.
func (f *fakePort) take() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.out
	f.out = nil
	return o
}

// inject delivers frame to the switch as the port's endpoint would.
func (f *fakePort) inject(frame []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	pkt.LinkHeader().Consume(14)
	f.mu.Lock()
	d := f.d
	f.mu.Unlock()
	if d != nil {
		d.DeliverNetworkPacket(tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(frame[12:14])), pkt)
	}
	pkt.DecRef()
}

func mac(n byte) tcpip.LinkAddress { return tcpip.LinkAddress([]byte{2, 0, 0, 0, 0, n}) }

func ethFrame(dst, src tcpip.LinkAddress, typ uint16, payload []byte) []byte {
	b := make([]byte, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], typ)
	copy(b[14:], payload)
	return b
}

// udpFrame is an Ethernet/IPv4/UDP frame with Ethernet padding after it.
func udpFrame(dst, src tcpip.LinkAddress) []byte {
	ip := make([]byte, 28+4)
	header.IPv4(ip).Encode(&header.IPv4Fields{TotalLength: 32, TTL: 64, Protocol: 17, SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})})
	header.UDP(ip[20:]).Encode(&header.UDPFields{SrcPort: 1, DstPort: 2, Length: 12})
	return ethFrame(dst, src, 0x0800, append(ip, make([]byte, 14)...)) // 14 bytes of padding
}

func newSwitch(t *testing.T, opts l2switch.Options) (*l2switch.Switch, []*fakePort, []*l2switch.Port) {
	t.Helper()
	sw, err := l2switch.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	var fps []*fakePort
	var ports []*l2switch.Port
	for i := 0; i < 3; i++ {
		f := &fakePort{gso: i == 0}
		p, err := sw.AddPort(f, l2switch.PortOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fps = append(fps, f)
		ports = append(ports, p)
	}
	return sw, fps, ports
}

func counts(fps []*fakePort) []int {
	var n []int
	for _, f := range fps {
		n = append(n, len(f.take()))
	}
	return n
}

func eq(a []int, b ...int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLearning checks flooding of unknown, broadcast and multicast
// destinations, forwarding to learned ports, no reflection, and the
// headers the receiving endpoint sees.
func TestLearning(t *testing.T) {
	sw, fps, ports := newSwitch(t, l2switch.Options{})
	// Unknown unicast from port 0: flooded to 1 and 2.
	fps[0].inject(udpFrame(mac(2), mac(1)))
	o1, o2 := fps[1].take(), fps[2].take()
	if len(o1) != 1 || len(o2) != 1 || len(fps[0].take()) != 0 {
		t.Fatalf("flood: %d %d", len(o1), len(o2))
	}
	if o1[0].netHdr != 20 || o1[0].trHdr != 8 || len(o1[0].frame) != 14+32 {
		t.Errorf("parsed clone: network %d transport %d frame %d bytes (padding kept?)", o1[0].netHdr, o1[0].trHdr, len(o1[0].frame))
	}
	// Reply from port 1 to mac(1): forwarded to port 0 only.
	fps[1].inject(udpFrame(mac(1), mac(2)))
	if n := counts(fps); !eq(n, 1, 0, 0) {
		t.Errorf("forward: %v", n)
	}
	// Now mac(2) is known: port 0 to mac(2) goes to port 1 only.
	fps[0].inject(ethFrame(mac(2), mac(1), 0x0806, make([]byte, 28)))
	if n := counts(fps); !eq(n, 0, 1, 0) {
		t.Errorf("forward: %v", n)
	}
	// Broadcast and multicast flood.
	fps[2].inject(ethFrame(header.EthernetBroadcastAddress, mac(3), 0x0806, make([]byte, 28)))
	fps[2].inject(ethFrame("\x33\x33\x00\x00\x00\x01", mac(3), 0x86dd, make([]byte, 40)))
	if n := counts(fps); !eq(n, 2, 2, 0) {
		t.Errorf("broadcast/multicast: %v", n)
	}
	// A destination on the port it came from is not sent back.
	fps[1].inject(ethFrame(mac(2), mac(9), 0x0806, make([]byte, 28)))
	if n := counts(fps); !eq(n, 0, 0, 0) {
		t.Errorf("filter: %v", n)
	}
	// A group source is dropped.
	fps[1].inject(ethFrame(mac(1), "\x01\x00\x5e\x00\x00\x01", 0x0806, make([]byte, 28)))
	// No Ethernet header.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 10))})
	fps[0].mu.Lock()
	d := fps[0].d
	fps[0].mu.Unlock()
	d.DeliverNetworkPacket(0, pkt)
	pkt.DecRef()
	st := sw.Stats()
	if st.Frames != 7 || st.Forwarded != 2 || st.Flooded != 3 || st.Filtered != 1 || st.Drops[l2switch.DropSourceMulticast] != 1 || st.Drops[l2switch.DropMalformed] != 1 || st.MACs != 4 {
		t.Errorf("stats: %v", st)
	}
	if m := ports[1].MACs(); len(m) != 2 || !bytes.Equal(m[0], []byte(mac(2))) || !bytes.Equal(m[1], []byte(mac(9))) {
		t.Errorf("port 1 MACs: %v", m)
	}
	if ps := ports[0].Stats(); ps.RxFrames != 2 || ps.TxFrames != 3 {
		t.Errorf("port 0 stats: %+v", ps)
	}
}

// TestAgingAndRemoval checks that entries age out (frames flood again),
// that a removed port's MACs are forgotten, that closing an endpoint
// removes its port, and that a full table learns nothing more.
func TestAgingAndRemoval(t *testing.T) {
	clock := faketime.NewManualClock()
	sw, fps, ports := newSwitch(t, l2switch.Options{Clock: clock, AgingTime: time.Minute, MaxMACs: 3})
	fps[1].inject(udpFrame(mac(1), mac(2)))
	counts(fps)
	fps[0].inject(udpFrame(mac(2), mac(1)))
	if n := counts(fps); !eq(n, 0, 1, 0) {
		t.Fatalf("learned: %v", n)
	}
	clock.Advance(2 * time.Minute)
	fps[0].inject(udpFrame(mac(2), mac(1)))
	if n := counts(fps); !eq(n, 0, 1, 1) {
		t.Errorf("after aging: %v", n)
	}
	// Relearn mac(2) on port 1, then close port 1's endpoint.
	fps[1].inject(udpFrame(mac(1), mac(2)))
	counts(fps)
	fps[1].Close()
	if !ports[1].Removed() || len(sw.Ports()) != 2 {
		t.Fatalf("closing the endpoint did not remove the port")
	}
	if fps[1].IsAttached() {
		t.Errorf("removed port still attached")
	}
	for _, e := range sw.MACs() {
		if e.Port == ports[1] {
			t.Errorf("MAC %s still on the removed port", e.MAC)
		}
	}
	fps[0].inject(udpFrame(mac(2), mac(1)))
	if n := counts(fps); !eq(n, 0, 0, 1) {
		t.Errorf("after removal: %v", n)
	}
	// Table of 3: mac(1) and mac(2)? (aged) plus two more.
	fps[2].inject(udpFrame(mac(1), mac(3)))
	fps[2].inject(udpFrame(mac(1), mac(4)))
	fps[2].inject(udpFrame(mac(1), mac(5)))
	if st := sw.Stats(); st.LearnFull == 0 || st.MACs != 3 {
		t.Errorf("full table: %v", st)
	}
}

// TestGSO checks that a host's super-packets reach only ports that take
// host GSO.
func TestGSO(t *testing.T) {
	sw, fps, _ := newSwitch(t, l2switch.Options{})
	h, err := sw.NewHostPort(l2switch.HostPortOptions{MAC: net.HardwareAddr(mac(10)), GSOMaxSize: 65536})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.NewHostPort(l2switch.HostPortOptions{}); err == nil {
		t.Error("a second host port was accepted")
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData(make([]byte, 100))})
	copy(pkt.LinkHeader().Push(14), ethFrame(header.EthernetBroadcastAddress, mac(10), 0x0800, nil))
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, MSS: 50}
	var l stack.PacketBufferList
	l.PushBack(pkt)
	if _, err := h.WritePackets(l); err != nil {
		t.Fatal(err)
	}
	l.Reset()
	if n := counts(fps); !eq(n, 1, 0, 0) {
		t.Errorf("GSO flood: %v", n)
	}
	if st := sw.Stats(); st.Drops[l2switch.DropGSO] != 2 {
		t.Errorf("stats: %v", st)
	}
	h.Close()
	if len(sw.Ports()) != 3 {
		t.Errorf("host port not removed")
	}
	if _, err := sw.NewHostPort(l2switch.HostPortOptions{}); err != nil {
		t.Errorf("a host port after the first closed: %v", err)
	}
}

// TestClosed checks that a closed switch refuses ports and detaches its
// ports' endpoints.
func TestClosed(t *testing.T) {
	sw, fps, _ := newSwitch(t, l2switch.Options{})
	sw.Close()
	for i, f := range fps {
		if f.IsAttached() {
			t.Errorf("port %d still attached", i)
		}
	}
	if _, err := sw.AddPort(&fakePort{}, l2switch.PortOptions{}); err == nil {
		t.Error("AddPort on a closed switch succeeded")
	}
	if _, err := sw.NewHostPort(l2switch.HostPortOptions{}); err == nil {
		t.Error("NewHostPort on a closed switch succeeded")
	}
}

// countDispatcher counts the frames a host port delivers.
type countDispatcher struct {
	mu sync.Mutex
	n  int
}

func (c *countDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *countDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (c *countDispatcher) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = 0
	return n
}

// TestHostMAC checks that the host port's MAC is a static entry: frames
// for it go straight to the host, frames from other ports claiming it are
// dropped, and a new MAC (a TAP device's) moves the entry.
func TestHostMAC(t *testing.T) {
	sw, fps, _ := newSwitch(t, l2switch.Options{})
	h, err := sw.NewHostPort(l2switch.HostPortOptions{MAC: net.HardwareAddr(mac(10))})
	if err != nil {
		t.Fatal(err)
	}
	d := &countDispatcher{}
	h.Attach(d)
	fps[0].inject(udpFrame(mac(10), mac(1)))
	if n, hn := counts(fps), d.take(); !eq(n, 0, 0, 0) || hn != 1 {
		t.Errorf("to the host's MAC: ports %v, host %d", n, hn)
	}
	fps[1].inject(udpFrame(mac(1), mac(10))) // spoofed
	if n := counts(fps); !eq(n, 0, 0, 0) {
		t.Errorf("spoofed frame forwarded: %v", n)
	}
	if st := sw.Stats(); st.Drops[l2switch.DropSourceSpoofed] != 1 {
		t.Errorf("stats: %v", st)
	}
	h.SetLinkAddress(mac(11))
	fps[1].inject(udpFrame(mac(11), mac(10))) // mac(10) is free now
	if n, hn := counts(fps), d.take(); !eq(n, 0, 0, 0) || hn != 1 {
		t.Errorf("to the new MAC: ports %v, host %d", n, hn)
	}
	var static []string
	for _, e := range sw.MACs() {
		if e.Static {
			static = append(static, e.MAC.String()+" "+e.Port.Name())
		}
	}
	if len(static) != 1 || static[0] != "02:00:00:00:00:0b host" {
		t.Errorf("static entries: %v", static)
	}
}
