//go:build linux

package kudp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/testutil/netns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
)

// TestKernelUDPOuterDF sends datagrams from the bound socket and from a
// source-port socket to a raw IPv4 receiver on the loopback of a namespace
// of its own, and checks the DF bit on the wire: clear by default
// (IP_PMTUDISC_DONT, the endpoint.DFUnset policy), set with DontFragment,
// and switched by SetDontFragment, whatever Packet.DF says.
func TestKernelUDPOuterDF(t *testing.T) {
	netns.RequireRoot(t)
	ns := netns.New(t, "gnvkdf")
	var raw int
	if err := ns.Do(func() (err error) {
		raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw)
	if err := unix.SetsockoptTimeval(raw, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("127.0.0.1:9")

	// sendDF sends one datagram per socket (SrcPort 0: the bound one; 1: a
	// source-port one), each with Packet.DF the opposite of want, and
	// checks that both arrive with DF == want.
	seq := 0
	sendDF := func(t *testing.T, tr *Transport, want bool) {
		t.Helper()
		for _, src := range []uint16{0, 1} {
			seq++
			marker := []byte("gnv df test " + string(rune('a'+seq)))
			p := []link.Packet{{Dst: dst, SrcPort: src, DF: !want, Payload: buffer.MakeWithData(marker)}}
			_, err := tr.WriteBatch(p)
			releaseAll(p)
			if err != nil {
				t.Fatal(err)
			}
			ip := readRawUDP(t, raw, dst.Port(), marker)
			if got := ip[6]&0x40 != 0; got != want {
				t.Errorf("source port %d: DF %v on the wire, want %v (flags %#02x)", tr.WireSourcePort(src), got, want, ip[6]>>5)
			}
		}
	}
	for _, c := range []struct {
		name string
		df   bool
	}{{"default", false}, {"dont-fragment", true}} {
		t.Run(c.name, func(t *testing.T) {
			var tr *Transport
			if err := ns.Do(func() (err error) {
				tr, err = New(Options{Local: netip.MustParseAddrPort("127.0.0.1:0"), DontFragment: c.df, SourcePorts: 2})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			if len(tr.SourcePorts()) != 2 {
				t.Fatalf("source ports %v", tr.SourcePorts())
			}
			sendDF(t, tr, c.df)
			if err := tr.SetDontFragment(!c.df); err != nil {
				t.Fatal(err)
			}
			sendDF(t, tr, !c.df)
		})
	}
}

// readRawUDP reads IPv4 packets from the raw socket until the UDP datagram
// to port with payload marker, and returns its IP header and the rest.
func readRawUDP(t *testing.T, raw int, port uint16, marker []byte) []byte {
	t.Helper()
	b := make([]byte, 2048)
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(raw, b, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("raw socket: %v", err)
		}
		p := b[:n]
		if n < 20 || p[0]>>4 != 4 {
			continue
		}
		ihl := int(p[0]&0xf) * 4
		if n < ihl+8 || binary.BigEndian.Uint16(p[ihl+2:]) != port || !bytes.Equal(p[ihl+8:], marker) {
			continue
		}
		return p
	}
	t.Fatalf("no datagram %q to port %d", marker, port)
	return nil
}
