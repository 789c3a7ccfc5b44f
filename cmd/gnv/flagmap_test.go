package main

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/stack"
)

// noFlag lists the fields the library checks that no gnv up flag sets, or
// that gnv up always sets validly; their errors name the field.
var noFlag = map[string]string{
	"Underlay":                "always set (the shared underlay)",
	"Underlay.Link":           "gnv up's netstack underlays make their own link",
	"Underlay.Transport":      "gnv up never uses a TransportUnderlay",
	"UnderlayOptions.Family":  "always 4 or 6",
	"MAC":                     "no flag sets the overlay MAC",
	"Endpoint.MaxMarkOptions": "no flag reserves mark options",
}

// TestFlagMapCoversLibrary feeds the library one invalid configuration per
// check and requires each error's field to have a flag, or to be one that
// gnv up does not set (noFlag). A check added to the library belongs here.
func TestFlagMapCoversLibrary(t *testing.T) {
	r := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	kernel := stack.KernelUDPUnderlay{Local: netip.MustParseAddr("192.0.2.1")}
	tap := func(addr, gw string) stack.Underlay {
		u := stack.TAPUnderlay{}
		if addr != "" {
			u.Address = netip.MustParsePrefix(addr)
		}
		if gw != "" {
			u.Gateway = netip.MustParseAddr(gw)
		}
		return u
	}
	ok := stack.Config{VNI: 1, Remotes: r, Underlay: kernel}
	with := func(f func(c *stack.Config)) stack.Config {
		c := ok
		f(&c)
		return c
	}
	configs := []stack.Config{
		with(func(c *stack.Config) { c.VNI = 1 << 24 }),
		with(func(c *stack.Config) { c.Mode = 9 }),
		with(func(c *stack.Config) { c.Group = netip.MustParseAddr("239.1.1.1") }),
		with(func(c *stack.Config) { c.Remotes, c.Group = nil, netip.MustParseAddr("192.0.2.9") }),
		with(func(c *stack.Config) { c.Remotes = []netip.Addr{netip.MustParseAddr("239.1.1.1")} }),
		with(func(c *stack.Config) { c.Remotes = []netip.Addr{netip.MustParseAddr("2001:db8::2")} }),
		with(func(c *stack.Config) { c.Remotes = nil }),
		with(func(c *stack.Config) { c.Underlay = nil }),
		with(func(c *stack.Config) { c.Addresses = []netip.Prefix{{}} }),
		with(func(c *stack.Config) { c.MTU = 20 }),
		with(func(c *stack.Config) { c.MAC = []byte{1, 0, 0, 0, 0, 1} }),
		with(func(c *stack.Config) { c.Mode, c.MAC = endpoint.L3, []byte{2, 0, 0, 0, 0, 1} }),
		with(func(c *stack.Config) { c.Endpoint.SrcPortMax = 9 }),
		with(func(c *stack.Config) { c.Endpoint.SrcPortMin, c.Endpoint.SrcPortMax = 9, 8 }),
		with(func(c *stack.Config) { c.Endpoint.DF = 9 }),
		with(func(c *stack.Config) { c.Endpoint.FDBMax = -1 }),
		with(func(c *stack.Config) { c.Endpoint.FDBTimeout = -1 }),
		with(func(c *stack.Config) { c.Endpoint.Options = make([]byte, 256) }),
		with(func(c *stack.Config) { c.Endpoint.Options = []byte{0, 0, 0, 5} }),
		with(func(c *stack.Config) { c.Endpoint.MaxMarkOptions = 3 }),
		with(func(c *stack.Config) { c.Underlay = stack.KernelUDPUnderlay{Local: netip.MustParseAddr("239.1.1.1")} }),
		with(func(c *stack.Config) { c.Underlay = tap("", "") }),
		with(func(c *stack.Config) { c.Underlay = tap("224.0.0.1/24", "") }),
		with(func(c *stack.Config) { c.Underlay = tap("192.0.2.1/24", "2001:db8::1") }),
		with(func(c *stack.Config) {
			c.Underlay = stack.PacketUnderlay{NetstackOptions: stack.NetstackOptions{Address: netip.MustParsePrefix("192.0.2.1/24")}}
		}),
		with(func(c *stack.Config) { c.Underlay = stack.NetstackUnderlay{} }),
		with(func(c *stack.Config) { c.Underlay = stack.TransportUnderlay{} }),
	}
	var errs []error
	for _, c := range configs {
		errs = append(errs, c.Validate())
	}
	tr := linktest.New(netip.AddrPort{})
	defer tr.Close()
	_, err := stack.OpenUnderlay(stack.TransportUnderlay{Transport: tr}, stack.UnderlayOptions{Family: 5})
	errs = append(errs, err)
	seen := map[string]bool{}
	for i, err := range errs {
		var fe *endpoint.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("case %d: error %v, want a FieldError", i, err)
			continue
		}
		seen[fe.Field] = true
		msg := withFlags(err, nil).Error()
		if _, ok := fieldFlags[fe.Field]; ok {
			if !strings.HasPrefix(msg, "--") {
				t.Errorf("%s: %q does not start with the flag", fe.Field, msg)
			}
		} else if noFlag[fe.Field] == "" {
			t.Errorf("%s: no flag in fieldFlags, and not in noFlag: %q", fe.Field, msg)
		} else if !strings.HasPrefix(msg, fe.Field) {
			t.Errorf("%s: %q does not start with the field", fe.Field, msg)
		}
		if strings.Contains(err.Error(), "--") {
			t.Errorf("%s: the library's own text names a flag: %q", fe.Field, err)
		}
	}
	for f := range fieldFlags {
		if !seen[f] && f != "Port" {
			t.Errorf("fieldFlags has %s, which no case reached", f)
		}
	}
	for f := range noFlag {
		if !seen[f] {
			t.Errorf("noFlag has %s, which no case reached", f)
		}
	}
}

