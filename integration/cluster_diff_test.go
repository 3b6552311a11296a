package integration

// The byte-level differential test for a cluster group: the same scripts,
// all keys hash-tagged into one slot, sent to the master of that slot
// directly and through the proxy, must get byte-identical replies.

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// diffBatch is commands one of a script's connections sends in one write
// (a pipeline); their replies are read in order after it.
type diffBatch struct {
	conn int
	cmds [][]string
}

// diffScript is a named sequence of batches over two connections. Every
// script deletes its keys at the end, so each run starts from the same
// (empty) slot.
type diffScript struct {
	name    string
	batches []diffBatch
}

// on returns a batch for conn of the given commands, each split on spaces.
func on(conn int, cmds ...string) diffBatch {
	b := diffBatch{conn: conn}
	for _, c := range cmds {
		b.cmds = append(b.cmds, strings.Fields(c))
	}
	return b
}

// raw returns a batch for conn of commands given argument by argument.
func raw(conn int, cmds ...[]string) diffBatch { return diffBatch{conn: conn, cmds: cmds} }

// clusterDiffScripts are the scripts; every key is in the slot of {t}.
func clusterDiffScripts() []diffScript {
	rng := rand.New(rand.NewPCG(12, 12))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rng.IntN(256))
	}
	copy(big[1000:], "\r\n$-1\r\n*3\r\n") // framing bytes inside the value
	return []diffScript{
		{"strings and types", []diffBatch{on(0,
			"PING", "ECHO hello", "SET {t}a v1", "GET {t}a", "APPEND {t}a xyz", "STRLEN {t}a", "GETRANGE {t}a 1 3",
			"INCR {t}n", "INCRBYFLOAT {t}n 1.5", "MSET {t}a 1 {t}b 2", "MGET {t}a {t}b {t}missing", "EXISTS {t}a {t}b {t}c",
			"RPUSH {t}l a b c", "LRANGE {t}l 0 -1", "LMOVE {t}l {t}l2 LEFT RIGHT", "HSET {t}h f1 v1 f2 v2", "HGETALL {t}h",
			"SADD {t}s x", "SMEMBERS {t}s", "SINTERSTORE {t}s2 {t}s", "ZADD {t}z 1 a 2.5 b", "ZRANGE {t}z 0 -1 WITHSCORES",
			"ZSCORE {t}z b", "XADD {t}x 1-1 f v", "XRANGE {t}x - +", "RENAME {t}a {t}c", "TYPE {t}h", "TYPE {t}missing",
			"EXPIRE {t}c 100", "PERSIST {t}c", "TTL {t}c", "KEYS {t}l*", "DBSIZE",
			"DEL {t}a {t}b {t}c {t}n {t}l {t}l2 {t}h {t}s {t}s2 {t}z {t}x", "DBSIZE")}},
		{"errors", []diffBatch{on(0,
			"SET {t}a", "GET", "SET {t}s str", "INCR {t}s", "LPUSH {t}s x", "SELECT 1", "SELECT 0",
			"SUNION {t}a {u}b", "EXEC", "DISCARD", "MULTI", "INCR {t}s", "SET {t}a", "WATCH {t}a", "EXEC",
			"HSET {t}s f", "EVAL return 2 {t}a {u}b", "DEL {t}s", "PING")}},
		// A cluster node answers an unknown command itself.
		{"unknown command", []diffBatch{on(0, "NOSUCHCOMMAND x", "NOSUCHCOMMAND", "PING")}},
		{"transactions", []diffBatch{
			on(0, "MULTI", "SET {t}a 1", "INCR {t}a", "GET {t}a", "LPUSH {t}a x", "EXEC"),
			on(0, "MULTI"), on(0, "INCR {t}a"), on(0, "DISCARD"), on(0, "GET {t}a"),
			on(0, "MULTI", "EXEC", "DEL {t}a"),
		}},
		{"watch", []diffBatch{
			on(0, "WATCH {t}w", "GET {t}w"),
			on(1, "SET {t}w other"),
			on(0, "MULTI", "SET {t}w mine", "EXEC", "GET {t}w"),
			on(0, "WATCH {t}w {t}n", "MULTI", "INCR {t}n", "SET {t}w mine", "EXEC"),
			on(0, "WATCH {t}w"), on(0, "UNWATCH"), on(1, "SET {t}w again"), on(0, "MULTI", "GET {t}w", "EXEC"),
			on(1, "DEL {t}w {t}n"),
		}},
		{"scripts", []diffBatch{raw(0,
			[]string{"EVAL", "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1]), redis.status_reply('fine')}", "1", "{t}e", "x"},
			[]string{"EVAL", "redis.call('SET', KEYS[2], ARGV[1]) return redis.call('MGET', KEYS[1], KEYS[2])", "2", "{t}e", "{t}f", "y"},
			[]string{"EVAL", "return redis.error_reply('MYERR custom')", "1", "{t}e"},
			[]string{"EVAL", "return redis.call('INCR', KEYS[1])", "1", "{t}f"},
			[]string{"EVAL", "return 1.5", "0"},
			[]string{"EVAL", "return {1, 'two', {3, false, true}}", "0"},
			[]string{"SCRIPT", "LOAD", "return KEYS[1] .. ARGV[1]"},
			[]string{"EVALSHA", "c38a8f80d4a85b29a2b0ab1bfa9acfde8ac41c2f", "1", "{t}e", "!"},
			[]string{"EVALSHA", "0000000000000000000000000000000000000000", "1", "{t}e"},
			[]string{"EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "{t}e"},
			[]string{"DEL", "{t}e", "{t}f"},
		)}},
		{"resp3", []diffBatch{on(0,
			"HELLO 3", "PING", "HSET {t}h f1 v1 f2 v2", "HGETALL {t}h", "SADD {t}s x", "SMEMBERS {t}s", "ZADD {t}z 2.5 b",
			"ZSCORE {t}z b", "ZRANGE {t}z 0 -1 WITHSCORES", "GET {t}missing", "DEBUG PROTOCOL map", "DEBUG PROTOCOL set",
			"DEBUG PROTOCOL double", "DEBUG PROTOCOL true", "DEBUG PROTOCOL false", "DEBUG PROTOCOL null",
			"DEBUG PROTOCOL verbatim", "DEBUG PROTOCOL bignum", "DEBUG PROTOCOL attrib", "MULTI", "HGETALL {t}h", "ZSCORE {t}z b",
			"EXEC", "HELLO 2", "HGETALL {t}h", "DEL {t}h {t}s {t}z")}},
		{"large values", []diffBatch{raw(0,
			[]string{"SET", "{t}big", string(big)}, []string{"GET", "{t}big"}, []string{"STRLEN", "{t}big"},
			[]string{"APPEND", "{t}big", string(big)}, []string{"GETRANGE", "{t}big", "1048570", "1048580"},
			[]string{"SET", "{t}small", "s"}, []string{"MGET", "{t}big", "{t}small", "{t}big"},
			[]string{"HSET", "{t}bh", "f", string(big[:512<<10]), "g", string(big[512<<10:])}, []string{"HGETALL", "{t}bh"},
			[]string{"DEL", "{t}big", "{t}small", "{t}bh"},
		)}},
	}
}

