package testutil_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/gnv-project/gnv/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.RunWithLeakCheck(m)) }

// hangGuard bounds waits that should finish quickly, so that a bug fails the
// test instead of hanging it. It is never used to assert timing.
const hangGuard = 2 * time.Minute

// ---------------------------------------------------------------------------
// Link-level helpers: frames written straight into ports, received by a
// recording dispatcher.

type frame struct {
	proto    tcpip.NetworkProtocolNumber
	typ      tcpip.PacketType
	src, dst tcpip.LinkAddress
	payload  []byte
}

// recorder is a stack.NetworkDispatcher that records what a port delivers.
type recorder struct {
	ch chan frame
	// gate, if set before the first frame is sent, makes every delivery
	// announce itself on entered (without blocking) and wait until gate is
	// closed.
	gate    chan struct{}
	entered chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan frame, 1024)} }

func (r *recorder) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if r.gate != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		<-r.gate
	}
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	r.ch <- frame{
		proto:   proto,
		typ:     pkt.PktType,
		src:     eth.SourceAddress(),
		dst:     eth.DestinationAddress(),
		payload: pkt.Data().AsRange().ToSlice(),
	}
}

func (*recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// next returns the next delivered frame.
func (r *recorder) next(t *testing.T) frame {
	t.Helper()
	select {
	case f := <-r.ch:
		return f
	case <-time.After(hangGuard):
		t.Fatal("no frame delivered")
		return frame{}
	}
}

// none checks that nothing has been delivered so far. Only meaningful when
// the caller knows every queued frame has already been delivered.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-r.ch:
		t.Fatalf("unexpected frame delivered: %+v", f)
	default:
	}
}

const testProto tcpip.NetworkProtocolNumber = 0x88b5 // IEEE local experimental EtherType

// send writes one frame from p the way a stack does (AddHeader, then
// WritePackets) and checks that the port only borrowed it.
func send(t *testing.T, p *testutil.Port, dst tcpip.LinkAddress, payload string) {
	t.Helper()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(p.MaxHeaderLength()),
		Payload:            buffer.MakeWithData([]byte(payload)),
	})
	defer pkt.DecRef()
	pkt.NetworkProtocolNumber = testProto
	pkt.EgressRoute.RemoteLinkAddress = dst
	p.AddHeader(pkt)
	var l stack.PacketBufferList
	l.PushBack(pkt)
	if n, err := p.WritePackets(l); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	if r := pkt.ReadRefs(); r != 1 {
		t.Fatalf("after WritePackets the packet has %d references, want 1 (borrowed)", r)
	}
}

func newPort(t *testing.T, f *testutil.Fabric, mac tcpip.LinkAddress, faults testutil.Faults) (*testutil.Port, *recorder) {
	t.Helper()
	p, err := f.NewPort(mac, faults)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	p.Attach(r)
	return p, r
}

const (
	macA = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0a")
	macB = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0b")
	macC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0c")
	macX = tcpip.LinkAddress("\x02\x00\x00\x00\x00\xee") // on no port
)

// ---------------------------------------------------------------------------
// Link-level tests.

