package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
)

func planArgs(args ...string) (*upPlan, error) {
	o, err := parseUp(args, io.Discard)
	if err != nil {
		return nil, err
	}
	return o.plan()
}

// TestUpFlagErrors checks that every invalid combination is refused with
// an error that names the flag.
func TestUpFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--remote", "192.0.2.2"}, "--vni is required"},
		{[]string{"--vni", "16777216", "--remote", "192.0.2.2"}, "--vni 16777216 out of range: valid VNIs are 0..16777215"},
		{[]string{"--vni", "-5", "--remote", "192.0.2.2"}, "--vni -5 out of range: valid VNIs are 0..16777215"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--port-range", "40000-40100"}, "--port-range 40000-40100: a udp underlay cannot honour a source port range"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--overlay", "netstack", "--socks5", "127.0.0.1:1080", "--forward", "tcp:127.0.0.1:1080=10.0.0.2:80"}, "--socks5 127.0.0.1:1080 listens on 127.0.0.1:1080, as --forward tcp:127.0.0.1:1080=10.0.0.2:80 already does"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--overlay", "netstack", "--forward", "tcp:0.0.0.0:8080=10.0.0.2:80", "--forward", "tcp:127.0.0.1:8080=10.0.0.3:80"}, "listens on 127.0.0.1:8080, as --forward tcp:0.0.0.0:8080=10.0.0.2:80 already does"},
		{[]string{"--vni", "1"}, "--remote or --group is required"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--group", "239.1.1.1"}, "--remote and --group are exclusive"},
		{[]string{"--vni", "1", "--group", "192.0.2.9"}, "--group 192.0.2.9 is not a multicast address"},
		{[]string{"--vni", "1", "--remote", "2001:db8::2", "--local", "192.0.2.1"}, "IPv6 but the other underlay addresses are IPv4"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--underlay", "packet"}, "--underlay packet needs --dev"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--underlay", "packet", "--dev", "eth1"}, "--underlay packet needs --underlay-addr"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--gateway", "192.0.2.254"}, "--gateway applies to --underlay packet and tap only"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--underlay", "raw"}, `--underlay "raw": valid underlays are udp, packet and tap`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--underlay", "tap"}, "--underlay tap needs --underlay-addr"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--mode", "l3", "--overlay", "tap"}, "--overlay tap carries Ethernet frames"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--overlay", "tun"}, "--overlay tun carries IP packets"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--overlay", "veth"}, "valid overlays are tap, tun and netstack"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--mode", "l3", "--remote", "192.0.2.3"}, "an l3 tunnel has one remote"},
		{[]string{"--vni", "1", "--remote", "not-an-ip"}, `--remote "not-an-ip": not an IP address`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--addr", "10.0.0.1"}, `--addr "10.0.0.1": want an address with a prefix length`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--mtu", "20"}, "--mtu 20 out of range: valid MTUs are 68..65535"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--ttl", "256"}, `--ttl "256": want 1..255 or inherit`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--df", "maybe"}, `--df "maybe": valid values are set, inherit and unset`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--max-addr", "0"}, "--max-addr 0 out of range"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--timeout", "90000"}, "--timeout 90000 out of range: valid timeouts are 1..86400 seconds"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--port-range", "5000", "4000"}, `--port-range "5000-4000": want MIN-MAX`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--option", "0xffff:1:112233"}, "data is 3 bytes: want a multiple of 4"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--forward", "tcp:127.0.0.1:80=10.0.0.2:80"}, "--forward, --expose, --socks5, --http-proxy and --dns need --overlay netstack"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--log-level", "loud"}, `--log-level "loud": valid levels are debug, info, warn and error`},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--name", "a/b", "--overlay", "netstack"}, `--name "a/b": want 1..64 bytes, none of them '/'`},
	} {
		_, err := planArgs(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to contain %q", c.args, err, c.want)
		}
	}
}

