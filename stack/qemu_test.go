package stack_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/gnv-project/gnv/testutil/qemu"
)

// qemuGuestScript configures the guest's eth0 (virtio-net-pci on the
// tunnel's VM socket), pings host B across the tunnel and host A's overlay
// netstack, downloads a payload from B and uploads it to A, and reports
// on the console. (busybox wget --post-file stops at the first NUL byte,
// so the upload is plain TCP with nc.)
const qemuGuestScript = `
ip link set lo up
ip link set eth0 up
ip addr add 10.0.0.50/24 dev eth0
echo "GNV-MTU $(cat /sys/class/net/eth0/mtu) $(cat /sys/class/net/eth0/address)"
ping -c 3 -W 5 10.0.0.2 >/dev/null && echo GNV-PING-REMOTE-OK
ping -c 2 -W 5 10.0.0.1 >/dev/null && echo GNV-PING-LOCAL-OK
wget -q -O /tmp/p http://10.0.0.2/payload && echo "GNV-SHA $(sha256sum /tmp/p)"
nc 10.0.0.1 9000 </tmp/p
echo GNV-DONE
`

// TestQEMUGuest boots a real Linux guest under QEMU (no root needed) whose
// virtio-net NIC is a VM port of host A's L2 tunnel, over QEMU's
// -netdev stream (unix socket, QEMU's length-prefixed framing) and -netdev
// dgram (unix datagram sockets): it pings host B across the tunnel and
// host A's overlay netstack, fetches 8 MiB from B over HTTP and sends them
// to A over TCP, SHA-256 checked at both ends. Skipped without qemu-system-x86,
// linux-image-amd64 or busybox-static.
func TestQEMUGuest(t *testing.T) {
	env := qemu.Require(t)
	for _, kind := range []string{"stream", "dgram"} {
		t.Run(kind, func(t *testing.T) {
			if !env.HasNetdev(kind) {
				t.Skipf("%s has no -netdev %s (QEMU 7.2 and newer have)", env.QEMU, kind)
			}
			t.Parallel()
			runQEMUGuest(t, env, kind)
		})
	}
}

func runQEMUGuest(t *testing.T, env *qemu.Env, kind string) {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 42, Switch: &stack.SwitchConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0], hs.Hosts[1]

	payload := make([]byte, 8<<20)
	rand.New(rand.NewSource(42)).Read(payload)
	sum := sha256.Sum256(payload)
	want := hex.EncodeToString(sum[:])
	lnB, err := b.Tunnel.Listen("tcp", "10.0.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	srvB := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		w.Write(payload)
	})}
	go srvB.Serve(lnB)
	defer srvB.Close()
	lnA, err := a.Tunnel.Listen("tcp", "10.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer lnA.Close()
	uploaded := make(chan string, 1)
	go func() {
		c, err := lnA.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.CopyN(h, c, int64(len(payload)))
		got := hex.EncodeToString(h.Sum(nil))
		uploaded <- fmt.Sprintf("%d %s %v", n, got, err)
		fmt.Fprintf(c, "GNV-UPLOAD %d %s\n", n, got)
	}()

	dir := t.TempDir()
	gnvSock := filepath.Join(dir, "gnv.sock")
	var netdev string
	switch kind {
	case "stream":
		netdev = "stream,id=n0,server=off,addr.type=unix,addr.path=" + gnvSock
	case "dgram":
		netdev = "dgram,id=n0,local.type=unix,local.path=" + filepath.Join(dir, "vm.sock") + ",remote.type=unix,remote.path=" + gnvSock
	}
	network := map[string]string{"stream": "unix", "dgram": "unixgram"}[kind]
	vl, err := a.Tunnel.ListenVM(network + ":" + gnvSock)
	if err != nil {
		t.Fatal(err)
	}
	defer vl.Close()

	img, err := env.Initramfs(qemuGuestScript)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs")
	if err := os.WriteFile(initrd, img, 0o600); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:4e:56:01"
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := time.Now()
	var lines []string
	var learned []string // the VM ports' MACs while the guest runs
	err = env.Run(ctx, qemu.Options{Initramfs: initrd, Netdev: netdev, MAC: mac, MTU: a.Tunnel.MTU()}, func(l string) {
		lines = append(lines, l)
		if strings.Contains(l, "GNV-PING-LOCAL-OK") {
			for _, vm := range a.Tunnel.VMs() {
				for _, m := range vm.MACs() {
					learned = append(learned, m.String())
				}
			}
		}
	})
	elapsed := time.Since(start)
	console := strings.Join(lines, "\n")
	t.Logf("QEMU (%s, %s) ran %s; console:\n%s", env.Accel(), env.Kernel, elapsed.Round(time.Millisecond), console)
	if err != nil {
		t.Fatalf("QEMU: %v", err)
	}
	for _, w := range []string{
		fmt.Sprintf("GNV-MTU %d %s", a.Tunnel.MTU(), mac),
		"GNV-PING-REMOTE-OK",
		"GNV-PING-LOCAL-OK",
		"GNV-SHA " + want,
		fmt.Sprintf("GNV-UPLOAD %d %s", len(payload), want),
		"GNV-DONE",
	} {
		if !strings.Contains(console, w) {
			t.Errorf("console lacks %q", w)
		}
	}
	if strings.Contains(console, "GNV-ERROR") {
		t.Errorf("the guest reported an error")
	}
	select {
	case u := <-uploaded:
		if u != fmt.Sprintf("%d %s <nil>", len(payload), want) {
			t.Errorf("host A received %s, want %d bytes %s", u, len(payload), want)
		}
	default:
		t.Errorf("host A received no upload")
	}

	if len(learned) != 1 || learned[0] != mac {
		t.Errorf("MACs learned on the VM port: %v, want %s", learned, mac)
	}
	sw := a.Tunnel.Switch()
	if st := sw.Stats(); st.TotalDrops() != 0 {
		t.Errorf("switch drops: %v", st)
	}
	for _, vm := range a.Tunnel.VMs() {
		st := vm.Stats()
		t.Logf("%s: %v", vm.Port(), st)
		if unexpectedVMDrops(st) != 0 {
			t.Errorf("%s drops: %v", vm.Port(), st)
		}
	}
	if kind == "stream" {
		// QEMU is gone: its port left the switch.
		waitVMs(t, a.Tunnel, 0)
	}
	for i, h := range hs.Hosts {
		if s := h.Tunnel.Stats(); s.TotalDrops() != 0 {
			t.Errorf("host %d tunnel drops: %v", i+1, s)
		}
	}
}