func TestPortEndpoint(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{MTU: 9000})
	defer f.Close()
	p0, err := f.NewPort("", testutil.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	p1, err := f.NewPort("", testutil.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p0.LinkAddress(), tcpip.LinkAddress("\x02\xfa\xb1\x00\x00\x01"); got != want {
		t.Errorf("port 0 MAC = %v, want %v", got, want)
	}
	if got, want := p1.LinkAddress(), tcpip.LinkAddress("\x02\xfa\xb1\x00\x00\x02"); got != want {
		t.Errorf("port 1 MAC = %v, want %v", got, want)
	}
	if p0.Index() != 0 || p1.Index() != 1 || p0.Fabric() != f {
		t.Errorf("Index() = %d, %d", p0.Index(), p1.Index())
	}
	if p0.MTU() != 9000 || p0.MaxHeaderLength() != 14 ||
		p0.Capabilities() != stack.CapabilityResolutionRequired ||
		p0.ARPHardwareType() != header.ARPHardwareEther {
		t.Errorf("MTU %d, MaxHeaderLength %d, Capabilities %v, ARPHardwareType %v",
			p0.MTU(), p0.MaxHeaderLength(), p0.Capabilities(), p0.ARPHardwareType())
	}
	p0.SetMTU(1280)
	if p0.MTU() != 1280 {
		t.Errorf("MTU after SetMTU(1280) = %d", p0.MTU())
	}
	p0.SetLinkAddress(macA)
	if p0.LinkAddress() != macA {
		t.Errorf("LinkAddress after SetLinkAddress = %v", p0.LinkAddress())
	}
	if p0.IsAttached() {
		t.Error("IsAttached before Attach")
	}
	p0.Attach(newRecorder())
	if !p0.IsAttached() {
		t.Error("!IsAttached after Attach")
	}

	// AddHeader: source defaults to the port MAC; ParseHeader consumes it.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14, Payload: buffer.MakeWithData([]byte("x"))})
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = macB
	p0.AddHeader(pkt)
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	if eth.SourceAddress() != macA || eth.DestinationAddress() != macB || eth.Type() != header.IPv4ProtocolNumber {
		t.Errorf("AddHeader wrote src %v dst %v type %#x", eth.SourceAddress(), eth.DestinationAddress(), eth.Type())
	}
	v := pkt.ToView()
	pkt.DecRef()
	in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	if !p0.ParseHeader(in) || in.Data().Size() != 1 || len(in.LinkHeader().Slice()) != 14 {
		t.Errorf("ParseHeader: data %d bytes, link header %d bytes", in.Data().Size(), len(in.LinkHeader().Slice()))
	}
	in.DecRef()

	// Errors.
	for _, tc := range []struct {
		mac    tcpip.LinkAddress
		faults testutil.Faults
		want   string
	}{
		{"", testutil.Faults{Loss: 1.5}, "Faults.Loss = 1.5, want a probability in [0, 1]"},
		{"", testutil.Faults{Duplicate: -0.1}, "Faults.Duplicate"},
		{"", testutil.Faults{Reorder: 2}, "Faults.Reorder"},
		{"", testutil.Faults{Delay: -1}, "Faults.Delay = -1ns, want a duration >= 0"},
		{"", testutil.Faults{Jitter: -1}, "Faults.Jitter"},
		{"", testutil.Faults{ReorderTimeout: -1}, "Faults.ReorderTimeout"},
		{"\x02\x00", testutil.Faults{}, "want 6"},
		{"\x01\x00\x5e\x00\x00\x01", testutil.Faults{}, "multicast"},
		{macA, testutil.Faults{}, "already used"},
	} {
		if _, err := f.NewPort(tc.mac, tc.faults); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewPort(%q, %+v) error = %v, want it to contain %q", tc.mac, tc.faults, err, tc.want)
		}
	}
	if err := p1.SetFaults(testutil.Faults{Loss: 0.5, Delay: -time.Second}); err == nil {
		t.Error("SetFaults with a negative Delay succeeded")
	}
	if p1.Faults() != (testutil.Faults{}) {
		t.Errorf("a failed SetFaults changed the faults to %+v", p1.Faults())
	}
	if err := p1.SetFaults(testutil.Faults{Loss: 1}); err != nil || p1.Faults().Loss != 1 {
		t.Errorf("SetFaults(Loss: 1) = %v, Faults() = %+v", err, p1.Faults())
	}

	f.Close()
	if _, err := f.NewPort("", testutil.Faults{}); !errors.Is(err, testutil.ErrClosed) {
		t.Errorf("NewPort after Close: %v, want ErrClosed", err)
	}
	var l stack.PacketBufferList
	pkt = stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 20))})
	l.PushBack(pkt)
	if _, err := p0.WritePackets(l); err == nil {
		t.Error("WritePackets on a closed port succeeded")
	}
	pkt.DecRef()
}

func TestSwitchLearningAndFiltering(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a, ra := newPort(t, f, macA, testutil.Faults{})
	b, rb := newPort(t, f, macB, testutil.Faults{})
	c, rc := newPort(t, f, macC, testutil.Faults{})
	c.SetPromiscuous(true)
	if !c.Promiscuous() || b.Promiscuous() {
		t.Fatal("Promiscuous()")
	}

	// Broadcast: flooded to B and C.
	send(t, a, header.EthernetBroadcastAddress, "bcast")
	for _, r := range []*recorder{rb, rc} {
		if got := r.next(t); got.typ != tcpip.PacketBroadcast || string(got.payload) != "bcast" || got.src != macA || got.proto != testProto {
			t.Errorf("broadcast delivered as %+v", got)
		}
	}
	// Multicast: flooded.
	send(t, a, "\x33\x33\x00\x00\x00\x01", "mcast")
	for _, r := range []*recorder{rb, rc} {
		if got := r.next(t); got.typ != tcpip.PacketMulticast || string(got.payload) != "mcast" {
			t.Errorf("multicast delivered as %+v", got)
		}
	}
	// Unknown unicast: flooded; B filters it, promiscuous C takes it.
	send(t, a, macX, "unknown")
	if got := rc.next(t); got.typ != tcpip.PacketOtherHost || string(got.payload) != "unknown" || got.dst != macX {
		t.Errorf("promiscuous port got %+v", got)
	}
	// Unicast to B, not learned yet: flooded, B takes it (PacketHost), C
	// takes it as promiscuous.
	send(t, a, macB, "to-b-1")
	if got := rb.next(t); got.typ != tcpip.PacketHost || string(got.payload) != "to-b-1" {
		t.Errorf("B got %+v", got)
	}
	if got := rc.next(t); got.typ != tcpip.PacketOtherHost || string(got.payload) != "to-b-1" {
		t.Errorf("C got %+v", got)
	}
	st := f.Stats()
	if st.Flooded != 4 || st.Forwarded != 0 || st.Filtered != 1 || st.Delivered != 7 {
		t.Errorf("after floods: %+v", st)
	}

	// B answers: A was learned from its first frame, so this is forwarded
	// to A only, and B is learned.
	send(t, b, macA, "to-a")
	if got := ra.next(t); got.typ != tcpip.PacketHost || string(got.payload) != "to-a" || got.src != macB {
		t.Errorf("A got %+v", got)
	}
	// Now A -> B is forwarded to B only: the promiscuous C sees nothing.
	send(t, a, macB, "to-b-2")
	if got := rb.next(t); string(got.payload) != "to-b-2" {
		t.Errorf("B got %+v", got)
	}
	// C's queue is processed in order: a broadcast sent after the unicast
	// frames is the next thing C gets, proving C got no unicast copy.
	send(t, a, header.EthernetBroadcastAddress, "marker")
	if got := rc.next(t); string(got.payload) != "marker" {
		t.Errorf("C got %q before the marker broadcast; unicast was flooded after learning", got.payload)
	}
	rb.next(t) // B's copy of the marker
	st = f.Stats()
	if st.Frames != 7 || st.Forwarded != 2 || st.Flooded != 5 || st.Filtered != 1 || st.Delivered != 11 {
		t.Errorf("after learning: %+v", st)
	}
	ra.none(t)

	// A closed port's MACs are forgotten: unicast to B floods again.
	b.Close()
	send(t, a, macB, "to-closed-b")
	if got := rc.next(t); string(got.payload) != "to-closed-b" {
		t.Errorf("C got %+v", got)
	}
	if st := f.Stats(); st.Flooded != 6 {
		t.Errorf("unicast to a closed port's MAC: Flooded = %d, want 6", st.Flooded)
	}
	rb.none(t)
}

