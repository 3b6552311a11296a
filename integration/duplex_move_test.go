package integration

// Issue 10, items 5 and 7, against a real Sentinel topology: subscribers
// that keep sending commands (PING, as client libraries do to check a
// subscribed connection) through a failover. Every command gets its own
// reply, in order, whether it was sent before, during or after the move; no
// confirmation of the proxy's resubscription reaches a client, however long
// the channel name; state a RESP3 subscriber set after SUBSCRIBE (SELECT,
// CLIENT SETNAME) moves with it; and once the subscribers leave every
// channel their sessions go back to request/response on the new master.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// dxSubscriber is a raw subscriber through the proxy that PINGs every
// 20 ms and reads until each PING's own answer, recording the messages in
// between and anything else it should not have seen.
type dxSubscriber struct {
	name  string
	proto string
	c     *respConn
	done  chan struct{}

	mu    sync.Mutex
	pings int
	got   map[string]bool // message payloads
	bad   []string        // what went wrong
}

func (s *dxSubscriber) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, s.name+": "+fmt.Sprintf(format, args...))
}

func (s *dxSubscriber) received(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[payload]
}

// pong is the answer to PING tag on a subscribed connection.
func (s *dxSubscriber) pong(tag string) string {
	b := "$" + strconv.Itoa(len(tag)) + "\r\n" + tag + "\r\n"
	if s.proto == "3" {
		return b
	}
	return "*2\r\n$4\r\npong\r\n" + b
}

