package main

import (
	"net"

	"golang.org/x/sys/unix"
)

// sendRawFrame writes one Ethernet frame to an interface with an AF_PACKET
// socket (in the calling thread's network namespace).
func sendRawFrame(ifname string, frame []byte) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
}
