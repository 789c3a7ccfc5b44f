package main

import (
	"bufio"
	"os"
	"sync"
	"time"
)

// pcapFlushInterval is how often a running gnv up flushes its capture.
const pcapFlushInterval = 500 * time.Millisecond

// pcapFile is the --pcap capture file of a running gnv up. Writes are
// buffered (a write(2) per packet would slow the data path) and flushed
// every pcapFlushInterval and when the file is closed, so the file can be
// read while gnv runs and keeps what was flushed if gnv is killed. Records
// reach the file whole: the pcap writer hands over each record in one
// Write, and a record that does not fit what is left of the buffer is
// preceded by a flush, so a flush never splits one.
type pcapFile struct {
	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
}

// createPcap creates the capture file at path and starts flushing it.
func createPcap(path string) (*pcapFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	p := &pcapFile{f: f, w: bufio.NewWriterSize(f, 1<<16), stop: make(chan struct{}), done: make(chan struct{})}
	go p.flusher()
	return p, nil
}

// Write implements io.Writer for the pcap writer.
func (p *pcapFile) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(b) > p.w.Available() && p.w.Buffered() > 0 {
		if err := p.w.Flush(); err != nil {
			return 0, err
		}
	}
	return p.w.Write(b)
}

func (p *pcapFile) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w.Buffered() == 0 {
		return nil
	}
	return p.w.Flush()
}

func (p *pcapFile) flusher() {
	defer close(p.done)
	t := time.NewTicker(pcapFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			_ = p.flush()
		}
	}
}

// Close stops the flusher, flushes and closes the file.
func (p *pcapFile) Close() error {
	var err error
	p.closed.Do(func() {
		close(p.stop)
		<-p.done
		err = p.flush()
		if cerr := p.f.Close(); err == nil {
			err = cerr
		}
	})
	return err
}