func TestInvalidFrames(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{MTU: 100})
	defer f.Close()
	a, _ := newPort(t, f, "", testutil.Faults{})
	_, rb := newPort(t, f, "", testutil.Faults{})
	write := func(n int) {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(bytes.Repeat([]byte{0xff}, n))})
		defer pkt.DecRef()
		var l stack.PacketBufferList
		l.PushBack(pkt)
		if _, err := a.WritePackets(l); err != nil {
			t.Fatal(err)
		}
	}
	write(13)  // runt
	write(115) // MTU 100 + 14 + 1
	write(114) // largest valid frame: a broadcast (all 0xff)
	if got := rb.next(t); len(got.payload) != 100 {
		t.Errorf("delivered %d bytes, want 100", len(got.payload))
	}
	if st := f.Stats(); st.DroppedInvalid != 2 || st.Frames != 3 || st.Flooded != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestDuplicate(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a, _ := newPort(t, f, macA, testutil.Faults{})
	_, rb := newPort(t, f, macB, testutil.Faults{Duplicate: 1})
	for i := range 10 {
		send(t, a, macB, fmt.Sprint(i))
	}
	for i := range 10 {
		for range 2 {
			if got := rb.next(t); string(got.payload) != fmt.Sprint(i) {
				t.Fatalf("got %q, want two copies of each frame in order (frame %d)", got.payload, i)
			}
		}
	}
	if st := f.Stats(); st.Duplicated != 10 || st.Delivered != 20 {
		t.Errorf("stats %+v", st)
	}
}

