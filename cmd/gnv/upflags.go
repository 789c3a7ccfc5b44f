package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/spf13/pflag"
)

// ifaceOptions are the settings of one Geneve interface.
type ifaceOptions struct {
	name            string
	vni             int64
	vniSet          bool // --vni was given
	mode            string
	remotes         []string
	group           string
	overlay         string
	addrs           []string
	mtu             uint32
	learn           bool
	noLearn         bool
	maxAddr         int
	timeout         int
	ttl             string
	tos             int
	dscpInherit     bool
	flowLabel       bool
	df              string
	portRange       string
	acceptAnySource bool
	noGSO           bool
	options         []string
	acceptOptions   []string
	forwards        []string
	exposes         []string
	socks5          string
	httpProxy       string
	dns             []string
	vmListen        []string
	mac             string
	evpn            bool // set by upOptions.plan: --evpn-asn was given
	learnGiven      bool // --learn or --no-learn was given
}

// socketOptions are the settings of the underlay socket, shared by every
// interface of one gnv up.
type socketOptions struct {
	underlay      string
	local         string
	port          uint16
	localPort     uint16
	dev           string
	underlayAddr  string
	gateway       string
	udpCsum       bool
	udp6ZeroTx    bool
	udp6ZeroRx    bool
	pcap          string
	logLevel      string
	control       string
	config        string
	multicastTTL  int
	underlayMAC   string
	noOffloads    bool
	underlayMTU   int
	statsInterval time.Duration
	metrics       string
	evpn          evpnFlags
}

// upOptions is everything gnv up was told.
type upOptions struct {
	sock   socketOptions
	ifaces []ifaceOptions
	check  bool // --check: validate and exit
}

// commandLineFlags may only be given on the command line, not in a
// --config file.
var commandLineFlags = map[string]bool{"check": true}

// socketFlags are the flag names that configure the shared socket; in a
// config file they may only appear before the first section.
var socketFlags = map[string]bool{}

// aliases maps FreeBSD geneve(4) keywords to gnv's flag names.
var aliases = map[string]string{
	"geneveid": "vni", "genevemode": "mode", "genevelocal": "local", "geneveremote": "remote",
	"genevegroup": "group", "genevedev": "dev", "geneveremoteport": "port", "genevelocalport": "local-port",
	"geneveportrange": "port-range", "genevetimeout": "timeout", "genevemaxaddr": "max-addr",
	"genevettl": "ttl", "genevedf": "df", "genevedscpinherit": "dscp-inherit", "genevelearn": "learn",
}

// normalize maps geneve(4) keywords to flag names, for pflag.
func normalize(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if n, ok := aliases[name]; ok {
		return pflag.NormalizedName(n)
	}
	return pflag.NormalizedName(name)
}

func addSocketFlags(fs *pflag.FlagSet, s *socketOptions) {
	before := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { before[f.Name] = true })
	fs.StringVar(&s.underlay, "underlay", "udp", "underlay: udp (a kernel UDP socket, no privileges), packet (netstack on an AF_PACKET socket on --dev) or tap (netstack on a TAP device, a port of the bridge --dev; TCP super-packets cross the kernel whole on Linux 6.17+)")
	fs.StringVar(&s.local, "local", "", "local underlay address to bind (genevelocal); udp: default the wildcard address")
	fs.Uint16Var(&s.port, "port", geneve.Port, "Geneve UDP port to send to (geneveremoteport)")
	fs.Uint16Var(&s.localPort, "local-port", 0, "UDP port to receive on (genevelocalport); default --port")
	fs.StringVar(&s.dev, "dev", "", "underlay interface: the multicast interface (udp), the AF_PACKET interface (packet) or the bridge to join (tap) (genevedev)")
	fs.StringVar(&s.underlayAddr, "underlay-addr", "", "packet, tap: the netstack's underlay address with prefix, like 192.0.2.1/24")
	fs.StringVar(&s.gateway, "gateway", "", "packet, tap: the underlay default gateway")
	fs.StringVar(&s.underlayMAC, "underlay-mac", "", "packet, tap: the netstack's MAC (default: a random one; packet puts --dev in promiscuous mode)")
	fs.IntVar(&s.underlayMTU, "underlay-mtu", 0, "underlay IP MTU (default: the interface's, 1500 when unknown)")
	fs.BoolVar(&s.noOffloads, "no-offloads", false, "turn off UDP GSO/GRO and virtio-net offloads")
	fs.BoolVar(&s.udpCsum, "udpcsum", true, "send outer IPv4 UDP checksums (false sends zero)")
	fs.BoolVar(&s.udp6ZeroTx, "udp6zerocsumtx", false, "send outer IPv6 UDP checksums as zero (RFC 8926 §4.3.1; only in a controlled network)")
	fs.BoolVar(&s.udp6ZeroRx, "udp6zerocsumrx", false, "accept outer IPv6 UDP datagrams with a zero checksum")
	fs.IntVar(&s.multicastTTL, "multicast-ttl", 0, "TTL of datagrams sent to a group (default: the interface TTL)")
	fs.StringVar(&s.pcap, "pcap", "", "write the underlay traffic to this pcap file; flushed every 0.5 s and on exit, so it can be read while gnv runs")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&s.control, "control", "", controlFlagHelp("--name, or the first [section] of --config")+"; a live gnv up on it stops this one from starting")
	fs.StringVar(&s.config, "config", "", "read interfaces from this file (see gnv up --help)")
	fs.DurationVar(&s.statsInterval, "stats-interval", 0, "log the counters at this interval (0: only at exit)")
	addEVPNFlags(fs, &s.evpn)
	fs.StringVar(&s.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics, like 127.0.0.1:9108 (every gnv stats counter, drops by reason, forwarding-table gauges; go_* and process_*)")
	fs.VisitAll(func(f *pflag.Flag) {
		if !before[f.Name] {
			socketFlags[f.Name] = true
		}
	})
}

