package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/stack/evpn"
)

// runningIface is one interface that is up.
type runningIface struct {
	plan *ifacePlan
	tun  *stack.Tunnel
	svc  *services // netstack overlays: forwards, exposes, proxies
	evpn *evpn.Speaker
}

// runUntilSignal runs the plan until SIGINT or SIGTERM.
func runUntilSignal(p *upPlan, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runUp(ctx, p, log, os.Stdout, nil)
}

// runUp brings the interfaces up, prints one line each, serves the control
// socket and waits for ctx to end; then it tears everything down. onUp, if
// set, is called once everything is up (tests use it).
func runUp(ctx context.Context, p *upPlan, log *slog.Logger, out io.Writer, onUp func([]*runningIface)) error {
	u, desc, err := openUnderlay(p, log)
	if err != nil {
		return err
	}
	var ifaces []*runningIface
	defer func() {
		for i := len(ifaces) - 1; i >= 0; i-- {
			ifaces[i].close()
		}
		u.Close()
	}()
	for i := range p.ifaces {
		ri, err := startIface(ctx, p, &p.ifaces[i], u, log)
		if err != nil {
			return fmt.Errorf("%s: %w", p.ifaces[i].name, overlayHint(err))
		}
		ifaces = append(ifaces, ri)
		fmt.Fprintln(out, ri.summary(desc))
	}
	if p.evpn != nil {
		sp, err := startEVPN(p.evpn, ifaces, log)
		if err != nil {
			return fmt.Errorf("evpn: %w", err)
		}
		defer sp.Close()
	}
	ctl, err := serveControl(p.control, ifaces, u, log)
	if err != nil {
		log.Warn("control socket unavailable; gnv fdb and gnv stats will not reach this process", "path", p.control, "err", err)
	} else {
		defer ctl.Close()
	}
	if onUp != nil {
		onUp(ifaces)
	}
	var tick <-chan time.Time
	if p.statsInterval > 0 {
		t := time.NewTicker(p.statsInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			for _, ri := range ifaces {
				log.Info("down", "name", ri.plan.name, "stats", ri.tun.Stats().String())
			}
			return nil
		case <-tick:
			for _, ri := range ifaces {
				log.Info("stats", "name", ri.plan.name, "stats", ri.tun.Stats().String())
			}
		}
	}
}

// summary is the one line printed when an interface is up.
func (ri *runningIface) summary(underlay string) string {
	c := &ri.plan.cfg
	var peers []string
	for _, r := range c.Remotes {
		peers = append(peers, r.String())
	}
	if c.Group.IsValid() {
		peers = append(peers, "group "+c.Group.String())
	}
	var addrs []string
	for _, a := range c.Addresses {
		addrs = append(addrs, a.String())
	}
	if len(addrs) == 0 {
		addrs = []string{"none"}
	}
	line := fmt.Sprintf("%s: up, %s vni %d, %s, remote %s, overlay %s addr %s, mtu %d",
		ri.plan.name, c.Mode, c.VNI, underlay, strings.Join(peers, ","), ri.plan.overlay, strings.Join(addrs, ","), ri.tun.MTU())
	if off := ri.tun.Offloads(); off != "" {
		line += ", offloads " + off
	} else {
		line += ", offloads none"
	}
	return line
}

// startIface builds one interface on the shared underlay.
func startIface(ctx context.Context, p *upPlan, ip *ifacePlan, u *stack.SharedUnderlay, log *slog.Logger) (*runningIface, error) {
	tun, err := stack.New(p.tunnelConfig(ip, u))
	if err != nil {
		return nil, withFlags(err, ip.given)
	}
	ri := &runningIface{plan: ip, tun: tun}
	if ip.overlay == "netstack" {
		svc, err := startServices(tun, ip, log)
		if err != nil {
			tun.Close()
			return nil, err
		}
		ri.svc = svc
	}
	return ri, nil
}

// close tears ri down: its forwarders, then its tunnel.
func (ri *runningIface) close() {
	if ri.svc != nil {
		ri.svc.Close()
	}
	ri.tun.Close()
}
