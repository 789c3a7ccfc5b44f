package testutil

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a minimal authoritative DNS server for tests: it answers A
// and AAAA questions for the names it holds, NXDOMAIN for any other name,
// over a UDP socket (an overlay's, say).
type DNSServer struct {
	pc      net.PacketConn
	records map[string][]netip.Addr
	queries atomic.Int64
	done    chan struct{}
}

// ServeDNS answers on pc from records (names with or without the final
// dot, case-insensitive) until Close. It takes ownership of pc.
func ServeDNS(pc net.PacketConn, records map[string][]netip.Addr) *DNSServer {
	s := &DNSServer{pc: pc, records: map[string][]netip.Addr{}, done: make(chan struct{})}
	for name, addrs := range records {
		s.records[canonicalName(name)] = addrs
	}
	go s.serve()
	return s
}

func canonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, ".")) + "."
}

// Queries returns how many questions the server has answered.
func (s *DNSServer) Queries() int { return int(s.queries.Load()) }

// Close stops the server and closes its socket.
func (s *DNSServer) Close() {
	s.pc.Close()
	<-s.done
}

func (s *DNSServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if out, ok := s.answer(buf[:n]); ok {
			_, _ = s.pc.WriteTo(out, from)
		}
	}
}

// answer builds the response to the query q.
func (s *DNSServer) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil, false
	}
	question, err := p.Question()
	if err != nil {
		return nil, false
	}
	s.queries.Add(1)
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	addrs, known := s.records[canonicalName(question.Name.String())]
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(question)
	_ = b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
	for _, a := range addrs {
		switch {
		case question.Type == dnsmessage.TypeA && a.Is4():
			_ = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case question.Type == dnsmessage.TypeAAAA && a.Is6() && !a.Is4In6():
			_ = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
