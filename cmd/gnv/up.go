package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/stack"
	"github.com/spf13/pflag"
)

const upUsage = `usage: gnv up [flags]
       gnv up --config FILE [socket flags]

Runs Geneve interfaces in the foreground until SIGINT or SIGTERM, then tears
them down. Every flag also has its FreeBSD geneve(4) keyword as an alias
(--geneveid for --vni, --geneveremote for --remote, ...).

Several interfaces (VNIs) share one underlay socket with --config FILE:
"key = value" lines with the flag names as keys; keys before the first
[name] section configure the shared socket (underlay, local, port, dev, ...),
each [name] section is one interface:

    underlay = udp
    local = 192.0.2.1
    [gnv0]
    vni = 100
    remote = 192.0.2.2
    addr = 10.0.0.1/24
    [gnv1]
    vni = 200
    mode = l3
    remote = 192.0.2.3
    addr = 10.1.0.1/24

While it runs, "gnv fdb" and "gnv stats" talk to it over --control.

flags:
`

func upMain(args []string) int {
	o, err := parseUp(args)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0 // the flag set printed the usage
		}
		fmt.Fprintf(os.Stderr, "gnv up: %v\n", err)
		return 2
	}
	plan, err := o.plan()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gnv up: %v\n", err)
		return 2
	}
	log := newLogger(plan.logLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runUp(ctx, plan, log, os.Stdout, nil); err != nil {
		fmt.Fprintf(os.Stderr, "gnv up: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// upPlan is a validated gnv up configuration.
type upPlan struct {
	underlay      string // udp, packet or tap
	family        int
	local         netip.Addr
	port          uint16
	localPort     uint16
	dev           string
	underlayAddr  netip.Prefix
	gateway       netip.Addr
	underlayMAC   net.HardwareAddr
	underlayMTU   int
	noOffloads    bool
	noCsum4       bool
	zeroCsum6Tx   bool
	zeroCsum6Rx   bool
	multicastTTL  uint8
	pcap          string
	logLevel      slog.Level
	control       string
	statsInterval time.Duration
	ifaces        []ifacePlan
}

// ifacePlan is one validated interface.
type ifacePlan struct {
	name     string
	overlay  string // tap, tun or netstack
	cfg      stack.Config
	forwards []forwardSpec
	socks5   string
}

// forwardSpec is one --forward.
type forwardSpec struct {
	listen string
	target netip.AddrPort
}

// plan validates the options. Every error names the flag and what it
// accepts.
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
	if s.multicastTTL < 0 || s.multicastTTL > 255 {
		return nil, fmt.Errorf("--multicast-ttl %d out of range: valid TTLs are 1..255", s.multicastTTL)
	}
	p.multicastTTL = uint8(s.multicastTTL)
	if s.underlayMTU < 0 || (s.underlayMTU != 0 && s.underlayMTU < 128) || s.underlayMTU > 65535 {
		return nil, fmt.Errorf("--underlay-mtu %d out of range: valid MTUs are 128..65535", s.underlayMTU)
	}
	fam := 0
	setFam := func(flag string, a netip.Addr) error {
		f := 6
		if a.Is4() {
			f = 4
		}
		if fam != 0 && f != fam {
			return fmt.Errorf("--%s %s is IPv%d but the other underlay addresses are IPv%d: the underlay uses one address family", flag, a, f, fam)
		}
		fam = f
		return nil
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
			if a.IsMulticast() {
				return nil, fmt.Errorf("--local %s: want a unicast address (use --group for multicast)", a)
			}
			p.local = a
			if err := setFam("local", a); err != nil {
				return nil, err
			}
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
		if err := setFam("underlay-addr", p.local); err != nil {
			return nil, err
		}
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
			if err := setFam("gateway", g); err != nil {
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

	seenVNI := map[int64]string{}
	seenName := map[string]bool{}
	for i := range o.ifaces {
		ip, err := o.ifaces[i].plan(setFam)
		if err != nil {
			if len(o.ifaces) > 1 {
				return nil, fmt.Errorf("[%s]: %w", o.ifaces[i].name, err)
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
	p.family = fam
	if p.family == 0 {
		p.family = 4
	}
	p.control = s.control
	if p.control == "" {
		p.control = defaultControlPath(p.ifaces[0].name)
	}
	return p, nil
}

// plan validates one interface's options.
func (o *ifaceOptions) plan(setFam func(string, netip.Addr) error) (*ifacePlan, error) {
	if o.vni < 0 {
		return nil, fmt.Errorf("--vni is required: the virtual network identifier, 0..%d", geneve.MaxVNI)
	}
	if o.vni > geneve.MaxVNI {
		return nil, fmt.Errorf("--vni %d out of range: valid VNIs are 0..%d", o.vni, geneve.MaxVNI)
	}
	if o.name == "" || len(o.name) > 15 || strings.ContainsAny(o.name, "/ \t") {
		return nil, fmt.Errorf("--name %q: want 1..15 characters without '/' or spaces (a Linux interface name)", o.name)
	}
	mode, err := endpoint.ParseMode(o.mode)
	if err != nil {
		return nil, fmt.Errorf("--mode: %w", err)
	}
	p := &ifacePlan{name: o.name, overlay: o.overlay, socks5: o.socks5}
	c := &p.cfg
	c.VNI = uint32(o.vni)
	c.Mode = mode
	if len(o.remotes) > 0 && o.group != "" {
		return nil, fmt.Errorf("--remote and --group are exclusive: give unicast remotes or one multicast group")
	}
	if len(o.remotes) == 0 && o.group == "" {
		return nil, fmt.Errorf("--remote or --group is required: where to send Geneve datagrams")
	}
	for _, r := range o.remotes {
		a, err := parseAddrFlag("remote", r)
		if err != nil {
			return nil, err
		}
		if a.IsMulticast() || a.IsUnspecified() {
			return nil, fmt.Errorf("--remote %s: want a unicast address (use --group for multicast)", a)
		}
		if err := setFam("remote", a); err != nil {
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
		if !g.IsMulticast() {
			return nil, fmt.Errorf("--group %s is not a multicast address (IPv4 224.0.0.0/4 or IPv6 ff00::/8)", g)
		}
		if err := setFam("group", g); err != nil {
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
	for _, a := range o.addrs {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("--addr %q: want an address with a prefix length, like 10.0.0.1/24", a)
		}
		c.Addresses = append(c.Addresses, netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()))
	}
	if o.mtu != 0 && (o.mtu < 68 || o.mtu > 65535) {
		return nil, fmt.Errorf("--mtu %d out of range: valid MTUs are 68..65535", o.mtu)
	}
	c.MTU = o.mtu
	ec := &c.Endpoint
	ec.NoLearn = o.noLearn || !o.learn
	if o.maxAddr < 1 || o.maxAddr > endpoint.MaxFDBMax {
		return nil, fmt.Errorf("--max-addr %d out of range: valid sizes are 1..%d", o.maxAddr, endpoint.MaxFDBMax)
	}
	ec.FDBMax = o.maxAddr
	if o.timeout < 1 || o.timeout > int(endpoint.MaxFDBTimeout/time.Second) {
		return nil, fmt.Errorf("--timeout %d out of range: valid timeouts are 1..%d seconds", o.timeout, int(endpoint.MaxFDBTimeout/time.Second))
	}
	ec.FDBTimeout = time.Duration(o.timeout) * time.Second
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
	for _, s := range o.options {
		b, err := parseOption(s)
		if err != nil {
			return nil, err
		}
		ec.Options = append(ec.Options, b...)
	}
	if len(ec.Options) > geneve.MaxOptionsLen {
		return nil, fmt.Errorf("--option: %d bytes of options in all, at most %d fit in a Geneve header", len(ec.Options), geneve.MaxOptionsLen)
	}
	for _, s := range o.acceptOptions {
		t, err := parseOptionType(s)
		if err != nil {
			return nil, err
		}
		ec.KnownCritical = append(ec.KnownCritical, t)
	}
	if (len(o.forwards) > 0 || o.socks5 != "") && p.overlay != "netstack" {
		return nil, fmt.Errorf("--forward and --socks5 need --overlay netstack (with tap/tun, host programs reach the overlay directly)")
	}
	for _, f := range o.forwards {
		fw, err := parseForward(f)
		if err != nil {
			return nil, err
		}
		p.forwards = append(p.forwards, fw)
	}
	if o.socks5 != "" {
		if _, _, err := net.SplitHostPort(o.socks5); err != nil {
			return nil, fmt.Errorf("--socks5 %q: want HOST:PORT, like 127.0.0.1:1080", o.socks5)
		}
	}
	return p, nil
}

// parseForward parses tcp:LISTEN_ADDR:PORT=OVERLAY_IP:PORT.
func parseForward(s string) (forwardSpec, error) {
	proto, rest, ok := strings.Cut(s, ":")
	listen, target, ok2 := strings.Cut(rest, "=")
	if !ok || !ok2 || proto != "tcp" {
		return forwardSpec{}, fmt.Errorf("--forward %q: want tcp:LISTEN_ADDR:PORT=OVERLAY_IP:PORT, like tcp:127.0.0.1:8080=10.0.0.2:80", s)
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return forwardSpec{}, fmt.Errorf("--forward %q: listen address %q: want HOST:PORT", s, listen)
	}
	t, err := netip.ParseAddrPort(target)
	if err != nil {
		return forwardSpec{}, fmt.Errorf("--forward %q: target %q: want OVERLAY_IP:PORT", s, target)
	}
	return forwardSpec{listen: listen, target: t}, nil
}

// defaultControlPath is where the control socket goes without --control.
func defaultControlPath(name string) string {
	dir := "/run/gnv"
	if os.Geteuid() != 0 {
		if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
			dir = filepath.Join(x, "gnv")
		} else {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("gnv-%d", os.Getuid()))
		}
	}
	return filepath.Join(dir, name+".sock")
}

// runningIface is one interface that is up.
type runningIface struct {
	plan   *ifacePlan
	tun    *stack.Tunnel
	extras []io.Closer // forwarders, devices
}

// runUp brings the interfaces up, prints one line each, serves the control
// socket and waits for ctx to end; then it tears everything down. onUp, if
// set, is called once everything is up (tests use it).
func runUp(ctx context.Context, p *upPlan, log *slog.Logger, out io.Writer, onUp func([]*runningIface)) error {
	u, desc, err := openUnderlay(p, log)
	if err != nil {
		return err
	}
	var ifaces []*runningIface
	defer func() {
		for i := len(ifaces) - 1; i >= 0; i-- {
			for _, c := range ifaces[i].extras {
				c.Close()
			}
			ifaces[i].tun.Close()
		}
		u.Close()
	}()
	for i := range p.ifaces {
		ri, err := startIface(ctx, p, &p.ifaces[i], u, log)
		if err != nil {
			return fmt.Errorf("%s: %w", p.ifaces[i].name, err)
		}
		ifaces = append(ifaces, ri)
		fmt.Fprintln(out, ri.summary(desc))
	}
	ctl, err := serveControl(p.control, ifaces, u, log)
	if err != nil {
		log.Warn("control socket unavailable; gnv fdb and gnv stats will not reach this process", "path", p.control, "err", err)
	} else {
		defer ctl.Close()
	}
	if onUp != nil {
		onUp(ifaces)
	}
	var tick <-chan time.Time
	if p.statsInterval > 0 {
		t := time.NewTicker(p.statsInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			for _, ri := range ifaces {
				log.Info("down", "name", ri.plan.name, "stats", ri.tun.Stats().String())
			}
			return nil
		case <-tick:
			for _, ri := range ifaces {
				log.Info("stats", "name", ri.plan.name, "stats", ri.tun.Stats().String())
			}
		}
	}
}

// summary is the one line printed when an interface is up.
func (ri *runningIface) summary(underlay string) string {
	c := &ri.plan.cfg
	var peers []string
	for _, r := range c.Remotes {
		peers = append(peers, r.String())
	}
	if c.Group.IsValid() {
		peers = append(peers, "group "+c.Group.String())
	}
	var addrs []string
	for _, a := range c.Addresses {
		addrs = append(addrs, a.String())
	}
	if len(addrs) == 0 {
		addrs = []string{"none"}
	}
	line := fmt.Sprintf("%s: up, %s vni %d, %s, remote %s, overlay %s addr %s, mtu %d",
		ri.plan.name, c.Mode, c.VNI, underlay, strings.Join(peers, ","), ri.plan.overlay, strings.Join(addrs, ","), ri.tun.MTU())
	if off := ri.tun.Offloads(); off != "" {
		line += ", offloads " + off
	} else {
		line += ", offloads none"
	}
	return line
}

// openUnderlay opens the shared underlay socket.
func openUnderlay(p *upPlan, log *slog.Logger) (*stack.SharedUnderlay, string, error) {
	var pcapW io.Writer
	var pcapFile *os.File
	var pcapBuf *bufio.Writer
	if p.pcap != "" {
		f, err := os.Create(p.pcap)
		if err != nil {
			return nil, "", fmt.Errorf("--pcap: %w", err)
		}
		// Buffered: one write(2) per captured packet would slow the data
		// path. The capture writer serialises its records, and the buffer
		// is flushed when the underlay closes.
		pcapFile, pcapBuf = f, bufio.NewWriterSize(f, 1<<16)
		pcapW = pcapBuf
	}
	localPort := p.localPort
	if localPort == 0 {
		localPort = p.port
	}
	var u stack.Underlay
	var desc string
	switch p.underlay {
	case "udp":
		u = stack.KernelUDPUnderlay{Local: p.local, Device: p.dev, MTU: p.underlayMTU, Pcap: pcapW,
			Checksums: p.checksums(), MulticastTTL: p.multicastTTL, DisableOffloads: p.noOffloads}
		desc = "udp underlay"
	case "packet":
		var err error
		if u, err = packetUnderlay(p, pcapW, log); err != nil {
			if pcapFile != nil {
				pcapFile.Close()
			}
			return nil, "", err
		}
		desc = "packet underlay on " + p.dev
	case "tap":
		u = tapUnderlay(p, pcapW)
		desc = "tap underlay"
		if p.dev != "" {
			desc += " on bridge " + p.dev
		}
	}
	multicast := false
	for _, ip := range p.ifaces {
		multicast = multicast || ip.cfg.Group.IsValid()
	}
	su, err := stack.OpenUnderlay(u, stack.UnderlayOptions{Port: localPort, Family: p.family, Multicast: multicast})
	if err != nil {
		if pcapFile != nil {
			pcapFile.Close()
		}
		return nil, "", err
	}
	if pcapFile != nil {
		su.OnClose(func() {
			pcapBuf.Flush()
			pcapFile.Close()
		})
	}
	la := su.Socket().Transport().LocalAddr()
	desc += " " + la.String()
	if off := su.Offloads(); off != "" {
		desc += " (" + off + ")"
	}
	return su, desc, nil
}

// startIface builds one interface on the shared underlay.
func startIface(ctx context.Context, p *upPlan, ip *ifacePlan, u *stack.SharedUnderlay, log *slog.Logger) (*runningIface, error) {
	cfg := ip.cfg
	cfg.Underlay = u
	cfg.Port = p.port
	cfg.Endpoint.MulticastTTL = p.multicastTTL
	ri := &runningIface{plan: ip}
	switch ip.overlay {
	case "netstack":
	case "tap", "tun":
		cfg.Device = &stack.DeviceConfig{Name: ip.name, DisableOffloads: p.noOffloads}
	}
	tun, err := stack.New(cfg)
	if err != nil {
		return nil, err
	}
	ri.tun = tun
	for _, f := range ip.forwards {
		fw, err := startForward(ctx, tun, f, log)
		if err != nil {
			tun.Close()
			return nil, err
		}
		ri.extras = append(ri.extras, fw)
	}
	if ip.socks5 != "" {
		s, err := startSOCKS5(ctx, tun, ip.socks5, log)
		if err != nil {
			for _, c := range ri.extras {
				c.Close()
			}
			tun.Close()
			return nil, err
		}
		ri.extras = append(ri.extras, s)
	}
	return ri, nil
}

// controlIface finds an interface by name, or the only one.
func controlIface(ifaces []*runningIface, name string) (*runningIface, error) {
	if name == "" && len(ifaces) == 1 {
		return ifaces[0], nil
	}
	for _, ri := range ifaces {
		if ri.plan.name == name {
			return ri, nil
		}
	}
	var names []string
	for _, ri := range ifaces {
		names = append(names, ri.plan.name)
	}
	return nil, fmt.Errorf("no interface %q (have %s)", name, strings.Join(names, ", "))
}

// serveControl answers gnv fdb / gnv stats on a unix socket: one request
// line, a reply, and "ok" or "error: ..." as the last line.
func serveControl(path string, ifaces []*runningIface, u *stack.SharedUnderlay, log *slog.Logger) (io.Closer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(path, 0o600)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil && line == "" {
					return
				}
				w := bufio.NewWriter(c)
				if err := handleControl(w, strings.Fields(line), ifaces, u); err != nil {
					fmt.Fprintf(w, "error: %v\n", err)
				} else {
					fmt.Fprintln(w, "ok")
				}
				w.Flush()
			}()
		}
	}()
	log.Debug("control socket", "path", path)
	return ln, nil
}

// handleControl runs one control request: "stats NAME", "fdb show NAME",
// "fdb add NAME MAC REMOTE", "fdb del NAME MAC", "fdb flush NAME",
// "fdb flushall NAME" (NAME may be "-" for the only interface).
func handleControl(w io.Writer, f []string, ifaces []*runningIface, u *stack.SharedUnderlay) error {
	if len(f) < 2 {
		return fmt.Errorf("bad request")
	}
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "stats":
		name := arg(1)
		if name == "-" {
			name = ""
		}
		for _, ri := range ifaces {
			if name != "" && ri.plan.name != name {
				continue
			}
			fmt.Fprintf(w, "%s: %s\n", ri.plan.name, ri.tun.Stats())
			if fdb := ri.tun.Endpoint().FDB(); fdb != nil {
				st := fdb.Stats()
				fmt.Fprintf(w, "%s: fdb count %d max %d learned %d moved %d nospace %d expired %d\n", ri.plan.name, st.Count, st.Max, st.Learned, st.Moved, st.NoSpace, st.Expired)
			}
		}
		ss := u.Socket().Stats()
		fmt.Fprintf(w, "socket: %s\n", ss)
		return nil
	case "fdb":
		name := arg(2)
		if name == "-" {
			name = ""
		}
		ri, err := controlIface(ifaces, name)
		if err != nil {
			return err
		}
		fdb := ri.tun.Endpoint().FDB()
		if fdb == nil {
			return fmt.Errorf("%s is an l3 interface: it has no forwarding table", ri.plan.name)
		}
		switch arg(1) {
		case "show":
			for _, e := range fdb.Dump() {
				fmt.Fprintln(w, e)
			}
			return nil
		case "flush":
			fdb.Flush()
			return nil
		case "flushall":
			fdb.FlushAll()
			return nil
		case "add":
			mac, err := net.ParseMAC(arg(3))
			if err != nil {
				return fmt.Errorf("mac %q: want like 02:00:00:00:00:01", arg(3))
			}
			remote, err := netip.ParseAddrPort(arg(4))
			if err != nil {
				a, err2 := netip.ParseAddr(arg(4))
				if err2 != nil {
					return fmt.Errorf("remote %q: want ADDR or ADDR:PORT", arg(4))
				}
				remote = netip.AddrPortFrom(a.Unmap(), 0)
			}
			return fdb.AddStatic(mac, remote)
		case "del":
			mac, err := net.ParseMAC(arg(3))
			if err != nil {
				return fmt.Errorf("mac %q: want like 02:00:00:00:00:01", arg(3))
			}
			return fdb.Remove(mac)
		}
		return fmt.Errorf("fdb %q: valid commands are show, add, del, flush and flushall", arg(1))
	}
	return fmt.Errorf("unknown request %q", f[0])
}
