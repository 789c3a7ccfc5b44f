//go:build linux

// Package ethnic is what gnv's Ethernet link endpoints on a host
// descriptor share (the AF_PACKET endpoint and the TAP underlay NIC): the
// Ethernet header methods of stack.LinkEndpoint and netstack's own MAC
// (ether.NIC's), and the one goroutine that reads the descriptor: its life
// cycle and its read loop.
package ethnic

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/ether"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// NIC is an Ethernet link endpoint on one host descriptor that one
// goroutine reads, with netstack's own MAC address, and the life cycle of
// that goroutine. Endpoints embed it and set its exported fields before
// the NIC is attached.
//
// Attach starts the goroutine (run), or with nil tells it to stop without
// waiting: the stack calls Attach(nil), and then Wait, holding its own lock,
// which a frame still being delivered may need (an ICMP error looks up a
// route); Close, which the stack calls after releasing the lock, waits.
type NIC struct {
	ether.NIC // netstack's MAC and the Ethernet header methods

	// File is the descriptor, and Conn its syscall.RawConn, through which
	// the goroutine reads (the endpoint's writers may use it too). Close
	// closes File.
	File *os.File
	Conn syscall.RawConn
	// ReadSyscall reads the next batch of frames from the descriptor fd
	// with one non-blocking system call (recvmmsg, readv) and returns the
	// call's result and errno. The goroutine calls it again on EINTR, and
	// on EAGAIN once fd is readable, until the NIC stops (File's read
	// deadline is then set in the past).
	ReadSyscall func(fd uintptr) (r uintptr, errno syscall.Errno)
	// Deliver hands the frames of the last successful read to d; r is what
	// ReadSyscall returned (a count of messages or of bytes).
	Deliver func(d stack.NetworkDispatcher, r int)
	// RxErrors counts failed reads.
	RxErrors *atomic.Uint64
	// Release frees what the goroutine used, after it stopped and File is
	// closed.
	Release func()

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	onClose    func()

	attachMu sync.Mutex    // serialises Attach and Close
	stopCh   chan struct{} // closed to stop the receive goroutine; under attachMu
	wg       sync.WaitGroup
	closed   atomic.Bool
}

// Attach implements stack.LinkEndpoint: it starts the receive goroutine
// delivering to d, or, with nil, tells it to stop (see NIC).
func (n *NIC) Attach(d stack.NetworkDispatcher) {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	n.signalStop()
	if d == nil || n.closed.Load() {
		return
	}
	n.wg.Wait() // a goroutine stopped by an earlier Attach(nil)
	_ = n.File.SetReadDeadline(time.Time{})
	stop := make(chan struct{})
	n.stopCh = stop
	n.mu.Lock()
	n.dispatcher = d
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.receive(d, stop)
	}()
}

// signalStop tells the receive goroutine, if any, to stop, waking its
// read. Called with attachMu held.
func (n *NIC) signalStop() {
	n.mu.Lock()
	n.dispatcher = nil
	n.mu.Unlock()
	if n.stopCh != nil {
		close(n.stopCh)
		n.stopCh = nil
		_ = n.File.SetReadDeadline(time.Unix(1, 0))
	}
}

// Closed reports whether Close has been called.
func (n *NIC) Closed() bool { return n.closed.Load() }

// IsAttached implements stack.LinkEndpoint.
func (n *NIC) IsAttached() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.dispatcher != nil
}

// Wait implements stack.LinkEndpoint. Once the endpoint is closed it waits
// for the receive goroutine; before, it returns at once (see NIC).
func (n *NIC) Wait() {
	if n.closed.Load() {
		n.wg.Wait()
	}
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (n *NIC) SetOnCloseAction(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onClose = f
}

// Close implements stack.LinkEndpoint: it stops the receive goroutine,
// runs the close action, closes the descriptor and releases the receive
// buffers. The stack calls it when the NIC is removed.
func (n *NIC) Close() {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	if n.closed.Swap(true) {
		return
	}
	n.signalStop()
	n.wg.Wait()
	n.mu.Lock()
	f := n.onClose
	n.onClose = nil
	n.mu.Unlock()
	if f != nil {
		f()
	}
	_ = n.File.Close()
	if n.Release != nil {
		n.Release()
	}
}

// receive is the receive goroutine: it reads and delivers until stop is
// closed or the descriptor is gone. Failed reads are counted; after many
// in a row (an interface that went down reports ENETDOWN once, then reads
// block until it is up again) it backs off.
func (n *NIC) receive(d stack.NetworkDispatcher, stop <-chan struct{}) {
	var (
		r     uintptr
		errno syscall.Errno
	)
	read := func(fd uintptr) bool {
		for {
			r, errno = n.ReadSyscall(fd)
			switch errno {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // Conn.Read waits until fd is readable
			}
			return true
		}
	}
	errs := 0
	for {
		err := n.Conn.Read(read)
		if err == nil && errno != 0 {
			err = errno
		}
		select {
		case <-stop:
			return
		default:
		}
		if err != nil {
			n.RxErrors.Add(1)
			if errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADFD) {
				return // the device is gone
			}
			if errs++; errs > 100 {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		errs = 0
		n.Deliver(d, int(r))
	}
}

// DeliverFrame hands the received Ethernet frame in payload, which it takes
// ownership of, to d: it consumes the Ethernet header, sets the packet type
// from the destination MAC and puts the receive marks on the packet (see
// link.SetReceiveMarks; udpSeg, if not zero, marks a UDP super-frame, see
// link.SetReceiveUDPSegments). It reports false, delivering nothing, if
// payload is shorter than an Ethernet header.
func DeliverFrame(d stack.NetworkDispatcher, payload buffer.Buffer, local bool, innerMSS, udpSeg uint16) bool {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	defer pkt.DecRef()
	link.SetReceiveMarks(pkt, local, innerMSS)
	if udpSeg != 0 {
		link.SetReceiveUDPSegments(pkt, udpSeg)
	}
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		return false
	}
	switch {
	case hdr[0]&1 == 0:
		pkt.PktType = tcpip.PacketHost
	case string(hdr[:6]) == string(header.EthernetBroadcastAddress):
		pkt.PktType = tcpip.PacketBroadcast
	default:
		pkt.PktType = tcpip.PacketMulticast
	}
	proto := tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(hdr[12:14]))
	pkt.NetworkProtocolNumber = proto
	d.DeliverNetworkPacket(proto, pkt)
	return true
}
