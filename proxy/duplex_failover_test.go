package proxy

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Full duplex sessions moving to another connection: the master changed,
// or the connection was lost (duplex_move.go).

// killSubscribers cuts the proxy's subscribed connections to r.
func killSubscribers(t *testing.T, r string) {
	t.Helper()
	if got := dialRedis(t, r).do("CLIENT", "KILL", "TYPE", "pubsub"); !strings.HasPrefix(got, ":") {
		t.Fatalf("CLIENT KILL TYPE pubsub = %q", got)
	}
}

// TestDuplexStopWhileMoving: a subscriber that leaves while its session is
// being moved (no master known) ends at once, and no connection is made for
// it once a master is known again.
func TestDuplexStopWhileMoving(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	src := newFakeSource(r1)
	srv, paddr := startProxy(t, src, func(o *Options) { o.HoldTimeout = 30 * time.Second })
	c := dialRedis(t, paddr)
	must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("2", "subscribe", "a", 1))
	src.set("")
	killSubscribers(t, r1)
	c.nc.Close()
	deadline := time.Now().Add(3 * time.Second)
	for srv.Stats().Clients != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session of a subscriber that left during a move did not end within 3s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	src.set(r2)
	if st := srv.Stats(); st.Pinned != 0 || st.Pool.Open != 0 {
		t.Fatalf("after the session ended: %d pinned, %d backend connections", st.Pinned, st.Pool.Open)
	}
	if got := dialRedis(t, r2).do("CLIENT", "LIST"); strings.Contains(got, "sub=1") {
		t.Fatalf("a subscription was made for a session that ended:\n%s", got)
	}
}

// TestDuplexLongChannelMoves: subscriptions whose confirmations are longer
// than the framer's capture limit move without the client seeing them.
func TestDuplexLongChannelMoves(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	long := strings.Repeat("c", 3000)
	for _, p := range []string{"2", "3"} {
		t.Run("resp"+p, func(t *testing.T) {
			src := newFakeSource(r1)
			_, paddr := startProxy(t, src, nil)
			c := dialProto(t, paddr, p)
			c.send(cmds([]string{"SUBSCRIBE", long, "short"}, []string{"PSUBSCRIBE", long + "*"}))
			expect(t, c, "SUBSCRIBE", confirmation(p, "subscribe", long, 1), confirmation(p, "subscribe", "short", 2),
				confirmation(p, "psubscribe", long+"*", 3))
			src.set(r2)
			pub := dialRedis(t, r2)
			waitFor(t, func() bool { return pub.do("PUBLISH", "short", "x") == ":1\r\n" })
			expect(t, c, "first frame after the move", message(p, "short", "x"))
			if got := pub.do("PUBLISH", long, "y"); got != ":2\r\n" {
				t.Fatalf("PUBLISH to the long channel = %q, want 2 receivers (channel and pattern)", got)
			}
			expect(t, c, "long channel", message(p, long, "y"))
			if got := c.reply(); !strings.HasPrefix(got, pushHead(p, 4)+"$8\r\npmessage\r\n") {
				t.Fatalf("pattern message = %.60q", got)
			}
		})
	}
}

// TestDuplexCommandsDuringMove: commands a subscriber sends while it is
// being moved wait and are answered, in order, by the new master: its own
// SUBSCRIBE's confirmation included, after the proxy's resubscription.
func TestDuplexCommandsDuringMove(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	dialRedis(t, r2).do("SET", "k", "two")
	for _, p := range []string{"2", "3"} {
		t.Run("resp"+p, func(t *testing.T) {
			src := newFakeSource(r1)
			srv, paddr := startProxy(t, src, func(o *Options) { o.HoldTimeout = 10 * time.Second })
			c := dialProto(t, paddr, p)
			must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation(p, "subscribe", "a", 1))
			src.set("")
			killSubscribers(t, r1)
			waitFor(t, func() bool { return srv.Stats().Pool.Open == 0 }) // the move began
			send := [][]string{{"SUBSCRIBE", "b"}, {"PING"}}
			want := []string{confirmation(p, "subscribe", "b", 2), pong(p)}
			if p == "3" {
				send = append(send, []string{"GET", "k"})
				want = append(want, "$3\r\ntwo\r\n")
			}
			c.send(cmds(send...))
			time.AfterFunc(200*time.Millisecond, func() { src.set(r2) })
			expect(t, c, "commands sent during the move", want...)
			pub := dialRedis(t, r2)
			for _, ch := range []string{"a", "b"} {
				if got := pub.do("PUBLISH", ch, "m"); got != ":1\r\n" {
					t.Fatalf("PUBLISH %s on the new master = %q", ch, got)
				}
				expect(t, c, "message", message(p, ch, "m"))
			}
		})
	}
}

