package forward

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one forwarding rule: connections (TCP) or datagrams (UDP) that
// arrive at Listen, on the network a Manager listens on, are relayed to
// Target on the network it dials.
type Rule struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Listen is the address to listen on. Port 0 picks a free port: the
	// rule that Manager.Add returns has the port that was bound.
	Listen netip.AddrPort
	// Target is where to connect, as host:port (IPv6 in brackets). An
	// overlay has no resolver: there, the host must be an IP address.
	Target string
}

// Key names a rule within a Manager: its protocol and listening address.
type Key struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Listen is the rule's listening address.
	Listen netip.AddrPort
}

// Key returns the rule's key.
func (r Rule) Key() Key { return Key{Proto: r.Proto, Listen: r.Listen} }

// String formats the rule the way ParseRule reads it:
// tcp:127.0.0.1:8080=10.0.0.2:80.
func (r Rule) String() string { return r.Proto + ":" + r.Listen.String() + "=" + r.Target }

// String formats the key the way ParseKey reads it: tcp:127.0.0.1:8080.
func (k Key) String() string { return k.Proto + ":" + k.Listen.String() }

// ruleSyntax is the form of a rule, for error messages.
const ruleSyntax = "want PROTO:LISTEN_IP:PORT=TARGET_HOST:PORT, e.g. tcp:127.0.0.1:8080=10.0.0.2:80"

// ParseRule reads a rule written PROTO:LISTEN=TARGET, for example
// "tcp:127.0.0.1:8080=10.0.0.2:80" or "udp:[::1]:5353=[fd00::2]:53".
// PROTO is tcp or udp; LISTEN is an IP address and a port (0 for any free
// port); TARGET is a host and a port 1..65535. IPv6 addresses go in
// brackets. Errors quote the rule and name the part that is wrong.
func ParseRule(s string) (Rule, error) {
	proto, rest, err := parseProto(s)
	if err != nil {
		return Rule{}, err
	}
	listen, target, ok := strings.Cut(rest, "=")
	if !ok {
		return Rule{}, fmt.Errorf("rule %q: missing =TARGET: %s", s, ruleSyntax)
	}
	r := Rule{Proto: proto, Target: target}
	if r.Listen, err = parseListen(listen); err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", s, err)
	}
	if err := checkTarget(target); err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", s, err)
	}
	return r, nil
}

// ParseKey reads a rule's key, PROTO:LISTEN ("tcp:127.0.0.1:8080"); a whole
// rule is accepted too, and its target ignored, so that a line of
// Manager.List can be pasted.
func ParseKey(s string) (Key, error) {
	proto, rest, err := parseProto(s)
	if err != nil {
		return Key{}, err
	}
	if i := strings.IndexByte(rest, '='); i >= 0 {
		rest = rest[:i]
	}
	listen, err := parseListen(rest)
	if err != nil {
		return Key{}, fmt.Errorf("rule %q: %w", s, err)
	}
	return Key{Proto: proto, Listen: listen}, nil
}

func parseProto(s string) (proto, rest string, err error) {
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("rule %q: %s", s, ruleSyntax)
	}
	if proto != "tcp" && proto != "udp" {
		return "", "", fmt.Errorf("rule %q: protocol %q: want tcp or udp", s, proto)
	}
	return proto, rest, nil
}

func parseListen(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, fmt.Errorf("listen address is empty: %s", ruleSyntax)
	}
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: IPv6 addresses go in brackets, e.g. [::1]:8080", s)
	}
	host, port, serr := net.SplitHostPort(s)
	switch {
	case serr != nil:
		return netip.AddrPort{}, fmt.Errorf("listen address %q: want IP:PORT", s)
	case !validPort(port, true):
		return netip.AddrPort{}, fmt.Errorf("listen address %q: port %q: want 0..65535", s, port)
	default:
		return netip.AddrPort{}, fmt.Errorf("listen address %q: %q is not an IP address", s, host)
	}
}

func checkTarget(s string) error {
	if s == "" {
		return fmt.Errorf("target is empty: %s", ruleSyntax)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			return fmt.Errorf("target %q: IPv6 addresses go in brackets, e.g. [fd00::2]:80", s)
		}
		return fmt.Errorf("target %q: want HOST:PORT", s)
	}
	if host == "" {
		return fmt.Errorf("target %q: missing host", s)
	}
	if strings.ContainsAny(host, " /=") {
		return fmt.Errorf("target %q: %q is not a host name or IP address", s, host)
	}
	if !validPort(port, false) {
		return fmt.Errorf("target %q: port %q: want 1..65535", s, port)
	}
	return nil
}

func validPort(s string, zero bool) bool {
	n, err := strconv.ParseUint(s, 10, 16)
	return err == nil && (zero || n != 0)
}
