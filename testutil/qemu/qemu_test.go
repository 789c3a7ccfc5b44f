package qemu_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/gnv-project/gnv/testutil/qemu"
)

// TestInitramfs builds an initramfs and, when the cpio tool is there,
// checks that it reads it: busybox, the console node, /init and the
// virtio-net modules. (Booting it is stack's TestQEMUGuest.)
func TestInitramfs(t *testing.T) {
	env := qemu.Require(t)
	img, err := env.Initramfs("echo hello")
	if err != nil {
		t.Fatal(err)
	}
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("no cpio tool to read the archive back")
	}
	cmd := exec.Command(cpio, "-it")
	cmd.Stdin = bytes.NewReader(img)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	for _, want := range []string{"bin/busybox", "dev/console", "init", "virtio_net"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the archive lacks %s:\n%s", want, out)
		}
	}
	t.Logf("kernel %s, QEMU %s", env.Kernel, env.QEMU)
}
