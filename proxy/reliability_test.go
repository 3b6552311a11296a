package proxy

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A session pinned by CLIENT SETNAME waits through the failover hold like
// any other instead of writing to the old master, then moves to the new
// master with its name; an aborted failover keeps its connection.
func TestPinnedSessionObeysHold(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	src := newFakeSource(r1)
	_, paddr := startProxy(t, src, func(o *Options) { o.HoldTimeout = 10 * time.Second })
	c := dialRedis(t, paddr)
	if got := c.do("CLIENT", "SETNAME", "pinned-writer"); got != "+OK\r\n" {
		t.Fatalf("CLIENT SETNAME = %q", got)
	}
	if got := c.do("INCR", "n"); got != ":1\r\n" {
		t.Fatalf("INCR = %q", got)
	}
	id := c.do("CLIENT", "ID")

	// An aborted failover: the hold ends on the same master.
	src.set("")
	time.AfterFunc(100*time.Millisecond, func() { src.set(r1) })
	if got := c.do("INCR", "n"); got != ":2\r\n" {
		t.Fatalf("INCR across an aborted failover = %q", got)
	}
	if got := c.do("CLIENT", "ID"); got != id {
		t.Fatalf("CLIENT ID after an aborted failover = %q, was %q: the pinned connection was dropped", got, id)
	}

	// A failover: the write waits, then runs on the new master only.
	src.set("")
	c.send(string(appendCommand(nil, "INCR", "n")))
	time.Sleep(200 * time.Millisecond) // the hold: the write must not run meanwhile
	if got := dialRedis(t, r1).do("GET", "n"); got != "$1\r\n2\r\n" {
		t.Fatalf("old master's n = %q during the hold: the pinned session wrote through it", got)
	}
	src.set(r2)
	if got := c.reply(); got != ":1\r\n" {
		t.Fatalf("held INCR = %q, want :1 from the new master", got)
	}
	if got := dialRedis(t, r1).do("GET", "n"); got != "$1\r\n2\r\n" {
		t.Fatalf("old master's n = %q after the switch", got)
	}
	if got := dialRedis(t, r2).do("CLIENT", "LIST"); !strings.Contains(got, "name=pinned-writer ") {
		t.Fatalf("the client name was not replayed on the new master:\n%s", got)
	}
	if got := c.do("CLIENT", "GETNAME"); got != "$13\r\npinned-writer\r\n" {
		t.Fatalf("CLIENT GETNAME = %q", got)
	}
}

// An open MULTI cannot move: a hold that ends on another master answers
// the rest of the transaction as lost, and nothing of it runs anywhere.
func TestPinnedTransactionAcrossHold(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	src := newFakeSource(r1)
	_, paddr := startProxy(t, src, func(o *Options) { o.HoldTimeout = 10 * time.Second })
	c := dialRedis(t, paddr)
	if got := c.do("MULTI"); got != "+OK\r\n" {
		t.Fatalf("MULTI = %q", got)
	}
	if got := c.do("INCR", "tx"); got != "+QUEUED\r\n" {
		t.Fatalf("INCR in MULTI = %q", got)
	}
	src.set("")
	time.AfterFunc(100*time.Millisecond, func() { src.set(r2) })
	if got := c.do("INCR", "tx"); !strings.HasPrefix(got, "-ERR the open transaction was discarded") {
		t.Fatalf("INCR after the switch = %q", got)
	}
	if got := c.do("EXEC"); !strings.HasPrefix(got, "-EXECABORT") {
		t.Fatalf("EXEC after the switch = %q", got)
	}
	for _, r := range []string{r1, r2} {
		if got := dialRedis(t, r).do("EXISTS", "tx"); got != ":0\r\n" {
			t.Fatalf("EXISTS tx on %s = %q: part of the lost transaction ran", r, got)
		}
	}
	if got := c.do("INCR", "tx"); got != ":1\r\n" {
		t.Fatalf("INCR after the lost transaction = %q", got)
	}
}

// A batch whose first reply is a retryable refusal (-LOADING) and whose
// connection then breaks is retried whole on the next master, and every
// retried command gets its own reply, in order.
func TestRetryAfterRefusalThenLoss(t *testing.T) {
	r := startRedis(t)
	direct := dialRedis(t, r)
	direct.do("SET", "a", "A")
	direct.do("SET", "b", "B")
	fake, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	src := newFakeSource(fake.Addr().String())
	go func() {
		for {
			nc, err := fake.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				buf := make([]byte, 1024)
				nc.Read(buf)
				nc.Write([]byte("-LOADING Redis is loading the dataset in memory\r\n"))
				src.set(r)
			}()
		}
	}()
	_, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(nil, "GET", "a"), "GET", "b")))
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, want := range []string{"$1\r\nA\r\n", "$1\r\nB\r\n"} {
		if got := c.reply(); got != want {
			t.Fatalf("reply %d = %q, want %q", i, got, want)
		}
	}
	if got := c.do("ECHO", "next"); got != "$4\r\nnext\r\n" {
		t.Fatalf("ECHO after the retried batch = %q", got)
	}
}

