// Package qemu boots a small Linux guest under QEMU for integration tests,
// with no root needed: the host's kernel image and its virtio-net modules
// (Debian: linux-image-amd64), a static busybox (busybox-static), and an
// initramfs built here around a shell script of the test's. The guest's
// serial console comes back line by line, so a test reads its results
// there.
//
// Find names what is missing (and the Debian package that has it);
// Require skips a test with that message. KVM is used when it works
// here, else TCG (GNV_QEMU_ACCEL=kvm|tcg overrides the probe): /dev/kvm
// can exist and still hang a guest, inside some nested VMs.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Env is what it takes to boot a guest.
type Env struct {
	// QEMU is the qemu-system-x86_64 binary.
	QEMU string
	// Kernel is the kernel image, KernelVersion its release.
	Kernel, KernelVersion string
	// Busybox is a statically linked busybox.
	Busybox string
	// modules are the module files the guest loads for virtio-net-pci,
	// dependencies first.
	modules []string
	netdevs string // `-netdev help`
}

// Find locates QEMU, a kernel with its modules and a static busybox. Its
// error names what is missing.
func Find() (*Env, error) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("the guest runs the host's x86_64 kernel; this host is %s", runtime.GOARCH)
	}
	e := &Env{}
	var err error
	if e.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, errors.New("qemu-system-x86_64 not found (Debian package qemu-system-x86)")
	}
	if e.Busybox, err = exec.LookPath("busybox"); err != nil {
		return nil, errors.New("busybox not found (Debian package busybox-static)")
	}
	if f, err := elf.Open(e.Busybox); err != nil {
		return nil, fmt.Errorf("busybox %s: %v", e.Busybox, err)
	} else {
		dynamic := false
		for _, p := range f.Progs {
			dynamic = dynamic || p.Type == elf.PT_INTERP
		}
		f.Close()
		if dynamic {
			return nil, fmt.Errorf("busybox %s is dynamically linked; the guest needs a static one (Debian package busybox-static)", e.Busybox)
		}
	}
	if err := e.findKernel(); err != nil {
		return nil, err
	}
	out, err := exec.Command(e.QEMU, "-netdev", "help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -netdev help: %v: %s", e.QEMU, err, out)
	}
	e.netdevs = string(out)
	return e, nil
}

// Require returns Find's Env, or skips t with the reason.
func Require(t testing.TB) *Env {
	t.Helper()
	e, err := Find()
	if err != nil {
		t.Skipf("no QEMU guest: %v", err)
	}
	return e
}

// HasNetdev reports whether QEMU has the netdev backend name (stream and
// dgram arrived in QEMU 7.2).
func (e *Env) HasNetdev(name string) bool {
	for _, l := range strings.Split(e.netdevs, "\n") {
		if strings.TrimSpace(l) == name {
			return true
		}
	}
	return false
}

// findKernel picks the newest readable /boot/vmlinuz-VERSION whose
// /lib/modules/VERSION has virtio-net-pci's modules (or has them built
// in).
func (e *Env) findKernel() error {
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	var why []string
	for _, img := range images {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if f, err := os.Open(img); err != nil {
			why = append(why, fmt.Sprintf("%s: %v", img, err))
			continue
		} else {
			f.Close()
		}
		mods, err := moduleFiles("/lib/modules/"+ver, "virtio_pci", "virtio_net")
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		e.Kernel, e.KernelVersion, e.modules = img, ver, mods
		return nil
	}
	if len(why) == 0 {
		return errors.New("no kernel image /boot/vmlinuz-* (Debian package linux-image-amd64)")
	}
	return fmt.Errorf("no usable kernel (Debian package linux-image-amd64): %s", strings.Join(why, "; "))
}