// TestNameRules checks --name on each system: a file name everywhere (the
// control socket's), a Linux interface name for a Linux device, and the
// device macOS is asked for.
func TestNameRules(t *testing.T) {
	long := strings.Repeat("n", 16)
	for _, c := range []struct {
		name, overlay, goos string
		ok                  bool
	}{
		{"gnv0", "tap", "linux", true},
		{long, "tap", "linux", false},
		{"gnv 0", "tun", "linux", false},
		{long, "netstack", "linux", true},
		{"my tunnel", "netstack", "linux", true},
		{"Ethernet 2", "tap", "windows", true},
		{"Local Area Connection 12", "tun", "windows", true},
		{"utun7", "tun", "darwin", true},
		{"", "netstack", "darwin", false},
		{"a/b", "netstack", "windows", false},
		{`a\b`, "tun", "windows", false},
		{"c:", "tun", "windows", false},
		{"a\nb", "netstack", "linux", false},
		{strings.Repeat("n", 65), "netstack", "darwin", false},
	} {
		if err := checkName(c.name, c.overlay, c.goos); (err == nil) != c.ok {
			t.Errorf("checkName(%q, %s, %s) = %v, want ok %v", c.name, c.overlay, c.goos, err, c.ok)
		}
	}
	for _, c := range []struct{ name, goos, want string }{
		{"gnv0", "linux", "gnv0"},
		{"Ethernet 2", "windows", "Ethernet 2"},
		{"utun7", "darwin", "utun7"},
		{"gnv0", "darwin", ""},
		{"utun", "darwin", ""},
		{"utun1x", "darwin", ""},
	} {
		if got := deviceName(c.name, c.goos); got != c.want {
			t.Errorf("deviceName(%q, %s) = %q, want %q", c.name, c.goos, got, c.want)
		}
	}
}

// TestUpFlagAliases checks the geneve(4) keywords and the two-argument
// port range.
func TestUpFlagAliases(t *testing.T) {
	p, err := planArgs("--geneveid", "42", "--genevemode", "l2", "--geneveremote", "192.0.2.2", "--genevettl", "inherit",
		"--genevedf", "inherit", "--genevedscpinherit", "--genevemaxaddr", "5000", "--genevetimeout", "60",
		"--geneveportrange", "40000", "40100", "--genevelearn=false", "--genevelocal", "192.0.2.1", "--geneveremoteport", "7000",
		"--addr", "10.0.0.1/24", "--overlay", "netstack", "--underlay", "packet", "--genevedev", "eth1", "--underlay-addr", "192.0.2.1/24")
	if err != nil {
		t.Fatal(err)
	}
	c := p.ifaces[0].cfg
	ec := c.Endpoint
	if c.VNI != 42 || c.Mode != endpoint.L2 || !ec.TTLInherit || ec.DF != endpoint.DFInherit || !ec.DSCPInherit ||
		ec.FDBMax != 5000 || ec.FDBTimeout != time.Minute || ec.SrcPortMin != 40000 || ec.SrcPortMax != 40100 || !ec.NoLearn ||
		p.local.String() != "192.0.2.1" || p.port != 7000 {
		t.Errorf("plan %+v / %+v", p, c)
	}
}

