package ether

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Attachment is an Ethernet endpoint's tie to its stack: the dispatcher
// and the on-close action, under one lock. Endpoints hold it in a field
// and implement IsAttached and SetOnCloseAction with it; it is safe for
// concurrent use.
type Attachment struct {
	mu      sync.RWMutex
	d       stack.NetworkDispatcher
	onClose func()
	started bool // a non-nil dispatcher has been set
	closed  bool // Detach was called
}

// Dispatcher returns the dispatcher, nil when the endpoint is not
// attached.
func (a *Attachment) Dispatcher() stack.NetworkDispatcher {
	a.mu.RLock()
	d := a.d
	a.mu.RUnlock()
	return d
}

// SetDispatcher sets the dispatcher (nil detaches), unless Detach was
// called. For the first non-nil dispatcher it calls start, if not nil,
// with the lock held.
func (a *Attachment) SetDispatcher(d stack.NetworkDispatcher, start func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.d = d
	if d != nil && !a.started {
		a.started = true
		if start != nil {
			start()
		}
	}
}

// IsAttached reports whether there is a dispatcher, for
// stack.LinkEndpoint.IsAttached.
func (a *Attachment) IsAttached() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.d != nil
}

// SetOnCloseAction sets the on-close action, for
// stack.LinkEndpoint.SetOnCloseAction.
func (a *Attachment) SetOnCloseAction(f func()) {
	a.mu.Lock()
	a.onClose = f
	a.mu.Unlock()
}

// TakeOnClose clears the on-close action and returns it (nil when there
// is none), for the endpoint's Close to run once; with detach it clears
// the dispatcher too.
func (a *Attachment) TakeOnClose(detach bool) func() {
	a.mu.Lock()
	action := a.onClose
	a.onClose = nil
	if detach {
		a.d = nil
	}
	a.mu.Unlock()
	return action
}

// Detach clears the dispatcher for good (later SetDispatcher calls are
// ignored) and reports whether a dispatcher was ever set.
func (a *Attachment) Detach() (started bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	a.d = nil
	return a.started
}

// SupportedGSO is stack.GSOEndpoint.SupportedGSO for an endpoint that
// segments host GSO packets of up to gsoMax bytes in software, 0 for none.
func SupportedGSO(gsoMax uint32) stack.SupportedGSO {
	if gsoMax == 0 {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}
