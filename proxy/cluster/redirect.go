package cluster

import (
	"bytes"
	"net"
	"strconv"
)

// Redirect kinds returned by ParseRedirect.
const (
	KindMoved = "MOVED"
	KindAsk   = "ASK"
)

// ParseRedirect parses a -MOVED or -ASK error line, as Redis writes it
// (clusterRedirectClient: "-%s %d %s:%d", kind, slot, preferred endpoint,
// port), with or without the leading '-' and the trailing CRLF:
//
//	-MOVED 3999 127.0.0.1:6381    addr "127.0.0.1:6381"
//	-ASK 3999 redis-2.example:6381  addr "redis-2.example:6381"
//	-MOVED 3999 ::1:6381          addr "[::1]:6381" (Redis does not bracket IPv6)
//	-MOVED 3999 :6381             addr ":6381" (cluster-preferred-endpoint-type
//	                              unknown-endpoint: the host of the node that
//	                              answered; see ResolveRedirect)
//	-MOVED 3999 ?:6381            addr "" (endpoint type hostname, and the node
//	                              announces none: not dialable; refresh the map)
//
// addr is normalised with net.JoinHostPort, the form Map's Node.Addr has, so
// the two compare equal. ok is false for any other line.
func ParseRedirect(line []byte) (kind string, slot int, addr string, ok bool) {
	line = bytes.TrimPrefix(line, []byte("-"))
	line = bytes.TrimSuffix(line, []byte("\r\n"))
	var rest []byte
	switch {
	case bytes.HasPrefix(line, []byte("MOVED ")):
		kind, rest = KindMoved, line[len("MOVED "):]
	case bytes.HasPrefix(line, []byte("ASK ")):
		kind, rest = KindAsk, line[len("ASK "):]
	default:
		return "", 0, "", false
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return "", 0, "", false
	}
	slot, ok = decimal(rest[:sp], Slots-1)
	if !ok {
		return "", 0, "", false
	}
	endpoint := rest[sp+1:]
	colon := bytes.LastIndexByte(endpoint, ':')
	if colon < 0 || bytes.ContainsFunc(endpoint, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", 0, "", false
	}
	host, portText := endpoint[:colon], endpoint[colon+1:]
	port, ok := decimal(portText, 65535)
	if !ok || port == 0 {
		return "", 0, "", false
	}
	// Redis sends IPv6 bare; accept the bracketed form too (a proxy in
	// front of a node may rewrite it).
	if len(host) > 0 && host[0] == '[' {
		if len(host) < 3 || host[len(host)-1] != ']' {
			return "", 0, "", false
		}
		host = host[1 : len(host)-1]
	}
	if bytes.ContainsAny(host, "[]") {
		return "", 0, "", false
	}
	switch string(host) {
	case "":
		return kind, slot, ":" + strconv.Itoa(port), true
	case "?":
		return kind, slot, "", true
	}
	return kind, slot, net.JoinHostPort(string(host), strconv.Itoa(port)), true
}

// ResolveRedirect completes an address from ParseRedirect: ":port" (the
// node that answered knows no endpoint for the target) becomes the host of
// from, the address the redirect came from, with that port. Any other addr
// is returned as is.
func ResolveRedirect(addr, from string) string {
	if len(addr) == 0 || addr[0] != ':' {
		return addr
	}
	host, _, err := net.SplitHostPort(from)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, addr[1:])
}

// decimal parses b as a decimal number of at most max: digits only, no
// sign, no leading zero (except "0" itself), as Redis prints %d.
func decimal(b []byte, max int) (int, bool) {
	if len(b) == 0 || len(b) > 5 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= max
}
