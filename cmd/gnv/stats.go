package main

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/kudp"
	"github.com/gnv-project/gnv/link/nsudp"
)

// gnv stats: the interfaces' and the shared socket's counters (the
// services' are in stats_services.go), as text and as JSON (see
// status.go for the rules of the JSON forms).

// statsReply is gnv stats.
type statsReply struct {
	Interfaces []ifaceStats `json:"interfaces"`
	Socket     socketStats  `json:"socket"`
}

// ifaceStats are one interface's counters.
type ifaceStats struct {
	Name string `json:"name"`
	VNI  uint32 `json:"vni"`
	tunnelCounters
	FDB    *fdbCounters    `json:"fdb,omitempty"`    // l2
	Device *deviceCounters `json:"device,omitempty"` // tap, tun
	Switch *switchCounters `json:"switch,omitempty"` // --vm-listen
	// The netstack overlay's services: each forward and expose rule, the
	// SOCKS5 server, the HTTP proxy.
	Forwards  []forwardCounters `json:"forwards,omitempty"`
	SOCKS5    *socksCounters    `json:"socks5,omitempty"`
	HTTPProxy *httpCounters     `json:"http_proxy,omitempty"`
}

// tunnelCounters are endpoint.Stats: packets and bytes are inner ones;
// drops has every reason (endpoint.DropReason, '-' spelt '_').
type tunnelCounters struct {
	RxPackets     uint64            `json:"rx_packets"`
	RxBytes       uint64            `json:"rx_bytes"`
	TxPackets     uint64            `json:"tx_packets"`
	TxBytes       uint64            `json:"tx_bytes"`
	TxGSOSegments uint64            `json:"tx_gso_segments"`
	TxTunnelJobs  uint64            `json:"tx_tunnel_jobs"`
	RxTunnelJobs  uint64            `json:"rx_tunnel_jobs"`
	RxCoalesced   uint64            `json:"rx_coalesced"`
	RxControl     uint64            `json:"rx_control"`
	PMTUReplies   uint64            `json:"pmtu_replies"`
	FloodBUM      uint64            `json:"flood_bum"`
	FloodUnknown  uint64            `json:"flood_unknown"`
	ARPSuppressed uint64            `json:"arp_suppressed"`
	ARPFlooded    uint64            `json:"arp_flooded"`
	NDSuppressed  uint64            `json:"nd_suppressed"`
	NDFlooded     uint64            `json:"nd_flooded"`
	Drops         map[string]uint64 `json:"drops"`
}

// fdbCounters are endpoint.FDBStats.
type fdbCounters struct {
	Entries int    `json:"entries"`
	Max     int    `json:"max"`
	Learned uint64 `json:"learned"`
	Moved   uint64 `json:"moved"`
	NoSpace uint64 `json:"no_space"`
	Expired uint64 `json:"expired"`
}

// deviceCounters are a TAP/TUN device's (tuntap.Stats): "read" is from the
// kernel into the tunnel, "written" from the tunnel to the kernel.
type deviceCounters struct {
	ReadFrames     uint64 `json:"read_frames"`
	ReadBytes      uint64 `json:"read_bytes"`
	ReadDrops      uint64 `json:"read_drops"`
	ReadErrors     uint64 `json:"read_errors"`
	WrittenPackets uint64 `json:"written_packets"`
	WrittenBytes   uint64 `json:"written_bytes"`
	WriteDrops     uint64 `json:"write_drops"`
	WriteErrors    uint64 `json:"write_errors"`
}

// socketStats are the shared underlay socket's counters: the transport's
// (Geneve datagrams as UDP payloads; bytes are null where the transport
// does not count them), the underlay NIC's (packet and tap underlays),
// and the drops before a datagram reaches an interface.
type socketStats struct {
	Kind        string            `json:"kind"`
	Local       string            `json:"local"`
	RxDatagrams uint64            `json:"rx_datagrams"`
	RxBytes     *uint64           `json:"rx_bytes"`
	RxErrors    uint64            `json:"rx_errors"`
	TxDatagrams uint64            `json:"tx_datagrams"`
	TxBytes     *uint64           `json:"tx_bytes"`
	TxErrors    uint64            `json:"tx_errors"`
	Transport   map[string]uint64 `json:"transport"` // the transport's own counters, by name
	NIC         *nicCounters      `json:"nic,omitempty"`
	Drops       map[string]uint64 `json:"drops"`
}

// nicCounters are the underlay netstack NIC's: Ethernet frames (a
// segmentation job counts once) and their bytes.
type nicCounters struct {
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	TxFrames uint64 `json:"tx_frames"`
	TxBytes  uint64 `json:"tx_bytes"`
}

// dropName is a drop reason's name in JSON and metrics.
func dropName(r endpoint.DropReason) string { return strings.ReplaceAll(r.String(), "-", "_") }

