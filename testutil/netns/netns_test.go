//go:build linux

package netns_test

import (
	"net"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/testutil/netns"
)

func TestNamespacesAndVeth(t *testing.T) {
	netns.RequireRoot(t)
	netns.RequireTools(t, "ping")
	a, b := netns.New(t, "gnvt-a"), netns.New(t, "gnvt-b")
	netns.Veth(t, a, "va", b, "vb")
	a.MustRun(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "va")
	b.MustRun(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "vb")
	if out := a.MustRun(t, "ping", "-c", "1", "-W", "5", "198.51.100.2"); !strings.Contains(out, "1 received") {
		t.Fatalf("ping: %s", out)
	}
	// A socket opened inside Do lives in the namespace.
	var addrs []net.Addr
	if err := b.Do(func() error {
		ifi, err := net.InterfaceByName("vb")
		if err != nil {
			return err
		}
		addrs, err = ifi.Addrs()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(addrs) == 0 || !strings.HasPrefix(addrs[0].String(), "198.51.100.2") {
		t.Errorf("addresses of vb seen from inside b: %v", addrs)
	}
}
