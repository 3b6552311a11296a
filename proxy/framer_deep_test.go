package proxy

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// redisLuaDepth is how deep redis-server 7.0.15 nests a Lua reply before it
// writes "-ERR reached lua stack limit" instead of the next level, measured
// for every shape in nestScripts, RESP2 and RESP3 alike.
const redisLuaDepth = 7995

// nestLink is one level of a nested reply: what comes before the nested
// child and what comes after it, inside the same aggregate.
type nestLink struct{ pre, post string }

// nestFrame builds a reply of depth levels, cycling through links, with leaf
// as the innermost element (Redis puts its stack-limit error there).
func nestFrame(links []nestLink, depth int, leaf string) string {
	var pre, post strings.Builder
	for i := range depth {
		pre.WriteString(links[i%len(links)].pre)
	}
	for i := depth - 1; i >= 0; i-- {
		post.WriteString(links[i%len(links)].post)
	}
	return pre.String() + leaf + post.String()
}

const luaLimitErr = "-ERR reached lua stack limit\r\n"

// nestShapes are the nestings the framer must carry at any depth. levels is
// how many stack levels depth 200 needs: one per aggregate with elements
// still to come after the nested child.
var nestShapes = []struct {
	name   string
	links  []nestLink
	levels int
}{
	// EVAL "local a = {}; local b = {a}; a[1] = b; return a" 0
	{"one-element arrays", []nestLink{{"*1\r\n", ""}}, 1},
	// EVAL "local a={}; local b={a,1}; a[1]=b; return a" 0
	{"one- and two-element arrays", []nestLink{{"*1\r\n", ""}, {"*2\r\n", ":1\r\n"}}, 100},
	// EVAL "local a={}; a[1]=a; a[2]=1; return a" 0: the worst case.
	{"two-element arrays", []nestLink{{"*2\r\n", ":1\r\n"}}, 200},
	// RESP3 EVAL "local a={}; a.map={k=a}; return a" 0, and a map with
	// more to come after the nested value.
	{"maps", []nestLink{{"%1\r\n$1\r\nk\r\n", ""}, {"%2\r\n+k\r\n", "+k2\r\n:2\r\n"}}, 100},
	{"sets", []nestLink{{"~1\r\n", ""}}, 1},
	{"attribute before each child", []nestLink{{"*1\r\n|1\r\n+ttl\r\n:3\r\n", ""}}, 2},
	// The child is the value of an attribute, which the enclosing array
	// does not count: the array's own elements follow. One level per
	// array, and one for the innermost attribute, whose value is the leaf.
	{"child as attribute value", []nestLink{{"*1\r\n|1\r\n+a\r\n", ":1\r\n"}}, 201},
	{"child as attribute value, then more", []nestLink{{"*2\r\n|1\r\n+a\r\n", ":1\r\n:2\r\n"}}, 201},
	// Streamed aggregates end with '.', so they keep their level.
	{"streamed arrays", []nestLink{{"*?\r\n", ".\r\n"}}, 200},
	{"streamed set as last element", []nestLink{{"*1\r\n~?\r\n", ":1\r\n.\r\n"}}, 200},
	{"streamed then counted", []nestLink{{"*?\r\n", ".\r\n"}, {"*1\r\n", ""}}, 101},
	{"push of arrays", []nestLink{{">1\r\n", ""}, {"*1\r\n", ""}}, 1},
}

// stackWatch records how many levels the framer holds at each Read.
type stackWatch struct {
	r             io.Reader
	f             *Framer
	maxLen, maxCp int
}

func (w *stackWatch) Read(p []byte) (int, error) {
	if w.f != nil {
		w.maxLen = max(w.maxLen, len(w.f.stack))
		w.maxCp = max(w.maxCp, cap(w.f.stack))
	}
	return w.r.Read(p)
}

