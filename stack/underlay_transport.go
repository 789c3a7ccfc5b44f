package stack

import (
	"net/netip"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/link"
)

// TransportUnderlay carries a tunnel over a link.Transport of the
// embedder's own (an in-memory one such as linktest.Transport, a socket
// gnv does not know, a relay), as wireguard-go's device takes any Bind.
// The tunnel owns the transport once opened: closing the tunnel (or the
// SharedUnderlay) closes it.
type TransportUnderlay struct {
	// Transport sends and receives the Geneve datagrams. Its LocalAddr is
	// the tunnel's local underlay address.
	Transport link.Transport
}

func (u TransportUnderlay) localAddr() netip.Addr {
	if u.Transport == nil {
		return netip.Addr{}
	}
	return u.Transport.LocalAddr().Addr()
}

func (u TransportUnderlay) validate() error {
	if u.Transport == nil {
		return &endpoint.FieldError{Field: "Underlay.Transport", Valid: "required"}
	}
	return nil
}

func (u TransportUnderlay) open(openOptions) (*SharedUnderlay, error) {
	sock, err := endpoint.NewSocket(u.Transport)
	if err != nil {
		return nil, err
	}
	return &SharedUnderlay{sock: sock}, nil
}
