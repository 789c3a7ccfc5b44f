package endpoint

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Forwarding-table defaults, as in FreeBSD geneve(4) and vxlan(4).
const (
	DefaultFDBMax     = 2000
	DefaultFDBTimeout = 1200 * time.Second
	// FDBPruneInterval is how often expired dynamic entries are removed.
	FDBPruneInterval = 300 * time.Second
	// MaxFDBTimeout is the longest entry timeout accepted (one day, as in
	// geneve(4)).
	MaxFDBTimeout = 24 * time.Hour
	// MaxFDBMax bounds the table size; far above geneve(4)'s hard cap of
	// 2000, low enough that a table cannot exhaust memory by accident.
	MaxFDBMax = 1 << 24
)

// FDBEntry is one forwarding-table entry, as dumped.
type FDBEntry struct {
	MAC    net.HardwareAddr
	Remote netip.AddrPort
	Static bool
	// Origin says who added a static entry: empty for one added by hand
	// (AddStatic, gnv fdb add), or the control plane's name, such as
	// "evpn" (AddStaticFrom).
	Origin string
	// Age is the time since a packet from MAC was last seen (dynamic
	// entries) or since the entry was added (static ones).
	Age time.Duration
}

// String formats the entry like a line of "gnv fdb show".
func (e FDBEntry) String() string {
	kind := "dynamic"
	if e.Static {
		kind = "static"
		if e.Origin != "" {
			kind += " " + e.Origin
		}
	}
	return fmt.Sprintf("%s %s %s age %s", e.MAC, e.Remote, kind, e.Age.Truncate(time.Second))
}

// FDBStats counts forwarding-table activity.
type FDBStats struct {
	Count   int    // entries in the table
	Max     int    // table capacity
	Learned uint64 // new dynamic entries
	Moved   uint64 // dynamic entries whose remote changed
	NoSpace uint64 // MACs not learned because the table was full
	Expired uint64 // dynamic entries removed by ageing
}

// fdbEntry is one entry; only seen changes once it is in the table, since
// lookup reads entries without the lock.
type fdbEntry struct {
	remote netip.AddrPort
	static bool
	origin string // static entries: who added it ("" by hand)
	// seen is the clock's monotonic time of the last packet (or of the
	// insertion, for static entries), in nanoseconds. Updated under the
	// read lock, hence atomic.
	seen atomic.Int64
}

// FDB is the L2 forwarding table of an endpoint: inner MAC address →
// outer remote. Dynamic entries are learned from received packets (the
// inner source MAC and the outer source address, with the configured remote
// port, as geneve(4) does) and expire; static entries are added by hand.
// It is safe for concurrent use.
type FDB struct {
	clock   tcpip.Clock
	port    uint16
	family  int // the underlay's, 4 or 6
	learn   bool
	max     int
	timeout time.Duration

	mu      sync.RWMutex
	entries map[[6]byte]*fdbEntry
	// staticRemotes counts static entries per remote address, for source
	// validation.
	staticRemotes map[netip.Addr]int
	timer         tcpip.Timer
	closed        bool

	// neigh is the ARP/ND suppression table (see suppress.go); nneigh its
	// size, read without the lock on the transmit path.
	neigh  map[netip.Addr]neighEntry
	nneigh atomic.Int32

	learned, moved, nospace, expired atomic.Uint64
}

func newFDB(clock tcpip.Clock, learn bool, max int, timeout time.Duration, port uint16, family int) *FDB {
	f := &FDB{
		clock:         clock,
		port:          port,
		family:        family,
		learn:         learn,
		max:           max,
		timeout:       timeout,
		entries:       make(map[[6]byte]*fdbEntry),
		staticRemotes: make(map[netip.Addr]int),
		neigh:         make(map[netip.Addr]neighEntry),
	}
	f.timer = clock.AfterFunc(FDBPruneInterval, f.prune)
	return f
}

func (f *FDB) now() int64 { return f.clock.NowMonotonic().Sub(tcpip.MonotonicTime{}).Nanoseconds() }

