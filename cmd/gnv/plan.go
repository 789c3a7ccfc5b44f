package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/stack/evpn"
	"github.com/gnv-project/gnv/stack/forward"
)

// upPlan is a validated gnv up configuration.
type upPlan struct {
	underlay       string // udp, packet or tap
	family         int
	local          netip.Addr
	port           uint16
	localPort      uint16
	dev            string
	underlayAddr   netip.Prefix
	gateway        netip.Addr
	underlayMAC    net.HardwareAddr
	underlayMTU    int
	noOffloads     bool
	noCsum4        bool
	zeroCsum6Tx    bool
	zeroCsum6Rx    bool
	multicastTTL   uint8
	pcap           string
	logLevel       slog.Level
	control        string
	controlDefault bool // control is the default path, named after the first interface
	statsInterval  time.Duration
	metrics        string // --metrics listen address
	ifaces         []ifacePlan
	evpn           *evpn.Options // the BGP EVPN speaker, if --evpn-asn
}

// ifacePlan is one validated interface.
type ifacePlan struct {
	name    string
	overlay string // tap, tun or netstack
	macSet  bool   // the MAC came from --mac
	cfg     stack.Config
	// forwards and exposes are the --forward and --expose rules; socks5
	// and httpProxy the proxies' host addresses (see services).
	forwards, exposes []forward.Rule
	socks5, httpProxy string
	vmListen          []string       // --vm-listen sockets (see planVMs)
	given             map[string]any // flag values as given, by field, for errors (flagError)
}

// tunnelConfig is the configuration of ip's tunnel on the underlay u.
func (p *upPlan) tunnelConfig(ip *ifacePlan, u stack.Underlay) stack.Config {
	cfg := ip.cfg
	cfg.Underlay = u
	cfg.Port = p.port
	cfg.Endpoint.MulticastTTL = p.multicastTTL
	switch ip.overlay {
	case "netstack":
	case "tap", "tun":
		cfg.Device = &stack.DeviceConfig{Name: deviceName(ip.name, runtime.GOOS), DisableOffloads: p.noOffloads}
	}
	return cfg
}

// checkName checks --name on the system goos. The name labels the
// interface in logs and for gnv stats and fdb, and names the control
// socket (NAME.sock), so it must do as a file name everywhere. A tap or tun
// overlay's device takes it too (see deviceName), and on Linux that is an
// interface name: at most 15 bytes, no spaces. Windows names its adapters
// by connection name ("Ethernet 2"), and the device library checks the
// rest.
func checkName(name, overlay, goos string) error {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, `/\:`) || strings.ContainsFunc(name, unicode.IsControl) {
		return fmt.Errorf("--name %q: want 1..64 bytes, none of them '/', '\\', ':' or a control character (it names the control socket, NAME.sock)", name)
	}
	if goos == "linux" && overlay != "netstack" && (len(name) > 15 || strings.ContainsAny(name, " \t")) {
		return fmt.Errorf("--name %q: want at most 15 bytes and no spaces: it names the %s device (a Linux interface name)", name, overlay)
	}
	return nil
}

// deviceName is the name a tap or tun overlay's device is asked for on
// goos: --name, except on macOS, where utun devices are utunN and any
// other --name (gnv0, by default) lets the system pick a free one; the
// start-up line then says which.
func deviceName(name, goos string) string {
	if goos != "darwin" {
		return name
	}
	if n, ok := strings.CutPrefix(name, "utun"); !ok || n == "" || strings.Trim(n, "0123456789") != "" {
		return ""
	}
	return name
}

