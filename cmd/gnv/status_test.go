package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pairUp runs two rootless gnv up instances (netstack overlays over kernel
// UDP on loopback, 10.6.0.1 and 10.6.0.2) and pings A to B, so that both
// have counters, learned entries and state to show.
func pairUp(t *testing.T, extraA ...string) (a, b *instance) {
	t.Helper()
	dir := t.TempDir()
	a = startInstance(t, append([]string{"--vni", "6", "--local", "127.0.0.1", "--local-port", "16390", "--port", "16391", "--remote", "127.0.0.2",
		"--overlay", "netstack", "--addr", "10.6.0.1/24", "--name", "gnva", "--control", filepath.Join(dir, "a.sock")}, extraA...)...)
	b = startInstance(t, "--vni", "6", "--local", "127.0.0.2", "--local-port", "16391", "--port", "16390", "--remote", "127.0.0.1",
		"--overlay", "netstack", "--addr", "10.6.0.2/24", "--name", "gnvb", "--control", filepath.Join(dir, "b.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping := func(n int) {
		for i := range n {
			if _, err := a.ifaces[0].tun.Ping(ctx, mustAddr("10.6.0.2"), uint16(i+1), 56); err != nil {
				t.Fatalf("ping 10.6.0.2: %v", err)
			}
		}
	}
	ping(3)
	return a, b
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestShowStatsFDBJSON: gnv show, stats and fdb show, as text and as JSON
// with the documented field names; the socket counters are real.
func TestShowStatsFDBJSON(t *testing.T) {
	a, _ := pairUp(t, "--forward", "tcp:127.0.0.1:0=10.6.0.2:80", "--socks5", "127.0.0.1:0")
	cli := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(append(args, "--control", a.control)...)
		if code != 0 || stderr != "" {
			t.Fatalf("%v: exit %d, stderr %s", args, code, stderr)
		}
		return stdout
	}

	var show showReply
	if err := json.Unmarshal([]byte(cli("show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if len(show.Interfaces) != 1 {
		t.Fatalf("show: %+v", show)
	}
	s := show.Interfaces[0]
	if s.Name != "gnva" || s.Mode != "l2" || s.VNI != 6 || s.Overlay != "netstack" || s.MTU != 1450 || len(s.MAC) != 17 ||
		strings.Join(s.Addresses, ",") != "10.6.0.1/24" || strings.Join(s.Remotes, ",") != "127.0.0.2" || s.Port != 16391 ||
		s.TTL != "64" || s.DF != "unset" || s.SourcePorts != [2]uint16{32768, 61000} || s.FDB == nil || s.FDB.Max != 2000 ||
		len(s.Forwards) != 1 || s.Forwards[0].Target != "10.6.0.2:80" || s.Forwards[0].Kind != "forward" ||
		!strings.HasPrefix(s.SOCKS5, "127.0.0.1:") || s.SOCKS5 == "127.0.0.1:0" { // the bound port
		t.Errorf("show interface: %+v", s)
	}
	u := show.Underlay
	if u.Kind != "udp" || u.Local != "127.0.0.1:16390" || u.MTU != 1500 || show.Control != a.control || show.PID == 0 || show.Version == "" {
		t.Errorf("show: %+v", show)
	}
	text := cli("show")
	for _, want := range []string{"gnva: l2 vni 6 overlay netstack mtu 1450 mac ", "addresses 10.6.0.1/24", "remotes 127.0.0.2 port 16391",
		"fdb 1/2000 entries, learning on", "forward " + s.Forwards[0].Spec, "=10.6.0.2:80", "underlay: udp 127.0.0.1:16390 mtu 1500", "control: " + a.control} {
		if !strings.Contains(text, want) {
			t.Errorf("show does not say %q:\n%s", want, text)
		}
	}

	// The raw JSON has the documented names.
	var raw map[string]any
	if err := json.Unmarshal([]byte(cli("stats", "--json")), &raw); err != nil {
		t.Fatal(err)
	}
	sock := raw["socket"].(map[string]any)
	for _, k := range []string{"kind", "local", "rx_datagrams", "rx_bytes", "rx_errors", "tx_datagrams", "tx_bytes", "tx_errors", "transport", "drops"} {
		if _, ok := sock[k]; !ok {
			t.Errorf("stats socket has no %q: %v", k, sock)
		}
	}
	iface := raw["interfaces"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "vni", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_gso_segments", "pmtu_replies", "drops", "fdb"} {
		if _, ok := iface[k]; !ok {
			t.Errorf("stats interface has no %q: %v", k, iface)
		}
	}
	if _, ok := iface["drops"].(map[string]any)["unknown_vni"]; !ok {
		t.Errorf("drops lack unknown_vni: %v", iface["drops"])
	}

	var st statsReply
	if err := json.Unmarshal([]byte(cli("stats", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	ss := st.Socket
	// The socket counters are the kernel UDP transport's: every ping
	// crossed it both ways.
	if ss.RxDatagrams < 3 || ss.TxDatagrams < 3 || ss.RxBytes == nil || *ss.RxBytes < 3*100 || ss.TxBytes == nil || *ss.TxBytes < 3*100 {
		t.Errorf("socket counters: %+v", ss)
	}
	if i := st.Interfaces[0]; i.RxPackets < 3 || i.TxPackets < 3 || i.FDB == nil || i.FDB.Learned < 1 {
		t.Errorf("interface counters: %+v", i)
	}
	text = cli("stats")
	for _, want := range []string{"gnva: rx ", "gnva: fdb count 1 max 2000", "socket: udp 127.0.0.1:16390: rx "} {
		if !strings.Contains(text, want) {
			t.Errorf("stats does not say %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "rx 0 datagrams") {
		t.Errorf("socket rx still 0:\n%s", text)
	}

	var fdb fdbReply
	if err := json.Unmarshal([]byte(cli("fdb", "show", "--json")), &fdb); err != nil {
		t.Fatal(err)
	}
	if fdb.Interface != "gnva" || len(fdb.Entries) != 1 || fdb.Entries[0].Remote != "127.0.0.2:16391" || fdb.Entries[0].Static {
		t.Errorf("fdb show: %+v", fdb)
	}
	if code, _, stderr := runCLI("fdb", "flush", "--json", "--control", a.control); code != 2 || !strings.Contains(stderr, "--json goes with fdb show only") {
		t.Errorf("fdb flush --json: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI("show", "--name", "nosuch", "--control", a.control); code != 1 || !strings.Contains(stderr, `no interface "nosuch"`) {
		t.Errorf("show --name nosuch: %d %s", code, stderr)
	}
}

// TestControlAliasPerSection: gnv up --config without --control names its
// socket after the first section; "gnv stats --name" of another section
// finds it anyway, through a link that goes when gnv up stops.
func TestControlAliasPerSection(t *testing.T) {
	suffix := fmt.Sprintf("%d", os.Getpid()%100000)
	a, b := "ca"+suffix, "cb"+suffix
	conf := filepath.Join(t.TempDir(), "gnv.conf")
	body := fmt.Sprintf("local = 127.0.0.1\nport = 16491\nlocal-port = 16490\n[%s]\nvni = 1\nremote = 127.0.0.2\noverlay = netstack\naddr = 10.31.0.1/24\n"+
		"[%s]\nvni = 2\nremote = 127.0.0.2\noverlay = netstack\naddr = 10.32.0.1/24\n", a, b)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stop, err := runInstance(t, "--config", conf)
	if err != nil {
		t.Fatal(err)
	}
	alias := defaultControlPath(b)
	code, stdout, stderr := runCLI("stats", "--name", b)
	if code != 0 || !strings.Contains(stdout, b+": ") {
		t.Errorf("gnv stats --name %s: exit %d\nstdout: %s\nstderr: %s", b, code, stdout, stderr)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(alias); !os.IsNotExist(err) {
		t.Errorf("the alias %s is still there after gnv up stopped: %v", alias, err)
	}
}