func TestReorder(t *testing.T) {
	clk := faketime.NewManualClock()
	f := testutil.NewFabric(testutil.FabricOptions{Clock: clk})
	defer f.Close()
	a, _ := newPort(t, f, macA, testutil.Faults{})
	b, rb := newPort(t, f, macB, testutil.Faults{Reorder: 1, ReorderTimeout: time.Second})
	for _, s := range []string{"1", "2", "3", "4", "5"} {
		send(t, a, macB, s)
	}
	// 1 is held and released behind 2; 3 behind 4; 5 waits for the timeout.
	var got []string
	for range 4 {
		got = append(got, string(rb.next(t).payload))
	}
	if strings.Join(got, "") != "2143" {
		t.Errorf("delivery order %v, want [2 1 4 3]", got)
	}
	// Make the link perfect, then release 5 with the clock: nothing may
	// overtake it, since a marker sent afterwards is queued behind it.
	if err := b.SetFaults(testutil.Faults{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(999 * time.Millisecond)
	// 5 is still held: it is released behind the next frame, whatever the
	// link's new faults.
	send(t, a, macB, "m1")
	if g1, g2 := rb.next(t), rb.next(t); string(g1.payload) != "m1" || string(g2.payload) != "5" {
		t.Errorf("got %q, %q, want m1, 5", g1.payload, g2.payload)
	}
	if st := f.Stats(); st.Reordered != 3 {
		t.Errorf("Reordered = %d, want 3", st.Reordered)
	}

	// Timeout release.
	if err := b.SetFaults(testutil.Faults{Reorder: 1, ReorderTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	send(t, a, macB, "6")
	if err := b.SetFaults(testutil.Faults{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	send(t, a, macB, "m3")
	if g1, g2 := rb.next(t), rb.next(t); string(g1.payload) != "6" || string(g2.payload) != "m3" {
		t.Errorf("got %q, %q, want 6 (released by the timeout), then m3", g1.payload, g2.payload)
	}
}

func TestDelayManualClock(t *testing.T) {
	clk := faketime.NewManualClock()
	f := testutil.NewFabric(testutil.FabricOptions{Clock: clk})
	defer f.Close()
	a, _ := newPort(t, f, macA, testutil.Faults{})
	b, rb := newPort(t, f, macB, testutil.Faults{Delay: 10 * time.Millisecond})
	send(t, a, macB, "delayed")
	clk.Advance(9 * time.Millisecond)
	// Queue a marker on the now perfect link: had "delayed" been queued
	// already, it would be delivered first.
	if err := b.SetFaults(testutil.Faults{}); err != nil {
		t.Fatal(err)
	}
	send(t, a, macB, "marker")
	if got := rb.next(t); string(got.payload) != "marker" {
		t.Fatalf("got %q before the clock reached the delay", got.payload)
	}
	clk.Advance(time.Millisecond)
	if got := rb.next(t); string(got.payload) != "delayed" {
		t.Fatalf("got %q, want the delayed frame", got.payload)
	}
	if st := f.Stats(); st.Delayed != 1 || st.Delivered != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestJitterStaysWithinBounds(t *testing.T) {
	clk := faketime.NewManualClock()
	f := testutil.NewFabric(testutil.FabricOptions{Clock: clk, Seed: 3})
	defer f.Close()
	a, _ := newPort(t, f, macA, testutil.Faults{})
	_, rb := newPort(t, f, macB, testutil.Faults{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond})
	const n = 50
	for i := range n {
		send(t, a, macB, fmt.Sprint(i))
	}
	clk.Advance(15 * time.Millisecond) // Delay+Jitter: every frame is due
	seen := map[string]bool{}
	for range n {
		seen[string(rb.next(t).payload)] = true
	}
	if len(seen) != n {
		t.Errorf("got %d distinct frames, want %d", len(seen), n)
	}
	if st := f.Stats(); st.Delayed != n {
		t.Errorf("Delayed = %d", st.Delayed)
	}
}

// lossPattern sends n frames over a lossy link and returns which arrived.
func lossPattern(t *testing.T, seed int64, n int) string {
	f := testutil.NewFabric(testutil.FabricOptions{Seed: seed})
	defer f.Close()
	a, _ := newPort(t, f, macA, testutil.Faults{})
	// A third port between them changes nothing for B's link: faults are
	// drawn per receiving port.
	newPort(t, f, macC, testutil.Faults{Loss: 0.9})
	b, rb := newPort(t, f, macB, testutil.Faults{Loss: 0.5})
	for i := range n {
		send(t, a, macB, fmt.Sprint(i))
		if i%10 == 0 {
			send(t, a, header.EthernetBroadcastAddress, "bcast") // C's rng moves too
		}
	}
	if err := b.SetFaults(testutil.Faults{}); err != nil {
		t.Fatal(err)
	}
	send(t, a, macB, "end")
	got := make([]byte, n)
	for i := range got {
		got[i] = '.'
	}
	for {
		fr := rb.next(t)
		if string(fr.payload) == "end" {
			break
		}
		if string(fr.payload) == "bcast" {
			continue
		}
		var i int
		fmt.Sscan(string(fr.payload), &i)
		got[i] = 'x'
	}
	return string(got)
}

func TestLossIsDeterministic(t *testing.T) {
	const n = 200
	p1, p2, p3 := lossPattern(t, 42, n), lossPattern(t, 42, n), lossPattern(t, 43, n)
	if p1 != p2 {
		t.Errorf("same seed, different losses:\n%s\n%s", p1, p2)
	}
	if p1 == p3 {
		t.Errorf("different seeds, same losses:\n%s", p1)
	}
	if k := strings.Count(p1, "x"); k < n/4 || k > 3*n/4 {
		t.Errorf("%d of %d frames arrived with Loss 0.5", k, n)
	}
}

func TestQueueFullAndCloseReleases(t *testing.T) {
	clk := faketime.NewManualClock()
	f := testutil.NewFabric(testutil.FabricOptions{Clock: clk, QueueLen: 4})
	defer f.Close()
	a, _ := newPort(t, f, macA, testutil.Faults{})
	b, rb := newPort(t, f, macB, testutil.Faults{})
	rb.gate = make(chan struct{})
	rb.entered = make(chan struct{}, 1)

	send(t, a, macB, "0")
	<-rb.entered // B's goroutine holds frame 0 and is blocked in the stack
	for i := 1; i <= 6; i++ {
		send(t, a, macB, fmt.Sprint(i)) // 1..4 fill the queue, 5 and 6 overflow
	}
	if st := f.Stats(); st.DroppedQueueFull != 2 {
		t.Errorf("DroppedQueueFull = %d, want 2", st.DroppedQueueFull)
	}
	close(rb.gate)
	for i := 0; i <= 4; i++ {
		if got := rb.next(t); string(got.payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", got.payload, i)
		}
	}

	// Frames delayed and held back are released by Close.
	if err := b.SetFaults(testutil.Faults{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	send(t, a, macB, "delayed-1")
	send(t, a, macB, "delayed-2")
	if err := b.SetFaults(testutil.Faults{Reorder: 1}); err != nil {
		t.Fatal(err)
	}
	send(t, a, macB, "held")
	before := f.Stats().DroppedClosed
	b.Close()
	if got := f.Stats().DroppedClosed - before; got != 3 {
		t.Errorf("Close released %d frames, want 3", got)
	}
	clk.Advance(2 * time.Hour) // the stopped timers must not deliver
	rb.none(t)
	flooded := f.Stats().Flooded
	send(t, a, macB, "after-close") // flooded: B is gone, nobody receives it
	if st := f.Stats(); st.Flooded != flooded+1 || st.Delivered != 5 {
		t.Errorf("after Close: %+v", st)
	}
	testutil.CheckLeaks(t)
}

// ---------------------------------------------------------------------------
// Netstack tests.

// node is a gVisor netstack whose only NIC is a fabric port.
type node struct {
	s         *stack.Stack
	port      *testutil.Port
	v4        tcpip.Address
	v6        tcpip.Address
	destroyed bool
}

// newNode creates a stack with IPv4 10.0.0.n/24 and IPv6 fd00::n/64 on a
// new fabric port. clk may be nil (real clock).
func newNode(t *testing.T, f *testutil.Fabric, n byte, faults testutil.Faults, clk tcpip.Clock) *node {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		Clock:              clk,
	})
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		t.Fatal(err)
	}
	p, err := f.NewPort("", faults)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNIC(1, p); err != nil {
		t.Fatal(err)
	}
	nd := &node{
		s:    s,
		port: p,
		v4:   tcpip.AddrFrom4([4]byte{10, 0, 0, n}),
		v6:   tcpip.AddrFrom16([16]byte{0xfd, 15: n}),
	}
	for _, a := range []tcpip.ProtocolAddress{
		{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: nd.v4, PrefixLen: 24}},
		{Protocol: ipv6.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: nd.v6, PrefixLen: 64}},
	} {
		if err := s.AddProtocolAddress(1, a, stack.AddressProperties{}); err != nil {
			t.Fatal(err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	return nd
}

// pinger sends ICMP echo requests through a gVisor ICMP endpoint.
type pinger struct {
	ep    tcpip.Endpoint
	wq    waiter.Queue
	we    waiter.Entry
	ready chan struct{}
	v6    bool
}

func newPinger(t *testing.T, s *stack.Stack, v6 bool) *pinger {
	t.Helper()
	p := &pinger{v6: v6}
	proto, netProto := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	if v6 {
		proto, netProto = icmp.ProtocolNumber6, ipv6.ProtocolNumber
	}
	p.we, p.ready = waiter.NewChannelEntry(waiter.ReadableEvents)
	p.wq.EventRegister(&p.we)
	ep, err := s.NewEndpoint(proto, netProto, &p.wq)
	if err != nil {
		t.Fatal(err)
	}
	p.ep = ep
	return p
}

func (p *pinger) close() {
	p.wq.EventUnregister(&p.we)
	p.ep.Close()
}

// send sends one echo request with sequence number seq to dst.
func (p *pinger) send(t *testing.T, dst tcpip.Address, seq uint16) {
	t.Helper()
	payload := []byte(fmt.Sprintf("ping %d", seq))
	var msg []byte
	if p.v6 {
		h := header.ICMPv6(make([]byte, header.ICMPv6EchoMinimumSize+len(payload)))
		h.SetType(header.ICMPv6EchoRequest)
		h.SetSequence(seq)
		copy(h[header.ICMPv6EchoMinimumSize:], payload)
		msg = h
	} else {
		h := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+len(payload)))
		h.SetType(header.ICMPv4Echo)
		h.SetSequence(seq)
		copy(h.Payload(), payload)
		msg = h
	}
	var r bytes.Reader
	r.Reset(msg)
	if _, err := p.ep.Write(&r, tcpip.WriteOptions{To: &tcpip.FullAddress{Addr: dst}}); err != nil {
		t.Fatalf("ICMP write to %v: %v", dst, err)
	}
}

// tryRecv returns the sequence number of a received echo reply, if any.
func (p *pinger) tryRecv(t *testing.T) (uint16, bool) {
	t.Helper()
	var buf bytes.Buffer
	_, err := p.ep.Read(&buf, tcpip.ReadOptions{})
	if _, ok := err.(*tcpip.ErrWouldBlock); ok {
		return 0, false
	}
	if err != nil {
		t.Fatalf("ICMP read: %v", err)
	}
	b := buf.Bytes()
	if p.v6 {
		h := header.ICMPv6(b)
		if len(b) < header.ICMPv6EchoMinimumSize || h.Type() != header.ICMPv6EchoReply {
			t.Fatalf("got ICMPv6 %x, want an echo reply", b)
		}
		if want := fmt.Sprintf("ping %d", h.Sequence()); string(b[header.ICMPv6EchoMinimumSize:]) != want {
			t.Fatalf("echo reply payload %q, want %q", b[header.ICMPv6EchoMinimumSize:], want)
		}
		return h.Sequence(), true
	}
	h := header.ICMPv4(b)
	if len(b) < header.ICMPv4MinimumSize || h.Type() != header.ICMPv4EchoReply {
		t.Fatalf("got ICMPv4 %x, want an echo reply", b)
	}
	if want := fmt.Sprintf("ping %d", h.Sequence()); string(h.Payload()) != want {
		t.Fatalf("echo reply payload %q, want %q", h.Payload(), want)
	}
	return h.Sequence(), true
}

// recv waits for an echo reply.
func (p *pinger) recv(t *testing.T) uint16 {
	t.Helper()
	deadline := time.After(hangGuard)
	for {
		if seq, ok := p.tryRecv(t); ok {
			return seq
		}
		select {
		case <-p.ready:
		case <-deadline:
			t.Fatal("no echo reply")
		}
	}
}

// ping sends one echo request from src to dst and waits for the reply.
func ping(t *testing.T, src *stack.Stack, dst tcpip.Address, seq uint16) {
	t.Helper()
	p := newPinger(t, src, dst.Len() == 16)
	defer p.close()
	p.send(t, dst, seq)
	if got := p.recv(t); got != seq {
		t.Fatalf("echo reply seq %d, want %d", got, seq)
	}
}

// tcpTransfer sends size pseudo-random bytes from client to server over TCP
// (gonet) and checks that they arrive intact.
func tcpTransfer(t *testing.T, client, server *node, size int, netProto tcpip.NetworkProtocolNumber) {
	t.Helper()
	addr := tcpip.FullAddress{NIC: 1, Addr: server.v4, Port: 8080}
	if netProto == ipv6.ProtocolNumber {
		addr.Addr = server.v6
	}
	ln, err := gonet.ListenTCP(server.s, addr, netProto)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	want := sha256.Sum256(data)

	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		done <- r
	}()

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, client.s, addr, netProto)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("server: %v", r.err)
		}
		if r.n != int64(size) || r.sum != want {
			t.Fatalf("server received %d bytes (sha256 %x), want %d bytes (sha256 %x)", r.n, r.sum, size, want)
		}
	case <-time.After(hangGuard):
		t.Fatal("transfer did not finish")
	}
}

// destroy destroys the nodes' stacks, once.
func destroy(nodes ...*node) {
	for _, n := range nodes {
		if !n.destroyed {
			n.destroyed = true
			n.s.Destroy()
		}
	}
}

func TestPing(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	defer destroy(a, b)
	ping(t, a.s, b.v4, 1)
	ping(t, b.s, a.v4, 2)
	ping(t, a.s, b.v6, 3)
	ping(t, b.s, a.v6, 4)
}

func TestTCPTransfer(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	defer destroy(a, b)
	tcpTransfer(t, a, b, 4<<20, ipv4.ProtocolNumber)
	tcpTransfer(t, b, a, 256<<10, ipv6.ProtocolNumber)
	if st := f.Stats(); st.DroppedQueueFull != 0 || st.DroppedLoss != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestThreeStacksLearning(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	c := newNode(t, f, 3, testutil.Faults{}, nil)
	defer destroy(a, b, c)

	ping(t, a.s, b.v4, 1) // ARP request flooded, the rest forwarded
	first := f.Stats()
	if first.Flooded == 0 || first.Forwarded == 0 {
		t.Fatalf("after the first exchange: %+v", first)
	}
	for i := range 5 {
		ping(t, a.s, b.v4, uint16(10+i))
	}
	st := f.Stats()
	if st.Flooded != first.Flooded {
		t.Errorf("unicast was flooded after learning: Flooded %d -> %d", first.Flooded, st.Flooded)
	}
	if st.Filtered != first.Filtered {
		t.Errorf("C's MAC filter saw unicast after learning: Filtered %d -> %d", first.Filtered, st.Filtered)
	}
	if st.Forwarded < first.Forwarded+10 {
		t.Errorf("Forwarded %d -> %d, want at least 10 more", first.Forwarded, st.Forwarded)
	}
	// C still reaches both.
	ping(t, c.s, a.v4, 20)
	ping(t, c.s, b.v6, 21)
}

func TestPromiscuousStack(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	c := newNode(t, f, 3, testutil.Faults{}, nil)
	defer destroy(a, b, c)
	// Teach A a neighbor entry for B's address with an unknown MAC, so
	// its frames to B are unknown unicast and get flooded.
	if err := a.s.AddStaticNeighbor(1, ipv4.ProtocolNumber, b.v4, macX); err != nil {
		t.Fatal(err)
	}
	udpSend := func() {
		conn, err := gonet.DialUDP(a.s, nil, &tcpip.FullAddress{NIC: 1, Addr: b.v4, Port: 9}, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// Not promiscuous: B and C filter it.
	before := f.Stats()
	udpSend()
	after := f.Stats()
	if after.Flooded != before.Flooded+1 || after.Filtered != before.Filtered+2 {
		t.Errorf("non-promiscuous: %+v -> %+v", before, after)
	}
	// Promiscuous C receives it (as PacketOtherHost) and its stack drops
	// it: the destination IP is not C's and C does not forward.
	c.port.SetPromiscuous(true)
	drops := c.s.Stats().IP.InvalidDestinationAddressesReceived.Value()
	udpSend()
	deadline := time.Now().Add(hangGuard)
	for c.s.Stats().IP.InvalidDestinationAddressesReceived.Value() == drops {
		if time.Now().After(deadline) {
			t.Fatal("promiscuous stack never saw the frame")
		}
		time.Sleep(time.Millisecond)
	}
	if st := f.Stats(); st.Filtered != after.Filtered+1 {
		t.Errorf("promiscuous: Filtered %d -> %d, want +1 (B only)", after.Filtered, st.Filtered)
	}
}

func TestTCPTransferLossReorder(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{Seed: 1})
	defer f.Close()
	faults := testutil.Faults{Loss: 0.05, Reorder: 0.05}
	a := newNode(t, f, 1, faults, nil)
	b := newNode(t, f, 2, faults, nil)
	defer destroy(a, b)
	tcpTransfer(t, a, b, 4<<20, ipv4.ProtocolNumber)
	st := f.Stats()
	if st.DroppedLoss == 0 || st.Reordered == 0 {
		t.Errorf("faults did not apply: %+v", st)
	}
	t.Logf("stats: %+v", st)
}

func TestUDPDuplicate(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	defer destroy(a, b)
	ping(t, a.s, b.v4, 1) // resolve ARP on a perfect link
	if err := b.port.SetFaults(testutil.Faults{Duplicate: 1}); err != nil {
		t.Fatal(err)
	}
	srv, err := gonet.DialUDP(b.s, &tcpip.FullAddress{NIC: 1, Addr: b.v4, Port: 5000}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := gonet.DialUDP(a.s, nil, &tcpip.FullAddress{NIC: 1, Addr: b.v4, Port: 5000}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const n = 5
	for i := range n {
		if _, err := cli.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	for i := range 2 * n {
		k, err := srv.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if k != 1 || int(buf[0]) != i/2 {
			t.Fatalf("datagram %d = %v, want %d (each twice)", i, buf[:k], i/2)
		}
	}
}

func TestDelayManualClockStacks(t *testing.T) {
	clk := faketime.NewManualClock()
	f := testutil.NewFabric(testutil.FabricOptions{Clock: clk})
	defer f.Close()
	faults := testutil.Faults{Delay: 50 * time.Millisecond}
	a := newNode(t, f, 1, faults, clk)
	b := newNode(t, f, 2, faults, clk)
	defer destroy(a, b)

	p := newPinger(t, a.s, false)
	defer p.close()
	start := clk.NowMonotonic()
	p.send(t, b.v4, 7)
	// ARP request, ARP reply, echo request and echo reply each wait 50ms
	// of fake time: no reply can exist before the clock has moved 200ms.
	for {
		if _, ok := p.tryRecv(t); ok {
			break
		}
		if clk.NowMonotonic().Sub(start) > time.Minute {
			t.Fatal("no echo reply after a minute of fake time")
		}
		clk.Advance(5 * time.Millisecond)
		select { // let the port goroutines and the stacks run
		case <-p.ready:
		case <-time.After(time.Millisecond):
		}
	}
	if d := clk.NowMonotonic().Sub(start); d < 200*time.Millisecond {
		t.Errorf("echo reply after %v of fake time, want >= 200ms (4 delayed frames)", d)
	}
	if st := f.Stats(); st.Delayed < 4 {
		t.Errorf("Delayed = %d, want >= 4", st.Delayed)
	}
}

// pcapRecords parses a classic little-endian pcap file by hand.
func pcapRecords(t *testing.T, b []byte) (linkType uint32, recs [][]byte) {
	t.Helper()
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		t.Fatalf("not a little-endian microsecond pcap file (%d bytes)", len(b))
	}
	linkType = binary.LittleEndian.Uint32(b[20:])
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("truncated record header")
		}
		incl, orig := binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])
		if incl != orig || int(incl) > len(b)-16 {
			t.Fatalf("bad record lengths %d/%d", incl, orig)
		}
		recs = append(recs, b[16:16+incl])
		b = b[16+incl:]
	}
	return linkType, recs
}

// syncBuffer is an io.Writer safe to read after concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func TestPcap(t *testing.T) {
	var capture syncBuffer
	f := testutil.NewFabric(testutil.FabricOptions{Pcap: &capture})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	defer destroy(a, b)
	ping(t, a.s, b.v4, 1)
	ping(t, a.s, b.v6, 2)
	destroy(a, b)
	f.Close()
	if err := f.PcapError(); err != nil {
		t.Fatal(err)
	}
	st := f.Stats()
	linkType, recs := pcapRecords(t, capture.Bytes())
	if linkType != 1 {
		t.Errorf("link type %d, want 1 (Ethernet)", linkType)
	}
	if uint64(len(recs)) != st.Frames-st.DroppedInvalid {
		t.Errorf("%d records, want one per switched frame (%d)", len(recs), st.Frames-st.DroppedInvalid)
	}
	if len(recs) < 8 {
		t.Fatalf("only %d frames captured", len(recs))
	}
	eth := header.Ethernet(recs[0])
	if eth.Type() != header.ARPProtocolNumber || eth.DestinationAddress() != header.EthernetBroadcastAddress || eth.SourceAddress() != a.port.LinkAddress() {
		t.Errorf("first frame: %v -> %v type %#x, want A's ARP broadcast", eth.SourceAddress(), eth.DestinationAddress(), eth.Type())
	}

	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not on PATH: skipping the tshark check of the capture")
	}
	path := filepath.Join(t.TempDir(), "fabric.pcap")
	if err := os.WriteFile(path, capture.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-n", "-r", path, "-T", "fields", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	text := string(out)
	for _, want := range []string{"ARP", "Echo (ping) request", "Echo (ping) reply", "Neighbor Solicitation", "Neighbor Advertisement"} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(strings.ToLower(text), "malformed") {
		t.Errorf("tshark reports malformed frames:\n%s", text)
	}
}