// plan parses and validates the options. Every error names the flag and
// what it accepts.
func (o *upOptions) plan() (*upPlan, error) {
	s := &o.sock
	p := &upPlan{underlay: s.underlay, port: s.port, localPort: s.localPort, dev: s.dev, pcap: s.pcap,
		noOffloads: s.noOffloads, noCsum4: !s.udpCsum, zeroCsum6Tx: s.udp6ZeroTx, zeroCsum6Rx: s.udp6ZeroRx,
		statsInterval: s.statsInterval, underlayMTU: s.underlayMTU}
	switch s.logLevel {
	case "debug":
		p.logLevel = slog.LevelDebug
	case "info":
		p.logLevel = slog.LevelInfo
	case "warn":
		p.logLevel = slog.LevelWarn
	case "error":
		p.logLevel = slog.LevelError
	default:
		return nil, fmt.Errorf("--log-level %q: valid levels are debug, info, warn and error", s.logLevel)
	}
	if p.port == 0 {
		return nil, fmt.Errorf("--port 0: want 1..65535")
	}
	if s.metrics != "" {
		if _, _, err := net.SplitHostPort(s.metrics); err != nil {
			return nil, fmt.Errorf("--metrics %q: want HOST:PORT, like 127.0.0.1:9108 (:9108 for every address)", s.metrics)
		}
		p.metrics = s.metrics
	}
	if s.multicastTTL < 0 || s.multicastTTL > 255 {
		return nil, fmt.Errorf("--multicast-ttl %d out of range: valid TTLs are 1..255", s.multicastTTL)
	}
	p.multicastTTL = uint8(s.multicastTTL)
	if s.underlayMTU < 0 || (s.underlayMTU != 0 && s.underlayMTU < 128) || s.underlayMTU > 65535 {
		return nil, fmt.Errorf("--underlay-mtu %d out of range: valid MTUs are 128..65535", s.underlayMTU)
	}
	switch s.underlay {
	case "udp":
		if s.underlayAddr != "" {
			return nil, fmt.Errorf("--underlay-addr applies to --underlay packet and tap only (a udp underlay uses the host's addresses; see --local)")
		}
		if s.gateway != "" {
			return nil, fmt.Errorf("--gateway applies to --underlay packet and tap only (a udp underlay uses the host's routes)")
		}
		if s.underlayMAC != "" {
			return nil, fmt.Errorf("--underlay-mac applies to --underlay packet and tap only")
		}
		if s.local != "" {
			a, err := parseAddrFlag("local", s.local)
			if err != nil {
				return nil, err
			}
			p.local = a
		}
	case "packet", "tap":
		if s.dev == "" && s.underlay == "packet" {
			return nil, fmt.Errorf("--underlay packet needs --dev: the interface the AF_PACKET socket is bound to")
		}
		if s.underlayAddr == "" {
			return nil, fmt.Errorf("--underlay %s needs --underlay-addr: the netstack's underlay address with prefix, like 192.0.2.1/24", s.underlay)
		}
		pfx, err := netip.ParsePrefix(s.underlayAddr)
		if err != nil {
			return nil, fmt.Errorf("--underlay-addr %q: want an address with a prefix length, like 192.0.2.1/24", s.underlayAddr)
		}
		p.underlayAddr = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits())
		p.local = p.underlayAddr.Addr()
		if s.local != "" {
			a, err := parseAddrFlag("local", s.local)
			if err != nil {
				return nil, err
			}
			if a != p.local {
				return nil, fmt.Errorf("--local %s differs from --underlay-addr %s: with --underlay %s, leave --local out", a, p.underlayAddr, s.underlay)
			}
		}
		if s.gateway != "" {
			g, err := parseAddrFlag("gateway", s.gateway)
			if err != nil {
				return nil, err
			}
			p.gateway = g
		}
		if s.underlayMAC != "" {
			mac, err := net.ParseMAC(s.underlayMAC)
			if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
				return nil, fmt.Errorf("--underlay-mac %q: want a unicast Ethernet address like 02:00:00:00:00:01", s.underlayMAC)
			}
			p.underlayMAC = mac
		}
	default:
		return nil, fmt.Errorf("--underlay %q: valid underlays are udp, packet and tap", s.underlay)
	}

	// The library checks each interface's configuration against the
	// underlay it will run on, which also has the one address family of
	// the socket: the local address's, else the first peer's.
	p.family = family(p.local)
	evpnOpts, err := s.evpn.plan(p.local)
	if err != nil {
		return nil, err
	}
	p.evpn = evpnOpts
	seenVNI := map[int64]string{}
	seenName := map[string]bool{}
	host := hostID()
	for i := range o.ifaces {
		o.ifaces[i].evpn = p.evpn != nil
		ip, err := o.ifaces[i].plan()
		if err == nil {
			if p.family == 0 {
				p.family = family(firstPeer(&ip.cfg))
			}
			err = p.validate(ip)
		}
		if err != nil {
			var fe *flagError
			if len(o.ifaces) > 1 && !(errors.As(err, &fe) && fe.socketLevel()) {
				return nil, fmt.Errorf("[%s]: %w", o.ifaces[i].name, err)
			}
			return nil, err
		}
		if ip.cfg.Mode == endpoint.L2 && !ip.macSet {
			ip.cfg.MAC = stableMAC(host, ip.name, ip.cfg.VNI, p.local)
		}
		if p.underlay == "udp" && o.ifaces[i].portRange != "" {
			err := fmt.Errorf("--port-range %s: a udp underlay cannot honour a source port range: it sends from a pool of sockets on ports the kernel picks (net.ipv4.ip_local_port_range); leave --port-range out, or use --underlay packet or tap", o.ifaces[i].portRange)
			if len(o.ifaces) > 1 {
				err = fmt.Errorf("[%s]: %w", ip.name, err)
			}
			return nil, err
		}
		if other, ok := seenVNI[int64(ip.cfg.VNI)]; ok {
			return nil, fmt.Errorf("[%s]: vni %d is already used by [%s]: a VNI may appear once per socket", ip.name, ip.cfg.VNI, other)
		}
		seenVNI[int64(ip.cfg.VNI)] = ip.name
		if seenName[ip.name] {
			return nil, fmt.Errorf("interface name %q appears twice", ip.name)
		}
		seenName[ip.name] = true
		p.ifaces = append(p.ifaces, *ip)
	}
	if err := checkListeners(p.ifaces); err != nil {
		return nil, err
	}
	p.control = s.control
	p.controlDefault = s.control == ""
	if p.control == "" {
		p.control = defaultControlPath(p.ifaces[0].name)
	}
	return p, nil
}