func addIfaceFlags(fs *pflag.FlagSet, o *ifaceOptions) {
	fs.StringVar(&o.name, "name", "gnv0", "interface name (TAP/TUN device name, log and control name)")
	fs.Int64Var(&o.vni, "vni", 0, "virtual network identifier, 0..16777215 (geneveid); required")
	fs.StringVar(&o.mode, "mode", "l2", "l2 (Ethernet inside) or l3 (IP inside) (genevemode)")
	fs.StringArrayVar(&o.remotes, "remote", nil, "unicast peer; repeat for head-end replication (geneveremote)")
	fs.StringVar(&o.group, "group", "", "multicast group instead of remotes (genevegroup)")
	fs.StringVar(&o.overlay, "overlay", "", "overlay: tap (l2 default), tun (l3 default) or netstack (in-process, no privileges)")
	fs.StringArrayVar(&o.addrs, "addr", nil, "overlay address with prefix, like 10.0.0.1/24; repeatable")
	fs.Uint32Var(&o.mtu, "mtu", 0, "overlay MTU (default: from the underlay MTU and the options)")
	fs.StringVar(&o.mac, "mac", "", "l2: the overlay MAC (default: derived from this host's machine ID, --name, --vni and the local underlay address, so it is the same after a restart)")
	fs.BoolVar(&o.learn, "learn", true, "learn the forwarding table from received frames (genevelearn)")
	fs.BoolVar(&o.noLearn, "no-learn", false, "do not learn (same as --learn=false)")
	fs.IntVar(&o.maxAddr, "max-addr", endpoint.DefaultFDBMax, fmt.Sprintf("forwarding table size, 1..%d (genevemaxaddr)", endpoint.MaxFDBMax))
	fs.IntVar(&o.timeout, "timeout", int(endpoint.DefaultFDBTimeout/time.Second), "forwarding entry timeout in seconds, 1..86400 (genevetimeout)")
	fs.StringVar(&o.ttl, "ttl", "64", "outer TTL, 1..255, or inherit (genevettl)")
	fs.IntVar(&o.tos, "tos", 0, "outer DSCP as a TOS byte, 0..255 (the ECN bits always follow RFC 6040)")
	fs.BoolVar(&o.dscpInherit, "dscp-inherit", false, "copy the inner DSCP to the outer header (genevedscpinherit)")
	fs.StringVar(&o.df, "df", "unset", "outer DF bit: set, inherit or unset (genevedf)")
	fs.BoolVar(&o.flowLabel, "flowlabel", false, "IPv6 underlay: outer flow label from the inner flow hash (packet underlay; a udp underlay uses the kernel's per-socket label)")
	fs.StringVar(&o.portRange, "port-range", "", "outer source port range MIN-MAX (geneveportrange; also MIN MAX); default 32768-61000; packet and tap underlays only: a udp underlay sends from ports the kernel picks")
	fs.BoolVar(&o.acceptAnySource, "accept-any-source", false, "accept Geneve from any outer source, not only the remotes")
	fs.BoolVar(&o.noGSO, "no-gso", false, "netstack overlay: send MSS-sized TCP segments instead of 64 KB super-packets (slower on a clean path, but TCP recovers faster from underlay loss, even 1%)")
	fs.StringArrayVar(&o.options, "option", nil, "option to send on every packet, CLASS:TYPE:HEXDATA (data a multiple of 4 bytes); repeatable")
	fs.StringArrayVar(&o.acceptOptions, "accept-option", nil, "critical option this tunnel understands, CLASS:TYPE; repeatable")
	fs.StringArrayVar(&o.forwards, "forward", nil, "netstack overlay: forward a host port into the overlay, tcp|udp:HOST_ADDR:PORT=OVERLAY_ADDR:PORT; repeatable")
	fs.StringArrayVar(&o.exposes, "expose", nil, "netstack overlay: listen in the overlay and forward to a host target, tcp|udp:OVERLAY_ADDR:PORT=HOST:PORT; repeatable")
	fs.StringVar(&o.socks5, "socks5", "", "netstack overlay: serve SOCKS5 (CONNECT, UDP ASSOCIATE) on this host address, dialling into the overlay")
	fs.StringArrayVar(&o.vmListen, "vm-listen", nil, "l2: a socket where VMs attach as ports of the overlay, unix:PATH (QEMU -netdev stream) or unixgram:PATH (QEMU -netdev dgram, vfkit); repeatable")
	fs.StringVar(&o.httpProxy, "http-proxy", "", "netstack overlay: serve an HTTP proxy (CONNECT and absolute-form requests) on this host address, dialling into the overlay")
	fs.StringArrayVar(&o.dns, "dns", nil, "netstack overlay: a DNS server in the overlay, ADDR or ADDR:PORT (port 53), that the proxies and forwards look names up with; repeatable")
}

