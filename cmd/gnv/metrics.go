package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The Prometheus metrics of gnv up --metrics. Every counter of gnv stats
// is one, read from the snapshots at scrape time: the data path pays
// nothing for them. Interface metrics have an iface label; the drops of
// an interface and of the socket have a reason label (an
// endpoint.DropReason, '-' spelt '_'), every reason always present.

func metricDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("gnv_"+name, help, labels, nil)
}

// ifaceCounter is one counter of endpoint.Stats.
type ifaceCounter struct {
	desc *prometheus.Desc
	get  func(*endpoint.Stats) uint64
}

var (
	ifaceCounters = []ifaceCounter{
		{metricDesc("rx_packets_total", "Packets delivered to the overlay.", "iface"), func(s *endpoint.Stats) uint64 { return s.RxPackets }},
		{metricDesc("rx_bytes_total", "Inner bytes delivered to the overlay (the Ethernet header included in l2).", "iface"), func(s *endpoint.Stats) uint64 { return s.RxBytes }},
		{metricDesc("tx_packets_total", "Geneve datagrams handed to the underlay.", "iface"), func(s *endpoint.Stats) uint64 { return s.TxPackets }},
		{metricDesc("tx_bytes_total", "Inner bytes sent.", "iface"), func(s *endpoint.Stats) uint64 { return s.TxBytes }},
		{metricDesc("tx_gso_segments_total", "Segments made from TCP super-packets.", "iface"), func(s *endpoint.Stats) uint64 { return s.TxGSOSegments }},
		{metricDesc("tx_tunnel_jobs_total", "TCP super-packets handed to the underlay whole (UDP-tunnel GSO).", "iface"), func(s *endpoint.Stats) uint64 { return s.TxTunnelJobs }},
		{metricDesc("rx_tunnel_jobs_total", "TCP super-packets received whole.", "iface"), func(s *endpoint.Stats) uint64 { return s.RxTunnelJobs }},
		{metricDesc("rx_coalesced_total", "TCP segments received that the endpoint delivered merged with others of their flow.", "iface"), func(s *endpoint.Stats) uint64 { return s.RxCoalesced }},
		{metricDesc("rx_control_total", "O-bit control packets received (also counted as drops, reason control).", "iface"), func(s *endpoint.Stats) uint64 { return s.RxControl }},
		{metricDesc("pmtu_replies_total", "ICMP Fragmentation Needed / Packet Too Big messages sent into the overlay.", "iface"), func(s *endpoint.Stats) uint64 { return s.PMTUReplies }},
		{metricDesc("flood_bum_total", "Broadcast and multicast frames replicated to the flood list.", "iface"), func(s *endpoint.Stats) uint64 { return s.FloodBUM }},
		{metricDesc("flood_unknown_total", "Unicast frames for a MAC the forwarding table does not know, replicated to the flood list.", "iface"), func(s *endpoint.Stats) uint64 { return s.FloodUnknown }},
		{metricDesc("arp_suppressed_total", "ARP requests answered locally from the suppression table (BGP EVPN).", "iface"), func(s *endpoint.Stats) uint64 { return s.ARPSuppressed }},
		{metricDesc("arp_flooded_total", "ARP requests flooded because the suppression table had no answer.", "iface"), func(s *endpoint.Stats) uint64 { return s.ARPFlooded }},
		{metricDesc("nd_suppressed_total", "IPv6 neighbour solicitations answered locally from the suppression table.", "iface"), func(s *endpoint.Stats) uint64 { return s.NDSuppressed }},
		{metricDesc("nd_flooded_total", "IPv6 neighbour solicitations flooded.", "iface"), func(s *endpoint.Stats) uint64 { return s.NDFlooded }},
	}
	dropsDesc      = metricDesc("drops_total", "Packets an interface dropped, by reason.", "iface", "reason")
	ifaceInfoDesc  = metricDesc("interface_info", "Interfaces of this gnv up: always 1, the configuration in labels.", "iface", "mode", "vni", "overlay")
	mtuDesc        = metricDesc("mtu_bytes", "The interface's overlay MTU.", "iface")
	fdbEntriesDesc = metricDesc("fdb_entries", "Entries in the forwarding table (l2).", "iface")
	fdbMaxDesc     = metricDesc("fdb_max_entries", "Capacity of the forwarding table (l2).", "iface")
	fdbMetrics     = []struct {
		desc *prometheus.Desc
		get  func(*endpoint.FDBStats) uint64
	}{
		{metricDesc("fdb_learned_total", "Dynamic forwarding entries learned.", "iface"), func(s *endpoint.FDBStats) uint64 { return s.Learned }},
		{metricDesc("fdb_moved_total", "Dynamic forwarding entries whose remote changed.", "iface"), func(s *endpoint.FDBStats) uint64 { return s.Moved }},
		{metricDesc("fdb_no_space_total", "MAC addresses not learned because the table was full.", "iface"), func(s *endpoint.FDBStats) uint64 { return s.NoSpace }},
		{metricDesc("fdb_expired_total", "Dynamic forwarding entries removed by ageing.", "iface"), func(s *endpoint.FDBStats) uint64 { return s.Expired }},
	}
	// switchMetrics are the overlay switch's (--vm-listen), with
	// switchMACsDesc.
	switchMetrics = []struct {
		desc *prometheus.Desc
		get  func(*switchCounters) uint64
	}{
		{metricDesc("switch_frames_total", "Frames the overlay switch received from its ports (the tunnel, the overlay, the VMs).", "iface"), func(c *switchCounters) uint64 { return c.Frames }},
		{metricDesc("switch_forwarded_total", "Frames the switch sent to the one port their destination was learned on.", "iface"), func(c *switchCounters) uint64 { return c.Forwarded }},
		{metricDesc("switch_flooded_total", "Frames the switch sent to every other port.", "iface"), func(c *switchCounters) uint64 { return c.Flooded }},
		{metricDesc("switch_filtered_total", "Frames whose destination was learned on the port they came from.", "iface"), func(c *switchCounters) uint64 { return c.Filtered }},
		{metricDesc("switch_learned_total", "MACs the switch learned or moved.", "iface"), func(c *switchCounters) uint64 { return c.Learned }},
		{metricDesc("switch_learn_full_total", "Source MACs not learned because the switch's table was full.", "iface"), func(c *switchCounters) uint64 { return c.LearnFull }},
		{metricDesc("switch_drops_total", "Frames the switch dropped.", "iface"), func(c *switchCounters) uint64 { return c.Drops }},
	}
	switchMACsDesc = metricDesc("switch_macs", "MAC entries in the overlay switch.", "iface")
	deviceMetrics  = []struct {
		desc *prometheus.Desc
		get  func(*deviceCounters) uint64
	}{
		{metricDesc("device_read_frames_total", "Frames read from the TAP/TUN device (a super-packet counts once).", "iface"), func(d *deviceCounters) uint64 { return d.ReadFrames }},
		{metricDesc("device_read_bytes_total", "Bytes read from the TAP/TUN device.", "iface"), func(d *deviceCounters) uint64 { return d.ReadBytes }},
		{metricDesc("device_read_drops_total", "Frames read from the device and dropped as malformed or unsupported.", "iface"), func(d *deviceCounters) uint64 { return d.ReadDrops }},
		{metricDesc("device_read_errors_total", "Failed reads from the device.", "iface"), func(d *deviceCounters) uint64 { return d.ReadErrors }},
		{metricDesc("device_written_packets_total", "Packets written to the TAP/TUN device.", "iface"), func(d *deviceCounters) uint64 { return d.WrittenPackets }},
		{metricDesc("device_written_bytes_total", "Bytes written to the TAP/TUN device.", "iface"), func(d *deviceCounters) uint64 { return d.WrittenBytes }},
		{metricDesc("device_write_drops_total", "Packets not written to the device.", "iface"), func(d *deviceCounters) uint64 { return d.WriteDrops }},
		{metricDesc("device_write_errors_total", "Failed writes to the device.", "iface"), func(d *deviceCounters) uint64 { return d.WriteErrors }},
	}

	socketInfoDesc    = metricDesc("socket_info", "The shared underlay socket: always 1, its kind and bound address in labels.", "kind", "local")
	socketRxDesc      = metricDesc("socket_rx_datagrams_total", "Geneve datagrams the underlay transport received.")
	socketTxDesc      = metricDesc("socket_tx_datagrams_total", "Geneve datagrams the underlay transport sent.")
	socketRxBytesDesc = metricDesc("socket_rx_bytes_total", "UDP payload bytes received (udp underlay only).")
	socketTxBytesDesc = metricDesc("socket_tx_bytes_total", "UDP payload bytes sent (udp underlay only).")
	socketRxErrDesc   = metricDesc("socket_rx_errors_total", "Datagrams the transport could not receive or dropped.")
	socketTxErrDesc   = metricDesc("socket_tx_errors_total", "Datagrams the transport could not send.")
	socketEventsDesc  = metricDesc("socket_transport_events_total", "The underlay transport's own counters (GSO sends, GRO splits, queue overflows, ...), by event.", "event")
	socketDropsDesc   = metricDesc("socket_drops_total", "Datagrams dropped before reaching an interface (malformed, unknown VNI), by reason.", "reason")
	nicDescs          = [4]*prometheus.Desc{
		metricDesc("underlay_nic_rx_frames_total", "Frames the underlay netstack NIC received (packet and tap underlays)."),
		metricDesc("underlay_nic_rx_bytes_total", "Bytes the underlay netstack NIC received."),
		metricDesc("underlay_nic_tx_frames_total", "Frames the underlay netstack NIC sent (a segmentation job counts once)."),
		metricDesc("underlay_nic_tx_bytes_total", "Bytes the underlay netstack NIC sent."),
	}
)

