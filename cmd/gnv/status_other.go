//go:build !linux

package main

import "github.com/gnv-project/gnv/link"

// kernelUDPStats: the kernel UDP transport is Linux only.
func kernelUDPStats(link.Transport) (socketStats, bool) { return socketStats{}, false }
