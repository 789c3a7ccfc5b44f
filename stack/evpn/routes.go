package evpn

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// routeKey identifies a received route: the peer it came from and its
// NLRI (route type, RD, MAC, address), without allocating a string per
// route. With several route reflectors each sends its copy of a route.
type routeKey struct {
	typ  uint8
	peer uint16 // Speaker.peerIDs
	rd   uint64
	mac  [6]byte
	ip   netip.Addr
}

// route is a usable EVPN best path received from a peer.
type route struct {
	key routeKey
	// vni is the label (Type-2) or the PMSI tunnel label (Type-3); 0 for
	// a Type-3 route without a PMSI tunnel attribute (an IPv6 VTEP's, see
	// Options.StrictIPv6), which goes to the one VNI importing its route
	// target.
	vni  uint32
	rts  []uint64
	vtep netip.Addr
	seq  uint32
	on   *vni // the VNI whose forwarding state it is installed in
	// stale: kept from a peer that is restarting gracefully, not yet sent
	// again (restart.go).
	stale bool
}

// ignore says why a received route is not used.
type ignore int

const (
	use ignore = iota
	ignoreType
	ignoreEncap
	ignoreRT
)

// ecKey packs an extended community into a comparable number.
func ecKey(ec bgp.ExtendedCommunityInterface) uint64 {
	b, err := ec.Serialize()
	if err != nil || len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// parseRT parses "AS:N" or "IP:N" as a route target.
func parseRT(s string) (uint64, error) {
	ec, err := bgp.ParseRouteTarget(s)
	if err != nil {
		return 0, err
	}
	return ecKey(ec), nil
}

// autoRT is ASN:VNI (RFC 8365 §5.1.2.1): a 2-octet-AS route target for
// ASNs up to 65535, else a 4-octet-AS one with the VNI's low 16 bits.
func autoRT(asn, vni uint32) (bgp.ExtendedCommunityInterface, uint64) {
	var ec bgp.ExtendedCommunityInterface
	if asn <= 0xffff {
		ec = bgp.NewTwoOctetAsSpecificExtended(bgp.EC_SUBTYPE_ROUTE_TARGET, uint16(asn), vni, true)
	} else {
		ec = bgp.NewFourOctetAsSpecificExtended(bgp.EC_SUBTYPE_ROUTE_TARGET, asn, uint16(vni), true)
	}
	return ec, ecKey(ec)
}

func isRT(ec bgp.ExtendedCommunityInterface) bool {
	_, sub := ec.GetTypes()
	if sub != bgp.EC_SUBTYPE_ROUTE_TARGET {
		return false
	}
	switch ec.(type) {
	case *bgp.TwoOctetAsSpecificExtended, *bgp.FourOctetAsSpecificExtended, *bgp.IPv4AddressSpecificExtended:
		return true
	}
	return false
}

// parse reads a received path. A withdrawal only has its key.
func parse(p *apiutil.Path) (routeKey, *route, ignore) {
	var k routeKey
	n, ok := p.Nlri.(*bgp.EVPNNLRI)
	if !ok {
		return k, nil, ignoreType
	}
	var rd bgp.RouteDistinguisherInterface
	var label uint32
	haveLabel := false
	switch d := n.RouteTypeData.(type) {
	case *bgp.EVPNMacIPAdvertisementRoute:
		k.typ, rd, k.ip = bgp.EVPN_ROUTE_TYPE_MAC_IP_ADVERTISEMENT, d.RD, d.IPAddress.Unmap()
		if len(d.MacAddress) != 6 {
			return k, nil, ignoreType
		}
		k.mac = [6]byte(d.MacAddress)
		if len(d.Labels) > 0 {
			label, haveLabel = d.Labels[0], true
		}
	case *bgp.EVPNMulticastEthernetTagRoute:
		k.typ, rd, k.ip = bgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG, d.RD, d.IPAddress.Unmap()
		label, haveLabel = d.ETag, d.ETag != 0
	default:
		return k, nil, ignoreType
	}
	if rd != nil {
		if b, err := rd.Serialize(); err == nil && len(b) == 8 {
			k.rd = binary.BigEndian.Uint64(b)
		}
	}
	if p.Withdrawal {
		return k, nil, use
	}
	r := &route{key: k}
	geneve, otherEncap := false, false
	var nexthop, pmsi netip.Addr
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeExtendedCommunities:
			for _, ec := range a.Value {
				switch ec := ec.(type) {
				case *bgp.EncapExtended:
					if ec.TunnelType == bgp.TUNNEL_TYPE_GENEVE {
						geneve = true
					} else {
						otherEncap = true
					}
				case *bgp.MacMobilityExtended:
					r.seq = ec.Sequence
				default:
					if isRT(ec) {
						r.rts = append(r.rts, ecKey(ec))
					}
				}
			}
		case *bgp.PathAttributeMpReachNLRI:
			nexthop = a.Nexthop.Unmap()
		case *bgp.PathAttributeNextHop:
			if !nexthop.IsValid() {
				nexthop = a.Value.Unmap()
			}
		case *bgp.PathAttributePmsiTunnel:
			if id, ok := a.TunnelID.(*bgp.IngressReplTunnelID); ok && a.TunnelType == bgp.PMSI_TUNNEL_TYPE_INGRESS_REPL {
				pmsi = id.Value.Unmap()
			}
			if k.typ == bgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG {
				label, haveLabel = a.Label, true
			}
		}
	}
	// RFC 8365 §5.1.3: no encapsulation community means MPLS.
	if !geneve || otherEncap {
		return k, nil, ignoreEncap
	}
	if !haveLabel && k.typ != bgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG {
		return k, nil, ignoreRT
	}
	r.vni = label
	r.vtep = nexthop
	// A Type-3 route's VTEP is its PMSI tunnel identifier, or else its
	// next hop (an IPv6 VTEP's route without the attribute names the
	// router ID as originating router: see Options.StrictIPv6).
	if k.typ == bgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG {
		switch {
		case pmsi.IsValid():
			r.vtep = pmsi
		case !r.vtep.IsValid() || r.vtep.IsUnspecified():
			r.vtep = k.ip
		}
	}
	if !r.vtep.IsValid() || r.vtep.IsUnspecified() {
		return k, nil, ignoreType
	}
	return k, r, use
}

