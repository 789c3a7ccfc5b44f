package endpoint

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/link"
)

// Socket shares one underlay transport among Geneve endpoints and
// demultiplexes received datagrams to them by VNI. A VNI may be registered
// once per socket (as in FreeBSD geneve(4) and Linux).
type Socket struct {
	t link.Transport

	mu  sync.Mutex // serialises register / unregister
	eps atomic.Pointer[map[uint32]*Endpoint]

	// touched lists endpoints that received packets in the current batch,
	// so their GRO state is flushed once per batch. Receive goroutine only.
	touched []*Endpoint

	stats     counters
	closeOnce sync.Once
	closeErr  error
}

// NewSocket takes ownership of t and starts receiving from it.
func NewSocket(t link.Transport) (*Socket, error) {
	s := &Socket{t: t}
	m := map[uint32]*Endpoint{}
	s.eps.Store(&m)
	if err := t.Start(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Transport returns the underlay transport.
func (s *Socket) Transport() link.Transport { return s.t }

// Stats returns the socket-level counters: drops that happen before an
// endpoint is known (malformed headers, unknown VNIs).
func (s *Socket) Stats() Stats { return s.stats.snapshot() }

// Close closes the transport. Endpoints still registered stop receiving.
func (s *Socket) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.t.Close() })
	return s.closeErr
}

func (s *Socket) register(e *Endpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.eps.Load()
	if _, ok := old[e.cfg.VNI]; ok {
		return fmt.Errorf("vni %d already exists on the socket %s", e.cfg.VNI, s.t.LocalAddr())
	}
	m := make(map[uint32]*Endpoint, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[e.cfg.VNI] = e
	s.eps.Store(&m)
	return nil
}

func (s *Socket) unregister(e *Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.eps.Load()
	if old[e.cfg.VNI] != e {
		return
	}
	m := make(map[uint32]*Endpoint, len(old))
	for k, v := range old {
		if v != e {
			m[k] = v
		}
	}
	s.eps.Store(&m)
}

// Receive implements link.Receiver: decode, demultiplex by VNI, decapsulate.
func (s *Socket) Receive(batch []link.Datagram) {
	eps := *s.eps.Load()
	for i := range batch {
		dg := &batch[i]
		h, off, err := geneve.Decode(dg.Payload)
		if err != nil {
			s.stats.drop(decodeDropReason(err))
			continue
		}
		e := eps[h.VNI]
		if e == nil {
			s.stats.drop(DropUnknownVNI)
			continue
		}
		if !e.touched {
			e.touched = true
			s.touched = append(s.touched, e)
		}
		e.receive(dg, h, dg.Payload[off:])
	}
	for i, e := range s.touched {
		e.flushGRO()
		s.touched[i] = nil
	}
	s.touched = s.touched[:0]
}

// decodeDropReason maps a codec error to its drop counter.
func decodeDropReason(err error) DropReason {
	switch err {
	case geneve.ErrVersion:
		return DropVersion
	case geneve.ErrOptionsTruncated:
		return DropOptionsTruncated
	case geneve.ErrOptionLength:
		return DropOptionLength
	default:
		return DropTruncated
	}
}
