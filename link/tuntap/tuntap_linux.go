//go:build linux

package tuntap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/frame"
	"github.com/gnv-project/gnv/link/internal/netdev"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The device is opened with x/sys ioctls rather than
// github.com/songgao/water: water has no way to ask for IFF_VNET_HDR, and
// the offload path also needs TUNGETFEATURES, TUNSETVNETHDRSZ, TUNSETVNETLE
// and TUNSETOFFLOAD on the same descriptor. One code path serves both the
// offload and the plain case.

const (
	// devReadBatch is how many frames are read before the batch is handed
	// to the endpoint (fewer if the device runs dry first).
	devReadBatch = 64

	// devReadBufSize holds the largest frame a TAP/TUN device hands over:
	// a virtio_net_hdr, a 64 KiB GSO packet and an Ethernet header with a
	// VLAN tag, with room to spare.
	devReadBufSize = vnet.HdrLen + 1<<16 + 64

	// devHdrScratch is how many leading bytes of a packet the write path
	// copies to patch headers: Ethernet, IP with extension headers, TCP.
	devHdrScratch = 512

	// devMaxIovecs is the kernel's UIO_MAXIOV.
	devMaxIovecs = 1024
)

// devSys is the Linux part of a Device.
type devSys struct {
	f       *os.File
	rc      syscall.RawConn
	nl      *netdev.Conn // route socket in the device's namespace
	ifindex int
	added   []netip.Prefix // addresses New added

	wg sync.WaitGroup

	// Read side: the read goroutine only.
	rbuf    []byte
	batch   stack.PacketBufferList
	readFn  func(fd uintptr) bool
	readErr error

	// Write side: under wmu.
	wmu     sync.Mutex
	wslices link.Slices
	wiov    [][]byte
	iovecs  []unix.Iovec
	whdr    []byte // [virtio_net_hdr | patched headers]
	wseg    []byte // headers of one software segment
	wflat   []byte // fallback for packets with more than devMaxIovecs views
	writeFn func(fd uintptr) bool
	werr    error
}

// openDevice is New after validation.
func openDevice(opts Options) (_ *Device, err error) {
	d := &Device{opts: opts}
	s := &d.sys
	mode := opts.Mode
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, netdev.PermissionError("creating", mode.kind(), opts.Name, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err})
	}
	defer func() {
		if err == nil {
			return
		}
		if s.f != nil {
			s.f.Close()
		} else {
			unix.Close(fd)
		}
		if s.nl != nil {
			s.nl.Close()
		}
	}()
	if s.nl, err = netdev.Open(); err != nil {
		return nil, fmt.Errorf("creating %s device %s: %w", mode.kind(), opts.Name, err)
	}
	existed := false
	if opts.Name != "" {
		if _, err := s.nl.Ifindex(opts.Name); err == nil {
			existed = true
		}
	}
	op := "creating"
	if existed {
		op = "attaching to"
	}

	flags := uint16(unix.IFF_NO_PI)
	if mode == ModeTAP {
		flags |= unix.IFF_TAP
	} else {
		flags |= unix.IFF_TUN
	}
	if !opts.DisableOffloads {
		if feat, err := unix.IoctlGetUint32(fd, unix.TUNGETFEATURES); err == nil && feat&unix.IFF_VNET_HDR != 0 {
			flags |= unix.IFF_VNET_HDR
		}
	}
	ifr, err := unix.NewIfreq(opts.Name)
	if err != nil {
		return nil, fmt.Errorf("device name %q: %w", opts.Name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		switch {
		case existed && errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("%s %s device %s: an interface of that name exists and is not a %s device", op, mode.kind(), opts.Name, mode.kind())
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("%s %s device %s: the device is in use by another process", op, mode.kind(), opts.Name)
		}
		return nil, netdev.PermissionError(op, mode.kind(), opts.Name, err)
	}
	d.name = ifr.Name()
	d.created = !existed
	if flags&unix.IFF_VNET_HDR != 0 {
		if err := d.setupOffloads(fd); err != nil {
			return nil, err
		}
	}
	s.f = os.NewFile(uintptr(fd), "/dev/net/tun")
	if s.rc, err = s.f.SyscallConn(); err != nil {
		return nil, fmt.Errorf("%s device %s: %w", mode.kind(), d.name, err)
	}

	if s.ifindex, err = s.nl.Ifindex(d.name); err != nil {
		return nil, fmt.Errorf("%s device %s: interface index: %w", mode.kind(), d.name, err)
	}
	if mode == ModeTAP {
		if d.mac, err = s.nl.HWAddr(d.name); err != nil {
			return nil, fmt.Errorf("%s device %s: hardware address: %w", mode.kind(), d.name, err)
		}
		if opts.MAC != nil {
			d.mac = append(net.HardwareAddr(nil), opts.MAC...)
		}
	}
	mtu, err := s.nl.MTU(d.name)
	if err != nil {
		return nil, fmt.Errorf("%s device %s: mtu: %w", mode.kind(), d.name, err)
	}
	if opts.MTU != 0 {
		mtu = int(opts.MTU)
	}
	var setMAC net.HardwareAddr
	if mode == ModeTAP {
		setMAC = opts.MAC
	}
	if err := s.nl.SetLink(s.ifindex, uint32(mtu), setMAC, true); err != nil {
		return nil, netdev.PermissionError("configuring", mode.kind(), d.name, err)
	}
	d.mtu.Store(uint32(mtu))
	for _, p := range opts.Addresses {
		added, err := s.nl.Addr(unix.RTM_NEWADDR, s.ifindex, p, opts.NoDAD)
		if err != nil {
			d.removeAddresses()
			return nil, netdev.PermissionError("configuring", mode.kind(), d.name, fmt.Errorf("address %s: %w", p, err))
		}
		if added {
			s.added = append(s.added, p)
		}
	}
	return d, nil
}

