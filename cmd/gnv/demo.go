package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/stack"
	"github.com/gnv-project/gnv/testutil"
	"github.com/spf13/pflag"
)

// demoOptions are the demo's flags.
type demoOptions struct {
	underlay       string
	mode           string
	underlayFamily int
	overlayFamily  int
	vni            uint32
	pcap           string
	sizeMiB        int
	pings          int
	datagrams      int
}

// demoHost is one end of the demo: a tunnel and its overlay address.
type demoHost struct {
	tun     *stack.Tunnel
	overlay netip.Addr
}

func demoMain(args []string, stdout, stderr io.Writer) int {
	var o demoOptions
	fs := newDemoFlags(&o)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		usageError(stderr, "gnv demo", fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0)))
		return 2
	}
	if err := o.validate(); err != nil {
		usageError(stderr, "gnv demo", err)
		return 2
	}
	if err := demo(stdout, o); err != nil {
		fmt.Fprintf(stderr, "gnv demo: FAILED: %v\n", err)
		return 1
	}
	return 0
}

// newDemoFlags declares the demo's flags into o.
func newDemoFlags(o *demoOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("gnv demo", pflag.ContinueOnError)
	fs.StringVar(&o.underlay, "underlay", "fabric", "underlay: fabric (in-memory switch, netstack underlay) or udp (kernel UDP sockets on loopback)")
	fs.StringVar(&o.mode, "mode", "l2", "tunnel mode: l2 (Ethernet inside) or l3 (IP inside)")
	fs.IntVar(&o.underlayFamily, "underlay-family", 4, "underlay IP version: 4 or 6")
	fs.IntVar(&o.overlayFamily, "overlay-family", 4, "overlay IP version: 4 or 6")
	fs.Uint32Var(&o.vni, "vni", 100, "virtual network identifier, 0..16777215")
	fs.StringVar(&o.pcap, "pcap", "", "write the underlay traffic to this pcap file")
	fs.IntVar(&o.sizeMiB, "size", 16, "MiB to send over TCP, 1..4096")
	fs.IntVar(&o.pings, "pings", 5, "ICMP echo requests to send, 1..1000")
	fs.IntVar(&o.datagrams, "datagrams", 50, "UDP datagrams to exchange, 1..100000")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: gnv demo [flags]\n\nTwo Geneve hosts in one process, no privileges needed: ping, a TCP transfer\nwith its content checked and UDP datagrams across the overlay, then a report.\n\nflags:\n%s", fs.FlagUsages())
	}
	return fs
}

func (o *demoOptions) validate() error {
	switch o.underlay {
	case "fabric", "udp":
	default:
		return fmt.Errorf("--underlay %q: valid underlays are fabric and udp", o.underlay)
	}
	if _, err := endpoint.ParseMode(o.mode); err != nil {
		return fmt.Errorf("--mode: %w", err)
	}
	if o.underlayFamily != 4 && o.underlayFamily != 6 {
		return fmt.Errorf("--underlay-family %d: valid values are 4 and 6", o.underlayFamily)
	}
	if o.overlayFamily != 4 && o.overlayFamily != 6 {
		return fmt.Errorf("--overlay-family %d: valid values are 4 and 6", o.overlayFamily)
	}
	if o.vni > geneve.MaxVNI {
		return fmt.Errorf("--vni %d out of range: valid VNIs are 0..%d", o.vni, geneve.MaxVNI)
	}
	if o.sizeMiB < 1 || o.sizeMiB > 4096 {
		return fmt.Errorf("--size %d out of range: valid sizes are 1..4096 MiB", o.sizeMiB)
	}
	if o.pings < 1 || o.pings > 1000 {
		return fmt.Errorf("--pings %d out of range: valid counts are 1..1000", o.pings)
	}
	if o.datagrams < 1 || o.datagrams > 100000 {
		return fmt.Errorf("--datagrams %d out of range: valid counts are 1..100000", o.datagrams)
	}
	return nil
}