func TestCloseLeavesNothingBehind(t *testing.T) {
	settle := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	before := settle()

	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{Delay: time.Hour}, nil) // frames stay parked on timers
	c := newNode(t, f, 3, testutil.Faults{}, nil)
	defer destroy(a, b, c)
	ping(t, a.s, c.v4, 1)
	// Frames to B are parked on its link; closing must release them.
	p := newPinger(t, a.s, false)
	p.send(t, b.v4, 2)
	p.close()
	if st := f.Stats(); st.Delayed == 0 {
		t.Fatalf("nothing delayed: %+v", st)
	}
	// Close the fabric first, with the stacks still alive: ports remove
	// their stacks' NICs.
	f.Close()
	for _, n := range []*node{a, b, c} {
		if n.s.HasNIC(1) {
			t.Errorf("stack %v still has its NIC after the fabric closed", n.v4)
		}
	}
	destroy(a, b, c)

	deadline := time.Now().Add(hangGuard)
	for {
		n := settle()
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	testutil.CheckLeaks(t)
}

func TestPortCloseRemovesNIC(t *testing.T) {
	f := testutil.NewFabric(testutil.FabricOptions{})
	defer f.Close()
	a := newNode(t, f, 1, testutil.Faults{}, nil)
	b := newNode(t, f, 2, testutil.Faults{}, nil)
	defer destroy(a, b)
	ping(t, a.s, b.v4, 1)
	b.port.Close()
	if b.s.HasNIC(1) {
		t.Error("stack still has the NIC of a closed port")
	}
	b.port.Close() // idempotent
}

