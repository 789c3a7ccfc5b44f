package endpoint

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/gnv-project/gnv/link"
)

// DropReason says why a packet was dropped. Every drop in gnv's data path is
// counted under exactly one reason.
type DropReason int

// Drop reasons. The receive-side reasons follow the order of the checks.
const (
	// DropTruncated: the datagram is shorter than a Geneve base header.
	DropTruncated DropReason = iota
	// DropVersion: the Geneve version is not 0 (RFC 8926 §3.4: MUST drop).
	DropVersion
	// DropOptionsTruncated: Opt Len points past the end of the datagram.
	DropOptionsTruncated
	// DropOptionLength: option TLV lengths do not sum to Opt Len (§3.5).
	DropOptionLength
	// DropUnknownVNI: no endpoint on this socket has the VNI.
	DropUnknownVNI
	// DropControl: the O bit is set; the payload is never delivered to the
	// overlay (§3.4). It went to the control hook if one is set.
	DropControl
	// DropCritical: an option with the critical bit set is not understood
	// (§3.5.1).
	DropCritical
	// DropProtocol: the protocol type does not fit the endpoint's mode.
	DropProtocol
	// DropSource: the outer source is not an accepted peer.
	DropSource
	// DropInnerMalformed: the inner frame or IP header is too short or
	// inconsistent with the protocol type.
	DropInnerMalformed
	// DropInnerTransportHeader: the inner TCP or UDP header does not fit
	// the packet: a TCP data offset below 20 bytes or past the end of the
	// segment, a UDP length field below 8 or past the end of the packet,
	// or a segment too short for the header. Checked even when the
	// checksums are trusted (link.Datagram.Local).
	DropInnerTransportHeader
	// DropInnerChecksum: the inner IP or transport checksum is wrong (only
	// checked when the endpoint offers receive checksum offload).
	DropInnerChecksum
	// DropNotForUs: L2 unicast frame for another MAC address.
	DropNotForUs
	// DropLoop: L2 frame whose source MAC is our own (a loop or a
	// multicast echo).
	DropLoop
	// DropECN: inner Not-ECT with outer CE (RFC 6040 §4.2).
	DropECN
	// DropNotAttached: the endpoint has no network dispatcher (closed or
	// not yet attached to a NIC).
	DropNotAttached
	// DropTxTooBig: the inner packet exceeds the tunnel MTU.
	DropTxTooBig
	// DropTxNoRoute: there is no remote or group to send to.
	DropTxNoRoute
	// DropTxMalformed: a packet the endpoint cannot encapsulate (a GSO
	// packet with unusable headers, for example).
	DropTxMalformed
	// DropTxUnderlay: the underlay transport refused the datagram.
	DropTxUnderlay

	// NumDropReasons is the number of drop reasons.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	DropTruncated:            "truncated",
	DropVersion:              "version",
	DropOptionsTruncated:     "options-truncated",
	DropOptionLength:         "option-length",
	DropUnknownVNI:           "unknown-vni",
	DropControl:              "control",
	DropCritical:             "critical-option",
	DropProtocol:             "protocol",
	DropSource:               "source",
	DropInnerMalformed:       "inner-malformed",
	DropInnerTransportHeader: "inner-transport-header",
	DropInnerChecksum:        "inner-checksum",
	DropNotForUs:             "not-for-us",
	DropLoop:                 "loop",
	DropECN:                  "ecn",
	DropNotAttached:          "not-attached",
	DropTxTooBig:             "tx-too-big",
	DropTxNoRoute:            "tx-no-route",
	DropTxMalformed:          "tx-malformed",
	DropTxUnderlay:           "tx-underlay",
}