// keylessMulti are transactions whose first command after MULTI has no
// key (PING, a nested MULTI, a SET with its value missing, an unknown
// command, GET and CLIENT without arguments), each command
// sent on its own: the proxy must still run them on the master of the
// slot of their first key. clusterDiffScripts' own transactions start
// with a key.
var keylessMulti = diffScript{"keyless command first in MULTI", []diffBatch{
	on(0, "MULTI"), on(0, "PING"), on(0, "SET {t}a 1"), on(0, "INCR {t}a"), on(0, "EXEC"),
	on(0, "MULTI"), on(0, "MULTI"), on(0, "INCR {t}a"), on(0, "EXEC"),
	on(0, "MULTI"), on(0, "SET {t}a"), on(0, "WATCH {t}a"), on(0, "INCR {t}a"), on(0, "EXEC"),
	on(0, "MULTI"), on(0, "NOSUCHCMD {t}a b\r\nc"), on(0, "INCR {t}a"), on(0, "EXEC"),
	on(0, "MULTI"), on(0, "GET"), on(0, "PING"), on(0, "EXEC"),
	on(0, "MULTI"), on(0, "CLIENT"), on(0, "EXEC"),
	on(0, "DEL {t}a"),
}}

// helloID is the client id in a HELLO reply, which differs between any
// two connections.
var helloID = regexp.MustCompile(`\$2\r\nid\r\n:\d+\r\n`)

