// Package pcap reads and writes classic libpcap capture files (the format
// tcpdump -w writes), enough for gnv's captures and test vectors.
package pcap

// Link types used by gnv (https://www.tcpdump.org/linktypes.html).
const (
	LinkTypeEthernet = 1   // LINKTYPE_ETHERNET
	LinkTypeRaw      = 101 // LINKTYPE_RAW: each packet starts with an IPv4 or IPv6 header
	LinkTypeLinuxSLL = 113 // LINKTYPE_LINUX_SLL (read only)
)