// collector is the prometheus.Collector of an instance.
type collector struct{ inst *instance }

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range ifaceCounters {
		ch <- m.desc
	}
	for _, d := range []*prometheus.Desc{dropsDesc, ifaceInfoDesc, mtuDesc, fdbEntriesDesc, fdbMaxDesc, socketInfoDesc,
		socketRxDesc, socketTxDesc, socketRxBytesDesc, socketTxBytesDesc, socketRxErrDesc, socketTxErrDesc, socketEventsDesc, socketDropsDesc} {
		ch <- d
	}
	for _, m := range fdbMetrics {
		ch <- m.desc
	}
	for _, m := range deviceMetrics {
		ch <- m.desc
	}
	for _, m := range switchMetrics {
		ch <- m.desc
	}
	ch <- switchMACsDesc
	for _, d := range nicDescs {
		ch <- d
	}
	for _, d := range serviceDescs {
		ch <- d
	}
	describeEVPN(ch)
}

// Collect implements prometheus.Collector: a snapshot of every counter.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, ri := range c.inst.ifaces {
		name := ri.plan.name
		s := ri.tun.Stats()
		for _, m := range ifaceCounters {
			counter(m.desc, m.get(&s), name)
		}
		for r := endpoint.DropReason(0); r < endpoint.NumDropReasons; r++ {
			counter(dropsDesc, s.Drops[r], name, dropName(r))
		}
		gauge(ifaceInfoDesc, 1, name, ri.plan.cfg.Mode.String(), strconv.FormatUint(uint64(ri.plan.cfg.VNI), 10), ri.plan.overlay)
		gauge(mtuDesc, float64(ri.tun.MTU()), name)
		if fdb := ri.tun.Endpoint().FDB(); fdb != nil {
			st := fdb.Stats()
			gauge(fdbEntriesDesc, float64(st.Count), name)
			gauge(fdbMaxDesc, float64(st.Max), name)
			for _, m := range fdbMetrics {
				counter(m.desc, m.get(&st), name)
			}
		}
		if dev := ri.tun.Device(); dev != nil {
			d := dev.Stats()
			dc := deviceCounters{ReadFrames: d.ReadFrames, ReadBytes: d.ReadBytes, ReadDrops: d.ReadDrops, ReadErrors: d.ReadErrors,
				WrittenPackets: d.WrittenPackets, WrittenBytes: d.WrittenBytes, WriteDrops: d.WriteDrops, WriteErrors: d.WriteErrors}
			for _, m := range deviceMetrics {
				counter(m.desc, m.get(&dc), name)
			}
		}
		collectServices(ri, counter, gauge)
		if sw := ri.switchStats(); sw != nil {
			for _, m := range switchMetrics {
				counter(m.desc, m.get(sw), name)
			}
			gauge(switchMACsDesc, float64(sw.MACs), name)
		}
	}
	ss := c.inst.socketStats()
	gauge(socketInfoDesc, 1, ss.Kind, ss.Local)
	counter(socketRxDesc, ss.RxDatagrams)
	counter(socketTxDesc, ss.TxDatagrams)
	if ss.RxBytes != nil {
		counter(socketRxBytesDesc, *ss.RxBytes)
	}
	if ss.TxBytes != nil {
		counter(socketTxBytesDesc, *ss.TxBytes)
	}
	counter(socketRxErrDesc, ss.RxErrors)
	counter(socketTxErrDesc, ss.TxErrors)
	for k, v := range ss.Transport {
		counter(socketEventsDesc, v, k)
	}
	for r := endpoint.DropReason(0); r < endpoint.NumDropReasons; r++ {
		counter(socketDropsDesc, ss.Drops[dropName(r)], dropName(r))
	}
	if n := ss.NIC; n != nil {
		for i, v := range [4]uint64{n.RxFrames, n.RxBytes, n.TxFrames, n.TxBytes} {
			counter(nicDescs[i], v)
		}
	}
	if len(c.inst.ifaces) > 0 && c.inst.ifaces[0].evpn != nil {
		collectEVPN(c.inst.ifaces[0].evpn, counter, gauge)
	}
}

// listenMetrics opens the --metrics listener, before anything else is
// opened, so that a busy address stops gnv up early.
func listenMetrics(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	return ln, nil
}

// serveMetrics serves /metrics on ln: the instance's collector, and the
// Go runtime's, the process's and the build's. The returned function
// stops the server and closes ln.
func serveMetrics(ln net.Listener, inst *instance, log *slog.Logger) (stop func()) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{inst},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "gnv up: metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}
