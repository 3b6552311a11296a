package cluster_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestParseRedirect covers the lines Redis 7.0.15 was seen to send (IPv4,
// bare IPv6, empty and "?" endpoints) and malformed ones.
func TestParseRedirect(t *testing.T) {
	tests := []struct {
		line string
		kind string
		slot int
		addr string
		ok   bool
	}{
		{"-MOVED 3999 127.0.0.1:6381", "MOVED", 3999, "127.0.0.1:6381", true},
		{"-ASK 3999 127.0.0.1:6381\r\n", "ASK", 3999, "127.0.0.1:6381", true},
		{"MOVED 0 10.0.0.2:6379", "MOVED", 0, "10.0.0.2:6379", true}, // go-redis's error text
		{"-MOVED 16383 redis-2.example.com:7000", "MOVED", 16383, "redis-2.example.com:7000", true},
		{"-MOVED 12182 ::1:17303\r\n", "MOVED", 12182, "[::1]:17303", true}, // as Redis 7.0.15 sends it
		{"-MOVED 1 2001:db8::7:6379", "MOVED", 1, "[2001:db8::7]:6379", true},
		{"-ASK 1 [2001:db8::7]:6379", "ASK", 1, "[2001:db8::7]:6379", true},
		{"-MOVED 12182 :17303", "MOVED", 12182, ":17303", true}, // unknown-endpoint
		{"-MOVED 12182 ?:17303", "MOVED", 12182, "", true},      // hostname type, none set
		{"-MOVED 16384 127.0.0.1:6381", "", 0, "", false},
		{"-MOVED -1 127.0.0.1:6381", "", 0, "", false},
		{"-MOVED +1 127.0.0.1:6381", "", 0, "", false},
		{"-MOVED 01 127.0.0.1:6381", "", 0, "", false},
		{"-MOVED 1 127.0.0.1:0", "", 0, "", false},
		{"-MOVED 1 127.0.0.1:65536", "", 0, "", false},
		{"-MOVED 1 127.0.0.1:", "", 0, "", false},
		{"-MOVED 1 127.0.0.1", "", 0, "", false},
		{"-MOVED 1 127.0.0.1:6379 extra", "", 0, "", false},
		{"-MOVED 1  127.0.0.1:6379", "", 0, "", false},
		{"-MOVED 1 [::1:6379", "", 0, "", false},
		{"-MOVED 1 []:6379", "", 0, "", false},
		{"-MOVED  1 a:1", "", 0, "", false},
		{"-MOVED 1", "", 0, "", false},
		{"-moved 1 a:1", "", 0, "", false},
		{"-MOVEDX 1 a:1", "", 0, "", false},
		{"-TRYAGAIN Multiple keys request during rehashing of slot", "", 0, "", false},
		{"-CLUSTERDOWN Hash slot not served", "", 0, "", false},
		{"", "", 0, "", false},
	}
	for _, tc := range tests {
		kind, slot, addr, ok := cluster.ParseRedirect([]byte(tc.line))
		if kind != tc.kind || slot != tc.slot || addr != tc.addr || ok != tc.ok {
			t.Errorf("ParseRedirect(%q) = %q, %d, %q, %v; want %q, %d, %q, %v",
				tc.line, kind, slot, addr, ok, tc.kind, tc.slot, tc.addr, tc.ok)
		}
	}
}

// TestResolveRedirect checks that an empty endpoint takes the host the
// redirect came from.
func TestResolveRedirect(t *testing.T) {
	tests := []struct{ addr, from, want string }{
		{":7001", "127.0.0.1:7000", "127.0.0.1:7001"},
		{":7001", "[::1]:7000", "[::1]:7001"},
		{":7001", "redis-1:7000", "redis-1:7001"},
		{":7001", "garbage", ":7001"},
		{"10.0.0.2:7001", "127.0.0.1:7000", "10.0.0.2:7001"},
		{"", "127.0.0.1:7000", ""},
	}
	for _, tc := range tests {
		if got := cluster.ResolveRedirect(tc.addr, tc.from); got != tc.want {
			t.Errorf("ResolveRedirect(%q, %q) = %q, want %q", tc.addr, tc.from, got, tc.want)
		}
	}
}

// FuzzParseRedirect checks that ParseRedirect never panics, that what it
// accepts is in range and dialable, and that an accepted line printed back
// the way Redis prints it parses the same.
func FuzzParseRedirect(f *testing.F) {
	for _, s := range []string{"-MOVED 3999 127.0.0.1:6381", "-ASK 1 ::1:7000\r\n", "-MOVED 0 :1",
		"-MOVED 5 ?:6379", "-ASK 16383 [fe80::1%lo]:6379", "MOVED 1 a:b:c:1", "-MOVED 1 :"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		kind, slot, addr, ok := cluster.ParseRedirect(line)
		if !ok {
			if kind != "" || slot != 0 || addr != "" {
				t.Fatalf("rejected %q but returned %q, %d, %q", line, kind, slot, addr)
			}
			return
		}
		if (kind != cluster.KindMoved && kind != cluster.KindAsk) || slot < 0 || slot >= cluster.Slots {
			t.Fatalf("ParseRedirect(%q) = %q, %d", line, kind, slot)
		}
		if addr == "" {
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
			t.Fatalf("ParseRedirect(%q) addr %q is not host:port (%v)", line, addr, err)
		}
		again := "-" + kind + " " + strconv.Itoa(slot) + " " + host + ":" + port
		k2, s2, a2, ok2 := cluster.ParseRedirect([]byte(again))
		if !ok2 || k2 != kind || s2 != slot || a2 != addr || strings.ContainsAny(addr, " \r\n") {
			t.Fatalf("%q -> %q -> %q, %d, %q, %v", line, again, k2, s2, a2, ok2)
		}
	})
}
