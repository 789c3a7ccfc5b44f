package proxyutil

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// closer counts its Close calls.
type closer struct{ n atomic.Int32 }

func (c *closer) Close() error { c.n.Add(1); return nil }

// TestGroup checks that Close closes what is tracked (and not what was
// untracked), ends the context, waits for the goroutines, and that Track
// fails afterwards.
func TestGroup(t *testing.T) {
	g := NewGroup(context.Background())
	var kept, dropped closer
	if !g.Track(false, &kept, &dropped) {
		t.Fatal("Track on an open group failed")
	}
	g.Untrack(&dropped)
	if !g.Track(true) {
		t.Fatal("Track of a goroutine failed")
	}
	ended := make(chan struct{})
	go func() {
		defer g.Done()
		<-g.Context().Done()
		time.Sleep(10 * time.Millisecond)
		close(ended)
	}()
	if g.Closed() {
		t.Error("Closed before Close")
	}
	g.Close()
	select {
	case <-ended:
	default:
		t.Error("Close returned before the goroutine ended")
	}
	if kept.n.Load() != 1 || dropped.n.Load() != 0 {
		t.Errorf("closed %d tracked and %d untracked, want 1 and 0", kept.n.Load(), dropped.n.Load())
	}
	var late closer
	if g.Track(false, &late) || g.Track(true) || !g.Closed() {
		t.Error("Track succeeded after Close")
	}
	if late.n.Load() != 0 {
		t.Error("Track closed what it refused")
	}
	if Logger(nil) == nil {
		t.Error("Logger(nil) is nil")
	}
}

// TestAddrPort checks the addresses of TCP, UDP and other connections.
func TestAddrPort(t *testing.T) {
	mapped := netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("192.0.2.1").As16()), 80)
	for _, c := range []struct {
		a    net.Addr
		want string
	}{
		{net.TCPAddrFromAddrPort(mapped), "192.0.2.1:80"},
		{net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:53")), "[2001:db8::1]:53"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "invalid AddrPort"},
		{nil, "invalid AddrPort"},
	} {
		if got := AddrPort(c.a).String(); got != c.want {
			t.Errorf("AddrPort(%v) = %s, want %s", c.a, got, c.want)
		}
	}
}
