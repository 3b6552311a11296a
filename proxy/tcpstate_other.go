//go:build !linux

package proxy

// tcpPeerClosed cannot tell without TCP_INFO.
func tcpPeerClosed(int) bool { return false }