// lookup returns the remote for a unicast MAC, if a live entry exists.
func (f *FDB) lookup(mac []byte) (netip.AddrPort, bool) {
	var k [6]byte
	copy(k[:], mac)
	f.mu.RLock()
	e := f.entries[k]
	f.mu.RUnlock()
	if e == nil {
		return netip.AddrPort{}, false
	}
	if !e.static && time.Duration(f.now()-e.seen.Load()) > f.timeout {
		return netip.AddrPort{}, false
	}
	return e.remote, true
}

// learnFrom records that mac was seen behind the outer source src at
// monotonic time now (f.now(), read once per receive batch by the caller).
func (f *FDB) learnFrom(mac []byte, src netip.Addr, now int64) {
	if !f.learn || mac[0]&1 != 0 {
		return
	}
	var k [6]byte
	copy(k[:], mac)
	remote := netip.AddrPortFrom(src, f.port)
	f.mu.RLock()
	e := f.entries[k]
	if e != nil && (e.static || e.remote == remote) {
		// Written only when it changes (once per receive batch): the
		// send path reads the entry from another core.
		if !e.static && e.seen.Load() != now {
			e.seen.Store(now)
		}
		f.mu.RUnlock()
		return
	}
	f.mu.RUnlock()

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if e = f.entries[k]; e != nil {
		if e.static {
			return
		}
		if e.remote == remote {
			e.seen.Store(now)
			return
		}
		// A move replaces the entry: lookups read remote without
		// the lock, so an entry's remote never changes.
		f.moved.Add(1)
	} else if len(f.entries) >= f.max {
		f.nospace.Add(1)
		return
	} else {
		f.learned.Add(1)
	}
	e = &fdbEntry{remote: remote}
	e.seen.Store(now)
	f.entries[k] = e
}

// isStaticRemote reports whether a static entry points at addr.
func (f *FDB) isStaticRemote(addr netip.Addr) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.staticRemotes[addr] > 0
}

// hasRemote reports whether any live entry points at addr.
func (f *FDB) hasRemote(addr netip.Addr) bool {
	now := f.now()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.staticRemotes[addr] > 0 {
		return true
	}
	for _, e := range f.entries {
		if e.remote.Addr() == addr && time.Duration(now-e.seen.Load()) <= f.timeout {
			return true
		}
	}
	return false
}

func macKey(mac net.HardwareAddr) ([6]byte, error) {
	var k [6]byte
	if len(mac) != 6 {
		return k, fmt.Errorf("mac %s: want a 6-byte Ethernet address", mac)
	}
	if mac[0]&1 != 0 {
		return k, fmt.Errorf("mac %s: a forwarding entry needs a unicast address", mac)
	}
	copy(k[:], mac)
	return k, nil
}

// AddStatic adds or replaces a static entry: frames for mac go to remote.
// Static entries never expire, are not replaced by learning and survive
// Flush; they count towards the table size.
func (f *FDB) AddStatic(mac net.HardwareAddr, remote netip.AddrPort) error {
	return f.AddStaticFrom(mac, remote, "")
}

// AddStaticFrom is AddStatic for a control plane: origin (such as "evpn")
// marks the entry in Dump, and RemoveFrom and RemoveOrigin remove only the
// entries of their origin. A remote port of 0 means the endpoint's.
func (f *FDB) AddStaticFrom(mac net.HardwareAddr, remote netip.AddrPort, origin string) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if err := checkRemote(remote.Addr(), f.family); err != nil {
		return fmt.Errorf("remote %s: %w", remote.Addr(), err)
	}
	if remote.Port() == 0 {
		remote = netip.AddrPortFrom(remote.Addr(), f.port)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.entries[k]
	if old == nil && len(f.entries) >= f.max {
		f.nospace.Add(1)
		return fmt.Errorf("forwarding table full (%d entries, max %d)", len(f.entries), f.max)
	}
	if old != nil && old.static && old.remote == remote && old.origin == origin {
		return nil // unchanged: keep its age (and its count in staticRemotes)
	}
	if old != nil && old.static {
		f.dropStaticRemoteLocked(old.remote.Addr())
	}
	e := &fdbEntry{remote: remote, static: true, origin: origin}
	e.seen.Store(f.now())
	f.entries[k] = e
	f.staticRemotes[remote.Addr()]++
	return nil
}

