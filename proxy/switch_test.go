package proxy

// Tests of how sessions follow the master: a switch, the hold while none is
// known, replies a non-master gave, subscribers and transactions that move.

import (
	"net"
	"strings"
	"testing"
	"time"
)

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
