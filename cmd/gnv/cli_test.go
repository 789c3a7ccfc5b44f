package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// runCLI runs the gnv command line in process.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// TestCLIConventions: help goes to stdout with exit status 0, every
// command-line error to stderr, naming the flag or argument, with exit
// status 2; nothing is silent.
func TestCLIConventions(t *testing.T) {
	dir := t.TempDir()
	conf := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	socksTwice := conf("socks.conf", "[a]\nvni = 1\nremote = 192.0.2.2\noverlay = netstack\nsocks5 = 127.0.0.1:1080\n"+
		"[b]\nvni = 2\nremote = 192.0.2.3\noverlay = netstack\nsocks5 = 127.0.0.1:1080\n")
	fwdTwice := conf("fwd.conf", "[a]\nvni = 1\nremote = 192.0.2.2\noverlay = netstack\nforward = tcp:127.0.0.1:8080=10.0.0.2:80\n"+
		"[b]\nvni = 2\nremote = 192.0.2.3\noverlay = netstack\nforward = tcp:127.0.0.1:8080=10.1.0.2:80\n")
	up := func(args ...string) []string {
		return append([]string{"up", "--vni", "1", "--remote", "192.0.2.2"}, args...)
	}
	for _, c := range []struct {
		args       []string
		code       int
		stdout     []string // substrings of stdout
		stderr     []string // substrings of stderr; nil: stderr must be empty
		noStdout   bool
		stderrOnly bool
	}{
		{args: []string{"--help"}, stdout: []string{"commands:", "demo", "up", "fdb", "stats", "version"}},
		{args: []string{"-h"}, stdout: []string{"commands:"}},
		{args: []string{"help"}, stdout: []string{"commands:"}},
		{args: []string{"help", "up"}, stdout: []string{"usage: gnv up", "--vni", "--check"}},
		{args: []string{"up", "--help"}, stdout: []string{"usage: gnv up", "--control", "XDG_RUNTIME_DIR"}},
		{args: []string{"demo", "--help"}, stdout: []string{"usage: gnv demo", "--underlay"}},
		{args: []string{"stats", "--help"}, stdout: []string{"usage: gnv stats", "--control"}},
		{args: []string{"fdb", "--help"}, stdout: []string{"usage: gnv fdb", "--name"}},
		{args: []string{"--version"}, stdout: []string{"gnv ", runtime.GOOS + "/" + runtime.GOARCH}},
		{args: []string{"version"}, stdout: []string{"gnv ", "revision"}},
		{args: []string{"help", "version"}, stdout: []string{"usage: gnv version"}},
		{args: []string{"help", "show"}, stdout: []string{"usage: gnv show", "--json"}},
		{args: []string{"forward", "--help"}, stdout: []string{"usage: gnv forward list", "HOST_ADDR:PORT=OVERLAY_ADDR:PORT"}},
		{args: []string{"help", "expose"}, stdout: []string{"usage: gnv expose", "OVERLAY_ADDR:PORT=HOST:PORT"}},
		{args: []string{"forward", "bogus"}, code: 2, stderr: []string{"gnv forward: unknown operation \"bogus\""}},
		{args: []string{"expose", "add"}, code: 2, stderr: []string{"gnv expose: add takes 1 argument"}},
		{args: []string{"forward", "list", "--json"}, code: 2, stderr: []string{"--json goes with show"}},
		{args: up("--overlay", "netstack", "--expose", "tcp:127.0.0.1:80=127.0.0.1:8080", "--addr", "10.0.0.1/24"), code: 2,
			stderr: []string{"--expose tcp:127.0.0.1:80=127.0.0.1:8080: 127.0.0.1 is not an overlay address"}},
		{args: up("--overlay", "netstack", "--http-proxy", "127.0.0.1:3128", "--socks5", "127.0.0.1:3128"), code: 2,
			stderr: []string{"listens on 127.0.0.1:3128, as --socks5 127.0.0.1:3128 already does"}},

		{args: []string{"bogus"}, code: 2, stderr: []string{`unknown command "bogus"`, "commands:"}},
		{args: []string{"version", "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{args: []string{"--bogus"}, code: 2, stderr: []string{"gnv demo: unknown flag: --bogus", "gnv demo --help"}},
		{args: []string{"demo", "--bogus"}, code: 2, stderr: []string{"gnv demo: unknown flag: --bogus"}},
		{args: []string{"demo", "--vni", "16777216"}, code: 2, stderr: []string{"--vni 16777216 out of range"}},
		{args: []string{"demo", "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{args: []string{"stats", "--bogus"}, code: 2, stderr: []string{"gnv stats: unknown flag: --bogus"}},
		{args: []string{"stats", "extra"}, code: 2, stderr: []string{`gnv stats: unexpected argument "extra"`}},
		{args: []string{"fdb"}, code: 2, stderr: []string{"gnv fdb: missing the operation"}},
		{args: []string{"fdb", "frob"}, code: 2, stderr: []string{`unknown operation "frob"`}},
		{args: []string{"fdb", "show", "extra"}, code: 2, stderr: []string{"show takes no arguments"}},
		{args: []string{"fdb", "add", "02:00:00:00:00:01"}, code: 2, stderr: []string{"add takes two arguments: MAC REMOTE"}},
		{args: []string{"fdb", "add", "00:00:00:00:00:00", "192.0.2.9"}, code: 2, stderr: []string{"MAC 00:00:00:00:00:00 is the zero address"}},
		{args: []string{"fdb", "add", "01:00:5e:00:00:01", "192.0.2.9"}, code: 2, stderr: []string{"MAC 01:00:5e:00:00:01 is a multicast address"}},
		{args: []string{"fdb", "add", "nomac", "192.0.2.9"}, code: 2, stderr: []string{`MAC "nomac"`}},
		{args: []string{"fdb", "add", "02:00:00:00:00:01", "nowhere"}, code: 2, stderr: []string{`REMOTE "nowhere"`}},
		{args: []string{"fdb", "del", "00:00:00:00:00:00"}, code: 2, stderr: []string{"MAC 00:00:00:00:00:00 is the zero address"}},
		{args: []string{"evpn", "--help"}, stdout: []string{"usage: gnv evpn show", "gnv evpn clear-duplicates [MAC]", "--evpn-dup-moves"}},
		{args: []string{"evpn", "frob"}, code: 2, stderr: []string{"the commands are: gnv evpn show", "gnv evpn clear-duplicates [MAC]"}},
		{args: []string{"evpn", "clear-duplicates", "nomac"}, code: 2, stderr: []string{`MAC "nomac"`}},
		{args: []string{"evpn", "clear-duplicates", "--json"}, code: 2, stderr: []string{"--json goes with show, stats, fdb show and evpn show"}},
		{args: []string{"evpn", "clear-duplicates", "02:00:00:00:00:01", "extra"}, code: 2, stderr: []string{"the commands are"}},
		{args: up("--overlay", "netstack", "--dns", "10.0.0.53:0"), code: 2, stderr: []string{`--dns "10.0.0.53:0": want a unicast ADDR or ADDR:PORT`}},
		{args: up("--overlay", "netstack", "--dns", "ns.example"), code: 2, stderr: []string{`--dns "ns.example"`}},
		{args: up("--dns", "10.0.0.53"), code: 2, stderr: []string{"--dns need --overlay netstack"}},
		{args: up("--overlay", "netstack", "--forward", "tcp:127.0.0.1:8080=web.example:80"), code: 2,
			stderr: []string{`--forward tcp:127.0.0.1:8080=web.example:80: "web.example" is a name, and the overlay has no resolver: give its DNS server with --dns`}},
		{args: up("--check", "--overlay", "netstack", "--addr", "10.0.0.1/24", "--dns", "10.0.0.53", "--dns", "[fd00::53]:5353", "--forward", "tcp:127.0.0.1:8080=web.example:80"),
			stdout: []string{"configuration ok"}},
		{args: up("--evpn-dup-moves", "3"), code: 2, stderr: []string{"--evpn-dup-moves, --evpn-dup-window and --evpn-dup-freeze need --evpn-asn"}},

		{args: []string{"up", "--bogus"}, code: 2, stderr: []string{"gnv up: unknown flag: --bogus", "gnv up --help"}},
		{args: []string{"up", "--remote", "192.0.2.2"}, code: 2, stderr: []string{"--vni is required"}},
		{args: []string{"up", "--vni", "-5", "--remote", "192.0.2.2"}, code: 2, stderr: []string{"--vni -5 out of range: valid VNIs are 0..16777215"}},
		{args: []string{"up", "--vni", "x", "--remote", "192.0.2.2"}, code: 2, stderr: []string{`"x"`, "--vni"}},
		{args: up("--port-range", "40000", "40100"), code: 2, stderr: []string{"--port-range 40000-40100: a udp underlay cannot honour a source port range"}},
		{args: up("--dev", "nosuch0"), code: 2, stderr: []string{"--dev nosuch0: no network interface of that name"}},
		{args: up("--check", "--dev", "nosuch0"), code: 2, stderr: []string{"--dev nosuch0"}},
		{args: up("--overlay", "netstack", "--socks5", "127.0.0.1:1080", "--forward", "tcp:127.0.0.1:1080=10.0.0.2:80"), code: 2, stderr: []string{"--socks5 127.0.0.1:1080 listens on 127.0.0.1:1080"}},
		{args: []string{"up", "--config", socksTwice}, code: 2, stderr: []string{"[b] --socks5 127.0.0.1:1080 listens on 127.0.0.1:1080, as [a] --socks5"}},
		{args: []string{"up", "--check", "--config", fwdTwice}, code: 2, stderr: []string{"[b] --forward tcp:127.0.0.1:8080=10.1.0.2:80 listens on 127.0.0.1:8080"}},
		{args: []string{"up", "--config", conf("check.conf", "check = true\n[a]\nvni = 1\nremote = 192.0.2.2\n")}, code: 2, stderr: []string{"check is a command-line flag"}},
		{args: []string{"up", "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{args: up("--check", "--overlay", "netstack", "--name", "gnvc"), stdout: []string{"configuration ok", "gnvc (l2 vni 1, overlay netstack)"}},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(c.args...)
			if code != c.code {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			for _, want := range c.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, stdout)
				}
			}
			if c.stderr == nil && stderr != "" {
				t.Errorf("stderr is not empty:\n%s", stderr)
			}
			for _, want := range c.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
			if c.code != 0 && stdout != "" {
				t.Errorf("an error wrote to stdout:\n%s", stdout)
			}
		})
	}
}

// TestUpCheckOpensNothing: gnv up --check with a configuration that would
// create a capture file and a control socket creates neither.
func TestUpCheckOpensNothing(t *testing.T) {
	dir := t.TempDir()
	pcap, ctl := filepath.Join(dir, "x.pcap"), filepath.Join(dir, "sub", "ctl.sock")
	code, stdout, stderr := runCLI("up", "--check", "--vni", "1", "--remote", "192.0.2.2", "--overlay", "netstack",
		"--pcap", pcap, "--control", ctl, "--local-port", "1")
	if code != 0 || !strings.Contains(stdout, "configuration ok") || !strings.Contains(stdout, ctl) {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, p := range []string{pcap, filepath.Dir(ctl)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("--check created %s", p)
		}
	}
}

// TestVersionFormat: the module version and the VCS revision from the
// build information, and what is printed without them.
func TestVersionFormat(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.3", Main: debug.Module{Path: "github.com/gnv-project/gnv", Version: "v0.0.0-20261206140323-58a0b301c69f+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "58a0b301c69f162303248762b7c672af7051de7b"}, {Key: "vcs.time", Value: "2026-12-06T14:03:23Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := formatVersion(bi, true)
	for _, want := range []string{"gnv v0.0.0-20261206140323-58a0b301c69f+dirty (github.com/gnv-project/gnv)", "revision 58a0b301c69f162303248762b7c672af7051de7b (2026-12-06T14:03:23Z, modified)", "go1.26.3"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q does not contain %q", got, want)
		}
	}
	if got := formatVersion(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true); !strings.Contains(got, "revision unknown") {
		t.Errorf("without VCS: %q", got)
	}
	if got := formatVersion(nil, false); !strings.Contains(got, "no build information") {
		t.Errorf("without build information: %q", got)
	}
}

// TestUpMTUWarning: an --mtu above what the underlay carries is logged.
func TestUpMTUWarning(t *testing.T) {
	var logs lockedBuf
	startInstanceLog(t, slog.New(slog.NewTextHandler(&logs, nil)), netstackArgs(filepath.Join(t.TempDir(), "c.sock"), 16298, "--mtu", "9000")...)
	if l := logs.String(); !strings.Contains(l, "--mtu is above") || !strings.Contains(l, "max=1450") || !strings.Contains(l, "mtu=9000") {
		t.Errorf("log: %s", l)
	}
}
