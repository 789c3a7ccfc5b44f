// Command gnv runs Geneve (RFC 8926) tunnels in userspace.
//
//	gnv demo [flags]   two tunnel hosts in one process: ping, TCP, UDP, report
//	gnv up [flags]     run Geneve interfaces until SIGINT/SIGTERM
//	gnv fdb ...        show or change a running interface's forwarding table
//	gnv stats          print a running interface's counters
//	gnv forward ...    list, add or remove host-to-overlay port forwards
//	gnv expose ...     list, add or remove overlay-to-host port forwards
//	gnv evpn show      BGP EVPN peers and routes per VNI
//
// Run "gnv help" or "gnv demo --help" for the flags.
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches a subcommand and returns the exit status.
func run(args []string) int {
	cmd := "demo"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "demo":
		return demoMain(args)
	case "up":
		return upMain(args)
	case "fdb", "stats", "forward", "expose", "evpn":
		return ctlMain(cmd, args)
	case "help":
		usage()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "gnv: unknown command %q\n", cmd)
		usage()
		return 2
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: gnv <command> [flags]

commands:
  demo   two Geneve hosts in one process (the default): ping, a TCP transfer
         with its content checked and UDP datagrams across the overlay, then a
         report; needs no privileges
  up     run Geneve interfaces (TAP, TUN or in-process netstack overlays over
         a kernel UDP or AF_PACKET underlay) until SIGINT/SIGTERM
  fdb    show, add, delete or flush forwarding entries of a running gnv up
  stats  print the counters of a running gnv up
  forward, expose
         list, add or remove port forwards of a running gnv up: host to
         overlay (forward) or overlay to host (expose)
  evpn   show the BGP EVPN peers and routes per VNI of a running gnv up
  help   this text

"gnv <command> --help" lists a command's flags.
`)
}
