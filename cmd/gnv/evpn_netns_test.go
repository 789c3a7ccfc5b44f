package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/testutil/netns"
)

// frrBin is where Debian's frr package puts its daemons.
const frrBin = "/usr/lib/frr"

// requireFRR skips the test unless FRR's zebra, bgpd and vtysh are there.
func requireFRR(t *testing.T) {
	t.Helper()
	for _, p := range []string{filepath.Join(frrBin, "zebra"), filepath.Join(frrBin, "bgpd")} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs FRR (%s missing): apt-get install frr, as .ci/run does", p)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		t.Skip("needs FRR's vtysh: apt-get install frr, as .ci/run does")
	}
}

// frrRR is an FRR route reflector (zebra + bgpd) in a namespace, as
// ../shared/peers/frr-rr.sh starts one, with short timers and graceful
// restart on.
type frrRR struct {
	ns   *netns.NS
	dir  string
	bgpd *exec.Cmd
}

// startFRR starts the reflector for AS asn in ns, whose address rid is on
// an interface; every peer in listen (a prefix) is an iBGP l2vpn evpn
// route-reflector client. extra is added to the l2vpn evpn address family.
func startFRR(t *testing.T, ns *netns.NS, rid string, asn int, listen string, extra string) *frrRR {
	t.Helper()
	dir, err := os.MkdirTemp("", "gnv-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := fmt.Sprintf(`frr defaults datacenter
hostname rr
log file %[1]s/frr.log
router bgp %[2]d
 bgp router-id %[3]s
 bgp graceful-restart
 no bgp default ipv4-unicast
 neighbor VTEP peer-group
 neighbor VTEP remote-as %[2]d
 neighbor VTEP timers 3 9
 bgp listen range %[4]s peer-group VTEP
 address-family l2vpn evpn
  neighbor VTEP activate
  neighbor VTEP route-reflector-client
%[5]s exit-address-family
`, dir, asn, rid, listen, extra)
	if err := os.WriteFile(filepath.Join(dir, "frr.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "-R", "frr:frr", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown frr: %v: %s", err, out)
	}
	os.Chmod(dir, 0o755)
	r := &frrRR{ns: ns, dir: dir}
	r.start(t, "zebra")
	time.Sleep(300 * time.Millisecond) // bgpd connects to zebra's API socket
	r.bgpd = r.start(t, "bgpd")
	r.waitListening(t)
	return r
}

// start starts the FRR daemon d; the test's cleanup kills it.
func (r *frrRR) start(t *testing.T, d string) *exec.Cmd {
	t.Helper()
	cmd := r.ns.Command(filepath.Join(frrBin, d), "-f", filepath.Join(r.dir, "frr.conf"), "-i", filepath.Join(r.dir, d+".pid"),
		"-z", filepath.Join(r.dir, "zserv.api"), "--vty_socket", r.dir)
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", d, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output: %s", d, out.String())
		}
	})
	return cmd
}

// waitListening waits for bgpd to listen on port 179.
func (r *frrRR) waitListening(t *testing.T) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if out, _ := r.ns.Run("ss", "-ltn"); strings.Contains(out, ":179 ") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(r.dir, "frr.log"))
	t.Fatalf("bgpd did not listen on port 179 in %s: %s", r.ns.Name, log)
}

// crashBGPD kills bgpd abruptly (SIGKILL: no NOTIFICATION, the sessions
// just end), as a crash would.
func (r *frrRR) crashBGPD(t *testing.T) {
	t.Helper()
	_ = r.bgpd.Process.Kill()
	_ = r.bgpd.Wait()
}

// restartBGPD starts bgpd again after crashBGPD.
func (r *frrRR) restartBGPD(t *testing.T) {
	t.Helper()
	r.bgpd = r.start(t, "bgpd")
	r.waitListening(t)
}

func (r *frrRR) vtysh(t *testing.T, cmd string) string {
	t.Helper()
	return r.ns.MustRun(t, "vtysh", "--vty_socket", r.dir, "-c", cmd)
}

// ctl runs a gnv control command against a running gnv up.
func ctl(t *testing.T, p *upProc, args ...string) string {
	t.Helper()
	out, err := exec.Command(gnvBinary(t), append(args, "--control", p.ctl)...).CombinedOutput()
	if err != nil {
		t.Fatalf("gnv %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitUntil polls ok until it holds, or fails the test after d; detail,
// if given, says what was last seen.
func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool, detail ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > d {
			if len(detail) > 0 {
				t.Fatalf("no %s after %v: %s", what, d, detail[0]())
			}
			t.Fatalf("no %s after %v", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

var statNum = func(s, re string) int {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

// evpnUnderlay is the underlay addressing of one TestNetnsEVPNWithFRR
// variant.
type evpnUnderlay struct {
	name     string
	rr       string // the reflector's address
	bits     int    // the prefix length of the underlay subnet
	listen   string // FRR's bgp listen range
	routerID string // FRR's router ID
	v6       bool
}

// host is host i's underlay (VTEP) address.
func (u evpnUnderlay) host(i int) string {
	if u.v6 {
		return fmt.Sprintf("2001:db8:e::%d", i)
	}
	return fmt.Sprintf("192.0.2.%d", i)
}

// vtep is how gnv fdb show prints host i's VTEP.
func (u evpnUnderlay) vtep(i int) string {
	return net.JoinHostPort(u.host(i), "6081")
}

// origin is the originating router of host i's Type-3 routes: its VTEP
// address, or on an IPv6 underlay its router ID (evpn.Options.StrictIPv6).
func (u evpnUnderlay) origin(i int) string {
	if u.v6 {
		return fmt.Sprintf("10.255.0.%d", i)
	}
	return u.host(i)
}

// rd is the route distinguisher of host i's VNI 100 as FRR prints it.
func (u evpnUnderlay) rd(i int) string { return u.origin(i) + ":100" }

func (u evpnUnderlay) addAddr(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	if u.v6 {
		ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", addr, u.bits), "dev", "eth0", "nodad")
	} else {
		ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", addr, u.bits), "dev", "eth0")
	}
}

var (
	evpnV4 = evpnUnderlay{name: "ipv4", rr: "192.0.2.254", bits: 24, listen: "192.0.2.0/24", routerID: "192.0.2.254"}
	evpnV6 = evpnUnderlay{name: "ipv6", rr: "2001:db8:e::fe", bits: 64, listen: "2001:db8:e::/64", routerID: "10.255.255.254", v6: true}
)

// TestNetnsEVPNWithFRR: an FRR bgpd route reflector and three gnv hosts in
// namespaces on a bridge with no multicast, learning off: each gnv learns
// the others only through BGP EVPN. Two variants run in parallel, an IPv4
// and an IPv6 underlay (VTEP addresses, BGP sessions and next hops IPv6,
// router IDs IPv4 through --evpn-router-id). In each, an L2 VNI (TAP
// overlays) and an L3 VNI (TUN overlays) per host; every pair pings and
// moves TCP with its content checked, with no unknown-unicast flooding and
// ARP answered locally; FRR shows every gnv's Type-2 and Type-3 routes; a
// guest behind the TAP overlay (a macvlan on it, in its own namespace)
// with its own MAC is learned locally, advertised, moves from host to host
// with rising MAC mobility sequence numbers that win everywhere, and ages
// out; a VXLAN route FRR originates (a kernel VXLAN device,
// advertise-all-vni; IPv4 only) is ignored and counted; a host that falls
// silent loses its entries on the others within the hold time. A capture
// of the reflector's BGP sessions decodes in tshark with EVPN route types 2
// and 3, the Geneve encapsulation community and the mobility sequence
// numbers, and nothing malformed.
func TestNetnsEVPNWithFRR(t *testing.T) {
	netns.RequireRoot(t)
	requireFRR(t)
	gnvBinary(t) // built once, before the variants start
	for _, u := range []evpnUnderlay{evpnV4, evpnV6} {
		t.Run(u.name, func(t *testing.T) {
			t.Parallel()
			evpnWithFRR(t, u)
		})
	}
}

// guestMAC is the MAC of the guest that moves between the hosts.
const guestMAC = "02:00:00:00:aa:01"

func evpnWithFRR(t *testing.T, u evpnUnderlay) {
	br := netns.New(t, "gnv-br")
	br.MustRun(t, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	br.MustRun(t, "ip", "link", "set", "br0", "up")
	rrNS := netns.New(t, "gnv-rr")
	netns.Veth(t, rrNS, "eth0", br, "prr")
	br.MustRun(t, "ip", "link", "set", "prr", "master", "br0")
	u.addAddr(t, rrNS, u.rr)

	// FRR originates a VXLAN route for VNI 100 from a kernel VXLAN device,
	// if the kernel has them.
	extra := ""
	vxlan := false
	if u.v6 {
		t.Logf("the VXLAN route check runs on the IPv4 underlay only")
	} else if _, err := rrNS.Run("ip", "link", "add", "vxlan100", "type", "vxlan", "id", "100", "local", u.rr, "dstport", "4789", "nolearning"); err == nil {
		rrNS.MustRun(t, "ip", "link", "add", "brv", "type", "bridge")
		rrNS.MustRun(t, "ip", "link", "set", "vxlan100", "master", "brv")
		rrNS.MustRun(t, "ip", "link", "set", "brv", "up")
		rrNS.MustRun(t, "ip", "link", "set", "vxlan100", "up")
		extra, vxlan = "  advertise-all-vni\n", true
	} else {
		t.Logf("no kernel VXLAN device (%v): the VXLAN route check is skipped", err)
	}
	capture := startBGPCapture(t, rrNS)
	rr := startFRR(t, rrNS, u.routerID, 65000, u.listen, extra)

	var hosts []*netns.NS
	var procs []*upProc
	var confs []string
	for i := 1; i <= 3; i++ {
		h := netns.New(t, fmt.Sprintf("gnv-h%d", i))
		netns.Veth(t, h, "eth0", br, fmt.Sprintf("p%d", i))
		br.MustRun(t, "ip", "link", "set", fmt.Sprintf("p%d", i), "master", "br0")
		u.addAddr(t, h, u.host(i))
		rid := ""
		if u.v6 {
			rid = fmt.Sprintf("evpn-router-id = 10.255.0.%d\n", i)
		}
		if i == 1 {
			rid += "metrics = 127.0.0.1:9464\n" // in host 1's namespace
		}
		conf := filepath.Join(t.TempDir(), "gnv.conf")
		os.WriteFile(conf, []byte(fmt.Sprintf(`underlay = udp
local = %[2]s
evpn-asn = 65000
evpn-peer = %[3]s
%[4]sevpn-hold = 9
evpn-keepalive = 3
[gnv0]
vni = 100
mode = l2
addr = 10.100.0.%[1]d/24
addr = fd00:100::%[1]d/64
timeout = %[5]d
[gnv1]
vni = 200
mode = l3
addr = 10.200.0.%[1]d/24
`, i, u.host(i), u.rr, rid, guestAge)), 0o644)
		hosts = append(hosts, h)
		confs = append(confs, conf)
		procs = append(procs, gnvUp(t, h, 2, "--config", conf))
	}
	start := time.Now()
	for i, p := range procs {
		var s string
		waitUntil(t, fmt.Sprintf("EVPN routes on host %d", i+1), 30*time.Second, func() bool {
			s = ctl(t, p, "evpn", "show")
			return strings.Contains(s, "vni 100 ") && strings.Count(s, " (type 3, flood list)") == 4 && strings.Count(s, "  remote ") == 4
		}, func() string {
			ss, _ := rrNS.Run("ss", "-tan")
			log, _ := os.ReadFile(filepath.Join(rr.dir, "frr.log"))
			return string(log) + s + "\nFRR:\n" + rr.vtysh(t, "show bgp l2vpn evpn summary") + rr.vtysh(t, "show bgp l2vpn evpn") + ss + p.stderr.String()
		})
	}
	t.Logf("converged in %v", time.Since(start))
	show := ctl(t, procs[0], "evpn", "show")
	t.Logf("gnv evpn show on host 1:\n%s", show)
	// No MAC moves here, so nothing is a duplicate and nothing to clear.
	if !strings.Contains(show, "duplicate macs 0") {
		t.Errorf("gnv evpn show: no duplicate MAC count")
	}
	var js struct {
		Peers []struct {
			Address string `json:"address"`
			State   string `json:"state"`
		} `json:"peers"`
		VNIs []struct {
			VNI    uint32   `json:"vni"`
			VTEPs  []string `json:"vteps"`
			Remote []struct {
				MAC  string `json:"mac"`
				VTEP string `json:"vtep"`
			} `json:"remote"`
			Duplicates []any `json:"duplicates"`
		} `json:"vnis"`
		Stats struct {
			DuplicateMACs *uint64 `json:"duplicate_macs"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(ctl(t, procs[0], "evpn", "show", "--json")), &js); err != nil {
		t.Fatalf("gnv evpn show --json: %v", err)
	}
	if len(js.Peers) != 1 || js.Peers[0].Address != u.rr || js.Peers[0].State != "established" || len(js.VNIs) != 2 ||
		js.VNIs[0].VNI != 100 || len(js.VNIs[0].VTEPs) != 2 || len(js.VNIs[0].Remote) != 2 || js.VNIs[0].Remote[0].VTEP == "" ||
		js.VNIs[0].Duplicates == nil || js.Stats.DuplicateMACs == nil {
		t.Errorf("gnv evpn show --json: %+v", js)
	}
	// gnv show has the control plane in short.
	if out := ctl(t, procs[0], "show"); !strings.Contains(out, "evpn: asn 65000 router-id ") || !strings.Contains(out, u.rr+" established, 4 remote macs, 0 duplicate macs") {
		t.Errorf("gnv show: no EVPN summary:\n%s", out)
	}
	var shown struct {
		EVPN *struct {
			Peers []struct {
				State string `json:"state"`
			} `json:"peers"`
			RemoteMACs int `json:"remote_macs"`
		} `json:"evpn"`
	}
	if err := json.Unmarshal([]byte(ctl(t, procs[0], "show", "--json")), &shown); err != nil || shown.EVPN == nil ||
		len(shown.EVPN.Peers) != 1 || shown.EVPN.Peers[0].State != "established" || shown.EVPN.RemoteMACs != 4 {
		t.Errorf("gnv show --json: evpn %+v, %v", shown.EVPN, err)
	}
	if out := ctl(t, procs[0], "evpn", "clear-duplicates"); out != "cleared 0 duplicate MAC(s)\n" {
		t.Errorf("gnv evpn clear-duplicates: %q", out)
	}
	// The speaker's metrics: the session, the routes of the l2 VNI, the
	// counters.
	mfs := parseMetrics(t, strings.NewReader(hosts[0].MustRun(t, "curl", "-sf", "http://127.0.0.1:9464/metrics")))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gnv_evpn_peer_up", []string{"peer", u.rr}, 1},
		{"gnv_evpn_vteps", []string{"vni", "100"}, 2},
		{"gnv_evpn_macs", []string{"vni", "100", "kind", "remote"}, 2},
		{"gnv_evpn_macs", []string{"vni", "100", "kind", "local"}, 1},
		{"gnv_evpn_macs", []string{"vni", "100", "kind", "duplicate"}, 0},
		{"gnv_evpn_duplicate_macs_total", nil, 0},
	} {
		if v, ok := value(mfs, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if v, ok := value(mfs, "gnv_evpn_routes_received_total"); !ok || v == 0 {
		t.Errorf("gnv_evpn_routes_received_total = %v (present %v), want some", v, ok)
	}
	for _, reason := range []string{"encapsulation", "route_target", "type"} {
		if _, ok := value(mfs, "gnv_evpn_routes_ignored_total", "reason", reason); !ok {
			t.Errorf("no gnv_evpn_routes_ignored_total{reason=%q}", reason)
		}
	}

	// FRR holds every gnv's Type-2 and Type-3 routes.
	routes := rr.vtysh(t, "show bgp l2vpn evpn")
	for i := 1; i <= 3; i++ {
		if !strings.Contains(routes, fmt.Sprintf("[3]:[0]:[32]:[%s]", u.origin(i))) || !strings.Contains(routes, "[2]:[0]:[48]:") ||
			!strings.Contains(routes, fmt.Sprintf("[32]:[10.100.0.%d]", i)) || !strings.Contains(routes, "ET:19") {
			t.Fatalf("FRR lacks host %d's routes:\n%s", i+1, routes)
		}
	}
	t.Logf("FRR: show bgp l2vpn evpn\n%s", routes)

	for i, a := range hosts {
		for j := range hosts {
			if i == j {
				continue
			}
			before := statNum(ctl(t, procs[i], "stats"), `gnv0: .*flood bum \d+ unknown (\d+)`)
			ping(t, a, fmt.Sprintf("10.100.0.%d", j+1))
			ping(t, a, fmt.Sprintf("fd00:100::%d", j+1))
			ping(t, a, fmt.Sprintf("10.200.0.%d", j+1))
			kernelTCP(t, a, hosts[j], fmt.Sprintf("10.100.0.%d", j+1), 1<<20)
			kernelTCP(t, a, hosts[j], fmt.Sprintf("10.200.0.%d", j+1), 1<<20)
			if after := statNum(ctl(t, procs[i], "stats"), `gnv0: .*flood bum \d+ unknown (\d+)`); after != before {
				t.Errorf("host %d -> %d: %d unknown-unicast frames flooded during the transfer", i+1, j+1, after-before)
			}
		}
	}
	for i, p := range procs {
		st := ctl(t, p, "stats")
		if statNum(st, `gnv0: .*suppressed arp (\d+)`) == 0 {
			t.Errorf("host %d: no ARP request answered locally:\n%s", i+1, st)
		}
		if n := statNum(st, `gnv0: .*flooded arp (\d+)`); n != 0 {
			t.Errorf("host %d: %d ARP requests flooded:\n%s", i+1, n, st)
		}
	}
	fdb := ctl(t, procs[0], "fdb", "show", "--name", "gnv0")
	if strings.Count(fdb, "static evpn") != 2 || !strings.Contains(fdb, "suppress evpn") {
		t.Fatalf("gnv fdb show on host 1:\n%s", fdb)
	}
	t.Logf("gnv fdb show on host 1:\n%s", fdb)

	guestMoves(t, u, rr, hosts, procs)

	if vxlan {
		waitUntil(t, "the VXLAN route ignored", 15*time.Second, func() bool {
			return statNum(ctl(t, procs[0], "evpn", "show"), `ignored: encapsulation (\d+)`) > 0
		})
	}

	// The wire: every session's UPDATEs, decoded by tshark.
	capture.check(t, u)

	// Host 2's gnv restarts (an upgrade, say): it withdraws its routes as
	// it stops, and the others drop its entries; started again, it
	// advertises them anew and learns the others', and traffic flows.
	procs[1].stop()
	waitUntil(t, "host 2's entries gone from host 1", 15*time.Second, func() bool {
		s := ctl(t, procs[0], "evpn", "show")
		return !strings.Contains(s, "via "+u.host(2)+" ") && !strings.Contains(s, "vtep   "+u.host(2)+" ")
	})
	start = time.Now()
	procs[1] = gnvUp(t, hosts[1], 2, "--config", confs[1])
	for i, p := range procs {
		waitUntil(t, fmt.Sprintf("EVPN routes on host %d after host 2's restart", i+1), 30*time.Second, func() bool {
			s := ctl(t, p, "evpn", "show")
			return strings.Count(s, " (type 3, flood list)") == 4 && strings.Count(s, "  remote ") == 4
		})
	}
	t.Logf("host 2 rejoined in %v", time.Since(start))
	ping(t, hosts[0], "10.100.0.2")
	ping(t, hosts[0], "10.200.0.2")

	// Host 3 falls silent (its link goes down): the reflector's hold
	// timer, 9 s, withdraws its routes.
	hosts[2].MustRun(t, "ip", "link", "set", "eth0", "down")
	took := waitUntil(t, "host 3's entries gone", 15*time.Second, func() bool {
		for _, p := range procs[:2] {
			s := ctl(t, p, "evpn", "show")
			if strings.Contains(s, u.host(3)) {
				return false
			}
			if strings.Count(ctl(t, p, "fdb", "show", "--name", "gnv0"), "static evpn") != 1 {
				return false
			}
		}
		return true
	})
	t.Logf("host 3's entries left the others %v after it fell silent", took)

	// The reflector's bgpd crashes (graceful restart is on at both ends):
	// host 1 keeps host 2's routes, and traffic flows on, while it is down.
	rr.crashBGPD(t)
	waitUntil(t, "host 1's session down", 15*time.Second, func() bool {
		return !strings.Contains(ctl(t, procs[0], "evpn", "show"), " established ")
	})
	if s := ctl(t, procs[0], "evpn", "show"); !strings.Contains(s, "vtep   "+u.host(2)+" ") || strings.Count(s, "via "+u.host(2)+" ") != 2 ||
		!strings.Contains(s, "graceful restarts 1 ") {
		t.Fatalf("host 1 dropped host 2's routes with the reflector down:\n%s", s)
	}
	ping(t, hosts[0], "10.100.0.2")
	ping(t, hosts[0], "10.200.0.2")
	// Host 2 leaves meanwhile: nobody hears its withdrawal. Back, the
	// reflector does not send its routes again, and host 1 drops them at
	// the reflector's End-of-RIB.
	procs[1].stop()
	rr.restartBGPD(t)
	took = waitUntil(t, "host 2's kept routes removed after the reflector's return", 30*time.Second, func() bool {
		s := ctl(t, procs[0], "evpn", "show")
		return strings.Contains(s, " established ") && !strings.Contains(s, "via "+u.host(2)+" ") &&
			!strings.Contains(s, "vtep   "+u.host(2)+" ") && !strings.Contains(s, "stale routes removed 0)")
	}, func() string { return ctl(t, procs[0], "evpn", "show") })
	t.Logf("the reflector back from a crash: host 2's stale routes left host 1 %v after bgpd restarted\n%s", took, ctl(t, procs[0], "evpn", "show"))
}

// guestAge is the forwarding-table timeout (seconds) of the TAP overlays,
// after which a silent guest's MAC is withdrawn.
const guestAge = 5

// guestMoves: a guest (a namespace with a macvlan on a host's TAP
// overlay, MAC guestMAC) appears behind host 1, moves to host 2, then to
// host 3, then falls silent. Each time the host it is behind learns its MAC
// and addresses from the frames it sends and advertises them (sequence
// number 0, then 1, then 2: RFC 7432 §15), the host it left withdraws its
// route, every host forwards to the new VTEP, FRR holds the new host's
// route only, and the guest is reachable from the other hosts. Silent, its
// MAC ages out on host 3 and leaves every host and FRR.
func guestMoves(t *testing.T, u evpnUnderlay, rr *frrRR, hosts []*netns.NS, procs []*upProc) {
	g := netns.New(t, "gnv-guest")
	var pinger *exec.Cmd
	stopPinger := func() {
		if pinger != nil {
			_ = pinger.Process.Kill()
			_ = pinger.Wait()
			pinger = nil
		}
	}
	defer stopPinger()
	for step, at := range []int{1, 2, 3} {
		stopPinger()
		if step > 0 {
			g.MustRun(t, "ip", "link", "del", "mv0")
		}
		// The guest's interface: a macvlan on the host's TAP overlay,
		// moved into the guest's namespace.
		h := hosts[at-1]
		h.MustRun(t, "ip", "link", "add", "mv0", "link", "gnv0", "address", guestMAC, "type", "macvlan", "mode", "bridge")
		h.MustRun(t, "ip", "link", "set", "mv0", "netns", g.Name)
		g.MustRun(t, "ip", "addr", "add", "10.100.0.50/24", "dev", "mv0")
		g.MustRun(t, "ip", "addr", "add", "fd00:100::50/64", "dev", "mv0", "nodad")
		g.MustRun(t, "ip", "link", "set", "mv0", "up")
		// The guest speaks (its ARP request and neighbour solicitation
		// carry its addresses), and keeps speaking so as not to age out.
		other := at%3 + 1
		ping(t, g, fmt.Sprintf("10.100.0.%d", other))
		ping(t, g, fmt.Sprintf("fd00:100::%d", other))
		pinger = g.Command("ping", "-q", "-i", "0.5", fmt.Sprintf("10.100.0.%d", other))
		if err := pinger.Start(); err != nil {
			t.Fatal(err)
		}
		seq := step
		start := time.Now()
		var last string
		waitUntil(t, fmt.Sprintf("the guest behind host %d everywhere (seq %d)", at, seq), 15*time.Second, func() bool {
			for i, p := range procs {
				s := ctl(t, p, "evpn", "show")
				var want string
				if i+1 == at {
					want = fmt.Sprintf("  local  %s 10.100.0.50,fd00:100::50 seq %d\n", guestMAC, seq)
				} else {
					want = fmt.Sprintf("  remote %s 10.100.0.50,fd00:100::50 via %s seq %d\n", guestMAC, u.host(at), seq)
					if !strings.Contains(ctl(t, p, "fdb", "show", "--name", "gnv0"), guestMAC+" "+u.vtep(at)+" static evpn") {
						last = fmt.Sprintf("host %d does not forward to host %d", i+1, at)
						return false
					}
				}
				if !strings.Contains(s, want) {
					last = fmt.Sprintf("host %d: want %q in\n%s", i+1, want, s)
					return false
				}
			}
			rds := frrMACRoutes(rr.vtysh(t, "show bgp l2vpn evpn"), guestMAC)
			if len(rds) != 1 || rds[u.rd(at)] != seq {
				last = fmt.Sprintf("FRR's routes for the guest: %v, want only %s with seq %d", rds, u.rd(at), seq)
				return false
			}
			return true
		}, func() string { return last })
		t.Logf("the guest behind host %d: advertised with seq %d and installed everywhere in %v", at, seq, time.Since(start))
		// Reachable from the other hosts, ARP answered by their gnv.
		for i := range hosts {
			if i+1 != at {
				ping(t, hosts[i], "10.100.0.50")
				ping(t, hosts[i], "fd00:100::50")
			}
		}
	}
	s := ctl(t, procs[2], "evpn", "show")
	if statNum(s, `mac moves (\d+)`) == 0 {
		t.Errorf("host 3 counted no MAC move:\n%s", s)
	}
	t.Logf("gnv evpn show on host 3:\n%s", s)

	// The guest falls silent: host 3 ages its MAC out and withdraws it.
	stopPinger()
	g.MustRun(t, "ip", "link", "del", "mv0")
	took := waitUntil(t, "the silent guest's MAC gone", time.Duration(guestAge+10)*time.Second, func() bool {
		for _, p := range procs {
			if strings.Contains(ctl(t, p, "evpn", "show"), guestMAC) || strings.Contains(ctl(t, p, "fdb", "show", "--name", "gnv0"), guestMAC) {
				return false
			}
		}
		return len(frrMACRoutes(rr.vtysh(t, "show bgp l2vpn evpn"), guestMAC)) == 0
	})
	t.Logf("the silent guest's MAC left every host and FRR %v after it fell silent (timeout %d s)", took, guestAge)
}

// frrMACRoutes parses FRR's show bgp l2vpn evpn: the route distinguishers
// of the Type-2 routes for mac, with their MAC mobility sequence numbers
// (0 without the community).
func frrMACRoutes(out, mac string) map[string]int {
	rds := map[string]int{}
	rd, in := "", false
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "Route Distinguisher: "):
			rd, in = strings.TrimPrefix(l, "Route Distinguisher: "), false
		case strings.Contains(l, "[2]:[0]:[48]:[") && strings.Contains(l, "]:"):
			in = strings.Contains(l, "[48]:["+mac+"]")
			if in {
				if _, ok := rds[rd]; !ok {
					rds[rd] = 0
				}
			}
		case strings.HasPrefix(l, "*") || strings.HasPrefix(l, "["):
			in = false
		case in && strings.Contains(l, "MM:"):
			rds[rd] = statNum(l, `MM:(\d+)`)
		}
	}
	return rds
}

