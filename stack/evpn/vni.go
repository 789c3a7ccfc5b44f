package evpn

import (
	"encoding/binary"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// The EVPN state of each attached tunnel: what it advertises (its own MAC
// and addresses, the MACs learned behind it) and what the received routes
// make of its forwarding state (flood list, forwarding, suppression and
// host-route entries).

// vni is the EVPN state of one attached tunnel.
type vni struct {
	s  *Speaker
	t  *stack.Tunnel
	ep *endpoint.Endpoint
	id uint32
	l3 bool
	// learnLocal: an L2 tunnel with MACs behind it other than its own (a
	// TAP device, or VMs on its switch), learned from what they send.
	learnLocal bool
	rtEC       bgp.ExtendedCommunityInterface
	rt         uint64
	rd         bgp.RouteDistinguisherInterface

	// Remote state.
	vteps map[netip.Addr]int
	macs  map[[6]byte][]*route
	ips   map[netip.Addr][]*route

	// Local state.
	imet  *apiutil.Path
	local map[[6]byte]*localMAC

	// moves holds the MACs that moved recently, and the duplicates (see
	// dup.go).
	moves map[[6]byte]*macMoves
}

// localMAC is a MAC this VTEP advertises.
type localMAC struct {
	seq   uint32
	ips   []netip.Addr
	fixed bool // the overlay's own: never aged, never moves
	paths []*apiutil.Path
}

func newVNI(s *Speaker, t *stack.Tunnel) *vni {
	ep := t.Endpoint()
	cfg := ep.Config()
	v := &vni{s: s, t: t, ep: ep, id: cfg.VNI, l3: cfg.Mode == endpoint.L3, learnLocal: cfg.Mode == endpoint.L2 && (t.Device() != nil || t.Switch() != nil),
		vteps: map[netip.Addr]int{}, macs: map[[6]byte][]*route{}, ips: map[netip.Addr][]*route{}, local: map[[6]byte]*localMAC{}, moves: map[[6]byte]*macMoves{}}
	v.rtEC, v.rt = autoRT(s.opts.ASN, v.id)
	if s.rt != 0 {
		ec, _ := bgp.ParseRouteTarget(s.opts.RouteTarget)
		v.rtEC, v.rt = ec, s.rt
	}
	// RD = router-id:VNI (type 1; the assigned number has 16 bits).
	v.rd, _ = bgp.NewRouteDistinguisherIPAddressAS(s.opts.RouterID, uint16(v.id))
	return v
}

// imports reports whether r carries the VNI's route target.
func (v *vni) imports(r *route) bool { return slices.Contains(r.rts, v.rt) }

// ownMAC is the MAC the VNI advertises its addresses with: the overlay
// NIC's, or for an L3 tunnel (which has none) one derived from the router
// ID and the VNI.
func (v *vni) ownMAC() [6]byte {
	if !v.l3 {
		return [6]byte([]byte(v.ep.LinkAddress()))
	}
	h := fnv.New64a()
	rid := v.s.opts.RouterID.As4()
	h.Write(rid[:])
	_ = binary.Write(h, binary.BigEndian, v.id)
	var m [6]byte
	sum := h.Sum64()
	for i := range m {
		m[i] = byte(sum >> (8 * i))
	}
	m[0] = m[0]&^1 | 2
	return m
}

// start advertises the VNI's Type-3 route and its own MAC and addresses.
func (v *vni) start() {
	s := v.s
	rfc := s.nextHop.Is4() || s.opts.StrictIPv6
	orig := s.nextHop
	if !rfc {
		orig = s.opts.RouterID // see Options.StrictIPv6
	}
	nlri, err := bgp.NewEVPNMulticastEthernetTagRoute(v.rd, 0, orig)
	if err == nil {
		attrs := v.attrs(nlri, 0, false)
		if rfc {
			id, _ := bgp.NewIngressReplTunnelID(s.nextHop)
			attrs = append(attrs, bgp.NewPathAttributePmsiTunnel(bgp.PMSI_TUNNEL_TYPE_INGRESS_REPL, false, v.id, id))
		}
		v.imet = &apiutil.Path{Family: bgp.RF_EVPN, Nlri: nlri, Attrs: attrs}
		v.add(v.imet)
	}
	var ips []netip.Addr
	for _, p := range v.t.Addresses() {
		ips = append(ips, p.Addr().Unmap())
	}
	v.setLocal(v.ownMAC(), ips, true)
	// Behind a TAP device or the VM switch (Config.Switch) there are MACs
	// other than the overlay's own: learn them from the frames they send
	// and advertise them like it.
	if v.learnLocal {
		v.ep.SetLocalLearning(true)
	}
}

// attrs are the path attributes of a route of this VNI.
func (v *vni) attrs(nlri bgp.NLRI, seq uint32, mobility bool) []bgp.PathAttributeInterface {
	mp, _ := bgp.NewPathAttributeMpReachNLRI(bgp.RF_EVPN, []bgp.PathNLRI{{NLRI: nlri}}, v.s.nextHop)
	ecs := []bgp.ExtendedCommunityInterface{v.rtEC, bgp.NewEncapExtended(bgp.TUNNEL_TYPE_GENEVE)}
	if mobility && seq > 0 {
		ecs = append(ecs, bgp.NewMacMobilityExtended(seq, false))
	}
	return []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		mp,
		bgp.NewPathAttributeExtendedCommunities(ecs),
	}
}