// checkListeners refuses two host listeners (--forward, --socks5,
// --http-proxy) on one address and protocol, within an interface or across
// the interfaces of a config file, before anything starts. Port 0 (any free
// port) never collides.
func checkListeners(ifaces []ifacePlan) error {
	type listener struct {
		proto, addr string
		owner       string // "--socks5 ADDR" and, with several interfaces, "[name] "
	}
	var seen []listener
	for _, ip := range ifaces {
		var mine []listener
		for _, f := range ip.forwards {
			mine = append(mine, listener{f.Proto, f.Listen.String(), "--forward " + f.String()})
		}
		if ip.socks5 != "" {
			mine = append(mine, listener{"tcp", ip.socks5, "--socks5 " + ip.socks5})
		}
		if ip.httpProxy != "" {
			mine = append(mine, listener{"tcp", ip.httpProxy, "--http-proxy " + ip.httpProxy})
		}
		for _, l := range mine {
			if len(ifaces) > 1 {
				l.owner = "[" + ip.name + "] " + l.owner
			}
			for _, o := range seen {
				if l.proto == o.proto && sameListener(l.addr, o.addr) {
					where := l.addr
					if l.proto != "tcp" {
						where = l.proto + " " + l.addr
					}
					return fmt.Errorf("%s listens on %s, as %s already does: each host listener needs an address of its own", l.owner, where, o.owner)
				}
			}
			seen = append(seen, l)
		}
	}
	return nil
}

// sameListener reports whether TCP listeners on host:port addresses a and
// b would collide: the same port (not 0), and the same host or a wildcard
// on either side.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	norm := func(h string) (string, bool) {
		if h == "" {
			return "", true
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			return ip.Unmap().String(), ip.IsUnspecified()
		}
		return strings.ToLower(h), false
	}
	na, wa := norm(ha)
	nb, wb := norm(hb)
	return na == nb || wa || wb
}

// checkHost checks what the plan names on this host, without opening
// anything: the underlay must exist on this system, and the --dev
// interface on this host.
func (p *upPlan) checkHost() error {
	if p.underlay != "udp" && runtime.GOOS != "linux" {
		return fmt.Errorf("--underlay %s: the AF_PACKET and TAP underlays are Linux's; on %s use --underlay udp (a kernel UDP socket, no privileges)", p.underlay, runtime.GOOS)
	}
	if p.dev != "" {
		if _, err := net.InterfaceByName(p.dev); err != nil {
			return fmt.Errorf("--dev %s: no network interface of that name on this host (see ip link)", p.dev)
		}
	}
	return nil
}

