package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// Full duplex (duplex*.go) against real redis-server processes: replies in
// order and the end of full duplex. Moves: duplex_failover_test.go.

// confirmation is Redis's (un)subscribe confirmation in RESP proto "2" or "3".
func confirmation(proto, kind, ch string, n int) string {
	return pushHead(proto, 3) + bulk(kind) + bulk(ch) + ":" + strconv.Itoa(n) + "\r\n"
}

// message is a pub/sub message in proto "2" or "3".
func message(proto, ch, payload string) string {
	return pushHead(proto, 3) + bulk("message") + bulk(ch) + bulk(payload)
}

func pushHead(proto string, n int) string {
	if proto == "3" {
		return ">" + strconv.Itoa(n) + "\r\n"
	}
	return "*" + strconv.Itoa(n) + "\r\n"
}

// pong is PING's answer on a subscribed connection.
func pong(proto string) string {
	if proto == "3" {
		return "+PONG\r\n"
	}
	return "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
}

// expect reads one reply per want, in order.
func expect(t *testing.T, c *redisConn, what string, want ...string) {
	t.Helper()
	for i, w := range want {
		if got := c.reply(); got != w {
			t.Fatalf("%s: reply %d = %.300q, want %.300q", what, i, got, w)
		}
	}
}

// must compares one reply.
func must(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

// cmds encodes commands for one write.
func cmds(cs ...[]string) string {
	var b []byte
	for _, c := range cs {
		b = appendCommand(b, c...)
	}
	return string(b)
}

// hello switches c to proto and checks the answer.
func hello(t *testing.T, c *redisConn, proto string) {
	t.Helper()
	if got := c.do("HELLO", proto); !strings.Contains(got, "proto") {
		t.Fatalf("HELLO %s = %q", proto, got)
	}
}

// dialProto connects to addr and, for proto "3", switches to RESP3.
func dialProto(t *testing.T, addr, proto string) *redisConn {
	t.Helper()
	c := dialRedis(t, addr)
	if proto == "3" {
		hello(t, c, proto)
	}
	return c
}

// waitRequestResponse waits until the one client's session is back on the
// ordinary path, parked (a full-duplex session never parks) and holding
// pinned connections as wanted.
func waitRequestResponse(t *testing.T, srv *Server, pinned int64) {
	t.Helper()
	waitFor(t, func() bool { st := srv.Stats(); return st.Parked == 1 && st.Pinned == pinned })
}

// TestDuplexEnds checks that a session that leaves every subscription, sends
// RESET or turns tracking off goes back to request/response at the reply
// that ended it: later replies in order, its connection back in the pool (or
// pinned when its name needs it), the session parked, nothing pinned.
func TestDuplexEnds(t *testing.T) {
	r := startRedis(t)
	cases := []struct {
		name   string
		protos []string
		pinned int64 // pinned connections afterwards
		run    func(t *testing.T, c *redisConn, p string)
	}{
		{"last unsubscribe", []string{"2", "3"}, 0, func(t *testing.T, c *redisConn, p string) {
			c.send(cmds([]string{"SUBSCRIBE", "a", "b"}, []string{"UNSUBSCRIBE", "a"}, []string{"PING"}))
			expect(t, c, "subscribed", confirmation(p, "subscribe", "a", 1), confirmation(p, "subscribe", "b", 2),
				confirmation(p, "unsubscribe", "a", 1), pong(p))
			c.send(cmds([]string{"UNSUBSCRIBE"}, []string{"SET", "k", "v"}, []string{"GET", "k"}))
			expect(t, c, "unsubscribed", confirmation(p, "unsubscribe", "b", 0), "+OK\r\n", "$1\r\nv\r\n")
		}},
		{"pipeline in and out twice", []string{"2", "3"}, 0, func(t *testing.T, c *redisConn, p string) {
			c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"UNSUBSCRIBE", "a"}, []string{"SET", "k", "w"},
				[]string{"PSUBSCRIBE", "p*"}, []string{"PUNSUBSCRIBE"}, []string{"GET", "k"}, []string{"UNSUBSCRIBE"}, []string{"PING"}))
			expect(t, c, "pipeline", confirmation(p, "subscribe", "a", 1), confirmation(p, "unsubscribe", "a", 0), "+OK\r\n",
				confirmation(p, "psubscribe", "p*", 1), confirmation(p, "punsubscribe", "p*", 0), "$1\r\nw\r\n",
				pushHead(p, 3)+bulk("unsubscribe")+map[string]string{"2": "$-1\r\n", "3": "_\r\n"}[p]+":0\r\n", "+PONG\r\n")
		}},
		{"patterns keep it", []string{"2"}, 0, func(t *testing.T, c *redisConn, p string) {
			c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"PSUBSCRIBE", "p*"}, []string{"UNSUBSCRIBE"}, []string{"PING"}))
			expect(t, c, "subscribed", confirmation(p, "subscribe", "a", 1), confirmation(p, "psubscribe", "p*", 2),
				confirmation(p, "unsubscribe", "a", 1), pong(p))
			must(t, "PUNSUBSCRIBE", c.do("PUNSUBSCRIBE", "p*"), confirmation(p, "punsubscribe", "p*", 0))
			if got := c.do("PING"); got != "+PONG\r\n" {
				t.Fatalf("PING after the last PUNSUBSCRIBE = %q", got)
			}
		}},
		{"reset", []string{"2", "3"}, 0, func(t *testing.T, c *redisConn, p string) {
			c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"SSUBSCRIBE", "s"}, []string{"RESET"}, []string{"CLIENT", "INFO"}))
			expect(t, c, "subscribed", confirmation(p, "subscribe", "a", 1), confirmation(p, "ssubscribe", "s", 1), "+RESET\r\n")
			if got := c.reply(); !strings.Contains(got, " db=0 sub=0 psub=0 ssub=0 ") || !strings.Contains(got, " resp=2") {
				t.Fatalf("CLIENT INFO after RESET = %q", got)
			}
		}},
		{"monitor reset", []string{"2", "3"}, 0, func(t *testing.T, c *redisConn, p string) {
			must(t, "MONITOR", c.do("MONITOR"), "+OK\r\n")
			other := dialRedis(t, r)
			other.do("SET", "seen", "1")
			if got := c.reply(); !strings.Contains(got, `"SET" "seen" "1"`) {
				t.Fatalf("MONITOR line = %q", got)
			}
			c.send(cmds([]string{"RESET"}, []string{"PING"}))
			expect(t, c, "after RESET", "+RESET\r\n", "+PONG\r\n")
		}},
		{"tracking off", []string{"3"}, 0, func(t *testing.T, c *redisConn, p string) {
			c.send(cmds([]string{"CLIENT", "TRACKING", "ON"}, []string{"GET", "t"}, []string{"CLIENT", "TRACKING", "OFF"}))
			expect(t, c, "tracking", "+OK\r\n", "_\r\n", "+OK\r\n")
			dialRedis(t, r).do("SET", "t", "changed")
			if got := c.do("GET", "t"); got != "$7\r\nchanged\r\n" {
				t.Fatalf("GET after tracking off = %q (an invalidation?)", got)
			}
		}},
		{"a named session stays pinned", []string{"2", "3"}, 1, func(t *testing.T, c *redisConn, p string) {
			c.send(cmds([]string{"CLIENT", "SETNAME", "keep"}, []string{"SUBSCRIBE", "a"}, []string{"UNSUBSCRIBE", "a"}, []string{"CLIENT", "GETNAME"}))
			expect(t, c, "named", "+OK\r\n", confirmation(p, "subscribe", "a", 1), confirmation(p, "unsubscribe", "a", 0), "$4\r\nkeep\r\n")
		}},
	}
	for _, tc := range cases {
		for _, p := range tc.protos {
			// With an output limit, the session's output goes through
			// a queue that full duplex must drain before it ends.
			for _, limit := range []int64{0, 1 << 20} {
				t.Run(tc.name+"/resp"+p+"/limit="+strconv.FormatInt(limit, 10), func(t *testing.T) {
					must(t, "FLUSHALL", dialRedis(t, r).do("FLUSHALL"), "+OK\r\n")
					srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.OutputLimit = limit })
					c := dialProto(t, paddr, p)
					tc.run(t, c, p)
					waitRequestResponse(t, srv, tc.pinned)
					// The same server connection served everything: full duplex
					// gave it back instead of dropping it.
					if got := c.do("ECHO", "after"); got != "$5\r\nafter\r\n" {
						t.Fatalf("ECHO after full duplex = %q", got)
					}
					if st := srv.Stats(); st.Pool.Dials != 1 || st.Pool.Open != 1 {
						t.Errorf("backend connections: %d dialed, %d open; want the first one reused", st.Pool.Dials, st.Pool.Open)
					}
				})
			}
		}
	}
}

