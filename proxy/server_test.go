package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource is a MasterSource the test moves by hand.
type fakeSource struct {
	mu       sync.Mutex
	addr     string
	fence    string
	changed  chan struct{}
	suspects []string
}

func newFakeSource(addr string) *fakeSource {
	return &fakeSource{addr: addr, changed: make(chan struct{})}
}

func (f *fakeSource) Master() (string, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr, f.changed
}

func (f *fakeSource) Suspect(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspects = append(f.suspects, addr)
}

func (f *fakeSource) Fenced() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fence
}

// setFence names the master whose writes may be lost from now on.
func (f *fakeSource) setFence(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fence = addr
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeSource) set(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addr = addr
	close(f.changed)
	f.changed = make(chan struct{})
}

// startProxy serves a proxy in front of src until the test ends.
func startProxy(t *testing.T, src MasterSource, mod func(*Options)) (*Server, string) {
	t.Helper()
	return startProxyHooked(t, src, mod, nil)
}

// startProxyHooked is startProxy with hook run on the server before it
// serves (to set its test hooks: the proxy's own socket I/O is no
// synchronization the race detector sees, see rawio.go).
func startProxyHooked(t *testing.T, src MasterSource, mod func(*Options), hook func(*Server)) (*Server, string) {
	t.Helper()
	// The differential tests use DEBUG PROTOCOL and MONITOR.
	policy, err := NewPolicy("test", "deny", []string{"debug|protocol", "monitor"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Name: "test", Source: src, HoldTimeout: 2 * time.Second, Policy: policy}
	if mod != nil {
		mod(&opts)
	}
	srv, err := NewServer(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(srv)
	}
	addr, stop := serve(t, srv)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, addr
}

// serve runs srv on a loopback listener; stop drains it and returns what
// Serve returned. The caller must call stop.
func serve(t testing.TB, srv *Server) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return ln.Addr().String(), func() error {
		cancel()
		return <-done
	}
}

// TestDifferential sends the same scripts to Redis directly and through the
// proxy, on fresh connections, and requires byte-identical replies.
func TestDifferential(t *testing.T) {
	r := startRedis(t, "--enable-debug-command", "local")
	_, paddr := startProxy(t, newFakeSource(r), nil)

	scripts := []struct {
		name string
		send string // raw bytes sent at once
		n    int    // replies expected
	}{
		{"pipeline", "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nDEL\r\n$1\r\na\r\n", 4},
		{"inline", "PING\r\nSET \"a b\" 'c d'\r\nGET \"a b\"\r\nDEL \"a b\"\r\n", 4},
		{"empty multibulk and lines are ignored", "*0\r\n\r\nPING\r\n*-1\r\nECHO hi\r\n", 2},
		{"errors", "*1\r\n$7\r\nNOSUCHC\r\n*1\r\n$3\r\nGET\r\n", 2},
		{"select", "SELECT 3\r\nSET k v\r\nGET k\r\nSELECT 0\r\nGET k\r\nSELECT 3\r\nDEL k\r\n", 7},
		{"multi", "MULTI\r\nSET t 1\r\nINCR t\r\nEXEC\r\nDEL t\r\n", 5},
		{"multi error", "MULTI\r\nSET t\r\nEXEC\r\nEXEC\r\n", 4},
		{"watch", "WATCH w\r\nMULTI\r\nSET w 1\r\nEXEC\r\nDEL w\r\n", 5},
		{"discard", "MULTI\r\nSET d 1\r\nDISCARD\r\nEXISTS d\r\n", 4},
		{"eval", "EVAL \"return {1,2,redis.call('ping')}\" 0\r\nSCRIPT LOAD \"return 7\"\r\nEVALSHA b4a2b0c22e4e8dcb42ee75f4a2ee0fc9e4a81a1d 0\r\n", 3},
		{"function", "FUNCTION FLUSH\r\nFUNCTION LOAD \"#!lua name=lib\\nredis.register_function('f', function() return 5 end)\"\r\nFCALL f 0\r\nFUNCTION DELETE lib\r\n", 4},
		{"resp3 types", "HELLO 3\r\nDEBUG PROTOCOL map\r\nDEBUG PROTOCOL set\r\nDEBUG PROTOCOL double\r\nDEBUG PROTOCOL bignum\r\nDEBUG PROTOCOL null\r\nDEBUG PROTOCOL true\r\nDEBUG PROTOCOL verbatim\r\nDEBUG PROTOCOL attrib\r\nDEBUG PROTOCOL push\r\nDEBUG PROTOCOL array\r\n", 13},
		{"resp2 types", "DEBUG PROTOCOL map\r\nDEBUG PROTOCOL double\r\nDEBUG PROTOCOL attrib\r\nDEBUG PROTOCOL push\r\n", 4},
		{"hello 2", "HELLO 2\r\nPING\r\n", 2},
		{"echo", "ECHO \"\"\r\nECHO hello\r\n", 2},
		{"reset", "SELECT 2\r\nHELLO 3\r\nRESET\r\nCLIENT INFO\r\n", 4},
	}
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) {
			got := func(addr string) []string {
				c := dialRedis(t, addr)
				c.send(sc.send)
				var out []string
				for i := 0; i < sc.n; i++ {
					out = append(out, normalize(c.reply()))
				}
				return out
			}
			direct, proxied := got(r), got(paddr)
			for i := range direct {
				if direct[i] != proxied[i] {
					t.Errorf("reply %d differs:\ndirect: %q\nproxy:  %q", i, direct[i], proxied[i])
				}
			}
		})
	}
}

