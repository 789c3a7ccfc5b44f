package stack

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/l2switch"
	"github.com/gnv-project/gnv/link/vmnet"
)

// VMPort is a virtual machine attached to a tunnel's overlay switch
// (Config.Switch) over a socket: a port of the switch whose frames cross
// the socket in QEMU's stream framing or one per datagram (package vmnet).
// It leaves the switch, forgetting its MACs, when it is closed or its
// socket ends (the VM stopped).
type VMPort struct {
	t    *Tunnel
	ep   *vmnet.Endpoint
	port *l2switch.Port
}

// vmState is the tunnel's record of its VMs and VM listeners, so that
// Close stops them all.
type vmState struct {
	mu        sync.Mutex
	closed    bool
	ports     map[*VMPort]struct{}
	listeners map[net.Listener]struct{} // ServeVM's
	vmlns     map[*VMListener]struct{}  // ListenVM's
	next      int                       // VMs attached so far, for names
}

var errClosed = errors.New("tunnel closed")

// AttachVM attaches a VM over c, a stream socket in QEMU's framing (each
// frame preceded by its length, 4 bytes big-endian): QEMU's
// `-netdev stream,addr.type=unix,...`, gvproxy's `-listen-qemu` peers,
// libkrun. The tunnel takes ownership of c. The tunnel must be L2 with a
// switch (Config.Switch).
func (t *Tunnel) AttachVM(c net.Conn) (*VMPort, error) {
	if err := t.canAttachVM(); err != nil {
		c.Close()
		return nil, err
	}
	ep, err := vmnet.NewStream(c, t.vmOptions(nil))
	if err != nil {
		c.Close()
		return nil, err
	}
	return t.attachVM(ep)
}

// AttachVMDatagram attaches a VM over c, a datagram socket (usually a unix
// datagram socket bound to the path the VM sends to) carrying one frame
// per datagram: QEMU's `-netdev dgram,...,remote.type=unix,remote.path=`,
// vfkit. Frames go to peer; nil learns it from the datagrams received
// (after vfkit's "VFKT" handshake, if any), as gvproxy does. The tunnel
// takes ownership of c. One socket serves one VM.
func (t *Tunnel) AttachVMDatagram(c net.PacketConn, peer net.Addr) (*VMPort, error) {
	if err := t.canAttachVM(); err != nil {
		c.Close()
		return nil, err
	}
	ep, err := vmnet.NewDatagram(c, t.vmOptions(peer))
	if err != nil {
		c.Close()
		return nil, err
	}
	return t.attachVM(ep)
}

// canAttachVM says why the tunnel cannot take VMs, if it cannot.
func (t *Tunnel) canAttachVM() error {
	switch {
	case t.cfg.Mode != endpoint.L2:
		return errors.New("attach vm: an l3 tunnel carries no Ethernet frames; VMs need an l2 tunnel with a switch (Config.Switch)")
	case t.sw == nil:
		return errors.New("attach vm: the tunnel has no switch; set Config.Switch to attach VMs")
	}
	return nil
}

// vmOptions are the options of a VM's link: the tunnel MTU, so that
// packets cut for the VM fit the overlay.
func (t *Tunnel) vmOptions(peer net.Addr) vmnet.Options {
	return vmnet.Options{MTU: t.ep.MTU(), Peer: peer}
}

// attachVM makes ep a port of the switch and records it.
func (t *Tunnel) attachVM(ep *vmnet.Endpoint) (*VMPort, error) {
	vm := &VMPort{t: t, ep: ep}
	st := &t.vms
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		ep.Close()
		return nil, fmt.Errorf("attach vm: %w", errClosed)
	}
	st.next++
	name := fmt.Sprintf("vm%d", st.next)
	if a := ep.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		name += " " + a.String()
	} else if a := ep.LocalAddr(); a != nil && a.String() != "" {
		name += " " + a.String() // an accepted unix connection has no remote name
	}
	port, err := t.sw.AddPort(ep, l2switch.PortOptions{
		Name:           name,
		TrustChecksums: true,
		// The VM's socket ended, or the port was closed: forget it.
		OnRemove: func() {
			st.mu.Lock()
			delete(st.ports, vm)
			st.mu.Unlock()
		},
	})
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("attach vm: %w", err)
	}
	vm.port = port
	if st.ports == nil {
		st.ports = map[*VMPort]struct{}{}
	}
	if !port.Removed() {
		st.ports[vm] = struct{}{}
	}
	return vm, nil
}

// ServeVM accepts VMs on ln (a unix stream listener, say, whose path QEMU
// connects to with `-netdev stream,server=off,addr.type=unix,addr.path=`)
// and attaches each with AttachVM. It returns when ln fails or is closed,
// or when the tunnel closes, which closes ln; it returns nil in the last
// two cases.
func (t *Tunnel) ServeVM(ln net.Listener) error {
	if err := t.canAttachVM(); err != nil {
		return err
	}
	st := &t.vms
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		ln.Close()
		return nil
	}
	if st.listeners == nil {
		st.listeners = map[net.Listener]struct{}{}
	}
	st.listeners[ln] = struct{}{}
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.listeners, ln)
		st.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if _, err := t.AttachVM(c); err != nil && errors.Is(err, errClosed) {
			return nil
		}
	}
}