// bgpCapture is tcpdump on the reflector's BGP sessions.
type bgpCapture struct {
	cmd  *exec.Cmd
	file string
	out  *lockedBuf
}

// startBGPCapture captures TCP port 179 on ns's eth0, or returns nil (and
// says so) when tcpdump or tshark is missing.
func startBGPCapture(t *testing.T, ns *netns.NS) *bgpCapture {
	for _, tool := range []string{"tcpdump", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Logf("no %s (apt-get install tcpdump tshark, as .ci/run does): the wire check of the BGP sessions is skipped", tool)
			return nil
		}
	}
	c := &bgpCapture{file: filepath.Join(t.TempDir(), "bgp.pcap"), out: &lockedBuf{}}
	c.cmd = ns.Command("tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-s", "0", "-w", c.file, "tcp", "port", "179")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	waitUntil(t, "tcpdump listening", 10*time.Second, func() bool { return strings.Contains(c.out.String(), "listening on") })
	return c
}

func (c *bgpCapture) stop() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(os.Interrupt)
		_ = c.cmd.Wait()
	}
}

// check stops the capture and decodes it: each gnv sends UPDATEs with
// EVPN NLRI of route types 2 and 3 whose next hop is its VTEP address,
// under the Geneve encapsulation community (tunnel type 19); the
// reflector passes them on; MAC mobility sequence numbers 1 and 2 are on
// the wire; nothing is malformed and tshark reports no error.
func (c *bgpCapture) check(t *testing.T, u evpnUnderlay) {
	if c == nil {
		return
	}
	c.stop()
	tshark := func(args ...string) string {
		var stderr strings.Builder
		cmd := exec.Command("tshark", append([]string{"-r", c.file}, args...)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark %v: %v: %s", args, err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	if bad := tshark("-Y", "_ws.malformed || _ws.expert.severity == error"); bad != "" {
		t.Errorf("malformed or erroneous packets in the BGP capture:\n%s", bad)
	}
	srcField, nhField := "ip.src", "bgp.update.path_attribute.mp_reach_nlri.next_hop.ipv4"
	if u.v6 {
		srcField, nhField = "ipv6.src", "bgp.update.path_attribute.mp_reach_nlri.next_hop.ipv6"
	}
	// One line per UPDATE message: the sender, the route types, the
	// next hop, the tunnel types and the MAC mobility sequence numbers.
	out := tshark("-Y", "bgp.type == 2 && bgp.evpn.nlri", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,",
		"-e", srcField, "-e", "bgp.evpn.nlri.rt", "-e", nhField, "-e", "bgp.ext_com.tunnel_type", "-e", "bgp.ext_com_evpn.mmac.seq")
	type seen struct{ t2, t3, geneve, fromRR bool }
	per := map[string]*seen{}
	seqs := map[string]bool{}
	updates := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(l, "|")
		if len(f) != 5 {
			continue
		}
		updates++
		src, types, nhs, tunnels := f[0], strings.Split(f[1], ","), strings.Split(f[2], ","), strings.Split(f[3], ",")
		for _, s := range strings.Split(f[4], ",") {
			seqs[s] = true
		}
		for i := 1; i <= 3; i++ {
			h := u.host(i)
			if !slices.Contains(nhs, h) {
				continue
			}
			if per[h] == nil {
				per[h] = &seen{}
			}
			st := per[h]
			st.t2 = st.t2 || slices.Contains(types, "2")
			st.t3 = st.t3 || slices.Contains(types, "3")
			st.geneve = st.geneve || slices.Contains(tunnels, "19")
			st.fromRR = st.fromRR || src == u.rr
			if src == h && (slices.Contains(tunnels, "8") || !slices.Contains(tunnels, "19")) {
				t.Errorf("an UPDATE from host %d lacks the Geneve encapsulation community or carries another: %s", i, l)
			}
		}
	}
	for i := 1; i <= 3; i++ {
		st := per[u.host(i)]
		if st == nil || !st.t2 || !st.t3 || !st.geneve || !st.fromRR {
			t.Errorf("the capture lacks host %d's Type-2 and Type-3 routes with tunnel type 19, sent and reflected (%+v):\n%s", i, st, out)
		}
	}
	if !seqs["1"] || !seqs["2"] {
		t.Errorf("the capture lacks MAC mobility sequence numbers 1 and 2 (%v)", seqs)
	}
	t.Logf("the BGP capture: %d UPDATEs with EVPN NLRI, route types 2 and 3 from every host under tunnel type 19 (Geneve), mobility sequence numbers 1 and 2, nothing malformed", updates)
}
