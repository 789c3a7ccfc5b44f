//go:build !linux

package main

import (
	"errors"
	"runtime"
)

// sendRawFrame needs AF_PACKET, which is Linux's; the namespace tests that
// call it skip elsewhere.
func sendRawFrame(ifname string, frame []byte) error {
	return errors.New("raw Ethernet frames: AF_PACKET is not available on " + runtime.GOOS)
}