// VMListener is where ListenVM takes VMs.
type VMListener struct {
	t     *Tunnel
	addr  net.Addr
	close func() error
	once  sync.Once
	err   error
}

// Addr returns the socket's address.
func (l *VMListener) Addr() net.Addr { return l.addr }

// Close stops taking VMs and removes the socket file. VMs already attached
// over a stream socket stay (close them with their VMPort, or the
// tunnel); a datagram socket's VM is detached.
func (l *VMListener) Close() error {
	l.once.Do(func() {
		l.err = l.close()
		st := &l.t.vms
		st.mu.Lock()
		delete(st.vmlns, l)
		st.mu.Unlock()
	})
	return l.err
}

// ParseVMAddr parses a VM socket address, "unix:PATH" (a stream socket in
// QEMU's framing: QEMU `-netdev stream`, gvproxy `-listen-qemu`) or
// "unixgram:PATH" (a datagram socket, one frame per datagram: QEMU
// `-netdev dgram`, vfkit), into the network and the path.
func ParseVMAddr(addr string) (network, path string, err error) {
	network, path, ok := strings.Cut(addr, ":")
	if !ok || path == "" || (network != "unix" && network != "unixgram") {
		return "", "", fmt.Errorf("vm address %q: want unix:PATH (QEMU -netdev stream) or unixgram:PATH (QEMU -netdev dgram, vfkit)", addr)
	}
	return network, path, nil
}

// ListenVM creates the socket addr (see ParseVMAddr), replacing a stale
// socket file there, and attaches the VMs that connect to it: every
// connection of a stream socket is a VM (served in the background, as
// ServeVM does); a datagram socket serves one VM, attached at once with
// its peer learned from the first datagram. Closing the tunnel closes the
// listener.
func (t *Tunnel) ListenVM(addr string) (*VMListener, error) {
	network, path, err := ParseVMAddr(addr)
	if err != nil {
		return nil, err
	}
	if err := t.canAttachVM(); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	var l *VMListener
	if network == "unixgram" {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			return nil, fmt.Errorf("vm listen %s: %w", addr, err)
		}
		vm, err := t.AttachVMDatagram(c, nil)
		if err != nil {
			os.Remove(path)
			return nil, err
		}
		l = &VMListener{t: t, addr: c.LocalAddr(), close: func() error {
			err := vm.Close()
			if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
				err = rerr
			}
			return err
		}}
	} else {
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("vm listen %s: %w", addr, err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = t.ServeVM(ln)
		}()
		l = &VMListener{t: t, addr: ln.Addr(), close: func() error {
			err := ln.Close() // the listener removes its socket file
			<-done
			if errors.Is(err, net.ErrClosed) {
				err = nil
			}
			return err
		}}
	}
	st := &t.vms
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		l.Close()
		return nil, fmt.Errorf("vm listen %s: %w", addr, errClosed)
	}
	if st.vmlns == nil {
		st.vmlns = map[*VMListener]struct{}{}
	}
	st.vmlns[l] = struct{}{}
	st.mu.Unlock()
	return l, nil
}

// removeStaleSocket removes a socket file at path, so that a VM socket
// can be created where a previous run left one; any other file is an
// error.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("vm listen %s: the path exists and is not a socket", path)
	}
	return os.Remove(path)
}

// VMs returns the VMs attached now.
func (t *Tunnel) VMs() []*VMPort {
	st := &t.vms
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*VMPort, 0, len(st.ports))
	for vm := range st.ports {
		out = append(out, vm)
	}
	return out
}

// closeVMs stops taking VMs, closes the listeners and detaches every VM,
// waiting for their goroutines.
func (t *Tunnel) closeVMs() {
	st := &t.vms
	st.mu.Lock()
	st.closed = true
	var vmlns []*VMListener
	for l := range st.vmlns {
		vmlns = append(vmlns, l)
	}
	var lns []net.Listener
	for ln := range st.listeners {
		lns = append(lns, ln)
	}
	st.mu.Unlock()
	for _, l := range vmlns {
		l.Close()
	}
	for _, ln := range lns {
		ln.Close()
	}
	for _, vm := range t.VMs() {
		vm.Close()
	}
}

// Close detaches the VM and closes its socket. It returns once the port's
// goroutines have exited.
func (p *VMPort) Close() error {
	p.ep.Close()
	return nil
}

// Done returns a channel closed when the port has closed: by Close, the
// tunnel's Close, or because the VM went away.
func (p *VMPort) Done() <-chan struct{} { return p.ep.Done() }

// Err returns why the port closed by itself (the VM closed the stream, a
// framing error), or nil.
func (p *VMPort) Err() error { return p.ep.Err() }

// Stats returns the VM link's counters.
func (p *VMPort) Stats() vmnet.Stats { return p.ep.Stats() }

// RemoteAddr returns the VM's socket address (for a datagram port, the
// peer, nil until learned).
func (p *VMPort) RemoteAddr() net.Addr { return p.ep.RemoteAddr() }

// MACs returns the MAC addresses learned from the VM.
func (p *VMPort) MACs() []net.HardwareAddr { return p.port.MACs() }

// Port returns the VM's port of the switch.
func (p *VMPort) Port() *l2switch.Port { return p.port }
