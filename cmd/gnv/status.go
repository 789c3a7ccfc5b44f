package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/kudp"
	"github.com/gnv-project/gnv/link/nsudp"
)

// The replies of gnv show, gnv stats and gnv fdb show. Their JSON forms
// (--json) are an interface: field names are snake_case and stable, new
// fields may be added, none is renamed or removed. Counters are totals
// since the interface came up. README.md documents them.

// showReply is gnv show: the running configuration and state.
type showReply struct {
	Control    string       `json:"control"`
	PID        int          `json:"pid"`
	Version    string       `json:"version"`
	Started    time.Time    `json:"started"`
	Underlay   underlayShow `json:"underlay"`
	Interfaces []ifaceShow  `json:"interfaces"`
	EVPN       *evpnSummary `json:"evpn,omitempty"` // --evpn-asn: the control plane, in short (gnv evpn show has it all)
}

// underlayShow is the shared underlay socket.
type underlayShow struct {
	Kind     string   `json:"kind"`              // udp, packet or tap
	Local    string   `json:"local"`             // bound address and UDP port
	Dev      string   `json:"dev,omitempty"`     // --dev
	Address  string   `json:"address,omitempty"` // packet, tap: the netstack's address/prefix
	Gateway  string   `json:"gateway,omitempty"` // packet, tap
	MTU      int      `json:"mtu"`               // underlay IP MTU
	Offloads []string `json:"offloads"`          // in use now
	Pcap     string   `json:"pcap,omitempty"`
}

// ifaceShow is one interface.
type ifaceShow struct {
	Name            string        `json:"name"`
	Mode            string        `json:"mode"` // l2 or l3
	VNI             uint32        `json:"vni"`
	Overlay         string        `json:"overlay"`       // tap, tun or netstack
	MAC             string        `json:"mac,omitempty"` // l2
	Addresses       []string      `json:"addresses"`
	MTU             uint32        `json:"mtu"`
	Remotes         []string      `json:"remotes"`
	Group           string        `json:"group,omitempty"`
	Port            uint16        `json:"port"` // destination UDP port
	SourcePorts     [2]uint16     `json:"source_ports"`
	TTL             string        `json:"ttl"` // 1..255 or "inherit"
	TOS             uint8         `json:"tos"`
	DSCPInherit     bool          `json:"dscp_inherit"`
	DF              string        `json:"df"` // set, inherit or unset
	AcceptAnySource bool          `json:"accept_any_source"`
	Options         int           `json:"option_bytes"` // bytes of options sent on every packet
	Offloads        []string      `json:"offloads"`     // between the overlay and gnv
	FDB             *fdbShow      `json:"fdb,omitempty"`
	Forwards        []forwardShow `json:"forwards"`
	DNS             []string      `json:"dns,omitempty"` // netstack overlay: its DNS servers
	SOCKS5          string        `json:"socks5,omitempty"`
	HTTPProxy       string        `json:"http_proxy,omitempty"`
	VMs             *vmShow       `json:"vms,omitempty"`
}

// fdbShow is the forwarding table's configuration and size.
type fdbShow struct {
	Learning       bool `json:"learning"`
	Entries        int  `json:"entries"`
	Max            int  `json:"max"`
	TimeoutSeconds int  `json:"timeout_seconds"`
}

// forwardShow is one forward (host to overlay) or expose (overlay to
// host) rule as it runs.
type forwardShow struct {
	Kind   string `json:"kind"`   // forward or expose
	Spec   string `json:"spec"`   // PROTO:LISTEN=TARGET, with the bound port
	Listen string `json:"listen"` // the address it listens on (host or overlay)
	Target string `json:"target"` // the address it dials
}

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

// fdbReply is gnv fdb show.
type fdbReply struct {
	Interface string     `json:"interface"`
	Entries   []fdbEntry `json:"entries"`
	// Neighbors is the ARP/ND suppression table (IP to MAC, from BGP EVPN
	// MAC/IP routes): requests for these addresses are answered locally.
	Neighbors []neighborEntry `json:"neighbors"`
}

type neighborEntry struct {
	IP     string `json:"ip"`
	MAC    string `json:"mac"`
	Origin string `json:"origin,omitempty"`
}

