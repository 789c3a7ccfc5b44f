package endpoint

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// LocalMAC is a MAC address seen as the source of frames leaving an L2
// endpoint (local learning, for a control plane to advertise: the hosts
// behind a TAP overlay), with the addresses it claimed in ARP packets and
// neighbour solicitations.
type LocalMAC struct {
	MAC net.HardwareAddr
	IPs []netip.Addr
	// Age is the time since a frame from MAC last left the endpoint.
	Age time.Duration
}

type localEntry struct {
	seen atomic.Int64 // the FDB clock's time of the last frame
	ips  []netip.Addr // under localTable.mu
}

// localTable is an L2 endpoint's table of local MACs.
type localTable struct {
	mu sync.RWMutex
	m  map[[6]byte]*localEntry
	// version changes whenever a MAC or an address is added, so that a
	// control plane can poll cheaply.
	version atomic.Uint64
}

// SetLocalLearning turns local learning on or off (it is off by
// default): with it on, an L2 endpoint records the source MAC of every
// frame it sends, and the sender addresses of ARP packets and neighbour
// solicitations, for LocalMACs. Entries age like the forwarding table's
// dynamic entries (Config.FDBTimeout), and there are at most Config.FDBMax
// of them.
func (e *Endpoint) SetLocalLearning(on bool) {
	if e.fdb == nil {
		return
	}
	if !on {
		e.local.Store(nil)
		return
	}
	if e.local.Load() == nil {
		e.local.CompareAndSwap(nil, &localTable{m: make(map[[6]byte]*localEntry)})
	}
}

// LocalMACs returns the live local MACs sorted by address, and the table's
// version: it changes whenever a MAC or an address is added (ageing
// changes no version). Expired entries are removed.
func (e *Endpoint) LocalMACs() ([]LocalMAC, uint64) {
	lt := e.local.Load()
	if lt == nil {
		return nil, 0
	}
	now := e.fdb.now()
	timeout := e.fdb.timeout
	lt.mu.Lock()
	out := make([]LocalMAC, 0, len(lt.m))
	for k, le := range lt.m {
		age := time.Duration(now - le.seen.Load())
		if age > timeout {
			delete(lt.m, k)
			continue
		}
		out = append(out, LocalMAC{MAC: append(net.HardwareAddr(nil), k[:]...), IPs: slices.Clone(le.ips), Age: age})
	}
	v := lt.version.Load()
	lt.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return string(out[i].MAC) < string(out[j].MAC) })
	return out, v
}

// ForgetLocal removes mac from the local table (its host moved behind
// another VTEP) and reports whether it was there.
func (e *Endpoint) ForgetLocal(mac net.HardwareAddr) bool {
	lt := e.local.Load()
	if lt == nil || len(mac) != 6 {
		return false
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	k := [6]byte(mac)
	if _, ok := lt.m[k]; !ok {
		return false
	}
	delete(lt.m, k)
	return true
}

// see records the source of a frame leaving the endpoint.
func (lt *localTable) see(e *Endpoint, pkt *stack.PacketBuffer, linkHdr []byte) {
	src := linkHdr[6:12]
	if src[0]&1 != 0 {
		return
	}
	k := [6]byte(src)
	now := e.fdb.now()
	lt.mu.RLock()
	le := lt.m[k]
	lt.mu.RUnlock()
	if le == nil {
		lt.mu.Lock()
		if le = lt.m[k]; le == nil {
			if len(lt.m) >= e.fdb.max {
				lt.mu.Unlock()
				return
			}
			le = &localEntry{}
			lt.m[k] = le
			lt.version.Add(1)
		}
		lt.mu.Unlock()
	}
	le.seen.Store(now)
	if linkHdr[0]&1 == 0 {
		return // addresses are learned from broadcast ARP and multicast NS
	}
	var ip netip.Addr
	switch binary.BigEndian.Uint16(linkHdr[12:14]) {
	case etherTypeARP:
		var a [arpLen]byte
		if peek(pkt, len(linkHdr), a[:]) == arpLen && string(a[8:14]) == string(src) {
			ip = netip.AddrFrom4([4]byte(a[14:18]))
		}
	case etherTypeIPv6:
		var b [ndLen]byte
		if peek(pkt, len(linkHdr), b[:]) == ndLen && b[6] == protoICMPv6 && b[40] == uint8(header.ICMPv6NeighborSolicit) {
			ip = netip.AddrFrom16([16]byte(b[8:24]))
		}
	}
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
		return
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.m[k] == le && !slices.Contains(le.ips, ip) && len(le.ips) < 8 {
		le.ips = append(le.ips, ip)
		lt.version.Add(1)
	}
}
