// Package gnv is the root of gnv, Geneve (RFC 8926) tunnels in pure
// userspace on gVisor's netstack. It holds no code; the packages are:
//
//   - [github.com/gnv-project/gnv/stack]: the embedding API. Config and
//     New build a Tunnel (an L2 or L3 Geneve overlay with an in-process
//     netstack, or patched to a TAP/TUN device) on an underlay: a kernel
//     UDP socket (rootless), a netstack on AF_PACKET or TAP, or any
//     link.Transport. Tunnel.DialContext, Listen and ListenPacket reach the
//     overlay; stack/forward, stack/socks5 and stack/httpproxy connect it
//     to host programs.
//   - [github.com/gnv-project/gnv/endpoint]: the Geneve stack.LinkEndpoint
//     and the VNI demultiplexer; [github.com/gnv-project/gnv/endpoint/geneve]
//     is the wire codec.
//   - [github.com/gnv-project/gnv/link]: the contract between the endpoint
//     and its transports, with one package per transport, NIC and device
//     below it (kudp, nsudp, afpacket, tapnic, tuntap, capture, qdisc,
//     linktest).
//   - [github.com/gnv-project/gnv/testutil]: an in-memory Ethernet fabric
//     with seeded faults and a manual clock, for deterministic tests.
//   - github.com/gnv-project/gnv/cmd/gnv: the command line (gnv demo, gnv
//     up, gnv fdb, gnv stats, ...).
//
// The README has the quick start and the design.
package gnv