// setupOffloads configures a device opened with IFF_VNET_HDR: a 10-byte
// little-endian virtio_net_hdr and as many offloads as the kernel takes.
func (d *Device) setupOffloads(fd int) error {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet.HdrLen); err != nil {
		return fmt.Errorf("%s device %s: TUNSETVNETHDRSZ: %w", d.opts.Mode.kind(), d.name, err)
	}
	// Little-endian headers whatever the host's byte order (TUNSETVNETLE
	// exists since Linux 3.19; on little-endian hosts it is the default).
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		var probe [2]byte
		binary.NativeEndian.PutUint16(probe[:], 1)
		if probe[0] != 1 {
			return fmt.Errorf("%s device %s: TUNSETVNETLE: %w", d.opts.Mode.kind(), d.name, err)
		}
	}
	d.offloads |= link.OffloadVnetHdr
	const (
		tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		ecn = unix.TUN_F_TSO_ECN
		uso = unix.TUN_F_USO4 | unix.TUN_F_USO6
	)
	// USO needs Linux 6.2; unknown flags make TUNSETOFFLOAD fail with
	// EINVAL, so step down until the kernel accepts.
	for _, f := range []int{tcp | ecn | uso, tcp | ecn, tcp, unix.TUN_F_CSUM} {
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, f) == nil {
			if f&unix.TUN_F_CSUM != 0 {
				d.offloads |= link.OffloadRxChecksum
			}
			if f&unix.TUN_F_TSO4 != 0 {
				d.offloads |= link.OffloadTSO4
			}
			if f&unix.TUN_F_TSO6 != 0 {
				d.offloads |= link.OffloadTSO6
			}
			if f&unix.TUN_F_TSO_ECN != 0 {
				d.offloads |= link.OffloadTSOECN
			}
			if f&unix.TUN_F_USO4 != 0 {
				d.offloads |= link.OffloadUSO4
			}
			if f&unix.TUN_F_USO6 != 0 {
				d.offloads |= link.OffloadUSO6
			}
			break
		}
	}
	return nil
}

// setMTU sets the interface MTU (called by Attach with d.mu held).
func (d *Device) setMTU(mtu uint32) error {
	if mtu == d.mtu.Load() {
		return nil
	}
	if err := d.sys.nl.SetLink(d.sys.ifindex, mtu, nil, false); err != nil {
		return netdev.PermissionError("configuring", d.opts.Mode.kind(), d.name, fmt.Errorf("mtu %d: %w", mtu, err))
	}
	d.mtu.Store(mtu)
	return nil
}