// TestDuplexLocalAnswersInOrder: the proxy's own answers to a subscriber
// (a refused command) come in their turn, after the replies to the commands
// before them.
func TestDuplexLocalAnswersInOrder(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	hello(t, c, "3")
	must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("3", "subscribe", "a", 1))
	c.send(cmds([]string{"DEBUG", "SLEEP", "0"}, []string{"ECHO", "e"}, []string{"SHUTDOWN"}, []string{"PING"}))
	if got := c.reply(); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("DEBUG SLEEP = %q, want the policy's refusal", got)
	}
	expect(t, c, "ECHO before the refused SHUTDOWN", "$1\r\ne\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("SHUTDOWN = %q, want the policy's refusal", got)
	}
	expect(t, c, "PING", "+PONG\r\n")
}

// TestDuplexProxyAuth: with proxy-terminated authentication, AUTH while
// subscribed is answered by the proxy (in its turn) and never reaches Redis,
// the subscriber moves with the backend credentials, and RESET ends full
// duplex and the client's authentication as it does on the ordinary path.
func TestDuplexProxyAuth(t *testing.T) {
	const backendPass = "backend pw"
	r1, r2 := startRedis(t, "--requirepass", backendPass), startRedis(t, "--requirepass", backendPass)
	auth, err := NewAuth([]User{{Name: "default", Password: "front"}}, "", backendPass)
	if err != nil {
		t.Fatal(err)
	}
	src := newFakeSource(r1)
	srv, paddr := startProxy(t, src, func(o *Options) { o.Auth = auth })
	c := dialRedis(t, paddr)
	must(t, "AUTH", c.do("AUTH", "front"), "+OK\r\n")
	hello(t, c, "3")
	must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("3", "subscribe", "a", 1))
	c.send(cmds([]string{"PING"}, []string{"AUTH", "wrong"}, []string{"AUTH", "front"}, []string{"PING"}))
	must(t, "PING", c.reply(), "+PONG\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH wrong while subscribed = %q", got)
	}
	expect(t, c, "AUTH front while subscribed", "+OK\r\n", "+PONG\r\n")

	src.set(r2)
	pub := dialRedis(t, r2)
	must(t, "AUTH on r2", pub.do("AUTH", backendPass), "+OK\r\n")
	waitFor(t, func() bool { return pub.do("PUBLISH", "a", "x") == ":1\r\n" })
	expect(t, c, "message after the move", message("3", "a", "x"))

	c.send(cmds([]string{"RESET"}, []string{"GET", "k"}))
	expect(t, c, "RESET", "+RESET\r\n", "-NOAUTH Authentication required.\r\n")
	waitRequestResponse(t, srv, 0)
	must(t, "AUTH after RESET", c.do("AUTH", "front"), "+OK\r\n")
	must(t, "GET after AUTH", c.do("GET", "k"), "$-1\r\n")
}