// drops maps every drop reason to its count.
func drops(s *endpoint.Stats) map[string]uint64 {
	m := make(map[string]uint64, endpoint.NumDropReasons)
	for r := endpoint.DropReason(0); r < endpoint.NumDropReasons; r++ {
		m[dropName(r)] = s.Drops[r]
	}
	return m
}

func counters(s endpoint.Stats) tunnelCounters {
	return tunnelCounters{
		RxPackets: s.RxPackets, RxBytes: s.RxBytes, TxPackets: s.TxPackets, TxBytes: s.TxBytes,
		TxGSOSegments: s.TxGSOSegments, TxTunnelJobs: s.TxTunnelJobs, RxTunnelJobs: s.RxTunnelJobs, RxCoalesced: s.RxCoalesced,
		RxControl: s.RxControl, PMTUReplies: s.PMTUReplies, Drops: drops(&s),
		FloodBUM: s.FloodBUM, FloodUnknown: s.FloodUnknown, ARPSuppressed: s.ARPSuppressed, ARPFlooded: s.ARPFlooded,
		NDSuppressed: s.NDSuppressed, NDFlooded: s.NDFlooded,
	}
}

// stats returns the counters of the instance, or of one interface and
// the socket.
func (inst *instance) stats(name string) (statsReply, error) {
	ifaces, err := inst.selected(name)
	if err != nil {
		return statsReply{}, err
	}
	r := statsReply{Interfaces: []ifaceStats{}, Socket: inst.socketStats()}
	for _, ri := range ifaces {
		s := ifaceStats{Name: ri.plan.name, VNI: ri.plan.cfg.VNI, tunnelCounters: counters(ri.tun.Stats())}
		if fdb := ri.tun.Endpoint().FDB(); fdb != nil {
			st := fdb.Stats()
			s.FDB = &fdbCounters{Entries: st.Count, Max: st.Max, Learned: st.Learned, Moved: st.Moved, NoSpace: st.NoSpace, Expired: st.Expired}
		}
		if dev := ri.tun.Device(); dev != nil {
			d := dev.Stats()
			s.Device = &deviceCounters{ReadFrames: d.ReadFrames, ReadBytes: d.ReadBytes, ReadDrops: d.ReadDrops, ReadErrors: d.ReadErrors,
				WrittenPackets: d.WrittenPackets, WrittenBytes: d.WrittenBytes, WriteDrops: d.WriteDrops, WriteErrors: d.WriteErrors}
		}
		s.Switch = ri.switchStats()
		s.Forwards, s.SOCKS5, s.HTTPProxy = ri.serviceStats()
		r.Interfaces = append(r.Interfaces, s)
	}
	return r, nil
}

// socketStats reads the shared socket's counters.
func (inst *instance) socketStats() socketStats {
	sock := inst.underlay.Socket()
	tr := sock.Transport()
	ss := sock.Stats()
	s := transportStats(tr)
	s.Kind, s.Local, s.Drops = inst.plan.underlay, tr.LocalAddr().String(), drops(&ss)
	if st := inst.underlay.Stack(); st != nil {
		for _, nic := range st.NICInfo() {
			n := nic.Stats
			s.NIC = &nicCounters{RxFrames: n.Rx.Packets.Value(), RxBytes: n.Rx.Bytes.Value(), TxFrames: n.Tx.Packets.Value(), TxBytes: n.Tx.Bytes.Value()}
		}
	}
	return s
}

// transportStats reads the counters of the underlay transport behind
// wrappers (a capture): datagrams, bytes and errors in common names, and
// the transport's own counters by name.
func transportStats(t link.Transport) socketStats {
	for {
		w, ok := t.(interface{ Unwrap() link.Transport })
		if !ok {
			break
		}
		t = w.Unwrap()
	}
	if s, ok := kernelUDPStats(t); ok {
		return s
	}
	s := socketStats{Transport: map[string]uint64{}}
	if t, ok := t.(*nsudp.Transport); ok {
		n := t.Stats()
		rxErr := [...]uint64{load(&n.RxMalformed), load(&n.RxChecksumErrors), load(&n.RxQueueFull), load(&n.RxNotStarted)}
		s.RxDatagrams, s.RxErrors = load(&n.RxDatagrams), rxErr[0]+rxErr[1]+rxErr[2]+rxErr[3]
		s.TxDatagrams, s.TxErrors = load(&n.TxDatagrams), load(&n.TxErrors)
		s.Transport = map[string]uint64{"gso_jobs": load(&n.TxGSOJobs), "gso_datagrams": load(&n.TxGSODatagrams),
			"tunnel_jobs": load(&n.TxTunnelJobs), "malformed": rxErr[0], "checksum_errors": rxErr[1], "queue_full": rxErr[2],
			"not_started": rxErr[3], "icmp_errors": load(&n.ICMPErrors)}
	}
	return s
}