// removeAddresses deletes the addresses New added.
func (d *Device) removeAddresses() error {
	var errs []error
	for _, p := range d.sys.added {
		if _, err := d.sys.nl.Addr(unix.RTM_DELADDR, d.sys.ifindex, p, false); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("removing address %s from %s: %w", p, d.name, err))
		}
	}
	d.sys.added = nil
	return errors.Join(errs...)
}

// start allocates the per-direction buffers and starts the read goroutine.
func (d *Device) start() {
	s := &d.sys
	s.rbuf = make([]byte, devReadBufSize)
	s.whdr = make([]byte, vnet.HdrLen+devHdrScratch)
	s.wseg = make([]byte, devHdrScratch)
	s.readFn = d.readFrames
	s.writeFn = d.writeIovecs
	s.wg.Add(1)
	go d.readLoop()
}

// close closes the device and waits for the read goroutine.
func (d *Device) close() error {
	s := &d.sys
	err := s.f.Close() // wakes the read goroutine; waits for in-flight writes
	s.wg.Wait()
	if !d.created {
		err = errors.Join(err, d.removeAddresses())
	}
	s.nl.Close()
	return err
}

// readLoop moves frames from the device to the endpoint until the device
// is closed or fails.
func (d *Device) readLoop() {
	s := &d.sys
	defer s.wg.Done()
	for {
		err := s.rc.Read(s.readFn)
		if s.batch.Len() > 0 {
			d.ep.WritePackets(s.batch)
			s.batch.Reset() // the endpoint borrowed them
		}
		if err != nil {
			return // closed
		}
		if e := s.readErr; e != nil {
			s.readErr = nil
			d.stats.readErrors.Add(1)
			if errors.Is(e, unix.EBADFD) || errors.Is(e, unix.EBADF) || errors.Is(e, unix.EIO) || e == io.EOF {
				return // the interface was deleted under us
			}
		}
	}
}

// readFrames is the syscall.RawConn read callback: it reads frames until
// the batch is full or the device has nothing more, and reports false
// (wait for readiness) only when it read nothing.
func (d *Device) readFrames(fd uintptr) bool {
	s := &d.sys
	for s.batch.Len() < devReadBatch {
		n, err := unix.Read(int(fd), s.rbuf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return s.batch.Len() > 0
		case err != nil:
			s.readErr = err
			return true
		case n == 0:
			s.readErr = io.EOF
			return true
		}
		d.readFrame(s.rbuf[:n])
	}
	return true
}