func (v *vni) add(paths ...*apiutil.Path) {
	if len(paths) == 0 {
		return
	}
	if _, err := v.s.bgp.AddPath(apiutil.AddPathRequest{Paths: paths}); err != nil {
		v.s.log.Warn("evpn: advertise", "vni", v.id, "err", err)
	}
}

func (v *vni) withdraw(paths ...*apiutil.Path) {
	if len(paths) == 0 {
		return
	}
	if err := v.s.bgp.DeletePath(apiutil.DeletePathRequest{Paths: paths}); err != nil {
		v.s.log.Warn("evpn: withdraw", "vni", v.id, "err", err)
	}
}

// macPaths are the Type-2 routes for a local MAC: MAC only, then one per
// address.
func (v *vni) macPaths(mac [6]byte, l *localMAC) []*apiutil.Path {
	hw := net.HardwareAddr(mac[:]).String()
	var out []*apiutil.Path
	for _, ip := range append([]netip.Addr{{}}, l.ips...) {
		nlri, err := bgp.NewEVPNMacIPAdvertisementRoute(v.rd, bgp.EthernetSegmentIdentifier{}, 0, hw, ip, []uint32{v.id})
		if err != nil {
			continue
		}
		out = append(out, &apiutil.Path{Family: bgp.RF_EVPN, Nlri: nlri, Attrs: v.attrs(nlri, l.seq, true)})
	}
	return out
}

// setLocal advertises mac (with ips) as behind this VTEP. A MAC that other
// VTEPs advertise has moved here: its sequence number is one above theirs.
// A duplicate MAC's advertisement stays as it is while it is frozen.
func (v *vni) setLocal(mac [6]byte, ips []netip.Addr, fixed bool) {
	if !fixed && v.frozen(mac) {
		return
	}
	l := v.local[mac]
	if l == nil {
		l = &localMAC{fixed: fixed}
		if rs := v.macs[mac]; len(rs) > 0 && !fixed {
			l.seq = winner(rs).seq + 1
			defer v.moved(mac) // once its state is set: it may freeze it
		}
		v.local[mac] = l
	} else if slices.Equal(l.ips, ips) {
		return
	}
	l.ips = slices.Clone(ips)
	old := l.paths
	l.paths = v.macPaths(mac, l)
	var gone []*apiutil.Path
	for _, p := range old {
		if !slices.ContainsFunc(l.paths, func(q *apiutil.Path) bool { return q.Nlri.String() == p.Nlri.String() }) {
			gone = append(gone, p)
		}
	}
	v.withdraw(gone...)
	v.add(l.paths...)
	v.resolveMAC(mac)
}

// dropLocal withdraws a local MAC (aged out, or moved away).
func (v *vni) dropLocal(mac [6]byte) {
	l := v.local[mac]
	if l == nil {
		return
	}
	delete(v.local, mac)
	v.withdraw(l.paths...)
	v.resolveMAC(mac)
	for _, ip := range l.ips {
		v.resolveIP(ip)
	}
}

// pollLocal compares the MACs learned behind a TAP overlay or the VM
// switch with what is advertised.
func (v *vni) pollLocal() {
	if !v.learnLocal {
		return
	}
	learned, _ := v.ep.LocalMACs()
	seen := map[[6]byte]bool{}
	for _, m := range learned {
		k := [6]byte(m.MAC)
		seen[k] = true
		if l := v.local[k]; l != nil && l.fixed {
			continue
		}
		v.setLocal(k, m.IPs, false)
	}
	for k, l := range v.local {
		if !l.fixed && !seen[k] {
			v.dropLocal(k)
		}
	}
}

