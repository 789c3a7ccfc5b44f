package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gnv-project/gnv/stack"
	"github.com/spf13/pflag"
)

// defaultControlPath is where the control socket goes without --control.
func defaultControlPath(name string) string {
	dir := "/run/gnv"
	if os.Geteuid() != 0 {
		if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
			dir = filepath.Join(x, "gnv")
		} else {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("gnv-%d", os.Getuid()))
		}
	}
	return filepath.Join(dir, name+".sock")
}

// controlIface finds an interface by name, or the only one.
func controlIface(ifaces []*runningIface, name string) (*runningIface, error) {
	if name == "" && len(ifaces) == 1 {
		return ifaces[0], nil
	}
	for _, ri := range ifaces {
		if ri.plan.name == name {
			return ri, nil
		}
	}
	var names []string
	for _, ri := range ifaces {
		names = append(names, ri.plan.name)
	}
	return nil, fmt.Errorf("no interface %q (have %s)", name, strings.Join(names, ", "))
}

// serveControl answers gnv fdb / gnv stats on a unix socket: one request
// line, a reply, and "ok" or "error: ..." as the last line.
func serveControl(path string, ifaces []*runningIface, u *stack.SharedUnderlay, log *slog.Logger) (io.Closer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(path, 0o600)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil && line == "" {
					return
				}
				w := bufio.NewWriter(c)
				if err := handleControl(w, strings.Fields(line), ifaces, u); err != nil {
					fmt.Fprintf(w, "error: %v\n", err)
				} else {
					fmt.Fprintln(w, "ok")
				}
				w.Flush()
			}()
		}
	}()
	log.Debug("control socket", "path", path)
	return ln, nil
}

// handleControl runs one control request: "stats NAME", "fdb show NAME",
// "fdb add NAME MAC REMOTE", "fdb del NAME MAC", "fdb flush NAME",
// "fdb flushall NAME" (NAME may be "-" for the only interface).
func handleControl(w io.Writer, f []string, ifaces []*runningIface, u *stack.SharedUnderlay) error {
	if len(f) < 2 {
		return fmt.Errorf("bad request")
	}
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "stats":
		name := arg(1)
		if name == "-" {
			name = ""
		}
		for _, ri := range ifaces {
			if name != "" && ri.plan.name != name {
				continue
			}
			fmt.Fprintf(w, "%s: %s\n", ri.plan.name, ri.tun.Stats())
			if fdb := ri.tun.Endpoint().FDB(); fdb != nil {
				st := fdb.Stats()
				fmt.Fprintf(w, "%s: fdb count %d max %d learned %d moved %d nospace %d expired %d\n", ri.plan.name, st.Count, st.Max, st.Learned, st.Moved, st.NoSpace, st.Expired)
			}
		}
		ss := u.Socket().Stats()
		fmt.Fprintf(w, "socket: %s\n", ss)
		return nil
	case "fdb":
		name := arg(2)
		if name == "-" {
			name = ""
		}
		ri, err := controlIface(ifaces, name)
		if err != nil {
			return err
		}
		fdb := ri.tun.Endpoint().FDB()
		if fdb == nil {
			return fmt.Errorf("%s is an l3 interface: it has no forwarding table", ri.plan.name)
		}
		switch arg(1) {
		case "show":
			for _, e := range fdb.Dump() {
				fmt.Fprintln(w, e)
			}
			for _, n := range fdb.Neighbors() {
				fmt.Fprintln(w, n)
			}
			return nil
		case "flush":
			fdb.Flush()
			return nil
		case "flushall":
			fdb.FlushAll()
			return nil
		case "add":
			mac, err := net.ParseMAC(arg(3))
			if err != nil {
				return fmt.Errorf("mac %q: want like 02:00:00:00:00:01", arg(3))
			}
			remote, err := netip.ParseAddrPort(arg(4))
			if err != nil {
				a, err2 := netip.ParseAddr(arg(4))
				if err2 != nil {
					return fmt.Errorf("remote %q: want ADDR or ADDR:PORT", arg(4))
				}
				remote = netip.AddrPortFrom(a.Unmap(), 0)
			}
			return fdb.AddStatic(mac, remote)
		case "del":
			mac, err := net.ParseMAC(arg(3))
			if err != nil {
				return fmt.Errorf("mac %q: want like 02:00:00:00:00:01", arg(3))
			}
			return fdb.Remove(mac)
		}
		return fmt.Errorf("fdb %q: valid commands are show, add, del, flush and flushall", arg(1))
	case "evpn":
		return handleEVPNControl(w, arg(1), ifaces)
	case "forward", "expose":
		name := arg(2)
		if name == "-" {
			name = ""
		}
		ri, err := controlIface(ifaces, name)
		if err != nil {
			return err
		}
		var rest []string
		if len(f) > 3 {
			rest = f[3:]
		}
		return handleForwardControl(w, f[0], arg(1), ri, rest)
	}
	return fmt.Errorf("unknown request %q", f[0])
}

