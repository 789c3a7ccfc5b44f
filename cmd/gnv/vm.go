package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link/vmnet"
	"github.com/gnv-project/gnv/stack"
)

// planVMs checks o's --vm-listen sockets into p: an L2 interface only, each
// address unix:PATH (QEMU -netdev stream) or unixgram:PATH (-netdev dgram,
// vfkit), no path twice. Any of them puts a learning switch between the
// Geneve endpoint, the overlay (netstack or TAP) and the VMs.
func (p *ifacePlan) planVMs(o *ifaceOptions) error {
	if len(o.vmListen) == 0 {
		return nil
	}
	if p.cfg.Mode != endpoint.L2 {
		return fmt.Errorf("--vm-listen needs --mode l2: a VM attaches as an Ethernet port of the overlay")
	}
	if p.overlay == "tun" {
		return fmt.Errorf("--vm-listen needs --overlay netstack or tap")
	}
	seen := map[string]bool{}
	for _, a := range o.vmListen {
		_, path, err := stack.ParseVMAddr(a)
		if err != nil {
			return fmt.Errorf("--vm-listen %q: %v", a, err)
		}
		if seen[path] {
			return fmt.Errorf("--vm-listen %q: the path %s is given twice", a, path)
		}
		seen[path] = true
		p.vmListen = append(p.vmListen, a)
	}
	p.cfg.Switch = &stack.SwitchConfig{}
	return nil
}

// startVMs opens ri's VM sockets. The tunnel closes them when it closes.
func (ri *runningIface) startVMs(log *slog.Logger) error {
	for _, a := range ri.plan.vmListen {
		l, err := ri.tun.ListenVM(a)
		if err != nil {
			return fmt.Errorf("--vm-listen %s: %w", a, err)
		}
		ri.vmListeners = append(ri.vmListeners, l)
		log.Info("VM socket", "name", ri.plan.name, "listen", a, "qemu", qemuHint(a, ri.tun.MTU()))
	}
	return nil
}

// qemuHint is the QEMU command-line fragment that attaches a guest to the
// VM socket a.
func qemuHint(a string, mtu uint32) string {
	network, path, err := stack.ParseVMAddr(a)
	if err != nil {
		return ""
	}
	dev := fmt.Sprintf("-device virtio-net-pci,netdev=n0,host_mtu=%d", mtu)
	if network == "unix" {
		return fmt.Sprintf("-netdev stream,id=n0,server=off,addr.type=unix,addr.path=%s %s", path, dev)
	}
	return fmt.Sprintf("-netdev dgram,id=n0,local.type=unix,local.path=GUEST.sock,remote.type=unix,remote.path=%s %s", path, dev)
}

// vmShow is an interface's VM sockets and the VMs attached now, for gnv
// show.
type vmShow struct {
	Listen []string     `json:"listen"`
	Ports  []vmPortShow `json:"ports"`
}

// vmPortShow is one attached VM.
type vmPortShow struct {
	Remote   string   `json:"remote"` // the socket's peer, if it has a name
	MACs     []string `json:"macs"`
	RxFrames uint64   `json:"rx_frames"`
	TxFrames uint64   `json:"tx_frames"`
	Drops    uint64   `json:"drops"`
}

func (ri *runningIface) vmsShow() *vmShow {
	if len(ri.plan.vmListen) == 0 {
		return nil
	}
	s := &vmShow{Listen: ri.plan.vmListen, Ports: []vmPortShow{}}
	for _, vm := range ri.tun.VMs() {
		st := vm.Stats()
		p := vmPortShow{MACs: []string{}, RxFrames: st.RxFrames, TxFrames: st.TxFrames, Drops: st.TotalDrops()}
		if a := vm.RemoteAddr(); a != nil {
			p.Remote = a.String()
		}
		for _, m := range vm.MACs() {
			p.MACs = append(p.MACs, m.String())
		}
		s.Ports = append(s.Ports, p)
	}
	return s
}

func (s *vmShow) text(w io.Writer) {
	fmt.Fprintf(w, "    vm sockets %s, %d attached\n", strings.Join(s.Listen, " "), len(s.Ports))
	for _, p := range s.Ports {
		fmt.Fprintf(w, "      vm %s macs %s rx %d tx %d drops %d\n", orNone([]string{p.Remote}), orNone(p.MACs), p.RxFrames, p.TxFrames, p.Drops)
	}
}

// switchCounters are the overlay switch's counters, for gnv stats.
type switchCounters struct {
	Frames    uint64          `json:"frames"`
	Forwarded uint64          `json:"forwarded"`
	Flooded   uint64          `json:"flooded"`
	Filtered  uint64          `json:"filtered"`
	Learned   uint64          `json:"learned"`
	LearnFull uint64          `json:"learn_full"`
	MACs      int             `json:"macs"`
	Drops     uint64          `json:"drops"`
	VMs       []vmnetCounters `json:"vms"`
}

// vmnetCounters are one VM port's counters.
type vmnetCounters struct {
	Remote     string `json:"remote"`
	RxFrames   uint64 `json:"rx_frames"`
	RxBytes    uint64 `json:"rx_bytes"`
	TxFrames   uint64 `json:"tx_frames"`
	TxBytes    uint64 `json:"tx_bytes"`
	TxSegments uint64 `json:"tx_segments"`
	Drops      uint64 `json:"drops"`
}

func vmCounters(st vmnet.Stats) vmnetCounters {
	return vmnetCounters{RxFrames: st.RxFrames, RxBytes: st.RxBytes, TxFrames: st.TxFrames, TxBytes: st.TxBytes,
		TxSegments: st.TxSegments, Drops: st.TotalDrops()}
}

func (ri *runningIface) switchStats() *switchCounters {
	sw := ri.tun.Switch()
	if sw == nil {
		return nil
	}
	st := sw.Stats()
	c := &switchCounters{Frames: st.Frames, Forwarded: st.Forwarded, Flooded: st.Flooded, Filtered: st.Filtered,
		Learned: st.Learned, LearnFull: st.LearnFull, MACs: st.MACs, Drops: st.TotalDrops(), VMs: []vmnetCounters{}}
	for _, vm := range ri.tun.VMs() {
		v := vmCounters(vm.Stats())
		if a := vm.RemoteAddr(); a != nil {
			v.Remote = a.String()
		}
		c.VMs = append(c.VMs, v)
	}
	return c
}

// switchEntries lists the MACs the overlay switch learned on its local
// ports (the overlay itself and the VMs), for gnv fdb show: the endpoint's
// table holds the remote ones.
func (ri *runningIface) switchEntries() []fdbEntry {
	sw := ri.tun.Switch()
	if sw == nil {
		return nil
	}
	var out []fdbEntry
	for _, e := range sw.MACs() {
		if e.Port.Name() == "geneve" {
			continue // behind the tunnel: the endpoint's table says where
		}
		out = append(out, fdbEntry{MAC: e.MAC.String(), Port: e.Port.Name(), Static: e.Static, AgeSeconds: e.Age.Seconds()})
	}
	return out
}