// TestFramerDeepChains passes replies nested 200 deep (deeper than the old
// fixed limit of 128), split at every byte, and checks that the reply after
// them is its own frame and that the stack holds only the levels needed.
func TestFramerDeepChains(t *testing.T) {
	for _, sh := range nestShapes {
		t.Run(sh.name, func(t *testing.T) {
			frame := nestFrame(sh.links, 200, luaLimitErr)
			frames := []string{frame, "+OK\r\n"}
			input := []byte(frame + "+OK\r\n")
			for _, size := range []int{0, 64} {
				checkFrames(t, "whole", input, frames, NewFramer(bytes.NewReader(input), size))
			}
			for i := 1; i < len(input); i++ {
				r := &chunkReader{chunks: [][]byte{append([]byte(nil), input[:i]...), append([]byte(nil), input[i:]...)}}
				checkFrames(t, "split", input, frames, NewFramer(r, 0))
			}
			// One byte per Read: the watcher sees the stack after every byte.
			w := &stackWatch{r: iotest.OneByteReader(bytes.NewReader(input))}
			f := NewFramer(w, 0)
			w.f = f
			checkFrames(t, "one byte", input, frames, f)
			if w.maxLen != sh.levels {
				t.Errorf("stack held %d levels, want %d", w.maxLen, sh.levels)
			}
			if cap(f.stack) != len(f.stackArr) {
				t.Errorf("stack kept cap %d after the frame", cap(f.stack))
			}
		})
	}
}

// TestFramerRedisDepth reads replies as deep as Redis makes them, and
// checks the limit: a stack of exactly MaxDepth levels passes, one more is
// a protocol error; the stack never outgrows MaxDepth and is given back
// after the frame.
func TestFramerRedisDepth(t *testing.T) {
	for _, sh := range nestShapes[:3] { // the shapes of nestScripts
		frame := nestFrame(sh.links, redisLuaDepth, luaLimitErr)
		w := &stackWatch{r: iotest.HalfReader(strings.NewReader(frame + ":7\r\n"))}
		f := NewFramer(w, 64)
		w.f = f
		checkFrames(t, sh.name, []byte(frame+":7\r\n"), []string{frame, ":7\r\n"}, f)
		if w.maxCp > DefaultMaxDepth || cap(f.stack) != len(f.stackArr) {
			t.Errorf("%s: stack cap reached %d, %d after the frame", sh.name, w.maxCp, cap(f.stack))
		}
	}

	pairs := func(n int) string { return nestFrame([]nestLink{{"*2\r\n", ":1\r\n"}}, n, ":0\r\n") }
	for _, depth := range []int{3, 100, 0} { // 0: DefaultMaxDepth
		limit := depth
		if limit == 0 {
			limit = DefaultMaxDepth
		}
		w := &stackWatch{r: strings.NewReader(pairs(limit) + pairs(limit+1))}
		f := NewFramer(w, 0)
		f.MaxDepth, w.f = depth, f
		if fr, err := f.Next(io.Discard); err != nil || fr.Size != int64(len(pairs(limit))) {
			t.Fatalf("limit %d: %d levels: %v, size %d", limit, limit, err, fr.Size)
		}
		_, err := f.Next(io.Discard)
		var perr *ProtocolError
		if !errors.As(err, &perr) || !strings.Contains(perr.Msg, "nesting") {
			t.Fatalf("limit %d: %d levels: %v, want a nesting error", limit, limit+1, err)
		}
		if w.maxCp > max(limit, len(f.stackArr)) || cap(f.stack) != len(f.stackArr) {
			t.Fatalf("limit %d: stack cap reached %d, %d after the error", limit, w.maxCp, cap(f.stack))
		}
	}
}

// TestFramerDeepThenSmallDoesNotAllocate: after a deep frame the framer is
// back to its shallow, allocation-free self.
func TestFramerDeepThenSmallDoesNotAllocate(t *testing.T) {
	deep := nestFrame([]nestLink{{"*2\r\n", ":1\r\n"}}, 1000, ":0\r\n")
	f := NewFramer(&loopReader{data: append([]byte(deep), smallReplies()...)}, 0)
	if fr, err := f.Next(io.Discard); err != nil || fr.Size != int64(len(deep)) {
		t.Fatalf("deep frame: %v, size %d", err, fr.Size)
	}
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := f.Next(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per small frame after a deep one", allocs)
	}
}

