package proxy

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Streamed batches on a shared connection: a batch whose replies outgrow
// shareMaxReply is passed on as it comes (sharestream.go). These tests
// check that the retry after a refusal and the settling after a lost
// connection still answer every command once, in order.

// TestSharedStreamRefusalRetried sends a batch whose replies stream to a
// replica: the write it refuses (-READONLY), and every command after it, is
// sent again to the master, the large reply that came after the refusal is
// dropped, and the client gets every reply once, in order.
func TestSharedStreamRefusalRetried(t *testing.T) {
	master := startRedis(t, "--repl-diskless-sync-delay", "0")
	_, port, _ := net.SplitHostPort(master)
	replica := startRedis(t, "--replicaof", "127.0.0.1", port)
	big := strings.Repeat("z", 600<<10)
	m := dialRedis(t, master)
	if got := m.do("SET", "big", big); got != "+OK\r\n" {
		t.Fatalf("SET big = %q", got)
	}
	r := dialRedis(t, replica)
	waitFor(t, func() bool { return len(r.do("GET", "big")) > len(big) })

	src := newFakeSource(replica)
	_, paddr := startProxy(t, src, sharing)
	c := dialRedis(t, paddr)
	var req []byte
	for _, cmd := range [][]string{{"GET", "big"}, {"GET", "big"}, {"GET", "big"}, {"INCR", "n"}, {"GET", "big"}, {"ECHO", "end"}} {
		req = appendCommand(req, cmd...)
	}
	c.send(string(req))
	waitFor(t, func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return len(src.suspects) > 0 && src.suspects[0] == replica
	})
	src.set(master)
	bulk := "$" + strconv.Itoa(len(big)) + "\r\n" + big + "\r\n"
	for i, want := range []string{bulk, bulk, bulk, ":1\r\n", bulk, "$3\r\nend\r\n"} {
		if got := c.reply(); got != want {
			t.Fatalf("reply %d = %.60q, want %.60q", i, got, want)
		}
	}
	if got := m.do("GET", "n"); got != "$1\r\n1\r\n" {
		t.Fatalf("INCR ran %q times on the master, want once", got)
	}
}

// streamMaster is a fake master for streamed batches: GET big… answers a
// 600 KiB value; the first GET cut… answers part of one and closes the
// connection; the first GET die… closes it with no reply; anything else
// is answered with its key.
func streamMaster(t *testing.T) (addr string, seen func(string) int) {
	var mu sync.Mutex
	count := map[string]int{}
	value := strings.Repeat("v", 600<<10)
	addr = fakeMaster(t, func(n int, c net.Conn) {
		serveRequests(c, func(cmd Command) bool {
			key := string(cmd.Args[len(cmd.Args)-1])
			mu.Lock()
			count[key]++
			first := count[key] == 1
			mu.Unlock()
			var out string
			switch {
			case strings.HasPrefix(key, "big"):
				out = "$" + strconv.Itoa(len(value)) + "\r\n" + value + "\r\n"
			case strings.HasPrefix(key, "cut") && first:
				c.Write([]byte("$" + strconv.Itoa(len(value)) + "\r\n" + value[:len(value)/2]))
				return false
			case strings.HasPrefix(key, "die") && first:
				return false
			default:
				out = "+" + key + "\r\n"
			}
			_, err := c.Write([]byte(out))
			return err == nil
		})
	})
	return addr, func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return count[key]
	}
}

// TestSharedStreamLostBetweenReplies loses the shared connection after the
// streamed replies and before the next one: the read without a reply is
// sent again, and answered in its place.
func TestSharedStreamLostBetweenReplies(t *testing.T) {
	addr, seen := streamMaster(t)
	_, paddr := startProxy(t, newFakeSource(addr), sharing)
	c := dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(appendCommand(appendCommand(nil, "GET", "big1"), "GET", "big2"), "GET", "die1"), "GET", "after")))
	for i := range 2 {
		if got := c.reply(); !strings.HasPrefix(got, "$"+strconv.Itoa(600<<10)+"\r\nvvv") || len(got) != 600<<10+11 {
			t.Fatalf("reply %d = %.40q (%d bytes), want the 600 KiB value", i, got, len(got))
		}
	}
	for _, want := range []string{"+die1\r\n", "+after\r\n"} {
		if got := c.reply(); got != want {
			t.Fatalf("after the lost connection: %q, want %q", got, want)
		}
	}
	if n := seen("die1"); n != 2 {
		t.Errorf("GET die1 was sent %d times, want twice (the read is sent again)", n)
	}
}

// TestSharedStreamLostInsideReply loses the shared connection in the middle
// of a large reply that was being passed on: the client's stream cannot be
// repaired, so it is closed after the replies that came whole, and other
// clients are served on.
func TestSharedStreamLostInsideReply(t *testing.T) {
	addr, _ := streamMaster(t)
	_, paddr := startProxy(t, newFakeSource(addr), sharing)
	c := dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(appendCommand(nil, "GET", "big1"), "GET", "big2"), "GET", "cut1")))
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c.nc)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading until the proxy closed the client: %v", err)
	}
	whole := 2 * (600<<10 + 11)
	if len(got) <= whole || len(got) >= whole+600<<10+11 {
		t.Fatalf("client got %d bytes before the close, want both whole replies (%d) and part of the third", len(got), whole)
	}
	other := dialRedis(t, paddr)
	if got := other.do("GET", "x"); got != "+x\r\n" {
		t.Errorf("another client after the close: %q", got)
	}
}
