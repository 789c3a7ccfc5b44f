package main

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gnv-project/gnv/endpoint/geneve"
	"github.com/gnv-project/gnv/internal/pcap"
)

// geneveRecords reads the capture at path, which must end with a whole
// record, and counts the Geneve datagrams of vni in it.
func geneveRecords(t *testing.T, path string, vni uint32) int {
	t.Helper()
	n, err := countGeneveRecords(path, vni)
	if err != nil {
		t.Fatalf("reading the capture: %v", err)
	}
	return n
}

// countGeneveRecords counts the Geneve datagrams of VNI vni in the capture
// at path.
func countGeneveRecords(path string, vni uint32) (int, error) {
	lt, pkts, err := pcap.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pkts {
		if _, _, payload, ok := pcap.UDPPayload(lt, p); ok {
			if h, _, err := geneve.Decode(payload); err == nil && h.VNI == vni {
				n++
			}
		}
	}
	return n, nil
}

// TestPcapWhileRunning runs gnv up --pcap as a process: its capture can be
// read while it runs (flushed within a second), and after SIGKILL it holds
// every record up to the last flush, the last one whole.
func TestPcapWhileRunning(t *testing.T) {
	bin := gnvBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.pcap")
	cmd := exec.Command(bin, "up", "--vni", "7", "--local", "127.0.0.1", "--local-port", "16490", "--port", "16491",
		"--remote", "127.0.0.2", "--overlay", "netstack", "--addr", "10.7.0.1/24", "--name", "gnvp",
		"--control", filepath.Join(dir, "a.sock"), "--pcap", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	up := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), ": up, ") {
				up <- sc.Text()
			}
		}
		close(up)
	}()
	select {
	case l, ok := <-up:
		if !ok {
			t.Fatalf("gnv up exited: %s", stderr.String())
		}
		t.Log(l)
	case <-time.After(20 * time.Second):
		t.Fatalf("gnv up did not come up: %s", stderr.String())
	}
	b := startInstance(t, "--vni", "7", "--local", "127.0.0.2", "--local-port", "16491", "--port", "16490",
		"--remote", "127.0.0.1", "--overlay", "netstack", "--addr", "10.7.0.2/24", "--name", "gnvq",
		"--control", filepath.Join(dir, "b.sock"))
	pings := func(first int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := range 5 {
			if _, err := b.ifaces[0].tun.Ping(ctx, mustAddr("10.7.0.1"), uint16(first+i), 56); err != nil {
				t.Fatalf("ping: %v", err)
			}
		}
	}

	// The capture is flushed every pcapFlushInterval; wait for the records
	// rather than for a time, so a loaded machine cannot fail the test.
	// A read may also meet a flush half written: that is retried too.
	waitRecords := func(want int) int {
		var n int
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n, err = countGeneveRecords(path, 7); err == nil && n >= want {
				break
			}
		}
		if err != nil {
			t.Fatalf("reading the capture while gnv runs: %v", err)
		}
		return n
	}
	pings(1)
	if n := waitRecords(10); n < 10 {
		t.Errorf("while running: %d Geneve datagrams in the capture, want the 5 echo requests and 5 replies at least", n)
	}

	pings(6)
	if n := waitRecords(20); n < 20 {
		t.Errorf("while running: %d Geneve datagrams in the capture, want 20", n)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	if n := geneveRecords(t, path, 7); n < 20 {
		t.Errorf("after SIGKILL: %d Geneve datagrams in the capture, want the 10 echo requests and 10 replies at least", n)
	}
}