// readFrame turns one frame read from the device into outbound packets in
// the batch.
func (d *Device) readFrame(b []byte) {
	st := &d.stats
	st.readFrames.Add(1)
	var vh vnet.Hdr
	if d.offloads.Has(link.OffloadVnetHdr) {
		if !vh.Decode(b) {
			st.readDrops.Add(1)
			return
		}
		b = b[vnet.HdrLen:]
	}
	st.readBytes.Add(uint64(len(b)))
	linkLen := 0
	var proto tcpip.NetworkProtocolNumber
	if d.opts.Mode == ModeTAP {
		if len(b) < header.EthernetMinimumSize {
			st.readDrops.Add(1)
			return
		}
		linkLen = header.EthernetMinimumSize
		et := binary.BigEndian.Uint16(b[12:14])
		if et == 0x8100 && len(b) >= linkLen+4 { // one 802.1Q tag
			linkLen += 4
			et = binary.BigEndian.Uint16(b[16:18])
		}
		proto = tcpip.NetworkProtocolNumber(et)
	} else {
		switch {
		case len(b) > 0 && b[0]>>4 == 4:
			proto = header.IPv4ProtocolNumber
		case len(b) > 0 && b[0]>>4 == 6:
			proto = header.IPv6ProtocolNumber
		default:
			st.readDrops.Add(1)
			return
		}
	}
	var ip frame.IP
	isIP := false
	if proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber {
		ip, isIP = frame.ParseIP(b[linkLen:], len(b)-linkLen)
		if isIP && (ip.Version == 4) != (proto == header.IPv4ProtocolNumber) {
			isIP = false
		}
		if isIP {
			b = b[:linkLen+ip.TotalLen] // drop Ethernet padding
		}
	}
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
		if vh.Flags&vnet.FNeedsCsum != 0 {
			if !frame.FinishPartial(b, int(vh.CsumStart), int(vh.CsumOffset)) {
				st.readDrops.Add(1)
				return
			}
			st.readChecksums.Add(1)
		}
		d.queue(b, linkLen, proto, ip, isIP, stack.GSO{})
	case vnet.GSOTCPv4, vnet.GSOTCPv6:
		v := 4
		typ := stack.GSOTCPv4
		if vh.GSOType&^vnet.GSOECN == vnet.GSOTCPv6 {
			v, typ = 6, stack.GSOTCPv6
		}
		// hdr_len is not trusted (on the forwarding path the kernel
		// reports the whole first fragment); the parsed headers are.
		if !isIP || ip.Version != v || ip.Fragment || ip.Proto != frame.ProtoTCP || ip.L4Len == 0 || vh.GSOSize == 0 {
			st.readDrops.Add(1)
			return
		}
		st.readTSO.Add(1)
		d.queue(b, linkLen, proto, ip, true, stack.GSO{
			Type:       typ,
			NeedsCsum:  true,
			CsumOffset: link.TCPChecksumOffset,
			MSS:        vh.GSOSize,
			L3HdrLen:   uint16(ip.HdrLen),
			MaxSize:    1 << 16,
		})
	case vnet.GSOUDPL4:
		if !isIP || ip.Fragment || ip.Proto != frame.ProtoUDP || ip.L4Len == 0 || vh.GSOSize == 0 {
			st.readDrops.Add(1)
			return
		}
		st.readUSO.Add(1)
		d.splitUDP(b, linkLen, proto, ip, int(vh.GSOSize))
	default:
		st.readDrops.Add(1)
	}
}

// queue copies one packet into pooled gVisor memory, marks its headers and
// appends it to the batch.
func (d *Device) queue(b []byte, linkLen int, proto tcpip.NetworkProtocolNumber, ip frame.IP, isIP bool, gso stack.GSO) {
	var buf buffer.Buffer
	if len(b) <= buffer.MaxChunkSize {
		buf = buffer.MakeWithView(buffer.NewViewWithData(b))
	} else {
		// Pooled chunks stop at 64 KiB; a full-size TAP super-packet is a
		// few bytes more.
		buf = buffer.MakeWithView(buffer.NewViewWithData(b[:buffer.MaxChunkSize]))
		_ = buf.Append(buffer.NewViewWithData(b[buffer.MaxChunkSize:]))
	}
	d.push(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf}), linkLen, proto, ip, isIP, gso)
}

// push sets pkt's headers and metadata and appends it to the batch.
func (d *Device) push(pkt *stack.PacketBuffer, linkLen int, proto tcpip.NetworkProtocolNumber, ip frame.IP, isIP bool, gso stack.GSO) {
	if linkLen > 0 {
		pkt.LinkHeader().Consume(linkLen)
	}
	if isIP {
		pkt.NetworkHeader().Consume(ip.HdrLen)
		if !ip.Fragment && ip.L4Len > 0 {
			pkt.TransportHeader().Consume(ip.L4Len)
			pkt.TransportProtocolNumber = tcpip.TransportProtocolNumber(ip.Proto)
		}
	}
	pkt.NetworkProtocolNumber = proto
	pkt.GSOOptions = gso
	d.sys.batch.PushBack(pkt)
	d.stats.readPackets.Add(1)
}

// splitUDP splits a UDP super-packet (USO) into datagrams of gsoSize bytes
// of payload, each with complete headers and checksum: the endpoint only
// segments TCP.
func (d *Device) splitUDP(b []byte, linkLen int, proto tcpip.NetworkProtocolNumber, ip frame.IP, gsoSize int) {
	hl := linkLen + ip.HdrLen + ip.L4Len
	payload := b[hl:]
	for idx, off := 0, 0; off < len(payload) || idx == 0; idx, off = idx+1, off+gsoSize {
		n := min(gsoSize, len(payload)-off)
		v := buffer.NewViewSize(hl + n)
		seg := v.AsSlice()
		copy(seg, b[:hl])
		copy(seg[hl:], payload[off:off+n])
		segment(seg[:hl], linkLen, ip.HdrLen, frame.ProtoUDP, idx, off, n, off+n >= len(payload), checksum.Checksum(seg[hl:], 0))
		d.push(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)}), linkLen, proto, ip, true, stack.GSO{})
	}
}

