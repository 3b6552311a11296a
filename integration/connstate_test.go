package integration

import (
	"strings"
	"testing"
	"time"
)

// TestConnectionStateSemantics checks connection-scoped Redis semantics
// that a pool of shared backend connections can break, comparing each
// scenario through the proxy with the same scenario on direct connections.
// It runs on its own stack: a failure here can leave wrongly keyed
// connections in the proxy's pool, which must not spill into other tests.
func TestConnectionStateSemantics(t *testing.T) {
	t.Parallel()
	st := startStack(t, stackOptions{})
	master := st.Topo.Master().Addr

	// A state-changing command queued in a transaction takes effect at
	// EXEC, and not at all when the transaction is discarded or aborted.
	// Client A queues it and the transaction does not run; client B then
	// sets the same state for real and writes. Directly, A's connection
	// stays as it was and B's write lands where B asked. Through a pool,
	// A's connection must not be filed under the state it never reached.
	aborts := []struct {
		name string
		// run drives A's transaction that does not execute; other is a
		// second client for the WATCH case.
		run func(t *testing.T, a, other *respConn, queued []string)
	}{
		{"DISCARD", func(t *testing.T, a, _ *respConn, queued []string) {
			expect(t, a, "+OK\r\n", "MULTI")
			expect(t, a, "+QUEUED\r\n", queued...)
			expect(t, a, "+OK\r\n", "DISCARD")
		}},
		{"EXECABORT", func(t *testing.T, a, _ *respConn, queued []string) {
			expect(t, a, "+OK\r\n", "MULTI")
			expect(t, a, "+QUEUED\r\n", queued...)
			if r := a.mustDo(t, "SET", "only-one-arg"); !strings.HasPrefix(r, "-ERR wrong number of arguments") {
				t.Fatalf("bad SET in MULTI = %q", r)
			}
			if r := a.mustDo(t, "EXEC"); !strings.HasPrefix(r, "-EXECABORT") {
				t.Fatalf("EXEC = %q, want EXECABORT", r)
			}
		}},
		{"WATCH conflict", func(t *testing.T, a, other *respConn, queued []string) {
			expect(t, a, "+OK\r\n", "WATCH", "it:cs:watched")
			expect(t, other, "+OK\r\n", "SET", "it:cs:watched", "changed")
			expect(t, a, "+OK\r\n", "MULTI")
			expect(t, a, "+QUEUED\r\n", queued...)
			if r := a.mustDo(t, "EXEC"); r != "*-1\r\n" {
				t.Fatalf("EXEC after a conflict = %q, want *-1", r)
			}
		}},
	}
	states := []struct {
		name   string
		queued []string // the state change A queues
		setup  []string // B makes the same change for real
		probe  []string // what B sends afterwards
		want   func(reply string) bool
		wantIs string
	}{
		{"SELECT", []string{"SELECT", "3"}, []string{"SELECT", "3"}, []string{"CLIENT", "INFO"},
			func(r string) bool { return strings.Contains(r, " db=3 ") }, "B's CLIENT INFO says db=3"},
		{"HELLO 3", []string{"HELLO", "3"}, []string{"HELLO", "3"}, []string{"HGETALL", "it:cs:hash"},
			func(r string) bool { return strings.HasPrefix(r, "%1\r\n") }, "B's HGETALL is a RESP3 map"},
	}
	for _, ab := range aborts {
		for _, sc := range states {
			t.Run(sc.name+" queued then "+ab.name, func(t *testing.T) {
				for _, target := range []struct{ name, addr string }{{"direct", master}, {"proxy", st.Addr}} {
					a, b, other := dialRESP(t, target.addr), dialRESP(t, target.addr), dialRESP(t, target.addr)
					other.mustDo(t, "HSET", "it:cs:hash", "f", "v")
					if r := b.mustDo(t, sc.setup...); strings.HasPrefix(r, "-") {
						t.Fatalf("%s: B %q = %q", target.name, sc.setup, r)
					}
					ab.run(t, a, other, sc.queued)
					r := b.mustDo(t, sc.probe...)
					if !sc.want(r) {
						t.Errorf("%s: after A's %s did not run, %s is false: B got %q", target.name, sc.queued, sc.wantIs, r)
					}
				}
			})
		}
	}

	// WAIT counts the replicas that acknowledged the writes sent on the
	// calling connection. With one replica stopped, a client's WAIT 2 after
	// its SET can only reach 1. Here another client holds the backend
	// connection of the SET (blocked in BLPOP), so the proxy serves the
	// WAIT on another pooled connection whose last command both replicas
	// had acknowledged: Redis answers for that connection, not the client.
	t.Run("WAIT after the client's own write", func(t *testing.T) {
		replica := st.Topo.Nodes()[2]
		t.Cleanup(func() { _ = replica.Resume() }) // no-op unless a check failed while paused
		for _, target := range []struct{ name, addr string }{{"direct", master}, {"proxy", st.Addr}} {
			a, b := dialRESP(t, target.addr), dialRESP(t, target.addr)
			// db 5 is used by nothing else here, so the proxy's pool for it
			// holds exactly B's connection and then A's.
			expect(t, b, "+OK\r\n", "SELECT", "5")
			expect(t, a, "+OK\r\n", "SELECT", "5")
			// Both replicas acknowledge everything so far, then one stops.
			sync := dialRESP(t, master)
			expect(t, sync, "+OK\r\n", "SET", "it:cs:sync", target.name)
			expect(t, sync, ":2\r\n", "WAIT", "2", "5000")
			if err := replica.Pause(); err != nil {
				t.Fatal(err)
			}
			expect(t, a, "+OK\r\n", "SET", "it:cs:waited", target.name)
			if err := b.send("BLPOP", "it:cs:empty", "10"); err != nil {
				t.Fatal(err)
			}
			blockedOn(t, st, "blpop")
			began := time.Now()
			r := a.mustDo(t, "WAIT", "2", "1000")
			if r != ":1\r\n" {
				t.Errorf("%s: WAIT 2 1000 after SET with one of two replicas stopped = %q after %v, want :1 (only one replica has the write)",
					target.name, r, time.Since(began).Round(time.Millisecond))
			}
			expect(t, a, ":1\r\n", "RPUSH", "it:cs:empty", "x")
			if f, err := b.read(10 * time.Second); err != nil || !strings.HasPrefix(f, "*2\r\n") {
				t.Fatalf("%s: BLPOP = %q, %v", target.name, f, err)
			}
			if err := replica.Resume(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// expect sends args as one command and fails the test unless the reply is
// exactly want.
func expect(t *testing.T, c *respConn, want string, args ...string) {
	t.Helper()
	if r := c.mustDo(t, args...); r != want {
		t.Fatalf("%q = %q, want %q", args, r, want)
	}
}
