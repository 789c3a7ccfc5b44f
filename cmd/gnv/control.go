package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// defaultControlPath is where the control socket goes without --control:
// /run/gnv/NAME.sock for root (/var/run/gnv on other Unix systems, whose
// root file system may have no /run); for other users
// $XDG_RUNTIME_DIR/gnv/NAME.sock, or, when XDG_RUNTIME_DIR is unset,
// gnv-UID/NAME.sock in the temporary directory ($TMPDIR, else /tmp; on
// Windows, which has no UIDs and no root, gnv/NAME.sock in the user's
// own %TMP%).
func defaultControlPath(name string) string {
	dir := rootControlDir()
	if os.Geteuid() != 0 {
		if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
			dir = filepath.Join(x, "gnv")
		} else if uid := os.Getuid(); uid >= 0 {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("gnv-%d", uid))
		} else {
			dir = filepath.Join(os.TempDir(), "gnv")
		}
	}
	return filepath.Join(dir, name+".sock")
}

// rootControlDir is root's control socket directory.
func rootControlDir() string {
	if runtime.GOOS == "linux" {
		return "/run/gnv"
	}
	return "/var/run/gnv"
}

// Winsock's error codes, which syscall's portable Errno values of the same
// names (EADDRINUSE, ECONNREFUSED) do not match on Windows.
const (
	wsaeaddrinuse   = syscall.Errno(10048)
	wsaeconnrefused = syscall.Errno(10061)
)

// isAddrInUse and isConnRefused recognise those errors on every system.
func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || runtime.GOOS == "windows" && errors.Is(err, wsaeaddrinuse)
}

func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || runtime.GOOS == "windows" && errors.Is(err, wsaeconnrefused)
}

// controlFlagHelp is the --control flag's help: the rule, and what it
// gives for this user now.
func controlFlagHelp(nameFrom string) string {
	return fmt.Sprintf("control socket of gnv stats and fdb (default "+rootControlDir()+"/NAME.sock as root; otherwise "+
		"$XDG_RUNTIME_DIR/gnv/NAME.sock, or $TMPDIR/gnv-UID/NAME.sock (TMPDIR defaults to /tmp) when XDG_RUNTIME_DIR is unset; "+
		"NAME is %s; here: %s)", nameFrom, defaultControlPath("NAME"))
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

// controlInUseError says that a live gnv up answers on the control socket.
type controlInUseError struct{ path string }

func (e *controlInUseError) Error() string {
	return fmt.Sprintf("control socket %s is in use by a running gnv up: stop that one, or give this one another --name (or --control PATH)", e.path)
}

// listenControl claims the control socket at path. A socket file that a
// live process answers on is left alone (controlInUseError); one that no
// one answers on was left behind by a gnv up that did not exit cleanly,
// and is replaced. Anything else at path is refused. gnv up does not start
// without its control socket.
func listenControl(path string, log *slog.Logger) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w (see --control)", err)
	}
	if err := checkControlDir(dir); err != nil {
		return nil, err
	}
	for retried := false; ; retried = true {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			_ = os.Chmod(path, 0o600)
			return ln, nil
		}
		if !isAddrInUse(err) || retried {
			return nil, fmt.Errorf("control socket: %w (see --control)", err)
		}
		fi, serr := os.Lstat(path)
		if serr != nil {
			continue // gone in the meantime: try again
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: the path exists and is not a socket: remove it, or choose another --control", path)
		}
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, &controlInUseError{path: path}
		}
		if !isConnRefused(derr) {
			return nil, fmt.Errorf("control socket %s exists and cannot be checked (%v): remove it if no gnv up uses it, or choose another --control", path, derr)
		}
		log.Info("replacing a stale control socket (no process answers on it)", "path", path)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
}

// serveControl answers gnv stats and fdb on ln: one request line, a
// reply, and "ok" or "error: ..." as the last line. Closing ln stops it.
func serveControl(ln *net.UnixListener, inst *instance, log *slog.Logger) {
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
				if err := handleControl(w, strings.Fields(line), inst); err != nil {
					fmt.Fprintf(w, "error: %v\n", err)
				} else {
					fmt.Fprintln(w, "ok")
				}
				w.Flush()
			}()
		}
	}()
	log.Debug("control socket", "path", inst.control)
}

