//go:build linux

package proxy

import (
	"syscall"
	"unsafe"
)

// TCP states from the kernel's include/net/tcp_states.h.
const (
	tcpCloseWait = 8
	tcpClose     = 7
	tcpLastAck   = 9
)

// tcpPeerClosed reads tcpi_state (the first byte of struct tcp_info).
func tcpPeerClosed(fd int) bool {
	var info [8]byte
	n := uint32(len(info))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return true
	}
	switch info[0] {
	case tcpCloseWait, tcpClose, tcpLastAck:
		return true
	}
	return false
}