// kernelUDPStats reads a kernel UDP transport's counters: kudp.Transport
// (batched on Linux) or kudp.Portable (elsewhere; there, the offload
// counters stay zero).
func kernelUDPStats(t link.Transport) (socketStats, bool) {
	k, ok := t.(interface{ Stats() kudp.Stats })
	if !ok {
		return socketStats{}, false
	}
	st := k.Stats()
	return socketStats{
		RxDatagrams: st.DatagramsReceived, RxBytes: &st.BytesReceived, RxErrors: st.ReceiveErrors + st.Truncated,
		TxDatagrams: st.DatagramsSent, TxBytes: &st.BytesSent, TxErrors: st.SendErrors,
		Transport: map[string]uint64{"gso_sends": st.GSOSends, "gso_fallbacks": st.GSOFallbacks, "gro_splits": st.GROSplits,
			"truncated": st.Truncated, "receive_errors": st.ReceiveErrors},
	}, true
}

// load reads a counter of nsudp.Stats, which holds atomic counters or,
// since link's Stats became snapshots (issue 10), plain values; taking
// the field's address works with either.
func load(p any) uint64 {
	switch v := p.(type) {
	case *uint64:
		return *v
	case *atomic.Uint64:
		return v.Load()
	}
	return 0
}

// stats turns the counters back into endpoint.Stats, for its String.
func (c *tunnelCounters) stats() endpoint.Stats {
	s := endpoint.Stats{RxPackets: c.RxPackets, RxBytes: c.RxBytes, TxPackets: c.TxPackets, TxBytes: c.TxBytes,
		TxGSOSegments: c.TxGSOSegments, TxTunnelJobs: c.TxTunnelJobs, RxTunnelJobs: c.RxTunnelJobs, RxCoalesced: c.RxCoalesced,
		RxControl: c.RxControl, PMTUReplies: c.PMTUReplies,
		FloodBUM: c.FloodBUM, FloodUnknown: c.FloodUnknown, ARPSuppressed: c.ARPSuppressed, ARPFlooded: c.ARPFlooded,
		NDSuppressed: c.NDSuppressed, NDFlooded: c.NDFlooded}
	for r := endpoint.DropReason(0); r < endpoint.NumDropReasons; r++ {
		s.Drops[r] = c.Drops[dropName(r)]
	}
	return s
}

func (r *statsReply) text(w io.Writer) {
	for _, s := range r.Interfaces {
		fmt.Fprintf(w, "%s: %s\n", s.Name, s.stats())
		if f := s.FDB; f != nil {
			fmt.Fprintf(w, "%s: fdb count %d max %d learned %d moved %d nospace %d expired %d\n", s.Name, f.Entries, f.Max, f.Learned, f.Moved, f.NoSpace, f.Expired)
		}
		if sw := s.Switch; sw != nil {
			fmt.Fprintf(w, "%s: switch frames %d forwarded %d flooded %d filtered %d learned %d macs %d drops %d\n", s.Name,
				sw.Frames, sw.Forwarded, sw.Flooded, sw.Filtered, sw.Learned, sw.MACs, sw.Drops)
			for _, v := range sw.VMs {
				fmt.Fprintf(w, "%s: vm %s rx %d frames %d B, tx %d frames %d B (%d segments), drops %d\n", s.Name,
					orNone([]string{v.Remote}), v.RxFrames, v.RxBytes, v.TxFrames, v.TxBytes, v.TxSegments, v.Drops)
			}
		}
		if d := s.Device; d != nil {
			fmt.Fprintf(w, "%s: device read %d frames %d B (%d drops, %d errors), written %d pkts %d B (%d drops, %d errors)\n", s.Name,
				d.ReadFrames, d.ReadBytes, d.ReadDrops, d.ReadErrors, d.WrittenPackets, d.WrittenBytes, d.WriteDrops, d.WriteErrors)
		}
		s.servicesText(w)
	}
	s := &r.Socket
	fmt.Fprintf(w, "socket: %s %s: rx %d datagrams%s (%d errors), tx %d datagrams%s (%d errors)", s.Kind, s.Local,
		s.RxDatagrams, bytesText(s.RxBytes), s.RxErrors, s.TxDatagrams, bytesText(s.TxBytes), s.TxErrors)
	var drops []string
	for r := endpoint.DropReason(0); r < endpoint.NumDropReasons; r++ {
		if n := s.Drops[dropName(r)]; n != 0 {
			drops = append(drops, fmt.Sprintf("%s=%d", r, n))
		}
	}
	if len(drops) == 0 {
		fmt.Fprintln(w, ", no drops")
	} else {
		fmt.Fprintf(w, ", drops: %s\n", strings.Join(drops, " "))
	}
	if n := s.NIC; n != nil {
		fmt.Fprintf(w, "socket: nic rx %d frames %d B, tx %d frames %d B\n", n.RxFrames, n.RxBytes, n.TxFrames, n.TxBytes)
	}
}

func bytesText(b *uint64) string {
	if b == nil {
		return ""
	}
	return fmt.Sprintf(" %d B", *b)
}
