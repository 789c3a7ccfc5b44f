package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/gnv-project/gnv/endpoint"
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