// runDiffScript runs s against addr on two new connections, pipelined as
// the script says or one command at a time, with {t} in every argument
// replaced by {tag}, and returns every reply.
func runDiffScript(t *testing.T, addr, tag string, s diffScript, pipelined bool) []string {
	t.Helper()
	conns := []*respConn{dialRESP(t, addr), dialRESP(t, addr)}
	defer func() {
		for _, c := range conns {
			c.nc.Close()
		}
	}()
	var replies []string
	for _, b := range s.batches {
		c := conns[b.conn]
		groups := [][][]string{b.cmds}
		if !pipelined {
			groups = groups[:0]
			for _, cmd := range b.cmds {
				groups = append(groups, [][]string{cmd})
			}
		}
		for _, g := range groups {
			var req []byte
			for _, cmd := range g {
				args := make([]string, len(cmd))
				for i, a := range cmd {
					args[i] = strings.ReplaceAll(a, "{t}", "{"+tag+"}")
				}
				req = append(req, encode(args...)...)
			}
			c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.nc.Write(req); err != nil {
				t.Fatalf("%s: write to %s: %v", s.name, addr, err)
			}
			for _, cmd := range g {
				r, err := c.read(10 * time.Second)
				if err == nil && strings.HasPrefix(r, "|") {
					// An attribute belongs to the reply after it.
					var rest string
					rest, err = c.read(10 * time.Second)
					r += rest
				}
				if err != nil {
					t.Fatalf("%s: %s: reply to %.40q: %v (so far %d replies)", s.name, addr, cmd, err, len(replies))
				}
				replies = append(replies, helloID.ReplaceAllString(r, "$$2\r\nid\r\n:N\r\n"))
			}
		}
	}
	return replies
}

// TestClusterDifferential sends every script to the master of its keys'
// slot directly and through the proxy, pipelined and one command at a
// time, and requires byte-identical replies: pipelines, MULTI/EXEC and
// WATCH in one slot, EVAL/EVALSHA with keys in one slot, RESP3 after HELLO
// 3, errors (SELECT 1 and CROSSSLOT included: a cluster node gives the
// same), values of 1 and 2 MiB, and a transaction opened by keyless
// commands on each master.
func TestClusterDifferential(t *testing.T) {
	cs := startClusterStack(t, "--allow-commands", "debug|protocol")
	ctx := testContext(t, time.Minute)
	type run struct {
		s   diffScript
		tag string
	}
	var runs []run
	for _, s := range clusterDiffScripts() {
		runs = append(runs, run{s, "t"})
	}
	// One tag per master: whichever master the proxy picks for the
	// keyless commands, some key is elsewhere.
	seen := map[string]bool{}
	for i := 0; len(seen) < 3 && i < 1000; i++ {
		tag := "m" + strconv.Itoa(i)
		if n := cs.masterOf(ctx, t, "{"+tag+"}"); !seen[n.Name] {
			seen[n.Name] = true
			s := keylessMulti
			s.name += "/" + n.Name
			runs = append(runs, run{s, tag})
		}
	}
	for _, r := range runs {
		for _, pipelined := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/pipelined=%t", r.s.name, pipelined), func(t *testing.T) {
				direct := cs.masterOf(ctx, t, "{"+r.tag+"}").Addr
				want := runDiffScript(t, direct, r.tag, r.s, pipelined)
				got := runDiffScript(t, cs.proxy.addr, r.tag, r.s, pipelined)
				if len(got) != len(want) {
					t.Fatalf("%d replies through the proxy, %d direct", len(got), len(want))
				}
				var cmds [][]string
				for _, b := range r.s.batches {
					cmds = append(cmds, b.cmds...)
				}
				for i := range want {
					if got[i] != want[i] {
						t.Errorf("reply %d to %.60q differs\ndirect: %.300q\nproxy:  %.300q", i, cmds[i], want[i], got[i])
					}
				}
			})
		}
	}
}
