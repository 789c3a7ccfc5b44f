package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"
)

const upUsage = `usage: gnv up [flags]
       gnv up --config FILE [socket flags]

Runs Geneve interfaces in the foreground until SIGINT or SIGTERM, then tears
them down. Every flag also has its FreeBSD geneve(4) keyword as an alias
(--geneveid for --vni, --geneveremote for --remote, ...).

Several interfaces (VNIs) share one underlay socket with --config FILE:
"key = value" lines with the flag names as keys; keys before the first
[name] section configure the shared socket (underlay, local, port, dev, ...),
each [name] section is one interface:

    underlay = udp
    local = 192.0.2.1
    [gnv0]
    vni = 100
    remote = 192.0.2.2
    addr = 10.0.0.1/24
    [gnv1]
    vni = 200
    mode = l3
    remote = 192.0.2.3
    addr = 10.1.0.1/24

While it runs, "gnv fdb" and "gnv stats" talk to it over --control.

--check validates the flags and the file, and that the devices they name
exist, and exits: 0 when gnv up would start, 2 otherwise. It opens nothing.

flags:
`

func upMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseUp(args, stdout)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0 // the flag set printed the usage
		}
		usageError(stderr, "gnv up", err)
		return 2
	}
	plan, err := o.plan()
	if err == nil {
		err = plan.checkHost()
	}
	if err != nil {
		usageError(stderr, "gnv up", err)
		return 2
	}
	if o.check {
		fmt.Fprintln(stdout, plan.checked())
		return 0
	}
	if err := runUntilSignal(plan, newLogger(stderr, plan.logLevel), stdout); err != nil {
		fmt.Fprintf(stderr, "gnv up: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
