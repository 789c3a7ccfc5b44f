package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/testutil/netns"
)

// These tests run the gnv binary in network namespaces joined by veth
// pairs, with kernel programs and kernel sockets on the overlay. They need
// root (CI runs them as root).

// TestNetnsUnderlayOverlayMatrix runs gnv <-> gnv across a veth pair for
// each underlay pairing, L2 on TAP and L3 on TUN, over IPv4 and IPv6
// underlays: kernel ping (IPv4 and IPv6 overlay) and a kernel TCP transfer
// with its content checked.
func TestNetnsUnderlayOverlayMatrix(t *testing.T) {
	netns.RequireRoot(t)
	sizes := 16 << 20
	if testing.Short() {
		sizes = 2 << 20
	}
	for _, ul := range [][2]string{{"udp", "udp"}, {"packet", "packet"}, {"tap", "tap"}, {"udp", "packet"}, {"tap", "udp"}, {"tap", "packet"}} {
		for _, mode := range []string{"l2", "l3"} {
			for _, fam := range []int{4, 6} {
				name := fmt.Sprintf("%s-%s/%s/ipv%d", ul[0], ul[1], mode, fam)
				t.Run(name, func(t *testing.T) {
					a, b := pair(t)
					ipA, ipB, bits := "192.0.2.1", "192.0.2.2", 24
					if fam == 6 {
						ipA, ipB, bits = "2001:db8::1", "2001:db8::2", 64
					}
					argsA := underlaySide(t, a, "va", ul[0], ipA, bits)
					argsB := underlaySide(t, b, "vb", ul[1], ipB, bits)
					common := []string{"--vni", "4711", "--mode", mode, "--addr", "10.9.0.%d/24", "--addr", "fd09::%d/64"}
					mk := func(side []string, remote string, n int) []string {
						args := append([]string{}, side...)
						for _, c := range common {
							if strings.Contains(c, "%d") {
								c = fmt.Sprintf(c, n)
							}
							args = append(args, c)
						}
						return append(args, "--remote", remote, "--name", "gnv0")
					}
					upA := gnvUp(t, a, 1, mk(argsA, ipB, 1)...)
					upB := gnvUp(t, b, 1, mk(argsB, ipA, 2)...)
					ping(t, a, "10.9.0.2")
					ping(t, a, "fd09::2")
					checkSocketCounters(t, upA, ul[0])
					checkSocketCounters(t, upB, ul[1])
					mbps := kernelTCP(t, a, b, "10.9.0.2", sizes)
					t.Logf("%s: TCP %.0f Mbit/s", name, mbps)
					kernelTCP(t, b, a, "fd09::1", sizes/4)
				})
			}
		}
	}
}

