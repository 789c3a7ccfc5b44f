package httpproxy_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/gnv-project/gnv/endpoint"
	"github.com/gnv-project/gnv/stack/httpproxy"
	"github.com/gnv-project/gnv/testutil"
)

// An HTTP proxy on the host's loopback whose destinations are in an
// overlay: net/http's client, told to use it, fetches a page from a server
// inside the other overlay host, and gets 502 for a closed port.
func ExampleProxy() {
	hs, err := testutil.NewHosts(testutil.HostsOptions{Mode: endpoint.L2, VNI: 100})
	if err != nil {
		log.Fatal(err)
	}
	defer hs.Close()
	a, b := hs.Hosts[0].Tunnel, hs.Hosts[1].Tunnel
	web, err := b.Listen("tcp", "10.0.0.2:80")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s%s\n", r.Host, r.URL.Path)
	}))
	defer web.Close()

	p := httpproxy.New(a, httpproxy.Options{}) // destinations in a's overlay
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: ln.Addr().String()})}}
	defer client.CloseIdleConnections()
	for _, u := range []string{"http://10.0.0.2/index.html", "http://10.0.0.2:81/"} {
		resp, err := client.Get(u)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s: %s", resp.Status, body)
	}
	// Output:
	// 200 OK: hello from 10.0.0.2/index.html
	// 502 Bad Gateway: gnv http proxy: GET 10.0.0.2:81: dial tcp 10.0.0.2:81: connect: connection refused
}
