// Package linktest is an in-memory link.Transport for tests: it records
// what is sent and lets the test deliver datagrams as if received, with no
// socket, netstack or goroutine. It plays the part of wireguard-go's
// conn/bindtest for gnv's Geneve endpoint.
package linktest

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
	"gvisor.dev/gvisor/pkg/buffer"
)

// Sent is one datagram a Transport was asked to send.
type Sent struct {
	// Packet is the packet as handed to WriteBatch, its Payload released
	// (the bytes are in Data).
	Packet link.Packet
	// Data is a copy of the payload.
	Data []byte
}

// Transport is an in-memory link.Transport. Its zero value is not usable;
// call New.
type Transport struct {
	// Record makes WriteBatch keep copies of what is sent (Take returns
	// them); without it sends are only counted. Set it before use.
	Record bool

	local netip.AddrPort
	// The fields a send or a delivery reads are atomic, so that the
	// double costs the endpoint's benchmarks no lock.
	mtu     atomic.Int64
	count   atomic.Int64
	batches atomic.Int64
	r       atomic.Pointer[link.Receiver]

	mu   sync.Mutex // guards sent
	sent []Sent
}

var _ link.Transport = (*Transport)(nil)

// New returns a Transport bound to local with a 1500-byte MTU that records
// what it sends.
func New(local netip.AddrPort) *Transport {
	t := &Transport{local: local, Record: true}
	t.mtu.Store(1500)
	return t
}

// SetMTU sets the underlay MTU that MTU reports.
func (t *Transport) SetMTU(mtu int) { t.mtu.Store(int64(mtu)) }

// WriteBatch implements link.Transport: every packet is taken.
func (t *Transport) WriteBatch(pkts []link.Packet) (int, error) {
	t.count.Add(int64(len(pkts)))
	t.batches.Add(1)
	if !t.Record {
		return len(pkts), nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range pkts {
		s := Sent{Packet: p, Data: p.Payload.Flatten()}
		s.Packet.Payload = buffer.Buffer{}
		t.sent = append(t.sent, s)
	}
	return len(pkts), nil
}

// Start implements link.Transport: Deliver hands datagrams to r from now
// on.
func (t *Transport) Start(r link.Receiver) error {
	t.r.Store(&r)
	return nil
}

// Deliver hands batch to the receiver, as a received batch, on the
// caller's goroutine. It does nothing before Start.
func (t *Transport) Deliver(batch []link.Datagram) {
	if r := t.r.Load(); r != nil {
		(*r).Receive(batch)
	}
}

// Take returns what was sent since the last Take, and forgets it.
func (t *Transport) Take() []Sent {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.sent
	t.sent = nil
	return s
}

// Count returns how many packets WriteBatch has taken in all.
func (t *Transport) Count() int { return int(t.count.Load()) }

// Batches is the number of WriteBatch calls so far.
func (t *Transport) Batches() int { return int(t.batches.Load()) }

// LocalAddr implements link.Transport.
func (t *Transport) LocalAddr() netip.AddrPort { return t.local }

// MTU implements link.Transport.
func (t *Transport) MTU() int { return int(t.mtu.Load()) }

// JoinGroup implements link.Transport; groups need no joining in memory.
func (t *Transport) JoinGroup(netip.Addr) error { return nil }

// LeaveGroup implements link.Transport.
func (t *Transport) LeaveGroup(netip.Addr) error { return nil }

// Close implements link.Transport.
func (t *Transport) Close() error { return nil }