// nestScripts make Redis nest its reply until Lua's stack runs out.
var nestScripts = []struct{ name, script string }{
	{"one-element arrays", "local a = {}; local b = {a}; a[1] = b; return a"},
	{"two-element arrays", "local a={}; local b={a,1}; a[1]=b; return a"},
	{"self-referencing pair", "local a={}; a[1]=a; a[2]=1; return a"},
}

// TestNestedLuaRepliesThroughProxy runs the scripts on redis-server directly
// and through the proxy, in RESP2 and RESP3, and requires the same bytes.
// The ECHO pipelined behind each EVAL, and the command sent after, must get
// their own replies: the backend connection survives the deep reply.
func TestNestedLuaRepliesThroughProxy(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	for _, proto := range []string{"2", "3"} {
		for _, sc := range nestScripts {
			t.Run("resp"+proto+"/"+sc.name, func(t *testing.T) {
				direct := nestedEval(t, r, proto, sc.script, nil)
				nestedEval(t, paddr, proto, sc.script, direct)
				if !bytes.HasPrefix(direct, []byte("*")) || !bytes.Contains(direct, []byte(luaLimitErr)) {
					t.Fatalf("redis did not nest to its stack limit: %q...", direct[:min(len(direct), 64)])
				}
				// The measurement DefaultMaxDepth rests on.
				if depth := bytes.Count(direct, []byte("*")); depth < redisLuaDepth || depth > DefaultMaxDepth/2 {
					t.Fatalf("redis nested %d arrays, measured %d, margin up to %d", depth, redisLuaDepth, DefaultMaxDepth/2)
				}
			})
		}
	}
}

