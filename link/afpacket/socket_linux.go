//go:build linux

package afpacket

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/internal/vnet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// setup configures and binds the receive socket, then probes the offloads
// (the send socket, openTx, takes what the probes find).
func (e *Endpoint) setup(fd int) error {
	opts := &e.cfg
	if !opts.NoVnetHdr {
		// Before bind, so that no frame is ever queued without the header.
		if unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1) == nil {
			e.vnetLen = vnet.HdrLen
		}
	}
	// Linux ≥ 4.20; older kernels show the host's own frames, which the
	// receive path drops by their packet type anyway.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, opts.ReadBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, opts.ReadBuffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: afpHtons(unix.ETH_P_ALL), Ifindex: e.ifIndex}); err != nil {
		return fmt.Errorf("AF_PACKET: bind %s: %w", opts.Device, err)
	}
	if !bytes.Equal([]byte(e.LinkAddress()), e.ifMAC) {
		if err := afpMembership(fd, e.ifIndex, unix.PACKET_MR_PROMISC); err != nil {
			return fmt.Errorf("AF_PACKET: promiscuous mode on %s: %w", opts.Device, err)
		}
		e.promisc = true
	}
	if err := afpMembership(fd, e.ifIndex, unix.PACKET_MR_ALLMULTI); err != nil {
		return fmt.Errorf("AF_PACKET: all-multicast mode on %s: %w", opts.Device, err)
	}
	if e.vnetLen == 0 {
		return nil
	}
	if !opts.NoTxChecksumOffload {
		ok, err := afpProbe(fd, e.LinkAddress(), false)
		if err != nil {
			return fmt.Errorf("AF_PACKET: offload probe on %s: %w", opts.Device, err)
		}
		e.txCsum.Store(ok)
	}
	if e.txCsum.Load() && !opts.NoUDPGSO {
		ok, err := afpProbe(fd, e.LinkAddress(), true)
		if err != nil {
			return fmt.Errorf("AF_PACKET: offload probe on %s: %w", opts.Device, err)
		}
		e.udpGSO.Store(ok)
	}
	return nil
}

// openTx opens the send socket (see Endpoint, Datapath): bound to the
// interface for protocol 0, so that the kernel queues nothing to it, with
// the receive socket's virtio_net_hdr and Options.WriteBuffer. It is created
// blocking, so that os.NewFile leaves it out of the runtime poller, and
// made non-blocking after (mmsg.SendAll needs that).
func (e *Endpoint) openTx() (*os.File, syscall.RawConn, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("AF_PACKET: send socket: %w", err)
	}
	fail := func(err error) (*os.File, syscall.RawConn, error) {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("AF_PACKET: send socket on %s: %w", e.cfg.Device, err)
	}
	if e.vnetLen != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fail(fmt.Errorf("virtio_net_hdr: %w", err))
		}
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, e.cfg.WriteBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, e.cfg.WriteBuffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: e.ifIndex}); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	f := os.NewFile(uintptr(fd), "gnv-packet-tx:"+e.cfg.Device)
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("AF_PACKET: send socket: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("AF_PACKET: send socket: %w", err)
	}
	return f, rc, nil
}

func afpMembership(fd, ifIndex int, typ uint16) error {
	return unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP,
		&unix.PacketMreq{Ifindex: int32(ifIndex), Type: typ})
}

func afpHtons(v uint16) uint16 { return v<<8 | v>>8 }

// afpProbe sends one harmless probe frame with a NEEDS_CSUM virtio_net_hdr
// (and, if gso, as a UDP_L4 job of two datagrams) and reports whether the
// kernel accepted the header. See Endpoint for why acceptance is the
// test and why the frame does no harm.
func afpProbe(fd int, mac tcpip.LinkAddress, gso bool) (bool, error) {
	const payload = 32
	var b [vnet.HdrLen + header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize + payload]byte
	f := b[vnet.HdrLen:]
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: mac, DstAddr: mac, Type: header.IPv4ProtocolNumber})
	l3 := header.EthernetMinimumSize
	l4 := l3 + header.IPv4MinimumSize
	ulen := header.UDPMinimumSize + payload
	ip := header.IPv4(f[l3:l4])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + ulen),
		TTL:         0, // never routed
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     header.IPv4Any,
		DstAddr:     header.IPv4Any,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(f[l4:])
	u.Encode(&header.UDPFields{SrcPort: 9, DstPort: 9, Length: uint16(ulen)})
	u.SetChecksum(header.PseudoHeaderChecksum(header.UDPProtocolNumber, header.IPv4Any, header.IPv4Any, uint16(ulen)))
	copy(f[l4+header.UDPMinimumSize:], "gnv AF_PACKET offload probe")
	vh := vnet.Hdr{
		Flags:      vnet.FNeedsCsum,
		HdrLen:     uint16(l4 + header.UDPMinimumSize),
		CsumStart:  uint16(l4),
		CsumOffset: link.UDPChecksumOffset,
	}
	if gso {
		vh.GSOType = vnet.GSOUDPL4
		vh.GSOSize = payload / 2
	}
	vh.Encode(b[:])
	for tries := 0; ; tries++ {
		_, err := unix.Write(fd, b[:])
		switch {
		case err == nil, err == unix.ENOBUFS:
			// ENOBUFS comes from the device queue, after the header
			// was accepted.
			return true, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN && tries < 100:
			time.Sleep(time.Millisecond)
		case err == unix.EINVAL, err == unix.EOPNOTSUPP, err == unix.EPROTONOSUPPORT, err == unix.EIO:
			return false, nil
		default:
			return false, err
		}
	}
}