// moduleFiles returns the module files to load, dependencies first, for
// the named modules that are not built into the kernel.
func moduleFiles(dir string, names ...string) ([]string, error) {
	norm := func(s string) string {
		s = filepath.Base(s)
		if i := strings.Index(s, ".ko"); i >= 0 {
			s = s[:i]
		}
		return strings.ReplaceAll(s, "-", "_")
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(dir + "/modules.builtin"); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[norm(l)] = true
		}
	}
	dep, err := os.ReadFile(dir + "/modules.dep")
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %v", err)
	}
	paths := map[string]string{}
	deps := map[string][]string{}
	for _, l := range strings.Split(string(dep), "\n") {
		mod, rest, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n := norm(mod)
		paths[n] = filepath.Join(dir, mod)
		for _, d := range strings.Fields(rest) {
			deps[n] = append(deps[n], norm(d))
		}
	}
	var out []string
	seen := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		if seen[n] || builtin[n] {
			return nil
		}
		seen[n] = true
		p, ok := paths[n]
		if !ok {
			return fmt.Errorf("kernel module %s: not in %s/modules.dep", n, dir)
		}
		// modules.dep lists every dependency, nearest first: load each
		// one's own dependencies before it.
		for i := len(deps[n]) - 1; i >= 0; i-- {
			if err := visit(deps[n][i]); err != nil {
				return err
			}
		}
		out = append(out, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// initPrologue starts every guest: busybox applets, /proc, /sys and /dev,
// a marker, the probe exit, then the modules.
const initPrologue = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo GNV-INIT
grep -q gnv.probe /proc/cmdline && poweroff -f
`

// Initramfs returns an initramfs (cpio, newc format) whose /init loads
// the virtio-net modules, runs script with busybox sh and powers the guest
// off. The script's output reaches the serial console.
func (e *Env) Initramfs(script string) ([]byte, error) {
	var w cpioWriter
	for _, d := range []string{"bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp"} {
		w.dir(d)
	}
	w.device("dev/console", 5, 1)
	bb, err := os.ReadFile(e.Busybox)
	if err != nil {
		return nil, err
	}
	w.file("bin/busybox", 0o755, bb)
	init := initPrologue
	for _, m := range e.modules {
		b, err := os.ReadFile(m)
		if err != nil {
			return nil, err
		}
		name := filepath.Base(m)
		w.file("lib/modules/"+name, 0o644, b)
		path := "/lib/modules/" + name
		switch {
		case strings.HasSuffix(name, ".ko.xz"):
			init += fmt.Sprintf("unxz %s\n", path)
			path = strings.TrimSuffix(path, ".xz")
		case strings.HasSuffix(name, ".ko.gz"):
			init += fmt.Sprintf("gunzip %s\n", path)
			path = strings.TrimSuffix(path, ".gz")
		case strings.HasSuffix(name, ".ko.zst"):
			return nil, fmt.Errorf("module %s is zstd-compressed, which busybox cannot unpack", m)
		}
		init += fmt.Sprintf("insmod %s || echo GNV-ERROR insmod %s\n", path, name)
	}
	init += script + "\npoweroff -f\n"
	w.file("init", 0o755, []byte(init))
	return w.close(), nil
}

// Options describe one guest.
type Options struct {
	// Initramfs is the initramfs file (see Env.Initramfs).
	Initramfs string
	// Netdev is QEMU's -netdev argument for the guest's one NIC, a
	// virtio-net-pci device; its id must be n0. Empty: no NIC.
	Netdev string
	// MAC is the NIC's MAC address; empty lets QEMU choose.
	MAC string
	// MTU, if not zero, is announced to the guest (virtio-net host_mtu).
	MTU uint32
	// MemoryMiB is the guest's memory; 0 means 256.
	MemoryMiB int
	// Accel is "kvm" or "tcg"; empty probes (Env.Accel).
	Accel string
	// Append is added to the kernel command line.
	Append string
}

// Args returns QEMU's command line for o.
func (e *Env) Args(o Options) []string {
	mem := o.MemoryMiB
	if mem == 0 {
		mem = 256
	}
	args := []string{
		"-accel", o.Accel, "-m", strconv.Itoa(mem),
		"-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", e.Kernel, "-initrd", o.Initramfs,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 quiet " + o.Append),
	}
	if o.Netdev != "" {
		dev := "virtio-net-pci,netdev=n0,romfile="
		if o.MAC != "" {
			dev += ",mac=" + o.MAC
		}
		if o.MTU != 0 {
			dev += fmt.Sprintf(",host_mtu=%d", o.MTU)
		}
		args = append(args, "-netdev", o.Netdev, "-device", dev)
	}
	return args
}

// Run boots the guest and calls line with every line of its serial
// console (in order, from one goroutine) until QEMU exits or ctx ends. It
// returns QEMU's exit error, or ctx's.
func (e *Env) Run(ctx context.Context, o Options, line func(string)) error {
	if o.Accel == "" {
		o.Accel = e.Accel()
	}
	cmd := exec.CommandContext(ctx, e.QEMU, e.Args(o)...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line(ansi.ReplaceAllString(strings.TrimRight(sc.Text(), "\r"), ""))
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ansi matches the terminal escapes the firmware prints.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\x1bc`)

var (
	accelOnce sync.Once
	accel     string
)

// Accel returns "kvm" if a KVM guest boots here, else "tcg". The answer
// is probed once per process (a guest that only prints a marker, given 10
// seconds); GNV_QEMU_ACCEL=kvm|tcg skips the probe.
func (e *Env) Accel() string {
	accelOnce.Do(func() {
		accel = "tcg"
		if v := os.Getenv("GNV_QEMU_ACCEL"); v == "kvm" || v == "tcg" {
			accel = v
			return
		}
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			return
		}
		f.Close()
		if e.probeKVM() {
			accel = "kvm"
		}
	})
	return accel
}

// probeKVM boots a guest under KVM and reports whether its init ran.
func (e *Env) probeKVM() bool {
	img, err := e.Initramfs("")
	if err != nil {
		return false
	}
	dir, err := os.MkdirTemp("", "gnv-qemu-probe")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "initramfs")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	booted := false
	_ = e.Run(ctx, Options{Initramfs: path, Accel: "kvm", Append: "gnv.probe"}, func(l string) {
		if strings.Contains(l, "GNV-INIT") {
			booted = true
			cancel()
		}
	})
	return booted
}