// winner is the route that decides where a MAC or address is: the
// highest sequence number, then the lowest VTEP address (RFC 7432 §15.1).
func winner(rs []*route) *route {
	var w *route
	for _, r := range rs {
		if w == nil || r.seq > w.seq || r.seq == w.seq && r.vtep.Less(w.vtep) {
			w = r
		}
	}
	return w
}

// apply installs (add) or removes a received route.
func (v *vni) apply(r *route, add bool) {
	r.on = nil
	if add {
		r.on = v
	}
	switch r.key.typ {
	case bgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG:
		if add {
			if v.vteps[r.vtep]++; v.vteps[r.vtep] == 1 {
				if err := v.ep.AddFloodRemote(r.vtep); err != nil {
					v.s.log.Warn("evpn: flood list", "vni", v.id, "vtep", r.vtep, "err", err)
				}
			}
		} else if v.vteps[r.vtep]--; v.vteps[r.vtep] <= 0 {
			delete(v.vteps, r.vtep)
			v.ep.RemoveFloodRemote(r.vtep)
		}
	case bgp.EVPN_ROUTE_TYPE_MAC_IP_ADVERTISEMENT:
		mac := r.key.mac
		if add {
			v.macs[mac] = append(v.macs[mac], r)
		} else if v.macs[mac] = slices.DeleteFunc(v.macs[mac], func(q *route) bool { return q == r }); len(v.macs[mac]) == 0 {
			delete(v.macs, mac)
		}
		v.resolveMAC(mac)
		if ip := r.key.ip; ip.IsValid() {
			if add {
				v.ips[ip] = append(v.ips[ip], r)
			} else if v.ips[ip] = slices.DeleteFunc(v.ips[ip], func(q *route) bool { return q == r }); len(v.ips[ip]) == 0 {
				delete(v.ips, ip)
			}
			v.resolveIP(ip)
		}
	}
}

// resolveMAC sets mac's forwarding entry from the routes for it: none
// while it is local, else the winning route's VTEP. A local MAC whose
// remote route beats it has moved away. A duplicate MAC's state stays as it
// is while it is frozen.
func (v *vni) resolveMAC(mac [6]byte) {
	if v.frozen(mac) {
		return
	}
	best := winner(v.macs[mac])
	if l := v.local[mac]; l != nil && best != nil && !l.fixed &&
		(best.seq > l.seq || best.seq == l.seq && best.vtep.Less(v.s.nextHop)) {
		delete(v.local, mac)
		v.withdraw(l.paths...)
		v.ep.ForgetLocal(net.HardwareAddr(mac[:]))
		defer v.moved(mac) // once its state is set: it may freeze it
	}
	if v.l3 {
		return
	}
	fdb := v.ep.FDB()
	hw := net.HardwareAddr(mac[:])
	if v.local[mac] != nil || best == nil {
		fdb.RemoveFrom(hw, Origin)
		return
	}
	if err := fdb.AddStaticFrom(hw, netip.AddrPortFrom(best.vtep, 0), Origin); err != nil {
		v.s.log.Warn("evpn: forwarding entry", "vni", v.id, "mac", hw, "err", err)
	}
}

// resolveIP sets ip's suppression entry (L2) or host route (L3) from the
// routes for it.
func (v *vni) resolveIP(ip netip.Addr) {
	best := winner(v.ips[ip])
	if v.l3 {
		if best == nil {
			v.ep.RemoveHostRoute(ip, Origin)
		} else if err := v.ep.AddHostRoute(ip, netip.AddrPortFrom(best.vtep, 0), Origin); err != nil {
			v.s.log.Warn("evpn: host route", "vni", v.id, "ip", ip, "err", err)
		}
		return
	}
	fdb := v.ep.FDB()
	if best == nil {
		fdb.RemoveNeighbor(ip, nil, Origin)
	} else if err := fdb.AddNeighbor(ip, net.HardwareAddr(best.key.mac[:]), Origin); err != nil {
		v.s.log.Warn("evpn: suppression entry", "vni", v.id, "ip", ip, "err", err)
	}
}

// clear removes everything the speaker installed in the tunnel.
func (v *vni) clear() {
	for a := range v.vteps {
		v.ep.RemoveFloodRemote(a)
	}
	if v.l3 {
		for ip := range v.ips {
			v.ep.RemoveHostRoute(ip, Origin)
		}
	} else {
		v.ep.FDB().RemoveOrigin(Origin)
	}
	clear(v.vteps)
	clear(v.macs)
	clear(v.ips)
}