// TestNetnsMulticast runs three gnv hosts on a bridge with a multicast
// underlay, over kernel UDP sockets and over AF_PACKET and TAP netstack
// underlays (whose IGMP/MLD joins netstack sends itself; the TAP devices
// sit on bridges with multicast snooping on): every pair pings through the
// group.
func TestNetnsMulticast(t *testing.T) {
	netns.RequireRoot(t)
	for _, kind := range []string{"udp", "packet", "tap"} {
		for _, fam := range []int{4, 6} {
			t.Run(fmt.Sprintf("%s/ipv%d", kind, fam), func(t *testing.T) {
				br := netns.New(t, "gnv-br")
				br.MustRun(t, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
				br.MustRun(t, "ip", "link", "set", "br0", "up")
				var hosts []*netns.NS
				for i := 1; i <= 3; i++ {
					h := netns.New(t, fmt.Sprintf("gnv-h%d", i))
					port := fmt.Sprintf("p%d", i)
					netns.Veth(t, h, "eth0", br, port)
					br.MustRun(t, "ip", "link", "set", port, "master", "br0")
					addr, bits, group := fmt.Sprintf("192.0.2.%d", i), 24, "239.1.2.3"
					if fam == 6 {
						addr, bits, group = fmt.Sprintf("2001:db8::%d", i), 64, "ff15::1:2:3"
					}
					args := underlaySide(t, h, "eth0", kind, addr, bits)
					if kind == "udp" {
						args = append(args, "--dev", "eth0")
					}
					gnvUp(t, h, 1, append(args, "--vni", "99", "--group", group,
						"--addr", fmt.Sprintf("10.8.0.%d/24", i), "--name", "gnv0")...)
					hosts = append(hosts, h)
				}
				for i, h := range hosts {
					for j := range hosts {
						if i != j {
							ping(t, h, fmt.Sprintf("10.8.0.%d", j+1))
						}
					}
				}
			})
		}
	}
}

// TestNetnsPcapDecodes captures gnv's underlay with its own --pcap and with
// tcpdump on the peer: tshark decodes both with zero malformed packets.
func TestNetnsPcapDecodes(t *testing.T) {
	netns.RequireRoot(t)
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("needs tshark (apt-get install tshark); CI installs it")
	}
	for _, kind := range []string{"udp", "packet"} {
		t.Run(kind, func(t *testing.T) {
			a, b := pair(t)
			dir := t.TempDir()
			pcap := filepath.Join(dir, "gnv.pcap")
			argsA := underlaySide(t, a, "va", kind, "192.0.2.1", 24)
			argsB := underlaySide(t, b, "vb", "udp", "192.0.2.2", 24)
			upA := gnvUp(t, a, 1, append(argsA, "--vni", "321", "--remote", "192.0.2.2", "--addr", "10.9.0.1/24", "--pcap", pcap)...)
			gnvUp(t, b, 1, append(argsB, "--vni", "321", "--remote", "192.0.2.1", "--addr", "10.9.0.2/24")...)
			ping(t, a, "10.9.0.2")
			kernelTCP(t, a, b, "10.9.0.2", 1<<20)
			// Stop A: the capture is complete once gnv has closed it.
			upA.stop()
			checkCapture := func() {
				out, err := exec.Command(tshark, "-r", pcap, "-Y", "_ws.malformed").Output()
				if err != nil {
					t.Fatalf("tshark: %v", err)
				}
				if n := strings.Count(string(out), "\n"); n != 0 {
					t.Errorf("%d malformed packets in gnv's capture", n)
				}
				out, err = exec.Command(tshark, "-r", pcap, "-Y", "geneve", "-T", "fields", "-e", "geneve.vni").Output()
				if err != nil {
					t.Fatal(err)
				}
				vnis := strings.Fields(string(out))
				if len(vnis) < 10 {
					t.Fatalf("only %d Geneve packets in gnv's capture", len(vnis))
				}
				for _, v := range vnis {
					if v != "0x000141" && v != "321" {
						t.Fatalf("VNI %s in capture, want 321", v)
					}
				}
			}
			checkCapture()
		})
	}
}