// handleControl runs one control request: "show NAME [json]", "stats NAME
// [json]", "fdb show NAME [json]", "fdb add NAME MAC REMOTE", "fdb del NAME
// MAC", "fdb flush NAME", "fdb flushall NAME". NAME is "-" for every
// interface (show, stats) or the only one (fdb).
func handleControl(w io.Writer, f []string, inst *instance) error {
	if len(f) < 2 {
		return fmt.Errorf("bad request")
	}
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	type texter interface{ text(io.Writer) }
	reply := func(v texter, asJSON bool) error {
		if asJSON {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		v.text(w)
		return nil
	}
	switch f[0] {
	case "show":
		r, err := inst.show(arg(1))
		if err != nil {
			return err
		}
		return reply(&r, arg(2) == "json")
	case "stats":
		r, err := inst.stats(arg(1))
		if err != nil {
			return err
		}
		return reply(&r, arg(2) == "json")
	case "fdb":
		name := arg(2)
		if name == "-" {
			name = ""
		}
		ri, err := controlIface(inst.ifaces, name)
		if err != nil {
			return err
		}
		if arg(1) == "show" {
			r, err := fdbDump(ri)
			if err != nil {
				return err
			}
			return reply(&r, arg(3) == "json")
		}
		fdb := ri.tun.Endpoint().FDB()
		if fdb == nil {
			return fmt.Errorf("%s is an l3 interface: it has no forwarding table", ri.plan.name)
		}
		switch arg(1) {
		case "flush":
			fdb.Flush()
			return nil
		case "flushall":
			fdb.FlushAll()
			return nil
		case "add":
			mac, err := parseUnicastMAC("MAC", arg(3))
			if err != nil {
				return err
			}
			remote, err := parseFDBRemote(arg(4))
			if err != nil {
				return err
			}
			if fam := inst.plan.family; fam != 0 && family(remote.Addr()) != fam {
				return fmt.Errorf("REMOTE %s is an IPv%d address, but the underlay of %s is IPv%d", remote.Addr(), family(remote.Addr()), ri.plan.name, fam)
			}
			return fdb.AddStatic(mac, remote)
		case "del":
			mac, err := parseUnicastMAC("MAC", arg(3))
			if err != nil {
				return err
			}
			return fdb.Remove(mac)
		}
		return fmt.Errorf("fdb %q: valid commands are show, add, del, flush and flushall", arg(1))
	case "evpn":
		var rest []string
		if len(f) > 3 {
			rest = f[3:]
		}
		return handleEVPNControl(w, arg(1), rest, inst.ifaces)
	case "forward", "expose":
		name := arg(2)
		if name == "-" {
			name = ""
		}
		ri, err := controlIface(inst.ifaces, name)
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

// parseFDBRemote parses the REMOTE argument of gnv fdb add: ADDR or
// ADDR:PORT ([ADDR]:PORT for IPv6); port 0 means the interface's --port.
func parseFDBRemote(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("REMOTE %q: want ADDR or ADDR:PORT ([ADDR]:PORT for IPv6), like 192.0.2.2", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 0), nil
}

// ctlMain runs "gnv show", "gnv stats" and "gnv fdb ...": it sends one
// request to a running gnv up over its control socket and prints the
// reply. Errors in the command line exit with 2, errors of the request
// with 1.
func ctlMain(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("gnv "+cmd, pflag.ContinueOnError)
	nameHelp := "interface name (default: every interface)"
	if cmd == "fdb" {
		nameHelp = "interface name (default: the only one)"
	}
	name := fs.String("name", "", nameHelp)
	control := fs.String("control", "", controlFlagHelp("--name, else gnv0"))
	asJSON := fs.Bool("json", false, "print JSON (stable snake_case field names; see README) instead of text")
	if cmd == "fdb" || cmd == "evpn" {
		fs.Lookup("json").Usage = cmd + " show: print JSON (stable snake_case field names; see README) instead of text"
	}
	fs.Usage = func() {
		switch cmd {
		case "forward", "expose":
			fmt.Fprintf(fs.Output(), "usage: gnv %[1]s list [flags]\n       gnv %[1]s add RULE [flags]\n       gnv %[1]s del RULE|PROTO:LISTEN [flags]\n\nRULE is %[2]s.\n%[3]s\n\nflags:\n",
				cmd, ruleExample(cmd), map[string]string{"forward": "A forward listens on the host and dials into the overlay.", "expose": "An expose listens in the overlay and dials a host target."}[cmd])
		case "show":
			fmt.Fprint(fs.Output(), "usage: gnv show [flags]\n\nThe configuration and state of a running gnv up's interfaces: mode, VNI,\naddresses, MTU, MAC, peers, outer header policy, forwarding table, offloads,\nforwards, the underlay socket and the control socket.\n\nflags:\n")
		case "fdb":
			fmt.Fprint(fs.Output(), "usage: gnv fdb show|flush|flushall [flags]\n       gnv fdb add MAC REMOTE[:PORT] [flags]\n       gnv fdb del MAC [flags]\n\nflush removes the learned entries, flushall the static ones too (vxlan(4)'s meanings).\nMAC is a unicast Ethernet address, REMOTE an underlay address of the interface's family.\n\nflags:\n")
		case "evpn":
			fmt.Fprint(fs.Output(), "usage: gnv evpn show [flags]\n       gnv evpn clear-duplicates [MAC] [flags]\n\nThe BGP EVPN speaker of a running gnv up (--evpn-asn). show: its peers with\nstate, uptime and routes in and out, the routes of each VNI, and the MACs\nfrozen as duplicates (moving between VTEPs too often: --evpn-dup-moves).\nclear-duplicates ends the freeze of MAC, or of every duplicate.\n\nflags:\n")
		default:
			fmt.Fprint(fs.Output(), "usage: gnv stats [flags]\n\nflags:\n")
		}
		fmt.Fprint(fs.Output(), fs.FlagUsages())
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	iface := *name
	if iface == "" {
		iface = "-"
	}
	fail := func(err error) int {
		usageError(stderr, fs.Name(), err)
		return 2
	}
	var req []string
	switch cmd {
	case "show", "stats":
		if fs.NArg() != 0 {
			return fail(fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0)))
		}
		req = []string{cmd, iface}
		if *asJSON {
			req = append(req, "json")
		}
	case "fdb":
		if fs.NArg() < 1 {
			return fail(errors.New("missing the operation: show, add, del, flush or flushall"))
		}
		op := fs.Arg(0)
		args := fs.Args()[1:]
		switch op {
		case "show", "flush", "flushall":
			if len(args) != 0 {
				return fail(fmt.Errorf("%s takes no arguments (got %q)", op, args[0]))
			}
		case "add":
			if len(args) != 2 {
				return fail(errors.New("add takes two arguments: MAC REMOTE[:PORT]"))
			}
			if _, err := parseUnicastMAC("MAC", args[0]); err != nil {
				return fail(err)
			}
			if _, err := parseFDBRemote(args[1]); err != nil {
				return fail(err)
			}
		case "del":
			if len(args) != 1 {
				return fail(errors.New("del takes one argument: MAC"))
			}
			if _, err := parseUnicastMAC("MAC", args[0]); err != nil {
				return fail(err)
			}
		default:
			return fail(fmt.Errorf("unknown operation %q: valid ones are show, add, del, flush and flushall", op))
		}
		if *asJSON && op != "show" {
			return fail(fmt.Errorf("--json goes with fdb show only"))
		}
		req = append([]string{"fdb", op, iface}, args...)
		if *asJSON {
			req = append(req, "json")
		}
	case "evpn":
		switch {
		case fs.NArg() == 1 && fs.Arg(0) == "show":
			req = []string{"evpn", "show", iface}
			if *asJSON {
				req = append(req, "json")
			}
		case *asJSON:
			return fail(fmt.Errorf("--json goes with show, stats, fdb show and evpn show"))
		case fs.NArg() >= 1 && fs.NArg() <= 2 && fs.Arg(0) == "clear-duplicates":
			req = append([]string{"evpn", "clear-duplicates", iface}, fs.Args()[1:]...)
			if fs.NArg() == 2 {
				if _, err := parseUnicastMAC("MAC", fs.Arg(1)); err != nil {
					return fail(err)
				}
			}
		default:
			return fail(errors.New("the commands are: gnv evpn show (BGP peers and EVPN routes per VNI) and gnv evpn clear-duplicates [MAC] (end the freeze of duplicate MACs), with [--name NAME] [--control PATH]"))
		}
	case "forward", "expose":
		if *asJSON {
			return fail(fmt.Errorf("--json goes with show, stats, fdb show and evpn show"))
		}
		op := fs.Arg(0)
		want, ok := map[string]int{"list": 1, "add": 2, "del": 2}[op]
		if !ok {
			return fail(fmt.Errorf("unknown operation %q: valid ones are list, add and del", op))
		}
		if fs.NArg() != want {
			return fail(fmt.Errorf("%s takes %d argument(s): see gnv %s --help", op, want-1, cmd))
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
	if err := ctlRequest(stdout, path, req); err != nil {
		fmt.Fprintf(stderr, "gnv %s: %v\n", cmd, err)
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

// controlAliases makes the default control path of every interface after
// the first (a --config file's sections) a symbolic link to p.control,
// the socket named after the first, so that "gnv stats --name SECTION"
// finds the process without --control. Only default paths get links; an
// existing socket there (another gnv up) is left alone, an existing link
// (left by a killed gnv up) replaced. It returns the links made.
func controlAliases(p *upPlan, log *slog.Logger) []string {
	if !p.controlDefault {
		return nil
	}
	var made []string
	for _, ip := range p.ifaces[1:] {
		path := defaultControlPath(ip.name)
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode()&os.ModeSymlink == 0 {
				log.Warn("control socket alias not made: the path is taken", "name", ip.name, "path", path)
				continue
			}
			_ = os.Remove(path)
		}
		if err := os.Symlink(p.control, path); err != nil {
			log.Warn("control socket alias not made", "name", ip.name, "path", path, "err", err)
			continue
		}
		made = append(made, path)
	}
	return made
}

// removeControlAliases removes the links controlAliases made, if they
// still point to target.
func removeControlAliases(links []string, target string) {
	for _, l := range links {
		if t, err := os.Readlink(l); err == nil && t == target {
			_ = os.Remove(l)
		}
	}
}