// demo builds the two hosts, runs the checks and prints the report.
func demo(out io.Writer, o demoOptions) (err error) {
	mode, _ := endpoint.ParseMode(o.mode)
	var pcapFile *os.File
	var pcapW *bufio.Writer
	if o.pcap != "" {
		if pcapFile, err = os.Create(o.pcap); err != nil {
			return fmt.Errorf("--pcap: %w", err)
		}
		pcapW = bufio.NewWriter(pcapFile)
		defer func() {
			if ferr := pcapW.Flush(); ferr != nil && err == nil {
				err = fmt.Errorf("--pcap: %w", ferr)
			}
			if cerr := pcapFile.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("--pcap: %w", cerr)
			}
		}()
	}
	var a, b demoHost
	var underlayDesc string
	switch o.underlay {
	case "fabric":
		opts := testutil.HostsOptions{Mode: mode, VNI: o.vni, UnderlayFamily: o.underlayFamily, Seed: 1}
		if pcapW != nil {
			opts.Pcap = pcapW
		}
		hs, err := testutil.NewHosts(opts)
		if err != nil {
			return err
		}
		defer hs.Close()
		pick := func(h *testutil.Host) demoHost {
			if o.overlayFamily == 6 {
				return demoHost{h.Tunnel, h.Overlay6}
			}
			return demoHost{h.Tunnel, h.Overlay4}
		}
		a, b = pick(hs.Hosts[0]), pick(hs.Hosts[1])
		underlayDesc = fmt.Sprintf("in-memory fabric, netstack underlay %s <-> %s", hs.Hosts[0].Underlay, hs.Hosts[1].Underlay)
	case "udp":
		var closeAll func()
		var pw io.Writer // stays a nil interface without --pcap
		if pcapW != nil {
			pw = pcapW
		}
		a, b, underlayDesc, closeAll, err = kernelPair(o, mode, pw)
		if err != nil {
			return err
		}
		defer closeAll()
	}

	fmt.Fprintf(out, "gnv demo: %s tunnel, VNI %d, overlay MTU %d\n", mode, o.vni, a.tun.MTU())
	fmt.Fprintf(out, "  underlay: %s\n", underlayDesc)
	fmt.Fprintf(out, "  overlay:  %s <-> %s\n", a.overlay, b.overlay)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var failed []string

	// 1. ICMP echo.
	var rtts []time.Duration
	for i := 0; i < o.pings; i++ {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		rtt, err := a.tun.Ping(pctx, b.overlay, uint16(i+1), 56)
		pcancel()
		if err != nil {
			fmt.Fprintf(out, "  ping %d: %v\n", i+1, err)
			continue
		}
		rtts = append(rtts, rtt)
	}
	if len(rtts) > 0 {
		mn, mx, sum := rtts[0], rtts[0], time.Duration(0)
		for _, r := range rtts {
			mn, mx, sum = min(mn, r), max(mx, r), sum+r
		}
		fmt.Fprintf(out, "ping:  %d/%d replies, rtt min/avg/max %v/%v/%v\n", len(rtts), o.pings,
			mn.Round(time.Microsecond), (sum / time.Duration(len(rtts))).Round(time.Microsecond), mx.Round(time.Microsecond))
	}
	if len(rtts) != o.pings {
		fmt.Fprintf(out, "ping:  FAILED, %d of %d requests unanswered\n", o.pings-len(rtts), o.pings)
		failed = append(failed, "ping")
	}

	// 2. TCP transfer with content check.
	size := int64(o.sizeMiB) << 20
	res, err := testutil.TransferTCP(ctx, a.tun, b.tun, netip.AddrPortFrom(b.overlay, 5001), size, 1)
	if err != nil {
		fmt.Fprintf(out, "tcp:   FAILED: %v\n", err)
		failed = append(failed, "tcp")
	} else {
		fmt.Fprintf(out, "tcp:   %d MiB in %v, %.0f Mbit/s, content verified\n", o.sizeMiB, res.Duration.Round(time.Millisecond), res.Mbps())
	}

	// 3. UDP datagrams, echoed back.
	if err := testutil.ExchangeUDP(ctx, a.tun, b.tun, netip.AddrPortFrom(b.overlay, 5002), o.datagrams, 1200); err != nil {
		fmt.Fprintf(out, "udp:   FAILED: %v\n", err)
		failed = append(failed, "udp")
	} else {
		fmt.Fprintf(out, "udp:   %d datagrams of 1200 bytes echoed, content verified\n", o.datagrams)
	}

	fmt.Fprintf(out, "counters A: %s\n", a.tun.Stats())
	fmt.Fprintf(out, "counters B: %s\n", b.tun.Stats())
	if len(failed) > 0 {
		return fmt.Errorf("%v failed", failed)
	}
	fmt.Fprintln(out, "ok")
	return nil
}

// kernelPair builds two tunnels over kernel UDP sockets on loopback:
// 127.0.0.1 and 127.0.0.2 on port 6081, or ::1 on ports 6081 and 6082.
// macOS and the BSDs configure 127.0.0.1 alone, so there the IPv4 ends
// share it too, on ports 6081 and 6082.
func kernelPair(o demoOptions, mode endpoint.Mode, pcapW io.Writer) (a, b demoHost, desc string, closeAll func(), err error) {
	ulA, ulB := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	portA, portB := uint16(geneve.Port), uint16(geneve.Port)
	if o.underlayFamily == 6 {
		ulA, ulB = netip.IPv6Loopback(), netip.IPv6Loopback()
	}
	if o.underlayFamily == 6 || runtime.GOOS != "linux" && runtime.GOOS != "windows" {
		ulB, portB = ulA, geneve.Port+1
	}
	ovA, ovB := netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24")
	if o.overlayFamily == 6 {
		ovA, ovB = netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64")
	}
	mk := func(local netip.Addr, port uint16, remote netip.Addr, rport uint16, ov netip.Prefix, pw io.Writer) (*stack.Tunnel, error) {
		u := stack.KernelUDPUnderlay{Local: local, MTU: 1500}
		if pw != nil {
			u.Pcap = pw
		}
		return stack.New(stack.Config{
			VNI:       o.vni,
			Mode:      mode,
			Remotes:   []netip.Addr{remote},
			Port:      rport,
			LocalPort: port,
			Underlay:  u,
			Addresses: []netip.Prefix{ov},
		})
	}
	ta, err := mk(ulA, portA, ulB, portB, ovA, pcapW)
	if err != nil {
		return a, b, "", nil, err
	}
	tb, err := mk(ulB, portB, ulA, portA, ovB, nil)
	if err != nil {
		ta.Close()
		return a, b, "", nil, err
	}
	desc = fmt.Sprintf("kernel UDP sockets %s <-> %s", netip.AddrPortFrom(ulA, portA), netip.AddrPortFrom(ulB, portB))
	return demoHost{ta, ovA.Addr()}, demoHost{tb, ovB.Addr()}, desc, func() { ta.Close(); tb.Close() }, nil
}