// TestFlagErrors checks the library's errors as gnv up prints them, for
// the checks its flags can reach.
func TestFlagErrors(t *testing.T) {
	base := []string{"--vni", "1", "--remote", "192.0.2.2"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--vni", "4294967296", "--remote", "192.0.2.2"}, "--vni 4294967296 out of range: valid VNIs are 0..16777215"},
		{append(base, "--max-addr", "16777217"), "--max-addr 16777217 out of range: valid sizes are 1..16777216"},
		{append(base, "--max-addr", "-3"), "--max-addr -3 out of range"},
		{append(base, "--timeout", "0"), "--timeout 0 out of range: valid timeouts are 1..86400 seconds"},
		{append(base, "--timeout", "-5"), "--timeout -5 out of range"},
		{append(base, "--timeout", "9223372036854775807"), "--timeout 9223372036854775807 out of range"},
		{[]string{"--vni", "1", "--remote", "239.1.1.1"}, "--remote 239.1.1.1 must be a unicast address: use --group for multicast"},
		{[]string{"--vni", "1", "--remote", "0.0.0.0"}, "--remote 0.0.0.0 must be a unicast address"},
		{[]string{"--vni", "1", "--remote", "192.0.2.2", "--remote", "2001:db8::2"}, "--remote 2001:db8::2 is IPv6 but the other underlay addresses are IPv4"},
		{append(base, "--local", "239.1.1.1"), "--local 239.1.1.1 must be a unicast address: use --group for multicast"},
		{append(base, "--option", "0xffff:1:"+strings.Repeat("00", 124), "--option", "0xffff:2:"+strings.Repeat("00", 124)), "--option: 256 bytes in all, at most 252 fit in a Geneve header"},
		{append(base, "--underlay", "tap", "--underlay-addr", "224.0.0.1/24"), "--underlay-addr 224.0.0.1/24: want a unicast address"},
		{append(base, "--underlay", "tap", "--underlay-addr", "192.0.2.1/24", "--gateway", "2001:db8::1"), "--gateway 2001:db8::1 is IPv6 but --underlay-addr is IPv4"},
		{[]string{"--vni", "1", "--remote", "2001:db8::2", "--underlay", "tap", "--underlay-addr", "192.0.2.1/24"}, "--remote 2001:db8::2 is IPv6 but the other underlay addresses are IPv4"},
	} {
		_, err := planArgs(c.args...)
		var fe *endpoint.FieldError
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &fe) {
			t.Errorf("%v: error %v, want a FieldError containing %q", c.args, err, c.want)
		}
	}
}

// TestFlagErrorsConfigFile checks that a library error about an interface
// names its section, and one about the shared socket does not.
func TestFlagErrorsConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gnv.conf")
	for _, c := range []struct{ file, want string }{
		{"[a]\nvni = 1\nremote = 192.0.2.2\n[b]\nvni = 2\nremote = 192.0.2.3\nmtu = 20\n", "[b]: --mtu 20 out of range"},
		{"[a]\nvni = 1\nremote = 192.0.2.2\n[b]\nvni = 2\nremote = 2001:db8::3\n", "[b]: --remote 2001:db8::3 is IPv6 but the other underlay addresses are IPv4"},
	} {
		if err := os.WriteFile(path, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := planArgs("--config", path); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.file, err, c.want)
		}
	}
	if err := os.WriteFile(path, []byte("local = 239.1.1.1\n[a]\nvni = 1\nremote = 192.0.2.2\n[b]\nvni = 2\nremote = 192.0.2.3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := planArgs("--config", path); err == nil || !strings.HasPrefix(err.Error(), "--local 239.1.1.1 must be a unicast address") {
		t.Errorf("socket error: %v, want it without a section", err)
	}
}