type fdbEntry struct {
	MAC        string  `json:"mac"`
	Remote     string  `json:"remote,omitempty"` // address:port, for a MAC behind the tunnel
	Port       string  `json:"port,omitempty"`   // the overlay switch's port, for a local MAC (--vm-listen)
	Static     bool    `json:"static"`
	Origin     string  `json:"origin,omitempty"` // who added a static entry: empty (by hand) or "evpn"
	AgeSeconds float64 `json:"age_seconds"`
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

// selected returns the interfaces a request names: all of them for "" or
// "-", else the one called name.
func (inst *instance) selected(name string) ([]*runningIface, error) {
	if name == "" || name == "-" {
		return inst.ifaces, nil
	}
	ri, err := controlIface(inst.ifaces, name)
	if err != nil {
		return nil, err
	}
	return []*runningIface{ri}, nil
}

// show describes the instance, or one of its interfaces.
func (inst *instance) show(name string) (showReply, error) {
	ifaces, err := inst.selected(name)
	if err != nil {
		return showReply{}, err
	}
	p := inst.plan
	tr := inst.underlay.Socket().Transport()
	r := showReply{Control: inst.control, PID: os.Getpid(), Version: versionString(), Started: inst.started,
		Underlay: underlayShow{Kind: p.underlay, Local: tr.LocalAddr().String(), Dev: p.dev, MTU: tr.MTU(),
			Offloads: offloadList(inst.underlay.Offloads()), Pcap: p.pcap},
		Interfaces: []ifaceShow{}}
	if p.underlayAddr.IsValid() {
		r.Underlay.Address = p.underlayAddr.String()
	}
	if p.gateway.IsValid() {
		r.Underlay.Gateway = p.gateway.String()
	}
	for _, ri := range ifaces {
		r.Interfaces = append(r.Interfaces, ri.show())
	}
	if len(inst.ifaces) > 0 && inst.ifaces[0].evpn != nil {
		r.EVPN = summarizeEVPN(inst.ifaces[0].evpn.Show())
	}
	return r, nil
}

func (ri *runningIface) show() ifaceShow {
	ep := ri.tun.Endpoint()
	ec := ep.Config()
	s := ifaceShow{Name: ri.plan.name, Mode: ec.Mode.String(), VNI: ec.VNI, Overlay: ri.plan.overlay,
		Addresses: []string{}, MTU: ri.tun.MTU(), Remotes: []string{}, Port: ec.RemotePort,
		SourcePorts: [2]uint16{ec.SrcPortMin, ec.SrcPortMax}, TTL: fmt.Sprint(ec.TTL), TOS: ec.TOS,
		DSCPInherit: ec.DSCPInherit, DF: ec.DF.String(), AcceptAnySource: ec.AcceptAnySource,
		Options: len(ec.Options), Offloads: offloadList(ri.tun.Offloads()), Forwards: ri.forwardsShow(), VMs: ri.vmsShow()}
	for _, d := range ri.tun.DNS() {
		s.DNS = append(s.DNS, d.String())
	}
	if ri.svc != nil {
		if ri.svc.socksAddr != nil {
			s.SOCKS5 = ri.svc.socksAddr.String()
		}
		if ri.svc.httpAddr != nil {
			s.HTTPProxy = ri.svc.httpAddr.String()
		}
	}
	if ec.TTLInherit {
		s.TTL = "inherit"
	}
	if ec.Mode == endpoint.L2 {
		s.MAC = net.HardwareAddr(ep.LinkAddress()).String()
	}
	for _, a := range ri.plan.cfg.Addresses {
		s.Addresses = append(s.Addresses, a.String())
	}
	for _, a := range ec.Remotes {
		s.Remotes = append(s.Remotes, a.String())
	}
	if ec.Group.IsValid() {
		s.Group = ec.Group.String()
	}
	if s.Forwards == nil {
		s.Forwards = []forwardShow{}
	}
	if fdb := ep.FDB(); fdb != nil {
		st := fdb.Stats()
		s.FDB = &fdbShow{Learning: fdb.Learning(), Entries: st.Count, Max: st.Max, TimeoutSeconds: int(fdb.Timeout() / time.Second)}
	}
	return s
}

// offloadList splits an offload description ("udp-gso udp-gro", "none"
// or "") into names.
func offloadList(s string) []string {
	out := []string{}
	for _, f := range strings.Fields(s) {
		if f != "none" {
			out = append(out, f)
		}
	}
	return out
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

// fdbDump lists an interface's forwarding table.
func fdbDump(ri *runningIface) (fdbReply, error) {
	fdb := ri.tun.Endpoint().FDB()
	if fdb == nil {
		return fdbReply{}, fmt.Errorf("%s is an l3 interface: it has no forwarding table", ri.plan.name)
	}
	r := fdbReply{Interface: ri.plan.name, Entries: []fdbEntry{}, Neighbors: []neighborEntry{}}
	for _, e := range fdb.Dump() {
		r.Entries = append(r.Entries, fdbEntry{MAC: e.MAC.String(), Remote: e.Remote.String(), Static: e.Static, Origin: e.Origin,
			AgeSeconds: e.Age.Truncate(time.Millisecond).Seconds()})
	}
	for _, n := range fdb.Neighbors() {
		r.Neighbors = append(r.Neighbors, neighborEntry{IP: n.IP.String(), MAC: n.MAC.String(), Origin: n.Origin})
	}
	r.Entries = append(r.Entries, ri.switchEntries()...)
	return r, nil
}

// Text forms, for people.

func (r *showReply) text(w io.Writer) {
	for _, s := range r.Interfaces {
		fmt.Fprintf(w, "%s: %s vni %d overlay %s mtu %d", s.Name, s.Mode, s.VNI, s.Overlay, s.MTU)
		if s.MAC != "" {
			fmt.Fprintf(w, " mac %s", s.MAC)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "    addresses %s\n", orNone(s.Addresses))
		if s.Group != "" {
			fmt.Fprintf(w, "    group %s port %d\n", s.Group, s.Port)
		} else {
			fmt.Fprintf(w, "    remotes %s port %d\n", orNone(s.Remotes), s.Port)
		}
		fmt.Fprintf(w, "    ttl %s tos 0x%02x%s df %s source ports %d-%d", s.TTL, s.TOS, onOff(" dscp-inherit", s.DSCPInherit), s.DF, s.SourcePorts[0], s.SourcePorts[1])
		if s.Options > 0 {
			fmt.Fprintf(w, " options %d bytes", s.Options)
		}
		if s.AcceptAnySource {
			fmt.Fprint(w, " accept-any-source")
		}
		fmt.Fprintln(w)
		if s.FDB != nil {
			fmt.Fprintf(w, "    fdb %d/%d entries, learning %s, timeout %ds\n", s.FDB.Entries, s.FDB.Max, onOff("on", s.FDB.Learning)+onOff("off", !s.FDB.Learning), s.FDB.TimeoutSeconds)
		}
		fmt.Fprintf(w, "    offloads %s\n", orNone(s.Offloads))
		for _, f := range s.Forwards {
			fmt.Fprintf(w, "    %s %s\n", f.Kind, f.Spec)
		}
		if len(s.DNS) > 0 {
			fmt.Fprintf(w, "    dns %s\n", strings.Join(s.DNS, " "))
		}
		if s.SOCKS5 != "" {
			fmt.Fprintf(w, "    socks5 %s\n", s.SOCKS5)
		}
		if s.HTTPProxy != "" {
			fmt.Fprintf(w, "    http-proxy %s\n", s.HTTPProxy)
		}
		if s.VMs != nil {
			s.VMs.text(w)
		}
	}
	u := &r.Underlay
	fmt.Fprintf(w, "underlay: %s %s mtu %d offloads %s", u.Kind, u.Local, u.MTU, orNone(u.Offloads))
	if u.Dev != "" {
		fmt.Fprintf(w, " dev %s", u.Dev)
	}
	if u.Address != "" {
		fmt.Fprintf(w, " address %s", u.Address)
	}
	if u.Gateway != "" {
		fmt.Fprintf(w, " gateway %s", u.Gateway)
	}
	if u.Pcap != "" {
		fmt.Fprintf(w, " pcap %s", u.Pcap)
	}
	fmt.Fprintln(w)
	if e := r.EVPN; e != nil {
		var peers []string
		for _, p := range e.Peers {
			peers = append(peers, p.Address+" "+p.State)
		}
		fmt.Fprintf(w, "evpn: asn %d router-id %s vtep %s, peers %s, %d remote macs, %d duplicate macs (gnv evpn show)\n",
			e.ASN, e.RouterID, e.VTEP, orNone(peers), e.RemoteMACs, e.DuplicateMACs)
	}
	fmt.Fprintf(w, "control: %s, pid %d, up since %s\n", r.Control, r.PID, r.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "version: %s\n", r.Version)
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

func (r *fdbReply) text(w io.Writer) {
	for _, e := range r.Entries {
		kind := "dynamic"
		if e.Static {
			kind = "static"
			if e.Origin != "" {
				kind += " " + e.Origin
			}
		}
		where := e.Remote
		if e.Port != "" {
			where = "port " + e.Port
		}
		fmt.Fprintf(w, "%s %s %s age %s\n", e.MAC, where, kind, time.Duration(e.AgeSeconds*float64(time.Second)).Truncate(time.Second))
	}
	for _, n := range r.Neighbors {
		line := fmt.Sprintf("%s lladdr %s suppress", n.IP, n.MAC)
		if n.Origin != "" {
			line += " " + n.Origin
		}
		fmt.Fprintln(w, line)
	}
}

func bytesText(b *uint64) string {
	if b == nil {
		return ""
	}
	return fmt.Sprintf(" %d B", *b)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

func onOff(s string, on bool) string {
	if on {
		return s
	}
	return ""
}