// newUpFlags builds gnv up's flag set.
func newUpFlags(o *upOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("gnv up", pflag.ContinueOnError)
	fs.SetNormalizeFunc(normalize)
	fs.SortFlags = false
	fs.BoolVar(&o.check, "check", false, "validate the configuration (flags and --config file) and exit: 0 if gnv up would start, 2 if not; opens nothing")
	addSocketFlags(fs, &o.sock)
	o.ifaces = []ifaceOptions{{}}
	addIfaceFlags(fs, &o.ifaces[0])
	fs.Usage = func() { fmt.Fprint(fs.Output(), upUsage+fs.FlagUsages()) }
	return fs
}

// joinPortRange turns "--port-range MIN MAX" into "--port-range MIN-MAX",
// so the geneve(4) spelling works with a flag parser that takes one value.
func joinPortRange(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if (a == "--port-range" || a == "--geneveportrange") && i+2 < len(args) && isNumber(args[i+1]) && isNumber(args[i+2]) {
			out = append(out, a+"="+args[i+1]+"-"+args[i+2])
			i += 2
			continue
		}
		out = append(out, a)
	}
	return out
}

func isNumber(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// parseUp parses gnv up's command line and, with --config, the file.
// --help prints the usage to help.
func parseUp(args []string, help io.Writer) (*upOptions, error) {
	o := &upOptions{}
	fs := newUpFlags(o)
	fs.SetOutput(help)
	if err := fs.Parse(joinPortRange(args)); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	o.ifaces[0].vniSet = fs.Changed("vni")
	o.ifaces[0].learnGiven = fs.Changed("learn") || fs.Changed("no-learn")
	if o.sock.config != "" {
		ifaceFlagSet := map[string]bool{}
		fs.Visit(func(f *pflag.Flag) {
			if !socketFlags[f.Name] && !commandLineFlags[f.Name] {
				ifaceFlagSet[f.Name] = true
			}
		})
		if len(ifaceFlagSet) > 0 {
			return nil, fmt.Errorf("--config: interface settings go in the file's sections, not on the command line (got --%s)", firstKey(ifaceFlagSet))
		}
		if err := readConfig(o, fs); err != nil {
			return nil, err
		}
	}
	return o, nil
}

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// readConfig reads the --config file: "key = value" lines with the long
// flag names (or geneve(4) keywords) as keys. Lines before the first
// "[name]" section set the shared socket; each section is one interface
// (named after the section) with its own VNI. A VNI may appear once.
//
//	underlay = udp
//	local = 192.0.2.1
//	[gnv0]
//	vni = 100
//	remote = 192.0.2.2
//	addr = 10.0.0.1/24
//	[gnv1]
//	vni = 200
//	mode = l3
//	remote = 192.0.2.3
func readConfig(o *upOptions, global *pflag.FlagSet) error {
	f, err := os.Open(o.sock.config)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	var sections [][]string
	var names []string
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' || text[0] == ';' {
			continue
		}
		where := fmt.Sprintf("%s:%d", o.sock.config, line)
		if text[0] == '[' {
			if !strings.HasSuffix(text, "]") || len(text) < 3 {
				return fmt.Errorf("%s: section header %q: want [name]", where, text)
			}
			names = append(names, strings.TrimSpace(text[1:len(text)-1]))
			sections = append(sections, nil)
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return fmt.Errorf("%s: %q: want key = value", where, text)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		name := string(normalize(nil, key))
		if commandLineFlags[name] {
			return fmt.Errorf("%s: %s is a command-line flag, not a setting", where, key)
		}
		if len(sections) == 0 {
			if !socketFlags[name] {
				return fmt.Errorf("%s: %s is an interface setting: put it in a [name] section", where, key)
			}
			if name == "config" {
				return fmt.Errorf("%s: config cannot be nested", where)
			}
			if err := global.Set(name, value); err != nil {
				return fmt.Errorf("%s: %s: %w", where, key, err)
			}
			continue
		}
		if socketFlags[name] {
			return fmt.Errorf("%s: %s sets the shared socket: put it before the first section", where, key)
		}
		sections[len(sections)-1] = append(sections[len(sections)-1], "--"+name+"="+value)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	if len(sections) == 0 {
		return fmt.Errorf("--config %s: no [name] section: the file must describe at least one interface", o.sock.config)
	}
	o.ifaces = nil
	for i, args := range sections {
		var io ifaceOptions
		fs := pflag.NewFlagSet(names[i], pflag.ContinueOnError)
		fs.SetNormalizeFunc(normalize)
		addIfaceFlags(fs, &io)
		if err := fs.Parse(joinPortRange(args)); err != nil {
			return fmt.Errorf("--config %s: [%s]: %w", o.sock.config, names[i], err)
		}
		io.name = names[i]
		io.vniSet = fs.Changed("vni")
		io.learnGiven = fs.Changed("learn") || fs.Changed("no-learn")
		o.ifaces = append(o.ifaces, io)
	}
	return nil
}

// parseOption parses CLASS:TYPE:HEXDATA into option TLV bytes.
func parseOption(s string) ([]byte, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("--option %q: want CLASS:TYPE:HEXDATA, like 0xffff:0x01:11223344", s)
	}
	class, err := strconv.ParseUint(parts[0], 0, 16)
	if err != nil {
		return nil, fmt.Errorf("--option %q: class %q: want 0..0xffff", s, parts[0])
	}
	typ, err := strconv.ParseUint(parts[1], 0, 8)
	if err != nil {
		return nil, fmt.Errorf("--option %q: type %q: want 0..0xff (0x80 and above are critical)", s, parts[1])
	}
	data, err := hex.DecodeString(strings.TrimPrefix(parts[2], "0x"))
	if err != nil {
		return nil, fmt.Errorf("--option %q: data: want hex digits", s)
	}
	b, err := geneve.AppendOption(nil, geneve.Option{Class: uint16(class), Type: uint8(typ), Data: data})
	if err != nil {
		return nil, fmt.Errorf("--option %q: data is %d bytes: want a multiple of 4, at most %d", s, len(data), geneve.MaxOptionDataLen)
	}
	return b, nil
}

