package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// ctlMain runs "gnv fdb ..." and "gnv stats": it sends one request to a
// running gnv up over its control socket and prints the reply.
func ctlMain(cmd string, args []string) int {
	fs := pflag.NewFlagSet("gnv "+cmd, pflag.ContinueOnError)
	name := fs.String("name", "", "interface name (default: the only one, or gnv0)")
	control := fs.String("control", "", "control socket of the gnv up (default /run/gnv/NAME.sock)")
	fs.Usage = func() {
		switch cmd {
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