// TestDuplexUnansweredAtMove: commands the lost connection did not answer
// are answered in order: sent again when that is safe (a read, PING), "may
// have run" otherwise.
func TestDuplexUnansweredAtMove(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	dialRedis(t, r1).do("SET", "k", "one")
	dialRedis(t, r2).do("SET", "k", "two")
	src := newFakeSource(r1)
	_, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	hello(t, c, "3")
	must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("3", "subscribe", "a", 1))
	// BLPOP blocks on the old master; GET and PING wait behind it there.
	c.send(cmds([]string{"BLPOP", "q", "0"}, []string{"GET", "k"}, []string{"PING"}))
	old := dialRedis(t, r1)
	waitFor(t, func() bool { return strings.Contains(old.do("INFO", "clients"), "blocked_clients:1") })
	src.set(r2)
	if got := c.reply(); !strings.HasPrefix(got, "-UNBLOCKED ") {
		t.Fatalf("BLPOP lost with the connection = %q, want an UNBLOCKED error", got)
	}
	expect(t, c, "after BLPOP", "$3\r\ntwo\r\n", "+PONG\r\n")
	if got := dialRedis(t, r2).do("PUBLISH", "a", "m"); got != ":1\r\n" {
		t.Fatalf("PUBLISH on the new master = %q", got)
	}
	expect(t, c, "message", message("3", "a", "m"))
}

// TestDuplexStateMoves: SELECT, AUTH and CLIENT SETNAME sent while
// subscribed (RESP3) move with the session when they succeeded, and stay
// with it when full duplex ends.
func TestDuplexStateMoves(t *testing.T) {
	user := []string{"--user", "alice", "on", ">pw", "~*", "&*", "+@all"}
	r1, r2 := startRedis(t, user...), startRedis(t, user...)
	src := newFakeSource(r1)
	srv, paddr := startProxy(t, src, nil)
	c := dialRedis(t, paddr)
	hello(t, c, "3")
	c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"AUTH", "alice", "pw"}, []string{"SELECT", "2"},
		[]string{"SELECT", "99"}, []string{"AUTH", "alice", "wrong"}, []string{"CLIENT", "SETNAME", "sub1"}))
	expect(t, c, "SUBSCRIBE", confirmation("3", "subscribe", "a", 1), "+OK\r\n", "+OK\r\n")
	for _, prefix := range []string{"-ERR DB index", "-WRONGPASS"} {
		if got := c.reply(); !strings.HasPrefix(got, prefix) {
			t.Fatalf("reply = %q, want %s…", got, prefix)
		}
	}
	expect(t, c, "SETNAME", "+OK\r\n")
	src.set(r2)
	pub := dialRedis(t, r2)
	waitFor(t, func() bool { return pub.do("PUBLISH", "a", "x") == ":1\r\n" })
	expect(t, c, "message", message("3", "a", "x"))
	check := func(when string) {
		t.Helper()
		got := c.do("CLIENT", "INFO")
		for _, want := range []string{" name=sub1 ", " db=2 ", " user=alice ", " resp=3"} {
			if !strings.Contains(got, want) {
				t.Fatalf("%s: CLIENT INFO = %q, want %q", when, got, want)
			}
		}
	}
	check("after the move")
	must(t, "UNSUBSCRIBE", c.do("UNSUBSCRIBE"), confirmation("3", "unsubscribe", "a", 0))
	waitRequestResponse(t, srv, 1) // pinned by its name
	check("after full duplex ended")
	if got := c.do("SET", "in2", "v"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	if got := doIn(t, r2, "2", "GET", "in2"); got != "$1\r\nv\r\n" {
		t.Fatalf("the SET did not land in db 2 of the new master: %q", got)
	}
}

