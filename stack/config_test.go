package stack_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/linktest"
	"github.com/gnv-project/gnv/stack"
)

// TestConfigFieldErrors checks that every configuration check of
// Config.Validate, New and OpenUnderlay reports an *endpoint.FieldError
// with the field's path.
func TestConfigFieldErrors(t *testing.T) {
	r := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	ns := func(addr, gw string) stack.NetstackOptions {
		o := stack.NetstackOptions{}
		if addr != "" {
			o.Address = netip.MustParsePrefix(addr)
		}
		if gw != "" {
			o.Gateway = netip.MustParseAddr(gw)
		}
		return o
	}
	kernel := stack.KernelUDPUnderlay{Local: netip.MustParseAddr("192.0.2.1")}
	for _, c := range []struct {
		cfg   stack.Config
		field string
	}{
		{stack.Config{VNI: 1 << 24, Remotes: r, Underlay: kernel}, "VNI"},
		{stack.Config{VNI: 1, Remotes: r}, "Underlay"},
		{stack.Config{VNI: 1, Underlay: kernel}, "Remotes"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: kernel, MTU: 20}, "MTU"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: kernel, Mode: endpoint.L3, MAC: []byte{2, 0, 0, 0, 0, 1}}, "MAC"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: kernel, MAC: []byte{2, 0, 0}}, "MAC"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: kernel, Addresses: []netip.Prefix{{}}}, "Addresses"},
		{stack.Config{VNI: 1, Remotes: []netip.Addr{netip.MustParseAddr("2001:db8::2")}, Underlay: kernel}, "Remotes"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: kernel, Endpoint: endpoint.Config{FDBMax: -1}}, "Endpoint.FDBMax"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: kernel, Endpoint: endpoint.Config{SrcPortMin: 9, SrcPortMax: 8}}, "Endpoint.SrcPortMax"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.KernelUDPUnderlay{Local: netip.MustParseAddr("239.1.1.1")}}, "Underlay.Local"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.NetstackUnderlay{NetstackOptions: ns("192.0.2.1/24", "")}}, "Underlay.Link"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.TAPUnderlay{}}, "Underlay.Address"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.TAPUnderlay{NetstackOptions: ns("224.0.0.1/24", "")}}, "Underlay.Address"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.TAPUnderlay{NetstackOptions: ns("192.0.2.1/24", "2001:db8::1")}}, "Underlay.Gateway"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.PacketUnderlay{NetstackOptions: ns("192.0.2.1/24", "")}}, "Underlay.Device"},
		{stack.Config{VNI: 1, Remotes: r, Underlay: stack.TransportUnderlay{}}, "Underlay.Transport"},
	} {
		for _, err := range []error{c.cfg.Validate(), newErr(c.cfg)} {
			var fe *endpoint.FieldError
			if !errors.As(err, &fe) || fe.Field != c.field {
				t.Errorf("%+v: error %v, want a FieldError for %s", c.cfg, err, c.field)
			}
		}
	}
	// OpenUnderlay checks the underlay and its options.
	tr := linktest.New(netip.AddrPort{})
	defer tr.Close()
	for _, c := range []struct {
		u     stack.Underlay
		opts  stack.UnderlayOptions
		field string
	}{
		{stack.TAPUnderlay{}, stack.UnderlayOptions{}, "Underlay.Address"},
		{stack.TransportUnderlay{}, stack.UnderlayOptions{}, "Underlay.Transport"},
		{stack.TransportUnderlay{Transport: tr}, stack.UnderlayOptions{Family: 5}, "UnderlayOptions.Family"},
	} {
		su, err := stack.OpenUnderlay(c.u, c.opts)
		if su != nil {
			su.Close()
		}
		var fe *endpoint.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("OpenUnderlay(%T): error %v, want a FieldError for %s", c.u, err, c.field)
		}
	}
}

func newErr(cfg stack.Config) error {
	tun, err := stack.New(cfg)
	if err == nil {
		tun.Close()
	}
	return err
}
