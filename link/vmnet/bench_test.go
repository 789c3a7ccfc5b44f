package vmnet_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link/vmnet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// discardConn is a net.Conn whose writes vanish and whose reads repeat a
// fixed stream of records.
type discardConn struct {
	net.Conn // nil: only the methods below are called
	in       []byte
	off      int
	closed   chan struct{}
}

func (c *discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (c *discardConn) Read(b []byte) (int, error) {
	if c.in == nil {
		<-c.closed
		return 0, net.ErrClosed
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	n := copy(b, c.in[c.off:])
	c.off = (c.off + n) % len(c.in)
	return n, nil
}
func (c *discardConn) Close() error                     { close(c.closed); return nil }
func (c *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (c *discardConn) SetWriteDeadline(time.Time) error { return nil }

// nopDispatcher drops what it is given.
type nopDispatcher struct{ n int }

func (d *nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) { d.n++ }
func (d *nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// BenchmarkWrite measures queueing a 1500-byte frame for the VM: a copy
// into the transmit queue, written in batches by the writer goroutine.
func BenchmarkWrite(b *testing.B) {
	ep, err := vmnet.NewStream(&discardConn{closed: make(chan struct{})}, vmnet.Options{TxQueueBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer ep.Close()
	ep.Attach(&nopDispatcher{})
	pkt := outbound(nil, ethFrame(macVM, macHost, 0x0806, make([]byte, 1486)))
	defer pkt.DecRef()
	var l stack.PacketBufferList
	l.PushBack(pkt)
	b.SetBytes(1500)
	b.ReportAllocs()
	for b.Loop() {
		ep.WritePackets(l)
	}
}

// BenchmarkSegment measures cutting a 64 KB TCP super-packet for the VM.
func BenchmarkSegment(b *testing.B) {
	ep, err := vmnet.NewStream(&discardConn{closed: make(chan struct{})}, vmnet.Options{TxQueueBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer ep.Close()
	ep.Attach(&nopDispatcher{})
	pkt := tcpPacket(false, make([]byte, 65000), header.TCPFlagAck)
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, MSS: 1448, L3HdrLen: 20}
	defer pkt.DecRef()
	var l stack.PacketBufferList
	l.PushBack(pkt)
	b.SetBytes(65000)
	b.ReportAllocs()
	for b.Loop() {
		ep.WritePackets(l)
	}
}

// BenchmarkReceive measures delivering 1500-byte frames read from the
// stream, several per read.
func BenchmarkReceive(b *testing.B) {
	f := ethFrame(macHost, macVM, 0x0800, make([]byte, 1486))
	in := bytes.Repeat(append(binary.BigEndian.AppendUint32(nil, uint32(len(f))), f...), 64)
	ep, err := vmnet.NewStream(&discardConn{in: in, closed: make(chan struct{})}, vmnet.Options{})
	if err != nil {
		b.Fatal(err)
	}
	d := &nopDispatcher{}
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	ep.Attach(d)
	deadline := time.Now().Add(time.Minute)
	for st := ep.Stats(); st.RxFrames < uint64(b.N) && time.Now().Before(deadline); st = ep.Stats() {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	ep.Close()
}
