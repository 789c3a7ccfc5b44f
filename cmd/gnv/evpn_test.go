package main

import (
	"strings"
	"testing"
	"time"
)

// TestEVPNFlags checks the --evpn-* flags: errors name the flag and its
// valid range; with EVPN on, no --remote is needed and learning is off
// unless --learn is given.
func TestEVPNFlags(t *testing.T) {
	base := []string{"--vni", "100", "--local", "192.0.2.1"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--evpn-asn", "0", "--evpn-peer", "192.0.2.254"}, "--evpn-peer, --evpn-router-id, --evpn-rt and --evpn-strict-ipv6 need --evpn-asn"},
		{[]string{"--evpn-asn", "4294967296", "--evpn-peer", "192.0.2.254"}, "--evpn-asn 4294967296 out of range: valid AS numbers are 1..4294967295"},
		{[]string{"--evpn-asn", "65000"}, "--evpn-asn needs --evpn-peer"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "rr.example"}, `--evpn-peer "rr.example": want ADDR or ADDR:PORT`},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-router-id", "2001:db8::1"}, "--evpn-router-id \"2001:db8::1\": want an IPv4 address"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-rt", "x"}, `--evpn-rt "x": want AS:N`},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-hold", "2"}, "--evpn-hold 2 out of range: valid hold times are 3..65535 seconds"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-hold", "9", "--evpn-keepalive", "4"}, "--evpn-keepalive 4 out of range: valid intervals are 1..3 seconds"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--group", "239.1.1.1"}, "--group and --evpn-asn are exclusive"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-dup-moves", "1"}, "--evpn-dup-moves 1 out of range: valid counts are 2..1000 (0: no duplicate MAC detection)"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-dup-window", "0"}, "--evpn-dup-window 0 out of range: valid windows are 1..3600 seconds"},
		{[]string{"--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-dup-freeze", "-1"}, "--evpn-dup-freeze -1 out of range: valid freezes are 1..86400 seconds"},
	} {
		_, err := planArgs(append(append([]string{}, base...), c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := planArgs("--vni", "1", "--evpn-asn", "65000", "--evpn-peer", "192.0.2.254"); err == nil || !strings.Contains(err.Error(), "give --local") {
		t.Errorf("no VTEP address: %v", err)
	}
	p, err := planArgs(append(base, "--evpn-asn", "65000", "--evpn-peer", "192.0.2.254:1179", "--evpn-peer", "192.0.2.253", "--evpn-hold", "9")...)
	if err != nil {
		t.Fatal(err)
	}
	if p.evpn == nil || p.evpn.ASN != 65000 || len(p.evpn.Peers) != 2 || p.evpn.Peers[0].Port != 1179 || p.evpn.HoldTime != 9*time.Second ||
		p.evpn.NextHop.String() != "192.0.2.1" {
		t.Fatalf("evpn options %+v", p.evpn)
	}
	if p.evpn.DupMACMoves != 5 || p.evpn.DupMACWindow != 180*time.Second || p.evpn.DupMACFreeze != 0 {
		t.Errorf("duplicate MAC detection by default: %d moves in %v, frozen %v; want 5 in 3m0s, until cleared", p.evpn.DupMACMoves, p.evpn.DupMACWindow, p.evpn.DupMACFreeze)
	}
	c := p.ifaces[0].cfg
	if !c.DynamicPeers || !c.Endpoint.NoLearn {
		t.Fatalf("with EVPN: DynamicPeers %v NoLearn %v, want true and true", c.DynamicPeers, c.Endpoint.NoLearn)
	}
	p, err = planArgs(append(base, "--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--learn")...)
	if err != nil {
		t.Fatal(err)
	}
	if p.ifaces[0].cfg.Endpoint.NoLearn {
		t.Fatal("--learn given with EVPN: learning is off")
	}
	p, err = planArgs(append(base, "--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-dup-moves", "0")...)
	if err != nil || p.evpn.DupMACMoves != -1 {
		t.Fatalf("--evpn-dup-moves 0: %v, DupMACMoves %d, want -1 (off)", err, p.evpn.DupMACMoves)
	}
	p, err = planArgs(append(base, "--evpn-asn", "65000", "--evpn-peer", "192.0.2.254", "--evpn-dup-moves", "7", "--evpn-dup-window", "60", "--evpn-dup-freeze", "600")...)
	if err != nil || p.evpn.DupMACMoves != 7 || p.evpn.DupMACWindow != time.Minute || p.evpn.DupMACFreeze != 10*time.Minute {
		t.Fatalf("--evpn-dup-*: %v, %+v", err, p.evpn)
	}
}
