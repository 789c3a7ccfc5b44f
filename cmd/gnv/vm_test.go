package main

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestUpVMListen: gnv up --vm-listen opens the socket; a VM that connects
// and sends a frame shows in gnv show (attached, its MAC learned), in gnv
// fdb show (a local entry on its switch port) and in gnv stats (the
// switch's counters), and the start-up line names the socket.
func TestUpVMListen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vm.sock")
	a, _ := pairUp(t, "--vm-listen", "unix:"+sock)
	cli := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(append(args, "--control", a.control)...)
		if code != 0 || stderr != "" {
			t.Fatalf("%v: exit %d, stderr %s", args, code, stderr)
		}
		return stdout
	}
	if !strings.Contains(a.summary(a.ifaces[0]), ", vms unix:"+sock) {
		t.Errorf("start-up line: %s", a.summary(a.ifaces[0]))
	}

	// The VM: QEMU's stream framing, a 4-byte big-endian length and an
	// Ethernet frame (a gratuitous ARP from its MAC).
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	vmMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x77}
	frame := append(append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vmMAC...), 0x08, 0x06),
		0, 1, 8, 0, 6, 4, 0, 1) // ARP request header
	frame = append(append(append(append(frame, vmMAC...), 10, 6, 0, 77), make([]byte, 6)...), 10, 6, 0, 77)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(frame)))
	if _, err := c.Write(append(msg, frame...)); err != nil {
		t.Fatal(err)
	}

	var show showReply
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := json.Unmarshal([]byte(cli("show", "--json")), &show); err != nil {
			t.Fatal(err)
		}
		if v := show.Interfaces[0].VMs; v != nil && len(v.Ports) == 1 && len(v.Ports[0].MACs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("show never listed the VM and its MAC: %+v", show.Interfaces[0].VMs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	v := show.Interfaces[0].VMs
	if v.Listen[0] != "unix:"+sock || v.Ports[0].MACs[0] != vmMAC.String() || v.Ports[0].RxFrames != 1 {
		t.Errorf("show vms: %+v", v)
	}
	if fdb := cli("fdb", "show"); !strings.Contains(fdb, vmMAC.String()+" port vm") {
		t.Errorf("fdb show has no local entry for the VM:\n%s", fdb)
	}
	if st := cli("stats"); !strings.Contains(st, "gnva: switch frames ") || !strings.Contains(st, "gnva: vm ") {
		t.Errorf("stats has no switch or VM counters:\n%s", st)
	}
	if txt := cli("show"); !strings.Contains(txt, "vm sockets unix:"+sock+", 1 attached") {
		t.Errorf("show:\n%s", txt)
	}
	// The switch's counters are metrics too.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	frames := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "gnv_switch_frames_total" {
			frames = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if frames < 1 {
		t.Errorf("gnv_switch_frames_total = %v, want the VM's frame counted", frames)
	}
}

// TestUpVMListenPlan: --vm-listen's checks before anything starts.
func TestUpVMListenPlan(t *testing.T) {
	base := []string{"--vni", "1", "--remote", "192.0.2.2", "--overlay", "netstack", "--addr", "10.0.0.1/24"}
	p, err := planArgs(append(base, "--vm-listen", "unix:/tmp/a.sock", "--vm-listen", "unixgram:/tmp/b.sock")...)
	if err != nil {
		t.Fatal(err)
	}
	if ip := p.ifaces[0]; ip.cfg.Switch == nil || len(ip.vmListen) != 2 {
		t.Errorf("plan %+v", ip)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "l3", "--vm-listen", "unix:/tmp/a.sock"}, "--vm-listen needs --mode l2"},
		{[]string{"--vm-listen", "tcp:127.0.0.1:1"}, `--vm-listen "tcp:127.0.0.1:1": `},
		{[]string{"--vm-listen", "unix:/tmp/a.sock", "--vm-listen", "unixgram:/tmp/a.sock"}, "the path /tmp/a.sock is given twice"},
	} {
		_, err := planArgs(append(base, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
}
