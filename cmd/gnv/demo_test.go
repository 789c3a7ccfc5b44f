package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/testutil/leakcheck"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

func TestDemo(t *testing.T) {
	for _, args := range [][]string{
		{"--size", "2"},
		{"--size", "2", "--mode", "l3", "--underlay-family", "6", "--overlay-family", "6"},
		{"--size", "2", "--underlay", "udp", "--underlay-family", "6"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out bytes.Buffer
			o := parseDemo(t, args)
			if err := demo(&out, o); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if !strings.HasSuffix(out.String(), "ok\n") {
				t.Errorf("report does not end in ok:\n%s", out.String())
			}
		})
	}
}

func parseDemo(t *testing.T, args []string) demoOptions {
	t.Helper()
	var o demoOptions
	fs := newDemoFlags(&o)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestDemoFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--vni", "16777216"}, "--vni 16777216 out of range: valid VNIs are 0..16777215"},
		{[]string{"--mode", "l4"}, `--mode: mode "l4": valid modes are l2 and l3`},
		{[]string{"--underlay", "tcp"}, `--underlay "tcp": valid underlays are fabric and udp`},
		{[]string{"--underlay-family", "5"}, "--underlay-family 5: valid values are 4 and 6"},
		{[]string{"--size", "0"}, "--size 0 out of range: valid sizes are 1..4096 MiB"},
	} {
		var o demoOptions
		fs := newDemoFlags(&o)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := o.validate()
		if err == nil || err.Error() != c.want {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}

// TestDemoPcap checks that the demo's underlay capture decodes in tshark as
// Geneve with the right VNI and no malformed packet, for both underlays.
func TestDemoPcap(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark is not installed (apt-get install tshark); .ci/run installs it")
	}
	for _, underlay := range []string{"fabric", "udp"} {
		t.Run(underlay, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "demo.pcap")
			o := parseDemo(t, []string{"--size", "1", "--vni", "4660", "--underlay", underlay, "--pcap", path})
			var out bytes.Buffer
			if err := demo(&out, o); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			run := func(args ...string) string {
				cmd := exec.Command(tshark, append([]string{"-r", path}, args...)...)
				b, err := cmd.Output()
				if err != nil {
					t.Fatalf("tshark %v: %v", args, err)
				}
				return string(b)
			}
			if n := strings.Count(run("-Y", "_ws.malformed"), "\n"); n != 0 {
				t.Errorf("%d malformed packets", n)
			}
			vnis := run("-Y", "geneve", "-T", "fields", "-e", "geneve.vni")
			lines := strings.Fields(vnis)
			if len(lines) < 100 {
				t.Fatalf("only %d Geneve packets decoded", len(lines))
			}
			for _, v := range lines {
				if v != fmt.Sprintf("0x%06x", 4660) && v != "4660" {
					t.Fatalf("VNI %q, want 4660", v)
				}
			}
		})
	}
}