// ctlMain runs "gnv fdb ..." and "gnv stats": it sends one request to a
// running gnv up over its control socket and prints the reply.
func ctlMain(cmd string, args []string) int {
	fs := pflag.NewFlagSet("gnv "+cmd, pflag.ContinueOnError)
	name := fs.String("name", "", "interface name (default: the only one, or gnv0)")
	control := fs.String("control", "", "control socket of the gnv up (default /run/gnv/NAME.sock)")
	fs.Usage = func() {
		switch cmd {
		case "forward", "expose":
			fmt.Fprintf(os.Stderr, "usage: gnv %[1]s list [flags]\n       gnv %[1]s add RULE [flags]\n       gnv %[1]s del RULE|PROTO:LISTEN [flags]\n\nRULE is %[2]s.\n%[3]s\n\nflags:\n",
				cmd, ruleExample(cmd), map[string]string{"forward": "A forward listens on the host and dials into the overlay.", "expose": "An expose listens in the overlay and dials a host target."}[cmd])
		case "fdb":
			fmt.Fprint(os.Stderr, "usage: gnv fdb show|flush|flushall [flags]\n       gnv fdb add MAC REMOTE[:PORT] [flags]\n       gnv fdb del MAC [flags]\n\nflush removes the learned entries, flushall the static ones too (vxlan(4)'s meanings).\n\nflags:\n")
		default:
			fmt.Fprint(os.Stderr, "usage: gnv stats [flags]\n\nflags:\n")
		}
		fmt.Fprint(os.Stderr, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	iface := *name
	if iface == "" {
		iface = "-"
	}
	var req []string
	switch cmd {
	case "stats":
		if fs.NArg() != 0 {
			fs.Usage()
			return 2
		}
		req = []string{"stats", iface}
	case "fdb":
		if fs.NArg() < 1 {
			fs.Usage()
			return 2
		}
		op := fs.Arg(0)
		want := map[string]int{"show": 1, "flush": 1, "flushall": 1, "add": 3, "del": 2}[op]
		if want == 0 || fs.NArg() != want {
			fmt.Fprintf(os.Stderr, "gnv fdb %s: ", op)
			fs.Usage()
			return 2
		}
		req = append([]string{"fdb", op, iface}, fs.Args()[1:]...)
	case "evpn":
		if fs.NArg() != 1 || fs.Arg(0) != "show" {
			fmt.Fprintln(os.Stderr, "usage: gnv evpn show [--name NAME] [--control PATH]: BGP peers and EVPN routes per VNI")
			return 2
		}
		req = []string{"evpn", "show", iface}
	case "forward", "expose":
		op := fs.Arg(0)
		want := map[string]int{"list": 1, "add": 2, "del": 2}[op]
		if want == 0 || fs.NArg() != want {
			fs.Usage()
			return 2
		}
		req = append([]string{cmd, op, iface}, fs.Args()[1:]...)
	}
	path := *control
	if path == "" {
		n := *name
		if n == "" {
			n = "gnv0"
		}
		path = defaultControlPath(n)
	}
	if err := ctlRequest(os.Stdout, path, req); err != nil {
		fmt.Fprintf(os.Stderr, "gnv %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// ctlRequest sends one request line and copies the reply to out, minus the
// final status line, which becomes the error.
func ctlRequest(out io.Writer, path string, req []string) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("no gnv up listening on %s (see --control): %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, strings.Join(req, " ")); err != nil {
		return err
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "ok" {
			return nil
		}
		if msg, ok := strings.CutPrefix(line, "error: "); ok {
			return errors.New(msg)
		}
		fmt.Fprintln(out, line)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the connection closed before the reply ended")
}