// parseOptionType parses CLASS:TYPE.
func parseOptionType(s string) (endpoint.OptionType, error) {
	c, t, ok := strings.Cut(s, ":")
	class, err1 := strconv.ParseUint(c, 0, 16)
	typ, err2 := strconv.ParseUint(t, 0, 8)
	if !ok || err1 != nil || err2 != nil {
		return endpoint.OptionType{}, fmt.Errorf("--accept-option %q: want CLASS:TYPE, like 0xffff:0x81", s)
	}
	return endpoint.OptionType{Class: uint16(class), Type: uint8(typ)}, nil
}

// parsePortRange parses MIN-MAX.
func parsePortRange(s string) (uint16, uint16, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.ParseUint(a, 10, 16)
	hi, err2 := strconv.ParseUint(b, 10, 16)
	if !ok || err1 != nil || err2 != nil || lo == 0 || lo > hi {
		return 0, 0, fmt.Errorf("--port-range %q: want MIN-MAX (or MIN MAX) with 1 <= MIN <= MAX <= 65535", s)
	}
	return uint16(lo), uint16(hi), nil
}

// parseAddrFlag parses an address flag value.
func parseAddrFlag(flag, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--%s %q: not an IP address", flag, s)
	}
	return a.Unmap(), nil
}

var errUsage = errors.New("usage")
