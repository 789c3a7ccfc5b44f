package endpoint

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/endpoint/geneve"
)

// TestFieldError checks that every configuration check returns a
// *FieldError naming the field, and how it renders.
func TestFieldError(t *testing.T) {
	r := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	for _, c := range []struct {
		cfg   Config
		fam   int
		field string
		want  string
	}{
		{Config{VNI: 1 << 24}, 0, "VNI", "vni 16777216 out of range: valid VNIs are 0..16777215"},
		{Config{Mode: 7}, 0, "Mode", "mode 7: valid modes are l2 and l3"},
		{Config{Remotes: r, Group: netip.MustParseAddr("239.1.1.1")}, 0, "Remotes", "remote and group are exclusive"},
		{Config{Group: netip.MustParseAddr("192.0.2.9")}, 0, "Group", "group 192.0.2.9 is not a multicast address"},
		{Config{Mode: L3, Remotes: append(r, r...)}, 0, "Remotes", "remote given 2 times: an l3 endpoint takes one remote"},
		{Config{Remotes: []netip.Addr{netip.MustParseAddr("239.1.1.1")}}, 0, "Remotes", "remote 239.1.1.1 must be a unicast address: use group for multicast"},
		{Config{Remotes: r}, 6, "Remotes", "remote 192.0.2.2 is IPv4 but the other underlay addresses are IPv6"},
		{Config{Remotes: append(r, netip.MustParseAddr("2001:db8::2"))}, 0, "Remotes", "remote 2001:db8::2 is IPv6 but the other underlay addresses are IPv4"},
		{Config{SrcPortMin: 5000, SrcPortMax: 4000}, 0, "SrcPortMax", "source port range 5000..4000: want 1 <= min <= max <= 65535"},
		{Config{SrcPortMax: 4000}, 0, "SrcPortMin", "source port range 0..4000"},
		{Config{DF: 9}, 0, "DF", "df 9: valid values are unset, set and inherit"},
		{Config{FDBMax: MaxFDBMax + 1}, 0, "FDBMax", "forwarding table size 16777217 out of range: valid sizes are 1..16777216"},
		{Config{FDBTimeout: 25 * 3600e9}, 0, "FDBTimeout", "forwarding entry timeout 25h0m0s out of range: valid timeouts are 1..86400 seconds"},
		{Config{Options: make([]byte, geneve.MaxOptionsLen+4)}, 0, "Options", "options: 256 bytes in all, at most 252 fit"},
		{Config{MaxMarkOptions: 6}, 0, "MaxMarkOptions", "mark options 6: want a multiple of 4, with options, at most 252 bytes in all"},
		{Config{Options: []byte{0, 0, 0, 5}}, 0, "Options", "options: "},
		{Config{MAC: "\x02\x00\x00"}, 0, "MAC", "mac 020000: want a 6-byte Ethernet address"},
		{Config{MAC: "\x01\x00\x5e\x00\x00\x01"}, 0, "MAC", "mac 01:00:5e:00:00:01 is a multicast address"},
	} {
		err := c.cfg.Validate(c.fam)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%+v: error %v, want a *FieldError", c.cfg, err)
			continue
		}
		if fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: field %q, error %q; want %q, %q", c.cfg, fe.Field, err, c.field, c.want)
		}
	}
	if err := (Config{Remotes: r}).Validate(4); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// TestFieldErrorFormat checks rendering with other names, as a command line
// renders flags.
func TestFieldErrorFormat(t *testing.T) {
	flag := func(f string) string { return "--" + strings.ToLower(f) }
	for _, c := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{Field: "VNI", Value: 7, Problem: "out of range", Valid: "valid VNIs are 0..1"}, "--vni 7 out of range: valid VNIs are 0..1"},
		{FieldError{Field: "Remotes", Problem: "and {Group} are exclusive", Valid: "use {Group} or {Remotes}"}, "--remotes and --group are exclusive: use --group or --remotes"},
		{FieldError{Field: "Options", Err: errors.New("bad"), Valid: "a {b"}, "--options: a {b: bad"},
		{FieldError{Field: "Underlay"}, "--underlay"},
	} {
		if got := c.e.Format(flag); got != c.want {
			t.Errorf("Format %q, want %q", got, c.want)
		}
	}
	if w := fieldWord("Endpoint.FDBTimeout"); w != "forwarding entry timeout" {
		t.Errorf("fieldWord(Endpoint.FDBTimeout) = %q", w)
	}
	if w := fieldWord("Underlay.Address"); w != "underlay address" {
		t.Errorf("fieldWord(Underlay.Address) = %q", w)
	}
	e := (&FieldError{Field: "MaxMarkOptions", Problem: "with {Options}", Valid: "{FDBMax}"}).Rename(func(f string) string { return "Endpoint." + f })
	if e.Field != "Endpoint.MaxMarkOptions" || e.Problem != "with {Endpoint.Options}" || e.Valid != "{Endpoint.FDBMax}" {
		t.Errorf("Rename: %+v", e)
	}
	inner := errors.New("inner")
	if err := error(&FieldError{Field: "X", Err: inner}); !errors.Is(err, inner) {
		t.Error("errors.Is does not see Err")
	}
}