// A panic in one session closes that client only: the process and every
// other client go on, and the panic is counted.
func TestPanicClosesOnlyItsClient(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxyHooked(t, newFakeSource(r), nil, func(srv *Server) {
		srv.onBatch = func(cmds []Command) {
			if strings.EqualFold(string(cmds[0].Args[0]), "boom") {
				panic("test panic")
			}
		}
	})
	other := dialRedis(t, paddr)
	if got := other.do("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	c := dialRedis(t, paddr)
	c.send("BOOM\r\n")
	if got := c.reply(); got != "EOF" {
		t.Fatalf("the panicking client got %q, want the connection closed", got)
	}
	if got := other.do("GET", "k"); got != "$1\r\nv\r\n" {
		t.Fatalf("GET on another client after the panic = %q", got)
	}
	if got := dialRedis(t, paddr).do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING on a new client after the panic = %q", got)
	}
	if n := testutil.ToFloat64(srv.m.panics); n != 1 {
		t.Fatalf("panics counted = %v, want 1", n)
	}
	waitFor(t, func() bool { return srv.Stats().Clients == 2 })
}

// The idle sweep's read deadline can land on a session that has just
// started reading a request (it was idle when the sweep looked). That
// request is read on; the session is not closed.
func TestSweepDeadlineOnBusySession(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	c.send("PING\r\n*1\r\n$4\r\nPI") // a request and half of the next
	if got := c.reply(); got != "+PONG\r\n" {
		t.Fatalf("PING = %q", got)
	}
	srv.mu.Lock()
	for sess := range srv.sessions {
		sess.conn.SetReadDeadline(time.Unix(1, 0)) // what a late sweep does
	}
	srv.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // let the read fail, if it is to
	c.send("NG\r\n")
	if got := c.reply(); got != "+PONG\r\n" {
		t.Fatalf("the rest of the request got %q, want +PONG", got)
	}
}

// scriptedMaster is a source whose master answers each read of its n-th
// connection (from 0) with answer(n, what it read), closing the connection
// after writing when answer says so.
func scriptedMaster(t *testing.T, answer func(conn int, req string) (reply string, hangUp bool)) *fakeSource {
	t.Helper()
	return newFakeSource(fakeMaster(t, func(n int, c net.Conn) {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			reply, hangUp := answer(n, string(buf[:k]))
			c.Write([]byte(reply))
			if hangUp {
				return
			}
		}
	}))
}

// A named session whose connection was lost goes on under its name: it
// takes a new connection with the name replayed, never an unnamed idle one
// from the pool.
func TestNamedSessionKeepsNameAfterLoss(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	if got := c.do("CLIENT", "SETNAME", "keepme"); got != "+OK\r\n" {
		t.Fatalf("CLIENT SETNAME = %q", got)
	}
	plain := dialRedis(t, paddr)
	if got := plain.do("PING"); got != "+PONG\r\n" { // leaves an idle connection in the pool
		t.Fatalf("PING = %q", got)
	}
	direct := dialRedis(t, r)
	var id string
	for _, line := range strings.Split(direct.do("CLIENT", "LIST"), "\n") {
		if strings.Contains(line, " name=keepme ") {
			id = strings.TrimPrefix(strings.Fields(line)[0], "id=")
		}
	}
	if id == "" || direct.do("CLIENT", "KILL", "ID", id) != ":1\r\n" {
		t.Fatalf("could not kill the named connection (id %q)", id)
	}
	waitFor(t, func() bool { return !strings.Contains(direct.do("CLIENT", "LIST"), "name=keepme ") })
	if got := c.do("CLIENT", "GETNAME"); got != "$6\r\nkeepme\r\n" {
		t.Fatalf("CLIENT GETNAME after the connection was lost = %q", got)
	}
}

// An EXEC whose reply was lost with its connection ends the transaction as
// far as the client knows: it gets "may have run", and its next command
// runs normally instead of being answered as part of a lost transaction.
func TestExecInFlightEndsTransaction(t *testing.T) {
	r := startRedis(t)
	src := scriptedMaster(t, func(_ int, req string) (string, bool) {
		switch {
		case strings.Contains(req, "EXEC"):
			return "", true
		case strings.Contains(req, "MULTI"):
			return "+OK\r\n", false
		}
		return "+QUEUED\r\n", false
	})
	_, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	for _, step := range []struct{ args []string }{{[]string{"MULTI"}}, {[]string{"INCR", "x"}}} {
		if got := c.do(step.args...); !strings.HasPrefix(got, "+") {
			t.Fatalf("%s = %q", step.args[0], got)
		}
	}
	if got := c.do("EXEC"); !strings.Contains(got, "may have run") {
		t.Fatalf("EXEC = %q, want may have run", got)
	}
	src.set(r)
	if got := c.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after the EXEC = %q", got)
	}
}