// run PINGs until stop is closed, at most 3000 times.
func (s *dxSubscriber) run(stop <-chan struct{}) {
	defer close(s.done)
	for seq := range 3000 {
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		tag := "ping" + strconv.Itoa(seq)
		if err := s.c.send("PING", tag); err != nil {
			s.fail("send PING %s: %v", tag, err)
			return
		}
		for {
			f, err := s.c.read(20 * time.Second)
			if err != nil {
				s.fail("no answer to PING %s: %v", tag, err)
				return
			}
			if f == s.pong(tag) {
				break
			}
			if !isMessage(f) && !strings.HasPrefix(f[min(len(f), 4):], "$8\r\npmessage\r\n") {
				s.fail("PING %s: got %.120q", tag, f)
				return
			}
			s.mu.Lock()
			s.got[lastBulk(f)] = true
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.pings++
		s.mu.Unlock()
	}
}

// dxStart subscribes two raw clients through the proxy: RESP2 to a channel,
// a channel with a 2000-byte name and a pattern; RESP3 to both channels,
// then SELECT 3 and CLIENT SETNAME.
func dxStart(t *testing.T, st *stack, prefix string) (s2, s3 *dxSubscriber, long string) {
	t.Helper()
	long = prefix + strings.Repeat("L", 2000)
	s2 = &dxSubscriber{name: "RESP2 subscriber", proto: "2", c: dialRESP(t, st.Addr), done: make(chan struct{}), got: map[string]bool{}}
	s3 = &dxSubscriber{name: "RESP3 subscriber", proto: "3", c: dialRESP(t, st.Addr), done: make(chan struct{}), got: map[string]bool{}}
	for _, s := range []*dxSubscriber{s2, s3} {
		st.authRESP(t, s.c)
	}
	if r := s3.c.mustDo(t, "HELLO", "3"); !strings.HasPrefix(r, "%") {
		t.Fatalf("HELLO 3 = %q", r)
	}
	for _, args := range [][]string{{"SUBSCRIBE", prefix + "ch", long}, {"PSUBSCRIBE", prefix + "pat*"}} {
		if err := s2.c.send(args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := s3.c.send("SUBSCRIBE", prefix+"ch", long); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dxSubscriber{s2, s3} {
		n := map[string]int{"2": 3, "3": 2}[s.proto]
		for i := range n {
			if f, err := s.c.read(10 * time.Second); err != nil || !strings.Contains(f[:min(len(f), 20)], "subscribe") {
				t.Fatalf("%s: confirmation %d = %.80q, %v", s.name, i, f, err)
			}
		}
	}
	for _, args := range [][]string{{"SELECT", "3"}, {"CLIENT", "SETNAME", "dx-sub3"}} {
		if r := s3.c.mustDo(t, args...); r != "+OK\r\n" {
			t.Fatalf("%q while subscribed = %q", args, r)
		}
	}
	return s2, s3, long
}

// dxMove runs the subscribers through event (which breaks the master and
// returns when the proxy routes to the new one) and checks what they saw.
func dxMove(t *testing.T, event func(st *stack, ctx context.Context) string) {
	st := startStack(t, stackOptions{HoldTimeout: 10 * time.Second})
	ctx := testContext(t, 90*time.Second)
	prefix := keyPrefix(t)
	s2, s3, long := dxStart(t, st, prefix)
	stop := make(chan struct{})
	subs := []*dxSubscriber{s2, s3}
	for _, s := range subs {
		go s.run(stop)
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			for _, s := range subs {
				<-s.done
			}
		}
	}
	defer halt()
	waitFor(t, 10*time.Second, "the subscribers to PING", func() bool {
		s2.mu.Lock()
		defer s2.mu.Unlock()
		return s2.pings > 5
	})

	newAddr := event(st, ctx)

	// Every subscription is back, on the new master: channel, long channel
	// (both subscribers) and pattern (RESP2).
	direct := directTo(newAddr, 0)
	defer direct.Close()
	report := func() {
		for _, s := range subs {
			s.mu.Lock()
			t.Logf("%s: %d PINGs answered in order", s.name, s.pings)
			for _, b := range s.bad {
				t.Error(b)
			}
			s.mu.Unlock()
		}
	}
	for _, pub := range []struct {
		ch   string
		want int64
	}{{prefix + "ch", 2}, {long, 2}, {prefix + "patZ", 1}} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			n, err := direct.Publish(ctx, pub.ch, "after-"+pub.ch[:min(len(pub.ch), 40)]).Result()
			if err == nil && n == pub.want {
				break
			}
			if time.Now().After(deadline) {
				report()
				t.Fatalf("PUBLISH %.40s on the new master: %d receivers, %v; want %d (proxy: %+v)", pub.ch, n, err, pub.want, st.Server.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !s2.received("after-"+prefix+"ch") || !s3.received("after-"+prefix+"ch") ||
		!s2.received("after-"+long[:40]) || !s3.received("after-"+long[:40]) || !s2.received("after-"+prefix+"patZ"); {
		if time.Now().After(deadline) {
			report()
			t.Fatal("the messages published on the new master did not all arrive within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	halt()
	report()
	if t.Failed() {
		return
	}

	info := s3.c.mustDo(t, "CLIENT", "INFO")
	for _, want := range []string{" name=dx-sub3 ", " db=3 ", " resp=3"} {
		if !strings.Contains(info, want) {
			t.Errorf("RESP3 subscriber on the new master: CLIENT INFO = %q, want %q", info, want)
		}
	}
	// Leaving every channel ends full duplex: the RESP3 session stays
	// pinned by its name, the RESP2 one holds nothing.
	for _, args := range [][]string{{"UNSUBSCRIBE"}, {"PUNSUBSCRIBE"}} {
		if err := s2.c.send(args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := s3.c.send("UNSUBSCRIBE"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, s2.c, 10, 10*time.Second, func(f string) bool { return strings.Contains(f, "punsubscribe") })
	readUntil(t, s3.c, 10, 10*time.Second, func(f string) bool { return strings.HasSuffix(f, ":0\r\n") })
	waitFor(t, 10*time.Second, "the subscribers' sessions to leave full duplex", func() bool {
		return st.Server.Stats().Pinned == 1
	})
	if r := s3.c.mustDo(t, "SET", prefix+"k", "v3"); r != "+OK\r\n" {
		t.Fatalf("SET after full duplex = %q", r)
	}
	if r := s2.c.mustDo(t, "GET", prefix+"k"); r != "$-1\r\n" {
		t.Fatalf("RESP2 GET in db 0 = %q, want nil (the RESP3 client wrote db 3)", r)
	}
	in3 := directTo(newAddr, 3)
	defer in3.Close()
	if v, err := in3.Get(ctx, prefix+"k").Result(); err != nil || v != "v3" {
		t.Fatalf("the RESP3 client's SET on the new master's db 3: %q, %v", v, err)
	}
}

// TestDuplexMovePlannedFailover: SENTINEL FAILOVER.
func TestDuplexMovePlannedFailover(t *testing.T) {
	dxMove(t, func(st *stack, ctx context.Context) string {
		addr, _ := failoverTo(t, st, ctx, st.Topo.Master().Addr)
		return addr
	})
}

// TestDuplexMoveKill9: kill -9 of the master.
func TestDuplexMoveKill9(t *testing.T) {
	dxMove(t, func(st *stack, ctx context.Context) string {
		old := st.Topo.Master()
		event := time.Now()
		if err := old.Kill(); err != nil {
			t.Fatal(err)
		}
		addr, _ := switched(t, st, ctx, old.Addr, event)
		return addr
	})
}
