// Package qdisc holds queueing disciplines for gnv's netstack NICs.
package qdisc

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Direct is a stack.QueueingDiscipline that hands each packet to the
// link endpoint's WritePackets on the caller's goroutine, as the NIC's
// default one does, but reuses its one-packet lists where the default one
// allocates one per packet. Pass it as stack.NICOptions.QDisc, built on
// the endpoint given to CreateNIC (the outermost one).
type Direct struct {
	w     stack.LinkWriter
	lists sync.Pool
}

var _ stack.QueueingDiscipline = (*Direct)(nil)

// NewDirect returns a Direct queueing discipline writing to w.
func NewDirect(w stack.LinkWriter) *Direct {
	return &Direct{w: w}
}

// WritePacket implements stack.QueueingDiscipline. The packet stays the
// caller's: the list holds a reference of its own, dropped on return.
func (q *Direct) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	l, _ := q.lists.Get().(*stack.PacketBufferList)
	if l == nil {
		l = &stack.PacketBufferList{}
	}
	l.PushBack(pkt.IncRef())
	_, err := q.w.WritePackets(*l)
	l.Reset()
	q.lists.Put(l)
	return err
}

// Close implements stack.QueueingDiscipline; there is nothing to stop.
func (q *Direct) Close() {}