// nestedEval sends EVAL script and an ECHO in one write on a fresh
// connection in RESP proto, reads raw bytes up to the ECHO's reply, then
// checks that a following command is answered in turn. It returns the
// EVAL's reply, read without the framer under test. With want, it fails as
// soon as the bytes stop matching want.
func nestedEval(t *testing.T, addr, proto, script string, want []byte) []byte {
	t.Helper()
	c := dialRedis(t, addr)
	if proto == "3" {
		if hello := c.do("HELLO", "3"); hello[0] != '%' {
			t.Fatalf("HELLO 3 answered %q", hello)
		}
	}
	if c.fr.Buffered() != 0 {
		t.Fatal("bytes after the HELLO reply")
	}
	const token = "after-the-deep-reply"
	echo := bulk(token)
	c.send(string(appendCommand(appendCommand(nil, "EVAL", script, "0"), "ECHO", token)))
	var got []byte
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(20 * time.Second)
	for !bytes.HasSuffix(got, []byte(echo)) {
		c.nc.SetReadDeadline(deadline)
		n, err := c.nc.Read(buf)
		got = append(got, buf[:n]...)
		if want != nil && !bytes.HasPrefix(append(want[:len(want):len(want)], echo...), got) {
			t.Fatalf("%s: the reply differs from redis's at byte %d of %d: %q", addr,
				firstDiff(want, got), len(want), got[firstDiff(want, got):min(len(got), firstDiff(want, got)+80)])
		}
		if err != nil {
			t.Fatalf("%s: after %d bytes: %v; ends with %q", addr, len(got), err, got[max(0, len(got)-80):])
		}
		if len(got) > 1<<20 {
			t.Fatalf("%s: more than 1 MiB without the ECHO reply", addr)
		}
	}
	if pong := c.do("PING"); pong != "+PONG\r\n" {
		t.Fatalf("%s: PING after the deep reply answered %q", addr, pong)
	}
	return got[:len(got)-len(echo)]
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The reference framer below is the oracle of FuzzFramer: plain recursive
// descent, with the whole nesting on the Go stack, against which the
// Framer's explicit, tail-eliminated stack is checked. It applies the same
// rules in the same order, so both must agree on where frames end and on
// whether input is complete, incomplete or malformed.

const (
	refOK = iota
	refIncomplete
	refBad
)

// refFrames splits data into top-level frames: their sizes, and how the
// data after the last one ends (refOK: nothing left).
func refFrames(data []byte, maxBulk int64) (sizes []int, status int) {
	for p := 0; p < len(data); {
		end, _, isEnd, st := refElem(data, p, false, maxBulk)
		if st == refOK && isEnd {
			st = refBad // '.' at top level
		}
		if st != refOK {
			return sizes, st
		}
		sizes = append(sizes, end-p)
		p = end
	}
	return sizes, refOK
}

// refElem reads one element at b[p:]; inStream: inside a streamed string,
// where the elements are ';' chunks. isEnd: the element is a '.' end marker,
// which only a streamed aggregate accepts, or the ';0' chunk that ends a
// streamed string.
func refElem(b []byte, p int, inStream bool, maxBulk int64) (end int, attr, isEnd bool, st int) {
	if p >= len(b) {
		return 0, false, false, refIncomplete
	}
	t := b[p]
	if inStream && t != ';' {
		return 0, false, false, refBad
	}
	switch t {
	case '+', '-', ':', '_', ',', '#', '(':
		i := bytes.IndexByte(b[p+1:], '\r')
		switch {
		case i < 0 || p+1+i+1 >= len(b):
			return 0, false, false, refIncomplete
		case b[p+1+i+1] != '\n':
			return 0, false, false, refBad
		}
		return p + 1 + i + 2, false, false, refOK
	case '$', '!', '=', '*', '%', '~', '|', '>', ';', '.':
	default:
		return 0, false, false, refBad
	}
	hl, text, ok, msg := header(b[p:])
	if msg != "" {
		return 0, false, false, refBad
	}
	if !ok {
		return 0, false, false, refIncomplete
	}
	q := p + hl
	streamed := string(text) == "?"
	if t == '.' {
		if len(text) != 0 {
			return 0, false, false, refBad
		}
		return q, false, true, refOK
	}
	n, ok := parseLen(text)
	if !streamed && !ok {
		return 0, false, false, refBad
	}
	switch t {
	case '$', '!', '=', ';':
		switch {
		case streamed && t == '$':
			for {
				e, _, last, st := refElem(b, q, true, maxBulk)
				if st != refOK {
					return 0, false, false, st
				}
				if last {
					return e, false, false, refOK
				}
				q = e
			}
		case t == ';' && !inStream:
			return 0, false, false, refBad
		case t == ';' && n == 0 && !streamed:
			return q, false, true, refOK // the end chunk: isEnd tells the string
		case n == -1 && t == '$':
			return q, false, false, refOK
		case streamed || n < 0 || n > maxBulk:
			return 0, false, false, refBad
		}
		e := q + int(n)
		switch {
		case e < len(b) && b[e] != '\r':
			return 0, false, false, refBad
		case e+1 >= len(b):
			return 0, false, false, refIncomplete
		case b[e+1] != '\n':
			return 0, false, false, refBad
		}
		return e + 2, false, false, refOK
	}
	// Aggregates: * % ~ | >
	attr = t == '|'
	if !streamed {
		switch {
		case n == -1 && t == '*':
			return q, false, false, refOK
		case n < 0 || (t == '%' || t == '|') && n > math.MaxInt64/2:
			return 0, false, false, refBad
		case t == '%' || t == '|':
			n *= 2
		}
	}
	for count := int64(0); streamed || count < n; {
		e, a, isEnd, st := refElem(b, q, false, maxBulk)
		switch {
		case st != refOK:
			return 0, false, false, st
		case isEnd && !streamed:
			return 0, false, false, refBad
		case isEnd:
			return e, attr, false, refOK
		case !a:
			count++ // an attribute annotates the next element and is not one
		}
		q = e
	}
	return q, attr, false, refOK
}