// checked is what gnv up --check says about a valid plan.
func (p *upPlan) checked() string {
	var names []string
	for _, ip := range p.ifaces {
		names = append(names, fmt.Sprintf("%s (%s vni %d, overlay %s)", ip.name, ip.cfg.Mode, ip.cfg.VNI, ip.overlay))
	}
	line := fmt.Sprintf("gnv up: configuration ok: %s underlay, %d interface(s): %s; control socket %s",
		p.underlay, len(p.ifaces), strings.Join(names, ", "), p.control)
	if p.metrics != "" {
		line += "; metrics on " + p.metrics
	}
	return line
}

// plan parses one interface's options.
func (o *ifaceOptions) plan() (*ifacePlan, error) {
	if !o.vniSet {
		return nil, fmt.Errorf("--vni is required: the virtual network identifier, 0..%d", geneve.MaxVNI)
	}
	mode, err := endpoint.ParseMode(o.mode)
	if err != nil {
		return nil, fmt.Errorf("--mode: %w", err)
	}
	// Ranges and combinations are the library's to check (upPlan.validate);
	// here the flags are parsed into the configuration. Its errors show
	// the values as the flags were given (given). Where a flag's value
	// does not fit its field, or is 0, which the library reads as "the
	// default" but these flags, having defaults of their own, do not, the
	// library gets a stand-in that it refuses.
	p := &ifacePlan{name: o.name, overlay: o.overlay, socks5: o.socks5, httpProxy: o.httpProxy,
		given: map[string]any{"VNI": o.vni, "Endpoint.FDBMax": o.maxAddr, "Endpoint.FDBTimeout": o.timeout}}
	c := &p.cfg
	c.VNI = uint32(min(o.vni, math.MaxUint32))
	c.Mode = mode
	if len(o.remotes) == 0 && o.group == "" && !o.evpn {
		return nil, fmt.Errorf("--remote or --group is required: where to send Geneve datagrams (or --evpn-asn, to learn the peers over BGP EVPN)")
	}
	if o.evpn && o.group != "" {
		return nil, fmt.Errorf("--group and --evpn-asn are exclusive: BGP EVPN replicates to the peers it learns, with no multicast")
	}
	c.DynamicPeers = o.evpn
	for _, r := range o.remotes {
		a, err := parseAddrFlag("remote", r)
		if err != nil {
			return nil, err
		}
		c.Remotes = append(c.Remotes, a)
	}
	if mode == endpoint.L3 && len(c.Remotes) > 1 {
		return nil, fmt.Errorf("--remote given %d times: an l3 tunnel has one remote (or a --group)", len(c.Remotes))
	}
	if o.group != "" {
		g, err := parseAddrFlag("group", o.group)
		if err != nil {
			return nil, err
		}
		c.Group = g
	}
	switch o.overlay {
	case "":
		p.overlay = "tap"
		if mode == endpoint.L3 {
			p.overlay = "tun"
		}
	case "tap":
		if mode != endpoint.L2 {
			return nil, fmt.Errorf("--overlay tap carries Ethernet frames: use it with --mode l2 (or --overlay tun with --mode l3)")
		}
	case "tun":
		if mode != endpoint.L3 {
			return nil, fmt.Errorf("--overlay tun carries IP packets: use it with --mode l3 (or --overlay tap with --mode l2)")
		}
	case "netstack":
	default:
		return nil, fmt.Errorf("--overlay %q: valid overlays are tap, tun and netstack", o.overlay)
	}
	if err := checkName(o.name, p.overlay, runtime.GOOS); err != nil {
		return nil, err
	}
	for _, a := range o.addrs {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("--addr %q: want an address with a prefix length, like 10.0.0.1/24", a)
		}
		c.Addresses = append(c.Addresses, netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()))
	}
	c.MTU = o.mtu
	if o.mac != "" {
		mac, err := parseUnicastMAC("--mac", o.mac)
		if err != nil {
			return nil, err
		}
		if mode != endpoint.L2 {
			return nil, fmt.Errorf("--mac %s: an l3 tunnel has no link-layer address", mac)
		}
		c.MAC, p.macSet = mac, true
	}
	ec := &c.Endpoint
	ec.NoLearn = o.noLearn || !o.learn || o.evpn && !o.learnGiven
	ec.FDBMax = o.maxAddr
	if o.maxAddr == 0 {
		ec.FDBMax = -1
	}
	secs := min(max(int64(o.timeout), -1), math.MaxInt64/int64(time.Second))
	if secs == 0 {
		secs = -1
	}
	ec.FDBTimeout = time.Duration(secs) * time.Second
	if o.ttl == "inherit" {
		ec.TTLInherit = true
	} else {
		ttl, err := strconv.Atoi(o.ttl)
		if err != nil || ttl < 1 || ttl > 255 {
			return nil, fmt.Errorf("--ttl %q: want 1..255 or inherit", o.ttl)
		}
		ec.TTL = uint8(ttl)
	}
	if o.tos < 0 || o.tos > 255 {
		return nil, fmt.Errorf("--tos %d out of range: valid values are 0..255", o.tos)
	}
	ec.TOS = uint8(o.tos)
	ec.DSCPInherit = o.dscpInherit
	ec.FlowLabel = o.flowLabel
	if ec.DF, err = endpoint.ParseDFMode(o.df); err != nil {
		return nil, fmt.Errorf("--%w", err)
	}
	if o.portRange != "" {
		if ec.SrcPortMin, ec.SrcPortMax, err = parsePortRange(o.portRange); err != nil {
			return nil, err
		}
	}
	ec.AcceptAnySource = o.acceptAnySource
	ec.DisableGSO = o.noGSO
	for _, s := range o.options {
		b, err := parseOption(s)
		if err != nil {
			return nil, err
		}
		ec.Options = append(ec.Options, b...)
	}
	for _, s := range o.acceptOptions {
		t, err := parseOptionType(s)
		if err != nil {
			return nil, err
		}
		ec.KnownCritical = append(ec.KnownCritical, t)
	}
	if (len(o.forwards) > 0 || len(o.exposes) > 0 || o.socks5 != "" || o.httpProxy != "" || len(o.dns) > 0) && p.overlay != "netstack" {
		return nil, fmt.Errorf("--forward, --expose, --socks5, --http-proxy and --dns need --overlay netstack (with tap/tun, host programs reach the overlay directly)")
	}
	for _, s := range o.dns {
		ap, err := parseDNSServer(s)
		if err != nil {
			return nil, err
		}
		p.cfg.DNS = append(p.cfg.DNS, ap)
	}
	if err := p.planServices(o); err != nil {
		return nil, err
	}
	if err := p.planVMs(o); err != nil {
		return nil, err
	}
	return p, nil
}

// validate has the library check ip's tunnel configuration on the
// underlay, as it will run; its errors name flags. A udp socket without
// --local binds the wildcard address of the family, which is spelled out
// here so that every interface's peers are checked against that family.
func (p *upPlan) validate(ip *ifacePlan) error {
	u, _ := p.underlayConfig(nil, nil)
	if k, ok := u.(stack.KernelUDPUnderlay); ok && !k.Local.IsValid() {
		k.Local = netip.IPv4Unspecified()
		if p.family == 6 {
			k.Local = netip.IPv6Unspecified()
		}
		u = k
	}
	cfg := p.tunnelConfig(ip, u)
	return withFlags(cfg.Validate(), ip.given)
}

// family is the address family of a, 4 or 6, or 0 if a is not valid.
func family(a netip.Addr) int {
	switch {
	case !a.IsValid():
		return 0
	case a.Unmap().Is4():
		return 4
	}
	return 6
}

// firstPeer is the group or the first remote of c.
func firstPeer(c *stack.Config) netip.Addr {
	if c.Group.IsValid() {
		return c.Group
	}
	if len(c.Remotes) > 0 {
		return c.Remotes[0]
	}
	return netip.Addr{}
}