// A MULTI whose connection breaks before the end of its own batch (the
// connection was not pinned yet) is a lost transaction: EXEC answers
// -EXECABORT, and no later command is taken as queued.
func TestMultiLostInItsOwnBatch(t *testing.T) {
	r := startRedis(t)
	src := scriptedMaster(t, func(int, string) (string, bool) { return "+OK\r\n", true })
	_, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(nil, "MULTI"), "INCR", "x")))
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("MULTI = %q", got)
	}
	if got := c.reply(); !strings.Contains(got, "may have run") {
		t.Fatalf("INCR = %q, want may have run", got)
	}
	if got := c.do("EXEC"); !strings.HasPrefix(got, "-EXECABORT") {
		t.Fatalf("EXEC = %q, want -EXECABORT", got)
	}
	src.set(r)
	if got := c.do("SELECT", "1"); got != "+OK\r\n" {
		t.Fatalf("SELECT = %q", got)
	}
	if got := c.do("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	if got := doIn(t, r, "1", "GET", "k"); got != "$1\r\nv\r\n" {
		t.Fatalf("GET k in db 1 = %q: the SELECT was not applied", got)
	}
}

// A connection that breaks inside a small reply leaves the client's stream
// intact: the read is sent again, and the client stays.
func TestBreakInsideSmallReply(t *testing.T) {
	src := scriptedMaster(t, func(conn int, req string) (string, bool) {
		if conn == 0 {
			return "$9\r\nfrom-", true
		}
		return "$9\r\nfrom-next\r\n", false
	})
	_, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	if got := c.do("GET", "k"); got != "$9\r\nfrom-next\r\n" {
		t.Fatalf("GET = %q, want the answer of the next connection", got)
	}
	if got := c.do("GET", "k"); got != "$9\r\nfrom-next\r\n" {
		t.Fatalf("GET after = %q", got)
	}
}

// A read retried after its connection broke is retried again when the
// retry's connection breaks too (the master died under both, or the retry
// took an idle connection to the dead master): it is never answered "may
// have run", which a client such as phpredis's strict session mode takes
// for a missing key.
func TestRetryOfRetryForReads(t *testing.T) {
	src := scriptedMaster(t, func(conn int, req string) (string, bool) {
		if conn < 2 {
			return "", true
		}
		return "$9\r\nfrom-next\r\n", false
	})
	_, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	if got := c.do("GET", "k"); got != "$9\r\nfrom-next\r\n" {
		t.Fatalf("GET = %q, want the answer of the third connection", got)
	}
}

// A write already queued on the master when Sentinel selects a replica to
// replace it (here behind a blocked BLPOP) may run after the promotion and
// be lost: its reply is answered "may have run", never acknowledged. So is
// a read's: it may show such a write, which the new master will not have.
func TestFencedWriteMayHaveRun(t *testing.T) {
	r := startRedis(t)
	src := newFakeSource(r)
	srv, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	if got := c.do("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	c.send(string(appendCommand(appendCommand(appendCommand(nil, "BLPOP", "empty", "0.3"), "INCR", "n"), "GET", "k")))
	direct := dialRedis(t, r)
	waitFor(t, func() bool { return strings.Contains(direct.do("CLIENT", "LIST"), "cmd=blpop") })
	src.set("")
	src.setFence(r)
	waitFor(t, func() bool { p := srv.fenced.Load(); return p != nil && *p == r })
	if got := c.reply(); !strings.HasPrefix(got, "-UNBLOCKED") {
		t.Fatalf("BLPOP = %q, want -UNBLOCKED … may have run", got)
	}
	if got := c.reply(); !strings.Contains(got, "may have run") {
		t.Fatalf("INCR = %q, want may have run", got)
	}
	if got := c.reply(); !strings.Contains(got, "may have run") {
		t.Fatalf("GET = %q, want may have run", got)
	}
	if got := dialRedis(t, r).do("GET", "n"); got != "$1\r\n1\r\n" {
		t.Fatalf("n = %q: the INCR did run (it may have run)", got)
	}
	src.setFence("")
	src.set(r) // the failover was aborted
	waitFor(t, func() bool { p := srv.fenced.Load(); return p != nil && *p == "" })
	if got := c.do("INCR", "n"); got != ":2\r\n" {
		t.Fatalf("INCR after the fence = %q", got)
	}
}
