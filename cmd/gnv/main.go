// Command gnv runs Geneve (RFC 8926) tunnels in userspace.
//
//	gnv demo [flags]   two tunnel hosts in one process: ping, TCP, UDP, report
//	gnv up [flags]     run Geneve interfaces until SIGINT/SIGTERM
//	gnv show           print the running interfaces' configuration and state
//	gnv stats          print a running interface's counters
//	gnv fdb ...        show or change a running interface's forwarding table
//	gnv version        print the version
//	gnv evpn ...       the BGP EVPN peers and routes per VNI; clear duplicate MACs
//	gnv forward ...    list, add or remove host-to-overlay port forwards
//	gnv expose ...     list, add or remove overlay-to-host port forwards
//
// Run "gnv help" or "gnv COMMAND --help" for the flags.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit status: 0, 1 when the
// command failed, 2 for a usage error. Help goes to stdout, errors to
// stderr.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "demo"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			usage(stdout)
			return 0
		case "-version", "--version":
			args[0] = "version"
		}
		if args[0] != "" && args[0][0] != '-' {
			cmd, args = args[0], args[1:]
		}
	}
	switch cmd {
	case "demo":
		return demoMain(args, stdout, stderr)
	case "up":
		return upMain(args, stdout, stderr)
	case "show", "fdb", "stats", "forward", "expose", "evpn":
		return ctlMain(cmd, args, stdout, stderr)
	case "version":
		if len(args) == 1 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprintln(stdout, "usage: gnv version\n\nPrints gnv's module version, the VCS revision it was built from and the Go\nversion (gnv --version too).")
			return 0
		}
		if len(args) > 0 {
			fmt.Fprintf(stderr, "gnv version: unexpected argument %q\n", args[0])
			return 2
		}
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help":
		if len(args) > 0 && args[0] != "help" {
			return run([]string{args[0], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "gnv: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: gnv <command> [flags]

commands:
  demo     two Geneve hosts in one process (the default): ping, a TCP transfer
           with its content checked and UDP datagrams across the overlay, then
           a report; needs no privileges
  up       run Geneve interfaces (TAP, TUN or in-process netstack overlays over
           a kernel UDP, AF_PACKET or TAP underlay) until SIGINT/SIGTERM;
           --check validates a configuration without starting it
  show     the configuration and state of a running gnv up's interfaces
           (like ip -d link show); --json for scripts
  stats    the counters of a running gnv up; --json for scripts
  fdb      show, add, delete or flush forwarding entries of a running gnv up
  forward, expose
           list, add or remove port forwards of a running gnv up (netstack
           overlays): host to overlay (forward), overlay to host (expose)
  evpn     show the BGP EVPN peers and routes of a running gnv up, or end the
           freeze of MACs it found to be duplicates (clear-duplicates)
  version  print gnv's version and VCS revision (also --version)
  help     this text; "gnv help COMMAND" is "gnv COMMAND --help"

"gnv COMMAND --help" lists a command's flags. Exit status: 0 on success, 1
when the command failed, 2 for an invalid command line.
`)
}

// parseFlags parses args into fs, which prints its usage to stdout for
// --help. It reports whether the command goes on; if not, code is the
// exit status: 0 after --help, 2 after an error, which it prints to stderr
// with the flag set's name.
func parseFlags(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stdout)
	err := fs.Parse(args)
	if err == nil {
		return 0, true
	}
	if errors.Is(err, pflag.ErrHelp) {
		return 0, false
	}
	usageError(stderr, fs.Name(), err)
	return 2, false
}

// usageError prints a command-line error of the command cmd ("gnv up") and
// where to find its flags.
func usageError(stderr io.Writer, cmd string, err error) {
	fmt.Fprintf(stderr, "%s: %v\nRun \"%s --help\" for the flags.\n", cmd, err, cmd)
}