// volatile matches the CLIENT INFO / LIST fields that differ between two
// connections of the same server.
var volatile = regexp.MustCompile(`\b(id|addr|laddr|fd|age|idle|qbuf|qbuf-free|argv-mem|obl|oll|omem|tot-mem|multi-mem|cmd|rbs|rbp)=\S*|(\$2\r\nid\r\n:)\d+`)

// normalize blanks what differs between two connections of the same server;
// a bulk's length is dropped since the blanked text changes it.
func normalize(s string) string {
	if !volatile.MatchString(s) {
		return s
	}
	s = volatile.ReplaceAllStringFunc(s, func(m string) string {
		if i := strings.IndexByte(m, '='); i > 0 && !strings.HasPrefix(m, "$") {
			return m[:i+1] + "X" // field=value
		}
		return m[:strings.LastIndexByte(m, ':')+1] + "X" // HELLO's id
	})
	if i := strings.Index(s, "\r\n"); i >= 0 && (s[0] == '$' || s[0] == '=') {
		return s[:1] + "?" + s[i:]
	}
	return s
}

// TestPoolIsolation checks that a pooled connection authenticated as one
// user never serves a client that has not proven that user's password, and
// that a SELECTed db does not leak to other clients.
func TestPoolIsolation(t *testing.T) {
	r := startRedis(t, "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all")
	srv, paddr := startProxy(t, newFakeSource(r), nil)

	a := dialRedis(t, paddr)
	if got := a.do("AUTH", "alice", "alicepw"); got != "+OK\r\n" {
		t.Fatalf("AUTH alice = %q", got)
	}
	if got := a.do("ACL", "WHOAMI"); got != "$5\r\nalice\r\n" {
		t.Fatalf("WHOAMI after AUTH = %q", got)
	}
	if got := a.do("SELECT", "5"); got != "+OK\r\n" {
		t.Fatalf("SELECT = %q", got)
	}
	// alice's connection is back in the pool now; another client must get
	// a different one.
	b := dialRedis(t, paddr)
	if got := b.do("ACL", "WHOAMI"); got != "$7\r\ndefault\r\n" {
		t.Fatalf("second client WHOAMI = %q, want default", got)
	}
	if got := b.do("AUTH", "alice", "wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("wrong password = %q", got)
	}
	if got := b.do("ACL", "WHOAMI"); got != "$7\r\ndefault\r\n" {
		t.Fatalf("after failed AUTH WHOAMI = %q, want default", got)
	}
	if got := b.do("CLIENT", "INFO"); !strings.Contains(got, " db=0 ") {
		t.Fatalf("second client db: %q", got)
	}
	if got := a.do("CLIENT", "INFO"); !strings.Contains(got, " db=5 ") || !strings.Contains(got, "user=alice") {
		t.Fatalf("first client lost its state: %q", got)
	}
	// One pooled connection per state, besides the shared ones.
	if st := srv.Stats(); st.Pool.Open-st.Pool.Shared > 2 {
		t.Errorf("backend connections = %d (%d shared), want at most 2 besides the shared ones", st.Pool.Open, st.Pool.Shared)
	}
}

// TestIdleClientsHoldNoBackend checks that clients between commands do not
// keep a backend connection.
func TestIdleClientsHoldNoBackend(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), nil)
	for i := 0; i < 50; i++ {
		c := dialRedis(t, paddr)
		if got := c.do("SET", "k"+strconv.Itoa(i), "v"); got != "+OK\r\n" {
			t.Fatalf("SET = %q", got)
		}
	}
	if st := srv.Stats(); st.Clients != 50 || st.Pool.Open != 1 {
		t.Fatalf("clients=%d backends=%d, want 50 and 1", st.Clients, st.Pool.Open)
	}
}

// TestBlockingCommand checks that a blocking command is not cut by any
// proxy timeout, and that a client hanging up while blocked releases the
// backend connection.
func TestBlockingCommand(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	c.send(string(appendCommand(nil, "BLPOP", "q", "0")))
	p := dialRedis(t, paddr)
	// Wait until the BLPOP is blocked on the server.
	waitFor(t, func() bool { return strings.Contains(p.do("INFO", "clients"), "blocked_clients:1") })
	if got := p.do("RPUSH", "q", "x"); got != ":1\r\n" {
		t.Fatalf("RPUSH = %q", got)
	}
	if got := c.reply(); got != "*2\r\n$1\r\nq\r\n$1\r\nx\r\n" {
		t.Fatalf("BLPOP = %q", got)
	}
	// Block again, then hang up.
	c.send(string(appendCommand(nil, "BLPOP", "q", "0")))
	waitFor(t, func() bool { return strings.Contains(p.do("INFO", "clients"), "blocked_clients:1") })
	before := srv.Stats().Pool.Open
	c.nc.Close()
	waitFor(t, func() bool { return strings.Contains(p.do("INFO", "clients"), "blocked_clients:0") })
	waitFor(t, func() bool { return srv.Stats().Pool.Open < before })
}

