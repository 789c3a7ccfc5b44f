package forward

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// bufPool holds the copy buffers of Splice.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Splice copies a→b and b→a until both directions are done, then returns;
// the caller closes a and b. When one side ends its stream (EOF), Splice
// shuts down writing on the other (CloseWrite, for TCP) and goes on
// copying the other way, so half-closed connections work as they do end
// to end. An error in either direction (a reset, a closed connection)
// closes both connections and ends both directions. Bytes are added to
// aToB and bToA, where not nil, as they are copied.
func Splice(a, b net.Conn, aToB, bToA *atomic.Uint64) {
	var once sync.Once
	abort := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a, aToB, abort)
	}()
	pipe(a, b, bToA, abort)
	<-done
}

// pipe copies src to dst; see Splice.
func pipe(dst, src net.Conn, n *atomic.Uint64, abort func()) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			if n != nil {
				n.Add(uint64(nw))
			}
			if werr != nil {
				abort()
				return
			}
		}
		if rerr == nil {
			continue
		}
		if !errors.Is(rerr, io.EOF) {
			abort()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		// dst cannot be half-closed: nothing more can be said.
		abort()
		return
	}
}
