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
func serve(t *testing.T, srv *Server) (addr string, stop func() error) {
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

// TestMasterSwitch checks that a change of master closes connections to the
// old one and routes new commands to the new one, for pooled and pinned
// sessions.
func TestMasterSwitch(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	src := newFakeSource(r1)
	srv, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	if got := c.do("SET", "where", "one"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	tx := dialRedis(t, paddr)
	if got := tx.do("MULTI"); got != "+OK\r\n" {
		t.Fatalf("MULTI = %q", got)
	}
	src.set(r2)
	waitFor(t, func() bool { return srv.Stats().Pool.Open == 0 })
	if got := c.do("GET", "where"); got != "$-1\r\n" {
		t.Fatalf("GET after switch = %q, want nil from the new master", got)
	}
	// The open transaction is gone: its commands must not run outside it.
	if got := tx.do("SET", "tx", "1"); !strings.HasPrefix(got, "-ERR the open transaction was discarded") {
		t.Fatalf("SET in lost MULTI = %q", got)
	}
	if got := tx.do("EXEC"); !strings.HasPrefix(got, "-EXECABORT") {
		t.Fatalf("EXEC of lost MULTI = %q", got)
	}
	if got := tx.do("EXISTS", "tx"); got != ":0\r\n" {
		t.Fatalf("EXISTS tx = %q, the lost transaction's command ran", got)
	}
	direct := dialRedis(t, r1)
	if got := direct.do("CLIENT", "LIST"); strings.Count(got, "cmd=") != 1 {
		t.Fatalf("old master still has proxy connections:\n%s", got)
	}
}

// TestHoldWhileNoMaster checks that commands wait while no master is known
// and go to the one named next.
func TestHoldWhileNoMaster(t *testing.T) {
	r := startRedis(t)
	src := newFakeSource("")
	_, paddr := startProxy(t, src, func(o *Options) { o.HoldTimeout = 10 * time.Second })
	c := dialRedis(t, paddr)
	c.send("PING\r\n")
	time.AfterFunc(200*time.Millisecond, func() { src.set(r) })
	if got := c.reply(); got != "+PONG\r\n" {
		t.Fatalf("held PING = %q", got)
	}

	src2 := newFakeSource("")
	_, paddr2 := startProxy(t, src2, func(o *Options) { o.HoldTimeout = 100 * time.Millisecond })
	c2 := dialRedis(t, paddr2)
	if got := c2.do("PING"); !strings.HasPrefix(got, "-MASTERDOWN") {
		t.Fatalf("PING with no master = %q", got)
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

// TestReadonlyRetried checks that commands a replica refused (the proxy was
// routed to a node that is no longer master) are sent again, in order, to
// the master named next, together with the reads that followed them.
func TestReadonlyRetried(t *testing.T) {
	master := startRedis(t)
	_, port, _ := net.SplitHostPort(master)
	replica := startRedis(t, "--replicaof", "127.0.0.1", port)
	src := newFakeSource(replica)
	_, paddr := startProxy(t, src, nil)

	c := dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(appendCommand(nil, "SET", "a", "1"), "GET", "a"), "INCR", "n")))
	waitFor(t, func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return len(src.suspects) > 0 && src.suspects[0] == replica
	})
	src.set(master)
	for i, want := range []string{"+OK\r\n", "$1\r\n1\r\n", ":1\r\n"} {
		if got := c.reply(); got != want {
			t.Fatalf("reply %d = %q, want %q", i, got, want)
		}
	}
	m := dialRedis(t, master)
	if got := m.do("GET", "n"); got != "$1\r\n1\r\n" {
		t.Fatalf("INCR ran %q times on the master, want once", got)
	}
}

// TestReadonlyNotRetriedWithoutMaster checks that the original error is
// answered when no other master appears within the hold timeout.
func TestReadonlyNotRetriedWithoutMaster(t *testing.T) {
	master := startRedis(t)
	_, port, _ := net.SplitHostPort(master)
	replica := startRedis(t, "--replicaof", "127.0.0.1", port)
	_, paddr := startProxy(t, newFakeSource(replica), func(o *Options) { o.HoldTimeout = 200 * time.Millisecond })
	c := dialRedis(t, paddr)
	if got := c.do("SET", "a", "1"); !strings.HasPrefix(got, "-READONLY") {
		t.Fatalf("SET on a replica with no master = %q, want -READONLY", got)
	}
	if got := c.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after = %q", got)
	}
}

// TestSubscriberMoves checks that a subscribed client is subscribed again on
// the new master after a switch, without seeing confirmations it did not
// ask for, in RESP2 and RESP3.
func TestSubscriberMoves(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	for _, proto := range []string{"2", "3"} {
		t.Run("resp"+proto, func(t *testing.T) {
			src := newFakeSource(r1)
			_, paddr := startProxy(t, src, nil)
			s := dialRedis(t, paddr)
			s.do("HELLO", proto)
			s.send(string(appendCommand(nil, "SUBSCRIBE", "news")))
			s.reply()
			s.send(string(appendCommand(nil, "PSUBSCRIBE", "n*")))
			s.reply()
			src.set(r2)
			p := dialRedis(t, r2)
			// Wait until both subscriptions exist on the new master.
			waitFor(t, func() bool { return p.do("PUBLISH", "news", "x") == ":2\r\n" })
			msg := s.reply()
			if !strings.Contains(msg, "message") || !strings.Contains(msg, "news") {
				t.Fatalf("first frame after the move = %q, want a message", msg)
			}
		})
	}
}

// TestStateCommandsInsideMulti checks that SELECT queued in a transaction
// changes the session's state only if the transaction ran, so that a
// pooled connection is never filed under a state it does not have.
func TestStateCommandsInsideMulti(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	b := dialRedis(t, paddr)
	b.do("SELECT", "3")
	a := dialRedis(t, paddr)
	for _, end := range []string{"DISCARD", "EXEC"} {
		a.do("MULTI")
		if got := a.do("SELECT", "3"); got != "+QUEUED\r\n" {
			t.Fatalf("SELECT in MULTI = %q", got)
		}
		if end == "EXEC" {
			a.do("SET", "x") // wrong arity: EXECABORT, nothing runs
		}
		a.do(end)
		if got := a.do("CLIENT", "INFO"); !strings.Contains(got, " db=0 ") {
			t.Fatalf("after %s, A is in %q, want db=0", end, got)
		}
		if got := b.do("CLIENT", "INFO"); !strings.Contains(got, " db=3 ") {
			t.Fatalf("after A's %s, B is in %q, want db=3", end, got)
		}
	}
	a.do("MULTI")
	a.do("SELECT", "5")
	a.do("EXEC")
	a.do("SET", "in5", "1")
	if got := a.do("CLIENT", "INFO"); !strings.Contains(got, " db=5 ") {
		t.Fatalf("after EXEC of SELECT 5, A is in %q", got)
	}
	if got := doIn(t, r, "5", "EXISTS", "in5"); got != ":1\r\n" {
		t.Fatalf("the SET after EXEC did not land in db 5: %q", got)
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