// TestSubscribe checks pub/sub in RESP2 and RESP3 through the proxy.
func TestSubscribe(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	for _, proto := range []string{"2", "3"} {
		t.Run("resp"+proto, func(t *testing.T) {
			s := dialRedis(t, paddr)
			s.do("HELLO", proto)
			s.send(string(appendCommand(nil, "SUBSCRIBE", "c1", "c2")))
			first, second := s.reply(), s.reply()
			if !strings.Contains(first, "subscribe") || !strings.Contains(second, "c2") {
				t.Fatalf("confirmations: %q %q", first, second)
			}
			p := dialRedis(t, paddr)
			if got := p.do("PUBLISH", "c2", "hello"); got != ":1\r\n" {
				t.Fatalf("PUBLISH = %q", got)
			}
			msg := s.reply()
			want := "*3\r\n$7\r\nmessage\r\n$2\r\nc2\r\n$5\r\nhello\r\n"
			if proto == "3" {
				want = ">" + want[1:]
			}
			if msg != want {
				t.Fatalf("message = %q, want %q", msg, want)
			}
			s.send("PING\r\n")
			if got := s.reply(); proto == "2" && got != "*2\r\n$4\r\npong\r\n$0\r\n\r\n" || proto == "3" && got != "+PONG\r\n" {
				t.Fatalf("PING while subscribed = %q", got)
			}
		})
	}
}

// TestLargeValue moves a 100 MB value through the proxy both ways.
func TestLargeValue(t *testing.T) {
	if testing.Short() {
		t.Skip("large value")
	}
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	val := bytes.Repeat([]byte("0123456789"), 10_000_000)
	w := bufio.NewWriter(c.nc)
	fmt.Fprintf(w, "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n", len(val))
	w.Write(val)
	w.WriteString("\r\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	c.send(string(appendCommand(nil, "GET", "big")))
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	rd := bufio.NewReader(c.nc)
	line, err := rd.ReadString('\n')
	if err != nil || line != fmt.Sprintf("$%d\r\n", len(val)) {
		t.Fatalf("GET header = %q, %v", line, err)
	}
	got := make([]byte, len(val)+2)
	if _, err := io.ReadFull(rd, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(val)], val) {
		t.Fatal("GET returned different bytes")
	}
}

// TestQuitAndRefused checks the commands the proxy answers itself.
func TestQuitAndRefused(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	if got := c.do("CLIENT", "REPLY", "OFF"); !strings.HasPrefix(got, "-ERR CLIENT REPLY OFF and SKIP are not supported") {
		t.Fatalf("CLIENT REPLY OFF = %q", got)
	}
	if got := c.do("SYNC"); !strings.HasPrefix(got, "-ERR command not supported") {
		t.Fatalf("SYNC = %q", got)
	}
	if got := c.do("CLIENT", "REPLY", "ON"); got != "+OK\r\n" {
		t.Fatalf("CLIENT REPLY ON = %q", got)
	}
	c.send("PING\r\nQUIT\r\nPING\r\n")
	if got := c.reply(); got != "+PONG\r\n" {
		t.Fatalf("PING = %q", got)
	}
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("QUIT = %q", got)
	}
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after QUIT read %d, %v; want EOF", n, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleSessionsPark checks that idle clients are parked without a
// goroutine, wake up on their next command, and end when they hang up.
func TestIdleSessionsPark(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), nil)
	var conns []*redisConn
	for i := 0; i < 20; i++ {
		c := dialRedis(t, paddr)
		if got := c.do("SELECT", "2"); got != "+OK\r\n" {
			t.Fatalf("SELECT = %q", got)
		}
		conns = append(conns, c)
	}
	waitFor(t, func() bool { return srv.Stats().Parked == 20 })
	for i, c := range conns {
		if got := c.do("SET", "p"+strconv.Itoa(i), "v"); got != "+OK\r\n" {
			t.Fatalf("SET after parking = %q", got)
		}
		if got := c.do("CLIENT", "INFO"); !strings.Contains(got, " db=2 ") {
			t.Fatalf("parked session lost its db: %q", got)
		}
	}
	waitFor(t, func() bool { return srv.Stats().Parked == 20 })
	for _, c := range conns[:10] {
		c.nc.Close()
	}
	waitFor(t, func() bool { st := srv.Stats(); return st.Clients == 10 && st.Parked == 10 })
}