// TestDuplexStartKeepsEarlierReplies: with an output limit, the replies to
// the commands pipelined before SUBSCRIBE are not lost when the session's
// output is switched to the queue.
func TestDuplexStartKeepsEarlierReplies(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.OutputLimit = 1 << 20 })
	c := dialRedis(t, paddr)
	c.send(cmds([]string{"SET", "k", "v"}, []string{"GET", "k"}, []string{"SUBSCRIBE", "a"}))
	expect(t, c, "pipeline", "+OK\r\n", "$1\r\nv\r\n", confirmation("2", "subscribe", "a", 1))
}

// TestDuplexTransaction: a RESP3 subscriber's transaction is answered in
// order. One that changed state the proxy cannot follow (SELECT queued) keeps
// full duplex until RESET; one that did not lets UNSUBSCRIBE end it.
func TestDuplexTransaction(t *testing.T) {
	r := startRedis(t)
	for _, tc := range []struct {
		name   string
		queued []string
		ends   bool
	}{{"plain", []string{"SET", "k", "v"}, true}, {"state", []string{"SELECT", "2"}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			srv, paddr := startProxy(t, newFakeSource(r), nil)
			c := dialRedis(t, paddr)
			hello(t, c, "3")
			c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"MULTI"}, tc.queued, []string{"PING"}, []string{"EXEC"}, []string{"UNSUBSCRIBE"}, []string{"ECHO", "e"}))
			expect(t, c, "transaction", confirmation("3", "subscribe", "a", 1), "+OK\r\n", "+QUEUED\r\n", "+QUEUED\r\n",
				"*2\r\n+OK\r\n+PONG\r\n", confirmation("3", "unsubscribe", "a", 0), "$1\r\ne\r\n")
			if tc.ends {
				waitRequestResponse(t, srv, 0)
				return
			}
			time.Sleep(3 * parkAfter) // it must not park: it is still full duplex
			if st := srv.Stats(); st.Parked != 0 || st.Pinned != 1 {
				t.Fatalf("after a transaction with SELECT: %d parked, %d pinned; want full duplex kept", st.Parked, st.Pinned)
			}
			must(t, "RESET", c.do("RESET"), "+RESET\r\n")
			waitRequestResponse(t, srv, 0)
			if got := c.do("CLIENT", "INFO"); !strings.Contains(got, " db=0 ") {
				t.Fatalf("CLIENT INFO after RESET = %q", got)
			}
		})
	}
}