// TestDuplexOrderAcrossMoves: a subscriber pipelines PINGs, ECHOs and
// SUBSCRIBEs while the master changes back and forth; every command gets
// exactly one reply, in order (its own confirmation included, the proxy's
// resubscriptions never).
func TestDuplexOrderAcrossMoves(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	for _, p := range []string{"2", "3"} {
		t.Run("resp"+p, func(t *testing.T) {
			src := newFakeSource(r1)
			_, paddr := startProxy(t, src, nil)
			c := dialProto(t, paddr, p)
			must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "ch0"), confirmation(p, "subscribe", "ch0", 1))
			const batches = 60
			want := make(chan string, batches*4)
			go func() { // the sender; the test goroutine reads
				subs := 1
				for i := range batches {
					n := strconv.Itoa(i)
					batch := [][]string{{"PING", "p" + n}, {"SUBSCRIBE", "ch" + n + "x"}}
					if p == "3" {
						batch = append(batch, []string{"ECHO", "e" + n})
					}
					subs++
					if _, err := c.nc.Write([]byte(cmds(batch...))); err != nil {
						close(want)
						return
					}
					if p == "3" {
						want <- bulk("p" + n)
					} else {
						want <- "*2\r\n$4\r\npong\r\n" + bulk("p"+n)
					}
					want <- confirmation(p, "subscribe", "ch"+n+"x", subs)
					if p == "3" {
						want <- bulk("e" + n)
					}
					if i%10 == 5 {
						if i%20 == 5 {
							src.set(r2)
						} else {
							src.set(r1)
						}
					}
					time.Sleep(5 * time.Millisecond) // pacing, so that moves fall between and inside batches
				}
				close(want)
			}()
			i := 0
			for w := range want {
				if got := c.reply(); got != w {
					t.Fatalf("reply %d = %q, want %q", i, got, w)
				}
				i++
			}
			if per := map[string]int{"2": 2, "3": 3}[p]; i != batches*per {
				t.Fatalf("the sender stopped after %d replies", i)
			}
		})
	}
}

// dyingListener is a master that reads from each connection once, then
// closes it and has src name next instead.
func dyingListener(t *testing.T, src *fakeSource, next string) string {
	t.Helper()
	return fakeMaster(t, func(_ int, c net.Conn) {
		c.Read(make([]byte, 1024))
		c.Close()
		src.set(next)
	})
}

// TestDuplexMoveTwice: a connection that dies before it confirmed the
// resubscription is replaced by another, subscribed to everything.
func TestDuplexMoveTwice(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	for _, p := range []string{"2", "3"} {
		t.Run("resp"+p, func(t *testing.T) {
			src := newFakeSource(r1)
			_, paddr := startProxy(t, src, nil)
			c := dialProto(t, paddr, p)
			c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"PSUBSCRIBE", "p*"}))
			expect(t, c, "subscribed", confirmation(p, "subscribe", "a", 1), confirmation(p, "psubscribe", "p*", 2))
			src.set(dyingListener(t, src, r2))
			pub := dialRedis(t, r2)
			waitFor(t, func() bool { return pub.do("PUBLISH", "a", "x") == ":1\r\n" })
			expect(t, c, "first frame after two moves", message(p, "a", "x"))
			must(t, "PUBLISH to the pattern", pub.do("PUBLISH", "pz", "y"), ":1\r\n")
			c.send(cmds([]string{"PING"}))
			expect(t, c, "pattern message, PING", pushHead(p, 4)+bulk("pmessage")+bulk("p*")+bulk("pz")+bulk("y"), pong(p))
		})
	}
}

// cutRelay relays connections to a Redis server. cutAt makes it close the
// connection that relays the next server bytes, that many bytes on;
// loading makes it answer the next client write itself with -LOADING.
type cutRelay struct {
	target  string
	cutAt   atomic.Int64
	loading atomic.Bool
}

