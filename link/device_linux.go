//go:build linux

package link

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
	nl      *devNetlink // route socket in the device's namespace
	ifindex int
	added   []netip.Prefix // addresses OpenDevice added

	wg sync.WaitGroup

	// Read side: the read goroutine only.
	rbuf    []byte
	batch   stack.PacketBufferList
	readFn  func(fd uintptr) bool
	readErr error

	// Write side: under wmu.
	wmu     sync.Mutex
	wslices devSlices
	wiov    [][]byte
	iovecs  []unix.Iovec
	whdr    []byte // [virtio_net_hdr | patched headers]
	wseg    []byte // headers of one software segment
	wflat   []byte // fallback for packets with more than devMaxIovecs views
	writeFn func(fd uintptr) bool
	werr    error
}

// openDevice is OpenDevice after validation.
func openDevice(opts DeviceOptions) (_ *Device, err error) {
	d := &Device{opts: opts}
	s := &d.sys
	mode := opts.Mode
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, devPermissionError("creating", mode, opts.Name, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err})
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
			s.nl.close()
		}
	}()
	if s.nl, err = devNetlinkOpen(); err != nil {
		return nil, fmt.Errorf("creating %s device %s: %w", mode.kind(), opts.Name, err)
	}
	existed := false
	if opts.Name != "" {
		if _, err := s.nl.ifindex(opts.Name); err == nil {
			existed = true
		}
	}
	op := "creating"
	if existed {
		op = "attaching to"
	}

	flags := uint16(unix.IFF_NO_PI)
	if mode == DeviceTAP {
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
		return nil, devPermissionError(op, mode, opts.Name, err)
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

	if s.ifindex, err = s.nl.ifindex(d.name); err != nil {
		return nil, fmt.Errorf("%s device %s: interface index: %w", mode.kind(), d.name, err)
	}
	if mode == DeviceTAP {
		if d.mac, err = s.nl.hwaddr(d.name); err != nil {
			return nil, fmt.Errorf("%s device %s: hardware address: %w", mode.kind(), d.name, err)
		}
		if opts.MAC != nil {
			d.mac = append(net.HardwareAddr(nil), opts.MAC...)
		}
	}
	mtu, err := s.nl.mtu(d.name)
	if err != nil {
		return nil, fmt.Errorf("%s device %s: mtu: %w", mode.kind(), d.name, err)
	}
	if opts.MTU != 0 {
		mtu = int(opts.MTU)
	}
	var setMAC net.HardwareAddr
	if mode == DeviceTAP {
		setMAC = opts.MAC
	}
	if err := s.nl.setLink(s.ifindex, uint32(mtu), setMAC, true); err != nil {
		return nil, devPermissionError("configuring", mode, d.name, err)
	}
	d.mtu.Store(uint32(mtu))
	for _, p := range opts.Addresses {
		added, err := s.nl.addr(unix.RTM_NEWADDR, s.ifindex, p, opts.NoDAD)
		if err != nil {
			d.removeAddresses()
			return nil, devPermissionError("configuring", mode, d.name, fmt.Errorf("address %s: %w", p, err))
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
	d.offloads.VnetHdr = true
	const (
		tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		ecn = unix.TUN_F_TSO_ECN
		uso = unix.TUN_F_USO4 | unix.TUN_F_USO6
	)
	// USO needs Linux 6.2; unknown flags make TUNSETOFFLOAD fail with
	// EINVAL, so step down until the kernel accepts.
	for _, f := range []int{tcp | ecn | uso, tcp | ecn, tcp, unix.TUN_F_CSUM} {
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, f) == nil {
			d.offloads.Csum = f&unix.TUN_F_CSUM != 0
			d.offloads.TSO4 = f&unix.TUN_F_TSO4 != 0
			d.offloads.TSO6 = f&unix.TUN_F_TSO6 != 0
			d.offloads.TSOECN = f&unix.TUN_F_TSO_ECN != 0
			d.offloads.USO4 = f&unix.TUN_F_USO4 != 0
			d.offloads.USO6 = f&unix.TUN_F_USO6 != 0
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
	if err := d.sys.nl.setLink(d.sys.ifindex, mtu, nil, false); err != nil {
		return devPermissionError("configuring", d.opts.Mode, d.name, fmt.Errorf("mtu %d: %w", mtu, err))
	}
	d.mtu.Store(mtu)
	return nil
}

// removeAddresses deletes the addresses OpenDevice added.
func (d *Device) removeAddresses() error {
	var errs []error
	for _, p := range d.sys.added {
		if _, err := d.sys.nl.addr(unix.RTM_DELADDR, d.sys.ifindex, p, false); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
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
	s.nl.close()
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
	if d.offloads.VnetHdr {
		if !vh.Decode(b) {
			st.readDrops.Add(1)
			return
		}
		b = b[vnet.HdrLen:]
	}
	st.readBytes.Add(uint64(len(b)))
	linkLen := 0
	var proto tcpip.NetworkProtocolNumber
	if d.opts.Mode == DeviceTAP {
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
	var ip devIP
	isIP := false
	if proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber {
		ip, isIP = devParseIP(b[linkLen:], len(b)-linkLen)
		if isIP && (ip.version == 4) != (proto == header.IPv4ProtocolNumber) {
			isIP = false
		}
		if isIP {
			b = b[:linkLen+ip.totalLen] // drop Ethernet padding
		}
	}
	switch vh.GSOType &^ vnet.GSOECN {
	case vnet.GSONone:
		if vh.Flags&vnet.FNeedsCsum != 0 {
			if !devFinishChecksum(b, int(vh.CsumStart), int(vh.CsumOffset)) {
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
		if !isIP || ip.version != v || ip.fragment || ip.proto != devProtoTCP || ip.l4Len == 0 || vh.GSOSize == 0 {
			st.readDrops.Add(1)
			return
		}
		st.readTSO.Add(1)
		d.queue(b, linkLen, proto, ip, true, stack.GSO{
			Type:       typ,
			NeedsCsum:  true,
			CsumOffset: devTCPCsumOffset,
			MSS:        vh.GSOSize,
			L3HdrLen:   uint16(ip.hdrLen),
			MaxSize:    1 << 16,
		})
	case vnet.GSOUDPL4:
		if !isIP || ip.fragment || ip.proto != devProtoUDP || ip.l4Len == 0 || vh.GSOSize == 0 {
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
func (d *Device) queue(b []byte, linkLen int, proto tcpip.NetworkProtocolNumber, ip devIP, isIP bool, gso stack.GSO) {
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
func (d *Device) push(pkt *stack.PacketBuffer, linkLen int, proto tcpip.NetworkProtocolNumber, ip devIP, isIP bool, gso stack.GSO) {
	if linkLen > 0 {
		pkt.LinkHeader().Consume(linkLen)
	}
	if isIP {
		pkt.NetworkHeader().Consume(ip.hdrLen)
		if !ip.fragment && ip.l4Len > 0 {
			pkt.TransportHeader().Consume(ip.l4Len)
			pkt.TransportProtocolNumber = tcpip.TransportProtocolNumber(ip.proto)
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
func (d *Device) splitUDP(b []byte, linkLen int, proto tcpip.NetworkProtocolNumber, ip devIP, gsoSize int) {
	hl := linkLen + ip.hdrLen + ip.l4Len
	payload := b[hl:]
	for idx, off := 0, 0; off < len(payload) || idx == 0; idx, off = idx+1, off+gsoSize {
		n := min(gsoSize, len(payload)-off)
		v := buffer.NewViewSize(hl + n)
		seg := v.AsSlice()
		copy(seg, b[:hl])
		copy(seg[hl:], payload[off:off+n])
		devSegment(seg[:hl], linkLen, ip.hdrLen, devProtoUDP, idx, off, n, off+n >= len(payload), checksum.Checksum(seg[hl:], 0))
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
	total := s.wslices.size()
	linkLen := 0
	if d.opts.Mode == DeviceTAP {
		linkLen = header.EthernetMinimumSize
	}
	if total <= linkLen {
		st.writeDrops.Add(1)
		return
	}
	hasVnet := d.offloads.VnetHdr
	h := s.whdr[vnet.HdrLen:]
	hn := s.wslices.copyOut(h)
	var vh vnet.Hdr
	if pkt.RXChecksumValidated {
		isIP := true
		if linkLen > 0 {
			et := binary.BigEndian.Uint16(h[12:14])
			isIP = et == uint16(header.IPv4ProtocolNumber) || et == uint16(header.IPv6ProtocolNumber)
		}
		var ip devIP
		if isIP {
			ip, isIP = devParseIP(h[linkLen:hn], total-linkLen)
		}
		switch {
		case !isIP || ip.fragment:
		case ip.proto == devProtoTCP && ip.l4Len > 0 && linkLen+ip.totalLen == total:
			d.writeTCP(pkt, linkLen, ip, total)
			return
		case ip.version == 6 && ip.hdrLen != 40:
			// The endpoint does not look past IPv6 extension headers.
		case ip.proto == devProtoUDP && ip.l4Len == 8,
			ip.version == 4 && ip.proto == devProtoICMP && ip.totalLen-ip.hdrLen >= 4,
			ip.version == 6 && ip.proto == devProtoICMPv6 && ip.totalLen-ip.hdrLen >= 4:
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
func (d *Device) writeTCP(pkt *stack.PacketBuffer, linkLen int, ip devIP, total int) {
	s := &d.sys
	hl := linkLen + ip.hdrLen + ip.l4Len
	h := s.whdr[vnet.HdrLen:]
	hdr := h[:hl]
	ipb := hdr[linkLen : linkLen+ip.hdrLen]
	tcp := hdr[linkLen+ip.hdrLen:]
	payLen := total - hl
	mtu := int(d.mtu.Load())
	segSize := mtu - ip.hdrLen - ip.l4Len // what gso_size must not exceed
	if m := int(pkt.GSOOptions.MSS); m > 0 && m < segSize {
		segSize = m // the sender's segment size, known for a tunnel job
	}

	if d.offloads.VnetHdr {
		if ip.version == 4 {
			devSetIPv4Checksum(ipb)
		}
		binary.BigEndian.PutUint16(tcp[devTCPCsumOffset:], devPseudoSum(ipb, devProtoTCP, ip.totalLen-ip.hdrLen))
		vh := vnet.Hdr{
			Flags:      vnet.FNeedsCsum,
			HdrLen:     uint16(hl),
			CsumStart:  uint16(linkLen + ip.hdrLen),
			CsumOffset: devTCPCsumOffset,
		}
		if segSize > 0 && payLen > segSize {
			vh.GSOType = vnet.GSOTCPv4
			if ip.version == 6 {
				vh.GSOType = vnet.GSOTCPv6
			}
			if tcp[13]&devTCPFlagCWR != 0 {
				vh.GSOType |= vnet.GSOECN
			}
			vh.GSOSize = uint16(segSize)
			d.stats.writtenGSO.Add(1)
		}
		vh.Encode(s.whdr)
		s.wiov = append(s.wiov[:0], s.whdr[:vnet.HdrLen+hl])
		s.wiov = s.wslices.appendRange(s.wiov, hl, payLen)
		d.writev()
		return
	}
	if ip.totalLen <= mtu || segSize <= 0 {
		devSegment(hdr, linkLen, ip.hdrLen, devProtoTCP, 0, 0, payLen, true, s.wslices.checksum(hl, payLen))
		s.wiov = append(s.wiov[:0], hdr)
		s.wiov = s.wslices.appendRange(s.wiov, hl, payLen)
		d.writev()
		return
	}
	d.stats.writtenSplit.Add(1)
	seg := s.wseg[:hl]
	for idx, off := 0, 0; off < payLen; idx, off = idx+1, off+segSize {
		n := min(segSize, payLen-off)
		copy(seg, hdr)
		devSegment(seg, linkLen, ip.hdrLen, devProtoTCP, idx, off, n, off+n >= payLen, s.wslices.checksum(hl+off, n))
		s.wiov = append(s.wiov[:0], seg)
		s.wiov = s.wslices.appendRange(s.wiov, hl+off, n)
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
		if d.offloads.VnetHdr {
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

// devNetlink is a NETLINK_ROUTE socket used to configure the device. It is
// opened by OpenDevice and kept, so that later changes (Attach's MTU,
// Close's address removal) happen in the device's network namespace
// whichever thread makes them. Its descriptor also serves the SIOCGIF*
// ioctls, which any socket forwards to the device layer of its namespace.
type devNetlink struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

func devNetlinkOpen() (*devNetlink, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &devNetlink{fd: fd, buf: make([]byte, 1<<13)}, nil
}

func (n *devNetlink) close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}

// ifindex returns the index of the interface name.
func (n *devNetlink) ifindex(name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(n.fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// mtu returns the MTU of the interface name.
func (n *devNetlink) mtu(name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(n.fd, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// devIfreqHW is struct ifreq with ifr_hwaddr, which unix.Ifreq has no
// accessor for.
type devIfreqHW struct {
	name   [unix.IFNAMSIZ]byte
	family uint16
	data   [14]byte
	_      [8]byte // the rest of the ifreq union
}

// hwaddr returns the Ethernet address of the interface name.
func (n *devNetlink) hwaddr(name string) (net.HardwareAddr, error) {
	var r devIfreqHW
	copy(r.name[:], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), unix.SIOCGIFHWADDR, uintptr(unsafe.Pointer(&r))); e != 0 {
		return nil, e
	}
	return append(net.HardwareAddr(nil), r.data[:6]...), nil
}

// setLink sets the MTU (if not 0) and the MAC (if not nil) of interface
// index, and brings it up if up is set (RTM_NEWLINK).
func (n *devNetlink) setLink(index int, mtu uint32, mac net.HardwareAddr, up bool) error {
	msg := make([]byte, unix.SizeofIfInfomsg, 64)
	ne := binary.NativeEndian
	// struct ifinfomsg: family, pad, type, index, flags, change.
	ne.PutUint32(msg[4:8], uint32(index))
	if up {
		ne.PutUint32(msg[8:12], unix.IFF_UP)
		ne.PutUint32(msg[12:16], unix.IFF_UP)
	}
	if mtu != 0 {
		var v [4]byte
		ne.PutUint32(v[:], mtu)
		msg = devNLAttr(msg, unix.IFLA_MTU, v[:])
	}
	if mac != nil {
		msg = devNLAttr(msg, unix.IFLA_ADDRESS, mac)
	}
	return n.request(unix.RTM_NEWLINK, 0, msg)
}

// setMaster makes interface index a port of master (a bridge), like
// `ip link set DEV master BRIDGE`.
func (n *devNetlink) setMaster(index, master int) error {
	msg := make([]byte, unix.SizeofIfInfomsg, 32)
	binary.NativeEndian.PutUint32(msg[4:8], uint32(index))
	var v [4]byte
	binary.NativeEndian.PutUint32(v[:], uint32(master))
	msg = devNLAttr(msg, unix.IFLA_MASTER, v[:])
	return n.request(unix.RTM_NEWLINK, 0, msg)
}

// addr adds (RTM_NEWADDR) or removes (RTM_DELADDR) an address of interface
// index. Adding an address that exists is not an error; added is false
// then.
func (n *devNetlink) addr(typ uint16, index int, p netip.Prefix, noDAD bool) (added bool, err error) {
	a := p.Addr()
	bits := p.Bits()
	if a.Is4In6() {
		a, bits = a.Unmap(), max(bits-96, 0)
	}
	fam, ab := uint8(unix.AF_INET6), a.AsSlice()
	if a.Is4() {
		fam = unix.AF_INET
	}
	msg := make([]byte, unix.SizeofIfAddrmsg, 64)
	// struct ifaddrmsg: family, prefixlen, flags, scope, index.
	msg[0], msg[1] = fam, uint8(bits)
	binary.NativeEndian.PutUint32(msg[4:8], uint32(index))
	msg = devNLAttr(msg, unix.IFA_LOCAL, ab)
	msg = devNLAttr(msg, unix.IFA_ADDRESS, ab)
	var flags uint16
	if typ == unix.RTM_NEWADDR {
		flags = unix.NLM_F_CREATE | unix.NLM_F_EXCL
		if noDAD && fam == unix.AF_INET6 {
			var v [4]byte
			binary.NativeEndian.PutUint32(v[:], unix.IFA_F_NODAD)
			msg = devNLAttr(msg, unix.IFA_FLAGS, v[:])
		}
	}
	err = n.request(typ, flags, msg)
	if typ == unix.RTM_NEWADDR && errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	return err == nil, err
}

// devNLAttr appends a netlink attribute (struct rtattr and data, padded to
// 4 bytes).
func devNLAttr(b []byte, typ uint16, data []byte) []byte {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:2], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one request and waits for its acknowledgement.
func (n *devNetlink) request(typ, flags uint16, body []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return errors.New("netlink socket closed")
	}
	n.seq++
	ne := binary.NativeEndian
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne.PutUint32(msg[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:6], typ)
	ne.PutUint16(msg[6:8], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:12], n.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	for {
		r, _, err := unix.Recvfrom(n.fd, n.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		b := n.buf[:r]
		for len(b) >= unix.SizeofNlMsghdr {
			l := int(ne.Uint32(b[0:4]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				break
			}
			if ne.Uint16(b[4:6]) == unix.NLMSG_ERROR && ne.Uint32(b[8:12]) == n.seq && l >= unix.SizeofNlMsghdr+4 {
				if code := int32(ne.Uint32(b[16:20])); code != 0 {
					return syscall.Errno(-code)
				}
				return nil
			}
			b = b[(l+3)&^3:]
		}
	}
}