// TestUpConfigFile checks a two-interface config file sharing one socket.
func TestUpConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gnv.conf")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`# two VNIs over one socket
underlay = udp
local = 192.0.2.1
[gnv0]
vni = 100
remote = 192.0.2.2
addr = 10.0.0.1/24
overlay = netstack
[gnv1]
geneveid = 200
mode = l3
remote = 192.0.2.3
overlay = netstack
`)
	p, err := planArgs("--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ifaces) != 2 || p.ifaces[0].name != "gnv0" || p.ifaces[1].cfg.VNI != 200 || p.ifaces[1].cfg.Mode != endpoint.L3 || p.local.String() != "192.0.2.1" {
		t.Fatalf("plan %+v", p)
	}
	for _, c := range []struct{ file, want string }{
		{"[a]\nvni = 1\nremote = 192.0.2.2\n[b]\nvni = 1\nremote = 192.0.2.3\n", "vni 1 is already used by [a]"},
		{"vni = 1\n", "vni is an interface setting: put it in a [name] section"},
		{"[a]\nvni = 1\nremote = 192.0.2.2\nunderlay = packet\n", "underlay sets the shared socket: put it before the first section"},
		{"underlay = udp\n", "no [name] section"},
		{"[a]\nvni 1\n", "want key = value"},
		{"[a]\nvni = 1\nremote = 192.0.2.2\nbogus = 3\n", "unknown flag: --bogus"},
		{"[a]\nvni = 1\nremote = 192.0.2.2\noverlay = netstack\nsocks5 = 127.0.0.1:1080\n[b]\nvni = 2\nremote = 192.0.2.3\noverlay = netstack\nsocks5 = 127.0.0.1:1080\n",
			"[b] --socks5 127.0.0.1:1080 listens on 127.0.0.1:1080, as [a] --socks5 127.0.0.1:1080 already does"},
		{"[a]\nvni = 1\nremote = 192.0.2.2\noverlay = netstack\nforward = tcp:0.0.0.0:80=10.0.0.2:80\n[b]\nvni = 2\nremote = 192.0.2.3\noverlay = netstack\nforward = tcp:127.0.0.1:80=10.1.0.2:80\n",
			"[b] --forward tcp:127.0.0.1:80=10.1.0.2:80 listens on 127.0.0.1:80, as [a] --forward tcp:0.0.0.0:80=10.0.0.2:80 already does"},
		{"[a]\nvni = 1\nremote = 192.0.2.2\nport-range = 40000-40100\n", "--port-range 40000-40100: a udp underlay cannot honour"},
		{"check = true\n[a]\nvni = 1\nremote = 192.0.2.2\n", "check is a command-line flag"},
		{"[a]\nvni = -5\nremote = 192.0.2.2\n", "--vni -5 out of range"},
		{"[a]\nremote = 192.0.2.2\n", "--vni is required"},
	} {
		write(c.file)
		if _, err := planArgs("--config", path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.file, err, c.want)
		}
	}
	if _, err := planArgs("--config", path, "--vni", "3"); err == nil || !strings.Contains(err.Error(), "interface settings go in the file's sections") {
		t.Errorf("--config with --vni: %v", err)
	}
}

// TestUpServicesPlan checks --no-gso and the checks on forwards, exposes
// and proxies made before anything starts.
func TestUpServicesPlan(t *testing.T) {
	base := []string{"--vni", "1", "--remote", "192.0.2.2", "--overlay", "netstack", "--addr", "10.0.0.1/24"}
	p, err := planArgs(append(base, "--no-gso", "--expose", "udp:10.0.0.1:53=127.0.0.1:53", "--expose", "tcp:0.0.0.0:80=127.0.0.1:8080",
		"--forward", "udp:127.0.0.1:5353=10.0.0.2:53", "--http-proxy", "127.0.0.1:3128")...)
	if err != nil {
		t.Fatal(err)
	}
	ip := p.ifaces[0]
	if !ip.cfg.Endpoint.DisableGSO || len(ip.exposes) != 2 || len(ip.forwards) != 1 || ip.forwards[0].Proto != "udp" || ip.httpProxy != "127.0.0.1:3128" {
		t.Errorf("plan %+v", ip)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--expose", "tcp:127.0.0.1:80=127.0.0.1:8080"}, "--expose tcp:127.0.0.1:80=127.0.0.1:8080: 127.0.0.1 is not an overlay address"},
		{[]string{"--expose", "tcp:[fd00::1]:80=127.0.0.1:8080"}, "is not an overlay address of this interface (have 10.0.0.1)"},
		{[]string{"--forward", "sctp:127.0.0.1:80=10.0.0.2:80"}, "--forward: "},
		{[]string{"--socks5", "127.0.0.1:1080", "--http-proxy", "127.0.0.1:1080"}, "--http-proxy 127.0.0.1:1080 listens on 127.0.0.1:1080, as --socks5 127.0.0.1:1080 already does"},
		{[]string{"--forward", "tcp:127.0.0.1:80=10.0.0.2:80", "--forward", "tcp:127.0.0.1:80=10.0.0.3:80"}, "as --forward tcp:127.0.0.1:80=10.0.0.2:80 already does"},
		{[]string{"--expose", "udp:10.0.0.1:53=127.0.0.1:53", "--expose", "udp:10.0.0.1:53=127.0.0.1:5353"}, "udp:10.0.0.1:53 is already used"},
		{[]string{"--forward", "udp:127.0.0.1:53=10.0.0.2:53", "--forward", "tcp:127.0.0.1:53=10.0.0.2:53"}, ""}, // another protocol: no collision
		{[]string{"--http-proxy", "3128"}, "--http-proxy \"3128\": want ADDR:PORT"},
	} {
		_, err := planArgs(append(base, c.args...)...)
		if c.want == "" {
			if err != nil {
				t.Errorf("%v: %v", c.args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
}
