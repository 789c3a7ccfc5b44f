//go:build linux

package link

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ethNIC is what PacketEndpoint and TAPEndpoint share: an Ethernet link
// endpoint on one host descriptor that one goroutine reads, with
// netstack's own MAC address, and the life cycle of that goroutine.
//
// Attach starts the goroutine (run), or with nil tells it to stop without
// waiting: the stack calls Attach(nil), and then Wait, holding its own lock,
// which a frame still being delivered may need (an ICMP error looks up a
// route); Close, which the stack calls after releasing the lock, waits.
type ethNIC struct {
	file *os.File
	// run is the receive goroutine's body; it returns when stop is closed.
	run func(d stack.NetworkDispatcher, stop <-chan struct{})
	// release frees what the goroutine used, after it stopped and file is
	// closed.
	release func()

	mu         sync.RWMutex
	mac        tcpip.LinkAddress
	dispatcher stack.NetworkDispatcher
	onClose    func()

	attachMu sync.Mutex    // serialises Attach and Close
	stopCh   chan struct{} // closed to stop the receive goroutine; under attachMu
	wg       sync.WaitGroup
	closed   atomic.Bool
}

// LinkAddress implements stack.LinkEndpoint: netstack's MAC address.
func (n *ethNIC) LinkAddress() tcpip.LinkAddress {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.mac
}

// SetLinkAddress implements stack.LinkEndpoint.
func (n *ethNIC) SetLinkAddress(addr tcpip.LinkAddress) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mac = addr
}

// Attach implements stack.LinkEndpoint: it starts the receive goroutine
// delivering to d, or, with nil, tells it to stop (see ethNIC).
func (n *ethNIC) Attach(d stack.NetworkDispatcher) {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	n.signalStop()
	if d == nil || n.closed.Load() {
		return
	}
	n.wg.Wait() // a goroutine stopped by an earlier Attach(nil)
	_ = n.file.SetReadDeadline(time.Time{})
	stop := make(chan struct{})
	n.stopCh = stop
	n.mu.Lock()
	n.dispatcher = d
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.run(d, stop)
	}()
}

// signalStop tells the receive goroutine, if any, to stop, waking its
// read. Called with attachMu held.
func (n *ethNIC) signalStop() {
	n.mu.Lock()
	n.dispatcher = nil
	n.mu.Unlock()
	if n.stopCh != nil {
		close(n.stopCh)
		n.stopCh = nil
		_ = n.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// IsAttached implements stack.LinkEndpoint.
func (n *ethNIC) IsAttached() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.dispatcher != nil
}

// Wait implements stack.LinkEndpoint. Once the endpoint is closed it waits
// for the receive goroutine; before, it returns at once (see ethNIC).
func (n *ethNIC) Wait() {
	if n.closed.Load() {
		n.wg.Wait()
	}
}

// MaxHeaderLength implements stack.LinkEndpoint.
func (n *ethNIC) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// ARPHardwareType implements stack.LinkEndpoint.
func (n *ethNIC) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint: it pushes the Ethernet header.
func (n *ethNIC) AddHeader(pkt *stack.PacketBuffer) {
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = n.LinkAddress()
	}
	header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize)).Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (n *ethNIC) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (n *ethNIC) SetOnCloseAction(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onClose = f
}

// Close implements stack.LinkEndpoint: it stops the receive goroutine,
// runs the close action, closes the descriptor and releases the receive
// buffers. The stack calls it when the NIC is removed.
func (n *ethNIC) Close() {
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
	_ = n.file.Close()
	if n.release != nil {
		n.release()
	}
}