// onUpdate is GoBGP's callback for the routes peers send (and withdraw,
// also when a peer goes down): they change the attached VNIs' forwarding
// state. Each peer's copy of a route counts on its own; the winner among
// the routes for a MAC or an address is chosen per VNI (winner).
func (s *Speaker) onUpdate(paths []*apiutil.Path, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, p := range paths {
		if p.Family != bgp.RF_EVPN || !p.PeerAddress.IsValid() {
			continue // not EVPN, or one of ours
		}
		k, r, why := parse(p)
		k.peer = s.peerID(p.PeerAddress)
		if r != nil {
			r.key.peer = k.peer
		}
		if old := s.routes[k]; old != nil && r != nil && !p.Withdrawal && old.same(r) {
			// Sent again unchanged (a refresh, or after a graceful
			// restart): nothing to undo and redo.
			old.stale = false
			s.stats.Received++
			continue
		}
		if old := s.routes[k]; old != nil && (p.Withdrawal || r != nil || why != use) {
			delete(s.routes, k)
			if old.on != nil {
				old.on.apply(old, false)
			}
		}
		if p.Withdrawal {
			s.stats.Withdrawn++
			continue
		}
		s.stats.Received++
		switch why {
		case ignoreType:
			s.stats.IgnoredType++
			continue
		case ignoreEncap:
			s.stats.IgnoredEncap++
			continue
		case ignoreRT:
			s.stats.IgnoredRT++
			continue
		}
		if r.vtep == s.nextHop {
			continue // our own, reflected
		}
		s.routes[k] = r
		if v := s.importer(r); v != nil {
			v.apply(r, true)
		} else {
			s.stats.IgnoredRT++
		}
	}
}

// same reports whether r says what o says.
func (o *route) same(r *route) bool {
	return o.vni == r.vni && o.vtep == r.vtep && o.seq == r.seq && slices.Equal(o.rts, r.rts)
}

// peerID numbers the peers routes come from, for routeKey.
func (s *Speaker) peerID(a netip.Addr) uint16 {
	id, ok := s.peerIDs[a]
	if !ok {
		id = uint16(len(s.peerIDs))
		s.peerIDs[a] = id
	}
	return id
}

// importer is the attached VNI that takes r: the VNI of its label if that
// VNI imports its route target; for a route without a label, the one VNI
// that imports its route target (none if several do).
func (s *Speaker) importer(r *route) *vni {
	if r.vni != 0 {
		if v := s.vnis[r.vni]; v != nil && v.imports(r) {
			return v
		}
		return nil
	}
	var found *vni
	for _, v := range s.vnis {
		if v.imports(r) {
			if found != nil {
				return nil
			}
			found = v
		}
	}
	return found
}
