package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/internal/pcap"
)

func TestStableMAC(t *testing.T) {
	local := netip.MustParseAddr("192.0.2.1")
	m := stableMAC("machine-id:abc", "gnv0", 100, local)
	if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("%v is not a locally administered unicast address", m)
	}
	if !bytes.Equal(m, stableMAC("machine-id:abc", "gnv0", 100, local)) {
		t.Error("not stable")
	}
	for _, other := range []net.HardwareAddr{
		stableMAC("machine-id:abd", "gnv0", 100, local),
		stableMAC("machine-id:abc", "gnv1", 100, local),
		stableMAC("machine-id:abc", "gnv0", 101, local),
		stableMAC("machine-id:abc", "gnv0", 100, netip.MustParseAddr("192.0.2.2")),
	} {
		if bytes.Equal(m, other) {
			t.Errorf("%v for a different host, name, VNI or local address", other)
		}
	}
	if !bytes.Equal(stableMAC("h", "gnv0", 1, netip.Addr{}), stableMAC("h", "gnv0", 1, netip.IPv4Unspecified())) {
		t.Error("no local address and the wildcard address differ")
	}

	p, err := planArgs("--vni", "1", "--remote", "192.0.2.2", "--mac", "02:11:22:33:44:55")
	if err != nil || p.ifaces[0].cfg.MAC.String() != "02:11:22:33:44:55" {
		t.Errorf("--mac: %v %v", p, err)
	}
	for _, c := range []struct{ mac, want string }{
		{"01:00:5e:00:00:01", "--mac 01:00:5e:00:00:01 is a multicast address"},
		{"00:00:00:00:00:00", "--mac 00:00:00:00:00:00 is the zero address"},
		{"nomac", `--mac "nomac": want an Ethernet address`},
	} {
		if _, err := planArgs("--vni", "1", "--remote", "192.0.2.2", "--mac", c.mac); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--mac %s: %v", c.mac, err)
		}
	}
	if _, err := planArgs("--vni", "1", "--remote", "192.0.2.2", "--mode", "l3", "--mac", "02:11:22:33:44:55"); err == nil || !strings.Contains(err.Error(), "an l3 tunnel has no link-layer address") {
		t.Errorf("--mac with l3: %v", err)
	}
}

// announcements finds, in a capture, the ARP announcement for ip4 and the
// unsolicited neighbour advertisement for ip6 sent from mac.
func announcements(t *testing.T, path string, mac net.HardwareAddr, ip4, ip6 netip.Addr) (arp, na bool) {
	t.Helper()
	lt, pkts, err := pcap.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		_, _, payload, ok := pcap.UDPPayload(lt, p)
		if !ok {
			continue
		}
		h, off, err := geneve.Decode(payload)
		if err != nil || h.Protocol != geneve.ProtoEthernet {
			continue
		}
		f := payload[off:]
		if len(f) < 14 || !bytes.Equal(f[6:12], mac) {
			continue
		}
		body := f[14:]
		switch binary.BigEndian.Uint16(f[12:14]) {
		case 0x0806: // ARP request, sender and target address ip4
			if len(body) >= 28 && bytes.Equal(f[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) && binary.BigEndian.Uint16(body[6:8]) == 1 &&
				bytes.Equal(body[8:14], mac) && netip.AddrFrom4([4]byte(body[14:18])) == ip4 && netip.AddrFrom4([4]byte(body[24:28])) == ip4 {
				arp = true
			}
		case 0x86dd: // ICMPv6 type 136 to ff02::1, override flag, target ip6
			if len(body) >= 40+24 && body[6] == 58 && body[40] == 136 && body[44]&0x20 != 0 &&
				netip.AddrFrom16([16]byte(body[24:40])) == netip.MustParseAddr("ff02::1") && netip.AddrFrom16([16]byte(body[48:64])) == ip6 {
				na = true
			}
		}
	}
	return arp, na
}

// TestRestartKeepsMACAndAnnounces: an interface keeps its MAC when gnv up
// restarts, announces it when it comes up (a gratuitous ARP and an
// unsolicited neighbour advertisement in its capture), and the peer learns
// where it is from that alone, before any other traffic.
func TestRestartKeepsMACAndAnnounces(t *testing.T) {
	dir := t.TempDir()
	b := startInstance(t, "--vni", "8", "--local", "127.0.0.2", "--local-port", "16591", "--port", "16590", "--remote", "127.0.0.1",
		"--overlay", "netstack", "--addr", "10.8.0.2/24", "--name", "gnvb", "--control", filepath.Join(dir, "b.sock"))
	bfdb := b.ifaces[0].tun.Endpoint().FDB()
	ip4, ip6 := netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("fd08::1")
	argsA := func(pcapPath string) []string {
		return []string{"--vni", "8", "--local", "127.0.0.1", "--local-port", "16590", "--port", "16591", "--remote", "127.0.0.2",
			"--overlay", "netstack", "--addr", "10.8.0.1/24", "--addr", "fd08::1/64", "--name", "gnva",
			"--control", filepath.Join(dir, "a.sock"), "--pcap", pcapPath}
	}
	learned := func(mac net.HardwareAddr) bool {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for _, e := range bfdb.Dump() {
				if bytes.Equal(e.MAC, mac) && e.Remote == netip.MustParseAddrPort("127.0.0.1:16590") {
					return true
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	}
	var macs []net.HardwareAddr
	for run := range 2 {
		path := filepath.Join(dir, "a"+string(rune('0'+run))+".pcap")
		a, stop, err := runInstance(t, argsA(path)...)
		if err != nil {
			t.Fatal(err)
		}
		mac := net.HardwareAddr(a.ifaces[0].tun.Endpoint().LinkAddress())
		macs = append(macs, mac)
		if !learned(mac) {
			t.Errorf("run %d: the peer did not learn %v: %v", run, mac, bfdb.Dump())
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if arp, na := announcements(t, path, mac, ip4, ip6); !arp || !na {
			t.Errorf("run %d: capture has the ARP announcement %v, the neighbour advertisement %v", run, arp, na)
		}
		bfdb.FlushAll()
	}
	if !bytes.Equal(macs[0], macs[1]) {
		t.Errorf("the MAC changed across a restart: %v, then %v", macs[0], macs[1])
	}
	if macs[0][0]&3 != 2 {
		t.Errorf("%v is not locally administered unicast", macs[0])
	}
}