// nullDispatcher discards delivered packets.
type nullDispatcher struct{}

func (nullDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (nullDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// BenchmarkSwitch measures switching one learned unicast frame, including
// its delivery on the receiving port's goroutine.
func BenchmarkSwitch(b *testing.B) {
	for _, bc := range []struct {
		name   string
		faults testutil.Faults
	}{
		{"perfect", testutil.Faults{}},
		{"loss+dup+reorder", testutil.Faults{Loss: 0.01, Duplicate: 0.01, Reorder: 0.01}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var capture bytes.Buffer
			f := testutil.NewFabric(testutil.FabricOptions{Pcap: &capture})
			defer f.Close()
			src, _ := f.NewPort(macA, testutil.Faults{})
			dst, _ := f.NewPort(macB, bc.faults)
			dst.Attach(nullDispatcher{})
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				ReserveHeaderBytes: 14,
				Payload:            buffer.MakeWithData(make([]byte, 1400)),
			})
			defer pkt.DecRef()
			pkt.NetworkProtocolNumber = testProto
			pkt.EgressRoute.RemoteLinkAddress = macB
			src.AddHeader(pkt)
			var l stack.PacketBufferList
			l.PushBack(pkt)
			src.WritePackets(l) // learn macA; macB floods once
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				capture.Reset()
				src.WritePackets(l)
			}
		})
	}
}