// writePacket writes one packet the endpoint delivered to the device. It
// runs on the endpoint's receive goroutine; pkt is borrowed.
func (d *Device) writePacket(pkt *stack.PacketBuffer) {
	s := &d.sys
	st := &d.stats
	s.wmu.Lock()
	defer s.wmu.Unlock()

	// The packet from its link header (consumed by the endpoint, still in
	// the buffer) onwards, as the views that hold it.
	s.wslices = s.wslices[:0]
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		s.wslices = append(s.wslices, b[off:])
		off = 0
	}
	total := s.wslices.Size()
	linkLen := 0
	if d.opts.Mode == ModeTAP {
		linkLen = header.EthernetMinimumSize
	}
	if total <= linkLen {
		st.writeDrops.Add(1)
		return
	}
	hasVnet := d.offloads.Has(link.OffloadVnetHdr)
	h := s.whdr[vnet.HdrLen:]
	hn := s.wslices.CopyOut(h)
	var vh vnet.Hdr
	if pkt.RXChecksumValidated {
		isIP := true
		if linkLen > 0 {
			et := binary.BigEndian.Uint16(h[12:14])
			isIP = et == uint16(header.IPv4ProtocolNumber) || et == uint16(header.IPv6ProtocolNumber)
		}
		var ip frame.IP
		if isIP {
			ip, isIP = frame.ParseIP(h[linkLen:hn], total-linkLen)
		}
		switch {
		case !isIP || ip.Fragment:
		case ip.Proto == frame.ProtoTCP && ip.L4Len > 0 && linkLen+ip.TotalLen == total:
			d.writeTCP(pkt, linkLen, ip, total)
			return
		case ip.Version == 6 && ip.HdrLen != 40:
			// The endpoint does not look past IPv6 extension headers.
		case ip.Proto == frame.ProtoUDP && ip.L4Len == 8,
			ip.Version == 4 && ip.Proto == frame.ProtoICMP && ip.TotalLen-ip.HdrLen >= 4,
			ip.Version == 6 && ip.Proto == frame.ProtoICMPv6 && ip.TotalLen-ip.HdrLen >= 4:
			// The endpoint validated these checksums (that is what its
			// receive checksum offload promises); spare the kernel.
			vh.Flags = vnet.FDataValid
		}
	}
	s.wiov = s.wiov[:0]
	if hasVnet {
		vh.Encode(s.whdr)
		s.wiov = append(s.wiov, s.whdr[:vnet.HdrLen])
	}
	s.wiov = append(s.wiov, s.wslices...)
	d.writev()
}

