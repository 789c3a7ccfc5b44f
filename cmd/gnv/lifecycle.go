package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/stack/evpn"
)

// runningIface is one interface that is up.
type runningIface struct {
	plan *ifacePlan
	tun  *stack.Tunnel
	svc  *services // netstack overlays: forwards, exposes, proxies

	vmListeners []*stack.VMListener // --vm-listen
	evpn        *evpn.Speaker       // --evpn-asn: the process's one speaker
}

// instance is a running gnv up: the shared underlay, its interfaces and
// the control socket that reaches them.
type instance struct {
	plan         *upPlan
	underlay     *stack.SharedUnderlay
	underlayDesc string // for the start-up lines
	ifaces       []*runningIface
	control      string   // the control socket's path
	metrics      net.Addr // where /metrics is served; nil without --metrics
	started      time.Time
}

// runUntilSignal runs the plan until SIGINT or SIGTERM.
func runUntilSignal(p *upPlan, log *slog.Logger, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runUp(ctx, p, log, out, nil)
}

// runUp claims the control socket, brings the interfaces up, prints one
// line each, serves the control socket and waits for ctx to end; then it
// tears everything down. onUp, if set, is called once everything is up
// (tests use it).
func runUp(ctx context.Context, p *upPlan, log *slog.Logger, out io.Writer, onUp func(*instance)) error {
	// The control socket is claimed first: a second gnv up with the same
	// name stops here, before it opens anything.
	ctl, err := listenControl(p.control, log)
	if err != nil {
		return err
	}
	inst := &instance{plan: p, control: p.control, started: time.Now()}
	var metrics net.Listener
	if p.metrics != "" {
		if metrics, err = listenMetrics(p.metrics); err != nil {
			ctl.Close()
			return err
		}
		inst.metrics = metrics.Addr()
	}
	u, desc, err := openUnderlay(p, log)
	if err != nil {
		ctl.Close()
		if metrics != nil {
			metrics.Close()
		}
		return err
	}
	inst.underlay, inst.underlayDesc = u, desc
	stopMetrics := func() {
		if metrics != nil {
			metrics.Close()
		}
	}
	aliases := controlAliases(p, log)
	defer func() {
		ctl.Close()
		removeControlAliases(aliases, p.control)
		stopMetrics()
		for i := len(inst.ifaces) - 1; i >= 0; i-- {
			inst.ifaces[i].close()
		}
		u.Close()
	}()
	for i := range p.ifaces {
		ri, err := startIface(ctx, p, &p.ifaces[i], u, log)
		if err != nil {
			return fmt.Errorf("%s: %w", p.ifaces[i].name, overlayHint(err))
		}
		inst.ifaces = append(inst.ifaces, ri)
		fmt.Fprintln(out, inst.summary(ri))
	}
	if p.evpn != nil {
		sp, err := startEVPN(p.evpn, inst.ifaces, log)
		if err != nil {
			return fmt.Errorf("evpn: %w", err)
		}
		defer sp.Close()
	}
	serveControl(ctl, inst, log)
	if metrics != nil {
		stopMetrics = serveMetrics(metrics, inst, log)
	}
	if onUp != nil {
		onUp(inst)
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
			for _, ri := range inst.ifaces {
				log.Info("down", "name", ri.plan.name, "stats", ri.tun.Stats().String())
			}
			return nil
		case <-tick:
			for _, ri := range inst.ifaces {
				log.Info("stats", "name", ri.plan.name, "stats", ri.tun.Stats().String())
			}
		}
	}
}

// summary is the one line printed when an interface is up.
func (inst *instance) summary(ri *runningIface) string {
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
	overlay := ri.plan.overlay
	if d := ri.tun.Device(); d != nil && d.Name() != ri.plan.name {
		overlay += " " + d.Name() // the utun device macOS picked
	}
	line := fmt.Sprintf("%s: up, %s vni %d, %s, remote %s, overlay %s addr %s, mtu %d",
		ri.plan.name, c.Mode, c.VNI, inst.underlayDesc, strings.Join(peers, ","), overlay, strings.Join(addrs, ","), ri.tun.MTU())
	if c.Mode == endpoint.L2 {
		line += ", mac " + net.HardwareAddr(ri.tun.Endpoint().LinkAddress()).String()
	}
	if off := ri.tun.Offloads(); off != "" {
		line += ", offloads " + off
	} else {
		line += ", offloads none"
	}
	if len(ri.plan.vmListen) > 0 {
		line += ", vms " + strings.Join(ri.plan.vmListen, ",")
	}
	line += ", control " + inst.control
	return line
}

// startIface builds one interface on the shared underlay.
func startIface(ctx context.Context, p *upPlan, ip *ifacePlan, u *stack.SharedUnderlay, log *slog.Logger) (*runningIface, error) {
	tun, err := stack.New(p.tunnelConfig(ip, u))
	if err != nil {
		return nil, withFlags(err, ip.given)
	}
	ri := &runningIface{plan: ip, tun: tun}
	// Tell the peers where this interface's MAC is now (gratuitous ARP,
	// unsolicited neighbour advertisements), so that a restarted host is
	// reachable at once.
	tun.Announce()
	if c := &ip.cfg; c.MTU != 0 {
		umtu := u.Socket().Transport().MTU()
		if most := endpoint.TunnelMTU(umtu, p.family, c.Mode, len(c.Endpoint.Options)); int(c.MTU) > most {
			log.Warn("--mtu is above what one underlay packet carries: larger overlay packets will be fragmented in the underlay, or dropped where it does not fragment",
				"name", ip.name, "mtu", c.MTU, "max", most, "underlay_mtu", umtu)
		}
	}
	if ip.overlay == "netstack" {
		svc, err := startServices(tun, ip, log)
		if err != nil {
			tun.Close()
			return nil, err
		}
		ri.svc = svc
	}
	if err := ri.startVMs(log); err != nil {
		ri.close()
		return nil, err
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
