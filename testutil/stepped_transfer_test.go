package testutil_test

import (
	"bytes"
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/gnv-project/gnv/testutil"
)

// steppedTransfer sends payload over one TCP connection from stack a to
// dst on stack b, driving the stepped fabric f until b has read it all and
// seen the sender's FIN, and checks the content. The applications use
// non-blocking endpoint calls from Fabric.Run's callback, so the run is
// reproducible (see the testutil package documentation).
func steppedTransfer(f *testutil.Fabric, a, b *tcpipstack.Stack, dst tcpip.FullAddress, payload []byte) error {
	newEP := func(s *tcpipstack.Stack) (tcpip.Endpoint, error) {
		ep, terr := s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &waiter.Queue{})
		if terr != nil {
			return nil, fmt.Errorf("new endpoint: %s", terr)
		}
		return ep, nil
	}
	listener, err := newEP(b)
	if err != nil {
		return err
	}
	defer listener.Close()
	if terr := listener.Bind(dst); terr != nil {
		return fmt.Errorf("bind %v: %s", dst, terr)
	}
	if terr := listener.Listen(1); terr != nil {
		return fmt.Errorf("listen: %s", terr)
	}
	client, err := newEP(a)
	if err != nil {
		return err
	}
	defer client.Close()
	// The SYN goes out here, on this goroutine: a non-blocking connect.
	if terr := client.Connect(dst); terr != nil {
		if _, ok := terr.(*tcpip.ErrConnectStarted); !ok {
			return fmt.Errorf("connect: %s", terr)
		}
	}

	// Everything the applications do happens in done, between steps.
	var server tcpip.Endpoint
	var received bytes.Buffer
	sent, shut, eof := 0, false, false
	var failure error
	done := func() bool {
		if server == nil {
			ep, _, terr := listener.Accept(nil)
			if terr == nil {
				server = ep
			}
		}
		if tcp.EndpointState(client.State()) == tcp.StateEstablished && !shut {
			for sent < len(payload) {
				n, terr := client.Write(bytes.NewReader(payload[sent:]), tcpip.WriteOptions{})
				sent += int(n)
				if terr != nil {
					if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
						failure = fmt.Errorf("write: %s", terr)
					}
					break
				}
			}
			if sent == len(payload) {
				shut = true
				if terr := client.Shutdown(tcpip.ShutdownWrite); terr != nil {
					failure = fmt.Errorf("shutdown: %s", terr)
				}
			}
		}
		if server != nil && !eof {
			for {
				_, terr := server.Read(&received, tcpip.ReadOptions{})
				if terr == nil {
					continue
				}
				switch terr.(type) {
				case *tcpip.ErrWouldBlock:
				case *tcpip.ErrClosedForReceive:
					eof = true
				default:
					failure = fmt.Errorf("read: %s", terr)
				}
				break
			}
		}
		return eof || failure != nil
	}
	if err := f.Run(10*time.Minute, done); err != nil {
		return fmt.Errorf("after %d bytes sent, %d received: %v (fabric %+v)", sent, received.Len(), err, f.Stats())
	}
	if server != nil {
		defer server.Close()
	}
	if failure != nil {
		return failure
	}
	if !bytes.Equal(received.Bytes(), payload) {
		return fmt.Errorf("received %d bytes that differ from the %d sent", received.Len(), len(payload))
	}
	return nil
}