func (f *FDB) dropStaticRemoteLocked(a netip.Addr) {
	if f.staticRemotes[a]--; f.staticRemotes[a] <= 0 {
		delete(f.staticRemotes, a)
	}
}

// Remove deletes the entry for mac, static or dynamic.
func (f *FDB) Remove(mac net.HardwareAddr) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[k]
	if e == nil {
		return fmt.Errorf("mac %s: no such forwarding entry", mac)
	}
	if e.static {
		f.dropStaticRemoteLocked(e.remote.Addr())
	}
	delete(f.entries, k)
	return nil
}

// RemoveFrom deletes mac's entry if it is a static entry of origin, and
// reports whether it did.
func (f *FDB) RemoveFrom(mac net.HardwareAddr, origin string) bool {
	k, err := macKey(mac)
	if err != nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[k]
	if e == nil || !e.static || e.origin != origin {
		return false
	}
	f.dropStaticRemoteLocked(e.remote.Addr())
	delete(f.entries, k)
	return true
}

// RemoveOrigin deletes every static entry of origin, and origin's ARP/ND
// suppression entries, and returns how many forwarding entries it removed.
func (f *FDB) RemoveOrigin(origin string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, e := range f.entries {
		if e.static && e.origin == origin {
			f.dropStaticRemoteLocked(e.remote.Addr())
			delete(f.entries, k)
			n++
		}
	}
	for ip, ne := range f.neigh {
		if ne.origin == origin {
			delete(f.neigh, ip)
		}
	}
	f.nneigh.Store(int32(len(f.neigh)))
	return n
}

// Flush removes the dynamic entries (vxlan(4)'s "flush").
func (f *FDB) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, e := range f.entries {
		if !e.static {
			delete(f.entries, k)
		}
	}
}

// FlushAll removes every entry, static ones included (vxlan(4)'s
// "flushall").
func (f *FDB) FlushAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.entries)
	clear(f.staticRemotes)
}

// Dump returns the live entries sorted by MAC address.
func (f *FDB) Dump() []FDBEntry {
	now := f.now()
	f.mu.RLock()
	out := make([]FDBEntry, 0, len(f.entries))
	for k, e := range f.entries {
		age := time.Duration(now - e.seen.Load())
		if !e.static && age > f.timeout {
			continue
		}
		mac := make(net.HardwareAddr, 6)
		copy(mac, k[:])
		out = append(out, FDBEntry{MAC: mac, Remote: e.remote, Static: e.static, Origin: e.origin, Age: age})
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return string(out[i].MAC) < string(out[j].MAC) })
	return out
}

// Stats returns the table's counters.
func (f *FDB) Stats() FDBStats {
	f.mu.RLock()
	n := len(f.entries)
	f.mu.RUnlock()
	return FDBStats{Count: n, Max: f.max, Learned: f.learned.Load(), Moved: f.moved.Load(), NoSpace: f.nospace.Load(), Expired: f.expired.Load()}
}

// Learning reports whether the table learns from received packets.
func (f *FDB) Learning() bool { return f.learn }

// Timeout returns the dynamic-entry timeout.
func (f *FDB) Timeout() time.Duration { return f.timeout }

// prune removes expired dynamic entries and re-arms itself.
func (f *FDB) prune() {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	for k, e := range f.entries {
		if !e.static && time.Duration(now-e.seen.Load()) > f.timeout {
			delete(f.entries, k)
			f.expired.Add(1)
		}
	}
	f.timer = f.clock.AfterFunc(FDBPruneInterval, f.prune)
}

func (f *FDB) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.timer.Stop()
}

// errFDBDisabled is returned by FDB operations on an L3 endpoint.
var errFDBDisabled = errors.New("forwarding table: only l2 endpoints have one")