// String returns the reason's short name, as printed in reports.
func (r DropReason) String() string {
	if r >= 0 && r < NumDropReasons {
		return dropReasonNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", int(r))
}

// Stats is a snapshot of an endpoint's or socket's counters.
type Stats struct {
	RxPackets uint64 // packets delivered to the overlay
	RxBytes   uint64 // inner bytes delivered (inner frame, Ethernet header included in L2)
	TxPackets uint64 // Geneve datagrams handed to the underlay
	TxBytes   uint64 // inner bytes sent
	// TxGSOSegments counts segments made from TCP super-packets.
	TxGSOSegments uint64
	// TxTunnelJobs counts TCP super-packets handed to the underlay whole,
	// for the kernel to segment after encapsulation (link.Packet.InnerMSS);
	// RxTunnelJobs counts such super-packets received whole.
	TxTunnelJobs, RxTunnelJobs uint64
	// RxCoalesced counts received TCP segments that the endpoint's own
	// receive coalescing delivered merged with others of their flow, in
	// runs of two or more (each also counts in RxPackets).
	RxCoalesced uint64
	// RxControl counts O-bit control packets (also counted in Drops[DropControl]).
	RxControl uint64
	// PMTUReplies counts ICMP Fragmentation Needed / ICMPv6 Packet Too Big
	// messages sent back into the overlay for packets above the MTU.
	PMTUReplies uint64
	// FloodBUM counts broadcast and multicast frames to be flooded,
	// FloodUnknown unicast frames for a MAC the forwarding table does not
	// know (L2; each frame once, however many copies it took; a frame
	// with an empty flood list is counted here and dropped as
	// DropTxNoRoute).
	FloodBUM, FloodUnknown uint64
	// ARPSuppressed and NDSuppressed count ARP requests and IPv6 neighbour
	// solicitations answered locally from the suppression table
	// (FDB.AddNeighbor) instead of being flooded; ARPFlooded and NDFlooded
	// those the table could not answer, which were flooded.
	ARPSuppressed, ARPFlooded, NDSuppressed, NDFlooded uint64
	// Drops counts dropped packets by reason.
	Drops [NumDropReasons]uint64
}

// TotalDrops is the sum of all drop counters.
func (s Stats) TotalDrops() uint64 { return link.SumDrops(s.Drops[:]) }

// Add adds o's counters to s.
func (s *Stats) Add(o *Stats) {
	s.RxPackets += o.RxPackets
	s.RxBytes += o.RxBytes
	s.TxPackets += o.TxPackets
	s.TxBytes += o.TxBytes
	s.TxGSOSegments += o.TxGSOSegments
	s.TxTunnelJobs += o.TxTunnelJobs
	s.RxTunnelJobs += o.RxTunnelJobs
	s.RxCoalesced += o.RxCoalesced
	s.RxControl += o.RxControl
	s.PMTUReplies += o.PMTUReplies
	s.FloodBUM += o.FloodBUM
	s.FloodUnknown += o.FloodUnknown
	s.ARPSuppressed += o.ARPSuppressed
	s.ARPFlooded += o.ARPFlooded
	s.NDSuppressed += o.NDSuppressed
	s.NDFlooded += o.NDFlooded
	for i := range s.Drops {
		s.Drops[i] += o.Drops[i]
	}
}

// String formats the counters on one line, listing only non-zero drops.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rx %d pkts %d B, tx %d pkts %d B", s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes)
	if s.TxGSOSegments != 0 {
		fmt.Fprintf(&b, " (%d GSO segments)", s.TxGSOSegments)
	}
	if s.RxCoalesced != 0 {
		fmt.Fprintf(&b, " (%d coalesced)", s.RxCoalesced)
	}
	if s.TxTunnelJobs != 0 || s.RxTunnelJobs != 0 {
		fmt.Fprintf(&b, ", tunnel GSO tx %d rx %d", s.TxTunnelJobs, s.RxTunnelJobs)
	}
	if s.FloodBUM != 0 || s.FloodUnknown != 0 {
		fmt.Fprintf(&b, ", flood bum %d unknown %d", s.FloodBUM, s.FloodUnknown)
	}
	if s.ARPSuppressed != 0 || s.ARPFlooded != 0 || s.NDSuppressed != 0 || s.NDFlooded != 0 {
		fmt.Fprintf(&b, ", suppressed arp %d nd %d, flooded arp %d nd %d", s.ARPSuppressed, s.NDSuppressed, s.ARPFlooded, s.NDFlooded)
	}
	if s.TotalDrops() == 0 {
		b.WriteString(", no drops")
		return b.String()
	}
	b.WriteString(", drops:")
	for r, d := range s.Drops {
		if d != 0 {
			fmt.Fprintf(&b, " %s=%d", DropReason(r), d)
		}
	}
	return b.String()
}

// counters is the live, concurrency-safe form of Stats.
type counters struct {
	rxPackets, rxBytes         atomic.Uint64
	txPackets, txBytes         atomic.Uint64
	txGSOSegments, rxControl   atomic.Uint64
	pmtuReplies                atomic.Uint64
	txTunnelJobs, rxTunnelJobs atomic.Uint64
	rxCoalesced                atomic.Uint64
	floodBUM, floodUnknown     atomic.Uint64
	arpSuppressed, arpFlooded  atomic.Uint64
	ndSuppressed, ndFlooded    atomic.Uint64
	drops                      [NumDropReasons]atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

func (c *counters) snapshot() Stats {
	s := Stats{
		RxPackets:     c.rxPackets.Load(),
		RxBytes:       c.rxBytes.Load(),
		TxPackets:     c.txPackets.Load(),
		TxBytes:       c.txBytes.Load(),
		TxGSOSegments: c.txGSOSegments.Load(),
		RxControl:     c.rxControl.Load(),
		PMTUReplies:   c.pmtuReplies.Load(),
		TxTunnelJobs:  c.txTunnelJobs.Load(),
		RxTunnelJobs:  c.rxTunnelJobs.Load(),
		RxCoalesced:   c.rxCoalesced.Load(),
		FloodBUM:      c.floodBUM.Load(),
		FloodUnknown:  c.floodUnknown.Load(),
		ARPSuppressed: c.arpSuppressed.Load(),
		ARPFlooded:    c.arpFlooded.Load(),
		NDSuppressed:  c.ndSuppressed.Load(),
		NDFlooded:     c.ndFlooded.Load(),
	}
	link.LoadDrops(s.Drops[:], c.drops[:])
	return s
}