// writeTCP writes a TCP packet whose checksums the endpoint validated and
// which GRO may have coalesced: its IPv4 header checksum and its TCP
// checksum are stale then, and it may be larger than the MTU. With a vnet
// header it goes out as one packet with a partial checksum (and GSO when
// larger than one segment); without one it is checksummed, and split into
// segments, in software.
func (d *Device) writeTCP(pkt *stack.PacketBuffer, linkLen int, ip frame.IP, total int) {
	s := &d.sys
	hl := linkLen + ip.HdrLen + ip.L4Len
	h := s.whdr[vnet.HdrLen:]
	hdr := h[:hl]
	ipb := hdr[linkLen : linkLen+ip.HdrLen]
	tcp := hdr[linkLen+ip.HdrLen:]
	payLen := total - hl
	mtu := int(d.mtu.Load())
	segSize := mtu - ip.HdrLen - ip.L4Len // what gso_size must not exceed
	if m := int(pkt.GSOOptions.MSS); m > 0 && m < segSize {
		segSize = m // the sender's segment size, known for a tunnel job
	}

	if d.offloads.Has(link.OffloadVnetHdr) {
		if ip.Version == 4 {
			link.SetIPv4Checksum(ipb)
		}
		binary.BigEndian.PutUint16(tcp[link.TCPChecksumOffset:], link.PseudoHeaderSum(ipb, frame.ProtoTCP, ip.TotalLen-ip.HdrLen))
		vh := vnet.Hdr{
			Flags:      vnet.FNeedsCsum,
			HdrLen:     uint16(hl),
			CsumStart:  uint16(linkLen + ip.HdrLen),
			CsumOffset: link.TCPChecksumOffset,
		}
		if segSize > 0 && payLen > segSize {
			vh.GSOType = vnet.GSOTCPv4
			if ip.Version == 6 {
				vh.GSOType = vnet.GSOTCPv6
			}
			if tcp[13]&byte(header.TCPFlagCwr) != 0 {
				vh.GSOType |= vnet.GSOECN
			}
			vh.GSOSize = uint16(segSize)
			d.stats.writtenGSO.Add(1)
		}
		vh.Encode(s.whdr)
		s.wiov = append(s.wiov[:0], s.whdr[:vnet.HdrLen+hl])
		s.wiov = s.wslices.AppendRange(s.wiov, hl, payLen)
		d.writev()
		return
	}
	if ip.TotalLen <= mtu || segSize <= 0 {
		segment(hdr, linkLen, ip.HdrLen, frame.ProtoTCP, 0, 0, payLen, true, s.wslices.Checksum(hl, payLen))
		s.wiov = append(s.wiov[:0], hdr)
		s.wiov = s.wslices.AppendRange(s.wiov, hl, payLen)
		d.writev()
		return
	}
	d.stats.writtenSplit.Add(1)
	seg := s.wseg[:hl]
	for idx, off := 0, 0; off < payLen; idx, off = idx+1, off+segSize {
		n := min(segSize, payLen-off)
		copy(seg, hdr)
		segment(seg, linkLen, ip.HdrLen, frame.ProtoTCP, idx, off, n, off+n >= payLen, s.wslices.Checksum(hl+off, n))
		s.wiov = append(s.wiov[:0], seg)
		s.wiov = s.wslices.AppendRange(s.wiov, hl+off, n)
		d.writev()
	}
}

// writev writes s.wiov to the device as one packet.
func (d *Device) writev() {
	s := &d.sys
	st := &d.stats
	n := 0
	s.iovecs = s.iovecs[:0]
	for _, b := range s.wiov {
		if len(b) == 0 {
			continue
		}
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		s.iovecs = append(s.iovecs, iov)
		n += len(b)
	}
	if len(s.iovecs) > devMaxIovecs {
		// Pathologically fragmented: flatten.
		if cap(s.wflat) < n {
			s.wflat = make([]byte, n)
		}
		flat := s.wflat[:0]
		for _, b := range s.wiov {
			flat = append(flat, b...)
		}
		s.iovecs = s.iovecs[:1]
		s.iovecs[0] = unix.Iovec{Base: &flat[0]}
		s.iovecs[0].SetLen(len(flat))
	}
	s.werr = nil
	err := s.rc.Write(s.writeFn)
	for i := range s.iovecs {
		s.iovecs[i] = unix.Iovec{} // keep no packet memory alive
	}
	clear(s.wiov)
	switch {
	case err != nil:
		st.writeDrops.Add(1) // closed
	case s.werr != nil:
		st.writeErrors.Add(1)
	default:
		if d.offloads.Has(link.OffloadVnetHdr) {
			n -= vnet.HdrLen
		}
		st.writtenPackets.Add(1)
		st.writtenBytes.Add(uint64(n))
	}
}

// writeIovecs is the syscall.RawConn write callback.
func (d *Device) writeIovecs(fd uintptr) bool {
	s := &d.sys
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iovecs[0])), uintptr(len(s.iovecs)))
		switch e {
		case 0:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.werr = e
		return true
	}
}

// segment rewrites hdr, a copy of the link, IP and transport headers of a
// super-packet, into those of its segment idx (see link.SegmentHeader) and
// finishes its checksum, given the checksum of its n payload bytes.
func segment(hdr []byte, linkLen, ipLen int, proto uint8, idx, off, n int, last bool, paySum uint16) {
	l4 := linkLen + ipLen
	pseudo := link.SegmentHeader(hdr, linkLen, l4, proto, idx, off, n, last)
	link.FinishChecksum(hdr[l4:], proto, pseudo, paySum)
}