// TestDuplexQuit: QUIT while subscribed is answered +OK after the replies
// before it, and nothing after it runs.
func TestDuplexQuit(t *testing.T) {
	r := startRedis(t)
	for _, limit := range []int64{0, 1 << 20} {
		t.Run("limit="+strconv.FormatInt(limit, 10), func(t *testing.T) {
			_, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.OutputLimit = limit })
			c := dialRedis(t, paddr)
			c.send(cmds([]string{"SUBSCRIBE", "a"}, []string{"PING"}, []string{"QUIT"}, []string{"SET", "after-quit", "1"}))
			expect(t, c, "pipeline", confirmation("2", "subscribe", "a", 1), pong("2"), "+OK\r\n", "EOF")
			c = dialRedis(t, paddr)
			must(t, "SUBSCRIBE", c.do("SUBSCRIBE", "a"), confirmation("2", "subscribe", "a", 1))
			must(t, "QUIT alone", c.do("QUIT"), "+OK\r\n")
			expect(t, c, "after QUIT", "EOF")
			if got := dialRedis(t, r).do("EXISTS", "after-quit"); got != ":0\r\n" {
				t.Fatalf("a command after QUIT ran: EXISTS = %q", got)
			}
		})
	}
}

// TestDuplexRefusedStart: a SUBSCRIBE, MONITOR or CLIENT TRACKING ON that
// Redis refuses (here its ACL) subscribes nothing, so the session goes back
// to request/response at once. A RESP2 reply that looks like a message (an
// array whose first element is "message") is then passed on as the reply it
// is, and later commands are answered in order.
func TestDuplexRefusedStart(t *testing.T) {
	r := startRedis(t)
	admin := dialRedis(t, r)
	must(t, "ACL SETUSER", admin.do("ACL", "SETUSER", "limited", "on", ">pw", "~*", "resetchannels", "&ok", "+@all", "-monitor", "-client|tracking"), "+OK\r\n")
	must(t, "RPUSH", admin.do("RPUSH", "l", "message", "ch", "payload"), ":3\r\n")
	const lrange = "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$7\r\npayload\r\n"
	for _, start := range [][]string{{"SUBSCRIBE", "a"}, {"PSUBSCRIBE", "a*"}, {"SSUBSCRIBE", "a"}, {"MONITOR"}, {"CLIENT", "TRACKING", "ON"}} {
		for _, p := range []string{"2", "3"} {
			t.Run(strings.Join(start, " ")+"/resp"+p, func(t *testing.T) {
				srv, paddr := startProxy(t, newFakeSource(r), nil)
				c := dialProto(t, paddr, p)
				must(t, "AUTH", c.do("AUTH", "limited", "pw"), "+OK\r\n")
				c.send(cmds(start, []string{"LRANGE", "l", "0", "-1"}, []string{"PING"}))
				if got := c.reply(); !strings.HasPrefix(got, "-NOPERM") {
					t.Fatalf("%v = %q, want Redis's NOPERM", start, got)
				}
				expect(t, c, "after the refusal", lrange, "+PONG\r\n")
				waitRequestResponse(t, srv, 0)
				must(t, "LRANGE on the ordinary path", c.do("LRANGE", "l", "0", "-1"), lrange)
			})
		}
	}
	// Refused while subscribed: the last UNSUBSCRIBE still ends full duplex.
	for _, p := range []string{"2", "3"} {
		t.Run("refused while subscribed/resp"+p, func(t *testing.T) {
			srv, paddr := startProxy(t, newFakeSource(r), nil)
			c := dialProto(t, paddr, p)
			must(t, "AUTH", c.do("AUTH", "limited", "pw"), "+OK\r\n")
			c.send(cmds([]string{"SUBSCRIBE", "ok"}, []string{"SUBSCRIBE", "a"}, []string{"UNSUBSCRIBE", "ok"}, []string{"LRANGE", "l", "0", "-1"}))
			expect(t, c, "subscribed", confirmation(p, "subscribe", "ok", 1))
			if got := c.reply(); !strings.HasPrefix(got, "-NOPERM") {
				t.Fatalf("SUBSCRIBE a = %q, want Redis's NOPERM", got)
			}
			expect(t, c, "unsubscribed", confirmation(p, "unsubscribe", "ok", 0), lrange)
			waitRequestResponse(t, srv, 0)
		})
	}
}
