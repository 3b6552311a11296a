package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// authRESP authenticates c with the stack's password, if it has one.
func (st *stack) authRESP(t *testing.T, c *respConn) {
	t.Helper()
	if st.Password == "" {
		return
	}
	if r := c.mustDo(t, "AUTH", st.Password); r != "+OK\r\n" {
		t.Fatalf("AUTH = %q", r)
	}
}

// readUntil reads frames from c until match accepts one, at most n frames
// and d in total, and returns the frames read.
func readUntil(t *testing.T, c *respConn, n int, d time.Duration, match func(string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	var seen []string
	for range n {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d frames %q: %v", len(seen), seen, err)
		}
		seen = append(seen, f)
		if match(f) {
			return seen
		}
	}
	t.Fatalf("no matching frame among %d: %q", n, seen)
	return nil
}

// TestClientTracking checks client-side caching invalidations through the
// proxy: RESP3 push frames on the tracking connection itself, and RESP2
// redirection to a subscriber found by CLIENT ID.
func TestClientTracking(t *testing.T) {
	for _, withPassword := range []bool{false, true} {
		t.Run("password="+strconv.FormatBool(withPassword), func(t *testing.T) {
			st := sharedStack(t, withPassword)
			p := keyPrefix(t)

			t.Run("resp3 push", func(t *testing.T) {
				key := p + "tracked"
				c := dialRESP(t, st.Addr)
				st.authRESP(t, c)
				if r := c.mustDo(t, "HELLO", "3"); !strings.HasPrefix(r, "%") {
					t.Fatalf("HELLO 3 = %q, want a map", r)
				}
				if r := c.mustDo(t, "CLIENT", "TRACKING", "ON"); r != "+OK\r\n" {
					t.Fatalf("CLIENT TRACKING ON = %q", r)
				}
				if r := c.mustDo(t, "GET", key); r != "_\r\n" {
					t.Fatalf("GET of a missing key in RESP3 = %q, want _", r)
				}
				w := dialRESP(t, st.Addr)
				st.authRESP(t, w)
				if r := w.mustDo(t, "SET", key, "new"); r != "+OK\r\n" {
					t.Fatalf("SET from another client = %q", r)
				}
				push, err := c.read(10 * time.Second)
				want := ">2\r\n$10\r\ninvalidate\r\n*1\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n"
				if err != nil || push != want {
					t.Fatalf("invalidation = %q, %v; want %q", push, err, want)
				}
				// The tracking connection still answers in order, and the
				// key is tracked again after the new read.
				if r := c.mustDo(t, "GET", key); r != "$3\r\nnew\r\n" {
					t.Fatalf("GET after the invalidation = %q", r)
				}
				if r := w.mustDo(t, "DEL", key); r != ":1\r\n" {
					t.Fatalf("DEL = %q", r)
				}
				if push, err := c.read(10 * time.Second); err != nil || push != want {
					t.Fatalf("second invalidation = %q, %v; want %q", push, err, want)
				}
			})

			t.Run("resp2 redirect", func(t *testing.T) {
				key := p + "redirected"
				sub := dialRESP(t, st.Addr)
				st.authRESP(t, sub)
				idReply := sub.mustDo(t, "CLIENT", "ID")
				id, ok := strings.CutPrefix(strings.TrimSuffix(idReply, "\r\n"), ":")
				if !ok {
					t.Fatalf("CLIENT ID = %q", idReply)
				}
				if r := sub.mustDo(t, "SUBSCRIBE", "__redis__:invalidate"); !strings.Contains(r, "__redis__:invalidate") {
					t.Fatalf("SUBSCRIBE = %q", r)
				}
				c := dialRESP(t, st.Addr)
				st.authRESP(t, c)
				if r := c.mustDo(t, "CLIENT", "TRACKING", "ON", "REDIRECT", id); r != "+OK\r\n" {
					t.Fatalf("CLIENT TRACKING ON REDIRECT %s = %q (the id must name the subscriber's own server connection)", id, r)
				}
				if r := c.mustDo(t, "GET", key); r != "$-1\r\n" {
					t.Fatalf("GET = %q", r)
				}
				w := dialRESP(t, st.Addr)
				st.authRESP(t, w)
				w.mustDo(t, "SET", key, "x")
				msg, err := sub.read(10 * time.Second)
				want := "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n"
				if err != nil || msg != want {
					t.Fatalf("redirected invalidation = %q, %v; want %q", msg, err, want)
				}
				w.mustDo(t, "DEL", key)
			})
		})
	}
}

// TestMonitor checks that MONITOR through the proxy streams the commands
// other clients send through the proxy.
func TestMonitor(t *testing.T) {
	for _, withPassword := range []bool{false, true} {
		t.Run("password="+strconv.FormatBool(withPassword), func(t *testing.T) {
			st := sharedStack(t, withPassword)
			key := keyPrefix(t) + "watched"
			m := dialRESP(t, st.Addr)
			st.authRESP(t, m)
			if r := m.mustDo(t, "MONITOR"); r != "+OK\r\n" {
				t.Fatalf("MONITOR = %q", r)
			}
			c := dialRESP(t, st.Addr)
			st.authRESP(t, c)
			for i := range 3 {
				if r := c.mustDo(t, "SET", key, "v"+strconv.Itoa(i)); r != "+OK\r\n" {
					t.Fatalf("SET = %q", r)
				}
			}
			c.mustDo(t, "DEL", key)
			// Sentinels and replicas send commands too: skip those.
			for i := range 3 {
				want := `"SET" "` + key + `" "v` + strconv.Itoa(i) + `"`
				seen := readUntil(t, m, 1000, 10*time.Second, func(f string) bool { return strings.Contains(f, want) })
				for _, f := range seen {
					if !strings.HasPrefix(f, "+") {
						t.Fatalf("MONITOR sent a frame that is not a status line: %q", f)
					}
				}
			}
		})
	}
}
