package vmnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/gnv-project/gnv/link/internal/ether"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// rxSlack is how much a stream read buffer holds beyond one largest frame,
// so that one read can take many small frames.
const rxSlack = 64 << 10

// readLoop receives frames until the socket fails or is closed, then closes
// the endpoint (which runs the on-close action) unless Close is already
// doing so.
func (e *Endpoint) readLoop() {
	var err error
	if e.conn != nil {
		err = e.readStream()
	} else {
		err = e.readDatagrams()
	}
	if !e.stopping() {
		e.fail(err)
	}
	close(e.readerDone)
	if !e.stopping() {
		e.Close()
	}
}

// readStream reads length-prefixed frames. It returns why it stopped.
func (e *Endpoint) readStream() error {
	buf := make([]byte, 4+e.maxFrame+rxSlack)
	start, end := 0, 0
	for {
		for end-start >= 4 {
			l := int(binary.BigEndian.Uint32(buf[start:]))
			if l > e.maxFrame {
				e.stats.drop(DropFraming)
				return fmt.Errorf("vmnet: frame length %d exceeds the maximum %d: closing the stream", l, e.maxFrame)
			}
			if end-start < 4+l {
				break
			}
			e.receive(buf[start+4 : start+4+l])
			start += 4 + l
		}
		if start == end {
			start, end = 0, 0
		} else if len(buf)-start < 4+e.maxFrame {
			// The rest of the current frame may not fit: move it to the
			// front (at most one frame's worth of bytes).
			end = copy(buf, buf[start:end])
			start = 0
		}
		n, err := e.conn.Read(buf[end:])
		end += n
		if err != nil {
			if n > 0 {
				continue // deliver what came with the error first
			}
			if errors.Is(err, io.EOF) {
				if end > start {
					return fmt.Errorf("vmnet: stream ended inside a frame (%d bytes pending)", end-start)
				}
				return io.EOF
			}
			return err
		}
	}
}

// readDatagrams reads one frame per datagram. It returns why it stopped.
func (e *Endpoint) readDatagrams() error {
	buf := make([]byte, e.maxFrame+1)
	for {
		var n int
		var err error
		var accept bool
		if e.raw != nil {
			if n, err = e.raw.recv(buf); err == nil {
				accept = e.acceptRawPeer(&e.raw.from)
			}
		} else {
			var from net.Addr
			if n, from, err = e.pconn.ReadFrom(buf); err == nil {
				accept = e.connected || e.acceptPeer(from)
			}
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		if !accept {
			e.stats.drop(DropForeignPeer)
			continue
		}
		if n > e.maxFrame {
			e.stats.drop(DropTooBig)
			continue
		}
		if n == len(vfkitHandshake) && string(buf[:n]) == vfkitHandshake {
			continue
		}
		e.receive(buf[:n])
	}
}

// acceptRawPeer is acceptPeer for a raw source address: the peer's is
// compared without allocating; a new one is learned as acceptPeer does.
func (e *Endpoint) acceptRawPeer(from *rawAddr) bool {
	if !from.named() {
		return e.acceptPeer(nil)
	}
	if cur := e.peer.Load(); cur != nil && cur.raw.equal(from) {
		return true
	}
	return e.acceptPeerRaw(from.addr(), from)
}

// acceptPeer checks a datagram's source against the configured peer, or
// learns it.
func (e *Endpoint) acceptPeer(from net.Addr) bool { return e.acceptPeerRaw(from, nil) }

// acceptPeerRaw is acceptPeer with the source's raw form, if known, kept
// with a learned peer.
func (e *Endpoint) acceptPeerRaw(from net.Addr, raw *rawAddr) bool {
	if from == nil {
		return !e.fixedPeer // unnamed sender: nothing to learn, nowhere to reply
	}
	key := from.String()
	cur := e.peer.Load()
	if cur != nil && cur.key == key {
		return true
	}
	if e.fixedPeer {
		return false
	}
	if key == "" {
		return true
	}
	p := &peer{addr: from, key: key}
	if raw != nil {
		p.raw = *raw
	}
	e.peer.Store(p)
	e.stats.peerChanges.Add(1)
	return true
}

// receive delivers one frame. The frame is copied into pooled memory.
func (e *Endpoint) receive(frame []byte) {
	if len(frame) < header.EthernetMinimumSize {
		e.stats.drop(DropRunt)
		return
	}
	d := e.att.Dispatcher()
	if d == nil {
		e.stats.drop(DropNotAttached)
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(buffer.NewViewWithData(frame))})
	hdr, _ := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	eth := header.Ethernet(hdr)
	proto := eth.Type()
	pkt.NetworkProtocolNumber = proto
	pkt.PktType = ether.Classify(eth.DestinationAddress(), e.LinkAddress())
	e.stats.rxFrames.Add(1)
	e.stats.rxBytes.Add(uint64(len(frame)))
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}