// TestNetnsVLANAndTwoVNIs runs one gnv up per side with two interfaces
// (VNIs 10 and 20) on one socket from a config file; both reach their
// peers, and an 802.1Q-tagged frame written to the first TAP comes
// out of the peer's TAP still tagged (L2 tunnels pass VLAN tags untouched).
func TestNetnsVLANAndTwoVNIs(t *testing.T) {
	netns.RequireRoot(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump (apt-get install tcpdump); CI installs it")
	}
	a, b := pair(t)
	dir := t.TempDir()
	for i, ns := range []*netns.NS{a, b} {
		dev := []string{"va", "vb"}[i]
		local, remote := fmt.Sprintf("192.0.2.%d", i+1), fmt.Sprintf("192.0.2.%d", 2-i)
		ns.MustRun(t, "ip", "addr", "add", local+"/24", "dev", dev)
		conf := filepath.Join(dir, fmt.Sprintf("gnv%d.conf", i))
		body := fmt.Sprintf("underlay = udp\nlocal = %s\n[gnv10]\nvni = 10\nremote = %s\naddr = 10.10.0.%d/24\n[gnv20]\nvni = 20\nmode = l3\nremote = %s\naddr = 10.20.0.%d/24\n",
			local, remote, i+1, remote, i+1)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		gnvUp(t, ns, 2, "--config", conf)
	}
	ping(t, a, "10.10.0.2")
	ping(t, a, "10.20.0.2")
	// A tagged frame, VLAN 42, from A's TAP to B's.
	var dstMAC net.HardwareAddr
	if err := b.Do(func() error {
		ifi, err := net.InterfaceByName("gnv10")
		if err == nil {
			dstMAC = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dump := b.Command("tcpdump", "-i", "gnv10", "-n", "-e", "-c", "1", "-l", "vlan 42")
	var dumpOut lockedBuf
	dump.Stdout, dump.Stderr = &dumpOut, &dumpOut
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	defer dump.Process.Kill()
	// The frame is sent once: wait until tcpdump says it is capturing.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(dumpOut.String(), "listening on"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start capturing; it said:\n%s", dumpOut.String())
		}
	}
	frame := append([]byte{}, dstMAC...)
	frame = append(frame, 0x02, 0, 0, 0, 0x42, 0x42, 0x81, 0x00, 0x00, 42, 0x88, 0xb5) // src, 802.1Q, VLAN 42, local experimental type
	frame = append(frame, []byte("vlan pass-through test payload, padded to the minimum")...)
	if err := a.Do(func() error { return sendRawFrame("gnv10", frame) }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- dump.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the tagged frame did not arrive on the peer's TAP; tcpdump said:\n%s", dumpOut.String())
	}
	if out := dumpOut.String(); !strings.Contains(out, "vlan 42") || !strings.Contains(out, "0x88b5") {
		t.Errorf("tcpdump on the peer:\n%s", out)
	}
}

// TestNetnsRestartKeepsMAC restarts gnv up with a TAP overlay: the device
// comes back with the same MAC, and the kernel peer's neighbour entry
// still points at it, so the peer reaches the restarted host at once.
// Restarted with another --mac, its gratuitous ARP moves the peer's entry
// to the new MAC at once.
func TestNetnsRestartKeepsMAC(t *testing.T) {
	netns.RequireRoot(t)
	a, b := pair(t)
	argsA := append(underlaySide(t, a, "va", "udp", "192.0.2.1", 24), "--vni", "77", "--remote", "192.0.2.2", "--addr", "10.9.0.1/24")
	argsB := append(underlaySide(t, b, "vb", "udp", "192.0.2.2", 24), "--vni", "77", "--remote", "192.0.2.1", "--addr", "10.9.0.2/24")
	macOf := func(ns *netns.NS) string {
		t.Helper()
		var mac string
		if err := ns.Do(func() error {
			ifi, err := net.InterfaceByName("gnv0")
			if err == nil {
				mac = ifi.HardwareAddr.String()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return mac
	}
	upA := gnvUp(t, a, 1, argsA...)
	gnvUp(t, b, 1, argsB...)
	ping(t, b, "10.9.0.1")
	before := macOf(a)
	upA.stop()
	upA = gnvUp(t, a, 1, argsA...)
	if after := macOf(a); after != before {
		t.Errorf("gnv0's MAC was %s, after the restart %s", before, after)
	}
	if neigh := b.MustRun(t, "ip", "neigh", "show", "10.9.0.1", "dev", "gnv0"); !strings.Contains(neigh, before) {
		t.Errorf("the peer's neighbour entry: %q, want lladdr %s", neigh, before)
	}
	ping(t, b, "10.9.0.1")

	const other = "02:00:00:00:aa:01"
	upA.stop()
	gnvUp(t, a, 1, append(argsA, "--mac", other)...)
	var neigh string
	// Nothing else makes the peer look again within this time: its entry
	// stays reachable for 15 to 45 s unless the gratuitous ARP moves it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if neigh = b.MustRun(t, "ip", "neigh", "show", "10.9.0.1", "dev", "gnv0"); strings.Contains(neigh, other) {
			break
		}
	}
	if !strings.Contains(neigh, other) {
		t.Errorf("after a restart with --mac %s the peer's neighbour entry is %q", other, neigh)
	}
}