func startCutRelay(t *testing.T, target string) (*cutRelay, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &cutRelay{target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { // exits when either side closes
				defer s.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && r.loading.Swap(false) {
						c.Write([]byte("-LOADING Redis is loading the dataset in memory\r\n"))
					} else if n > 0 {
						if _, err := s.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { // exits when either side closes
				defer c.Close()
				defer s.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if cut := r.cutAt.Load(); cut > 0 {
							// Cut cut bytes into the stream, maybe in a later read.
							k := min(int(cut), n)
							r.cutAt.Store(cut - int64(k))
							if int(cut) <= n {
								c.Write(buf[:k])
								return
							}
						}
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return r, ln.Addr().String()
}

// TestDuplexCutInsideMessage: a connection cut in the middle of a message
// leaves the subscriber's stream whole: the session moves, and the client
// stays connected and subscribed (the cut message is lost, as pub/sub may
// lose messages when a connection breaks).
func TestDuplexCutInsideMessage(t *testing.T) {
	r := startRedis(t)
	relay, raddr := startCutRelay(t, r)
	for _, p := range []string{"2", "3"} {
		t.Run("resp"+p, func(t *testing.T) {
			_, paddr := startProxy(t, newFakeSource(raddr), nil)
			c := dialProto(t, paddr, p)
			must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation(p, "subscribe", "a", 1))
			pub := dialRedis(t, r)
			relay.cutAt.Store(40)
			must(t, "PUBLISH", pub.do("PUBLISH", "a", strings.Repeat("x", 100)), ":1\r\n")
			// Messages published while the proxy notices the cut may be
			// lost too (Redis may not have seen the cut connection close):
			// publish until one arrives. It must be whole.
			var got bytes.Buffer
			deadline := time.Now().Add(10 * time.Second)
			for i := 1; ; i++ {
				pub.do("PUBLISH", "a", "after"+strconv.Itoa(i))
				c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, err := c.fr.Next(&got) // resumes a frame cut by the deadline
				if err == nil {
					whole := false
					for j := 1; j <= i; j++ {
						whole = whole || got.String() == message(p, "a", "after"+strconv.Itoa(j))
					}
					if !whole {
						t.Fatalf("first frame after the cut = %q, want a whole message", got.String())
					}
					break
				}
				if !isTimeout(err) || time.Now().After(deadline) {
					t.Fatalf("no message after the cut: %v (read %q)", err, got.String())
				}
			}
		})
	}
}

// TestDuplexQuitDuringMove: QUIT sent while the subscriber moves is
// answered after the commands before it, by the new master.
func TestDuplexQuitDuringMove(t *testing.T) {
	r1, r2 := startRedis(t), startRedis(t)
	src := newFakeSource(r1)
	srv, paddr := startProxy(t, src, func(o *Options) { o.HoldTimeout = 10 * time.Second })
	c := dialRedis(t, paddr)
	must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("2", "subscribe", "a", 1))
	src.set("")
	killSubscribers(t, r1)
	waitFor(t, func() bool { return srv.Stats().Pool.Open == 0 }) // the move began
	c.send(cmds([]string{"SUBSCRIBE", "b"}, []string{"PING"}, []string{"QUIT"}))
	time.AfterFunc(200*time.Millisecond, func() { src.set(r2) })
	expect(t, c, "during the move", confirmation("2", "subscribe", "b", 2), pong("2"), "+OK\r\n", "EOF")
}

// TestDuplexResubscribeLoading: a new master that answers the
// resubscription -LOADING is tried again shortly; the client sees nothing of
// it.
func TestDuplexResubscribeLoading(t *testing.T) {
	r := startRedis(t)
	relay, raddr := startCutRelay(t, r)
	_, paddr := startProxy(t, newFakeSource(raddr), nil)
	c := dialRedis(t, paddr)
	must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("2", "subscribe", "a", 1))
	relay.loading.Store(true)
	killSubscribers(t, r)
	pub := dialRedis(t, r)
	waitFor(t, func() bool { return !relay.loading.Load() && pub.do("PUBLISH", "a", "x") == ":1\r\n" })
	expect(t, c, "first frame after the move", message("2", "a", "x"))
}
