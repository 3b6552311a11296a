package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cliArgs returns redis-cli's connection flags for addr, authenticated with
// the stack's password when it has one.
func (st *stack) cliArgs(addr string, extra ...string) []string {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-h", host, "-p", port}
	if st.Password != "" {
		args = append(args, "-a", st.Password, "--no-auth-warning")
	}
	return append(args, extra...)
}

// TestRedisCLI runs the same redis-cli invocations against the proxy and
// against the master directly, and requires identical output.
func TestRedisCLI(t *testing.T) {
	for _, withPassword := range []bool{false, true} {
		name := "plain"
		if withPassword {
			name = "password"
		}
		t.Run(name, func(t *testing.T) {
			st := sharedStack(t, withPassword)
			p := keyPrefix(t)
			master := st.Topo.Master().Addr

			// Each script ends by deleting its keys, so both runs start
			// from the same (empty) state and print the same replies.
			scripts := []struct {
				name  string
				flags []string
				stdin string
			}{
				{"resp2 commands", []string{"--no-raw"}, strings.ReplaceAll(`PING
ECHO "hello world"
SET {p}str "v 1"
GET {p}str
APPEND {p}str xyz
STRLEN {p}str
INCR {p}n
INCRBYFLOAT {p}n 1.5
RPUSH {p}list a b c
LRANGE {p}list 0 -1
HSET {p}h f1 v1 f2 v2
HGETALL {p}h
SADD {p}s x
SMEMBERS {p}s
ZADD {p}z 1 a 2.5 b
ZRANGE {p}z 0 -1 WITHSCORES
ZSCORE {p}z b
TYPE {p}h
GET {p}missing
NOSUCHCOMMAND x
SET {p}str
MULTI
INCR {p}n2
INCR {p}n2
EXEC
EVAL "return {1,'two',{3,redis.call('ping')}}" 0
DEBUG PROTOCOL map
DEBUG PROTOCOL double
DEBUG PROTOCOL null
DEL {p}str {p}n {p}list {p}h {p}s {p}z {p}n2
`, "{p}", p)},
				{"resp2 raw output", nil, strings.ReplaceAll("SET {p}k v\nGET {p}k\nLPUSH {p}l 1 2\nLRANGE {p}l 0 -1\nGET {p}nope\nDEL {p}k {p}l\n", "{p}", p)},
				{"resp3 (-3)", []string{"-3", "--no-raw"}, strings.ReplaceAll(`PING
HSET {p}h f1 v1 f2 v2
HGETALL {p}h
SADD {p}s x
SMEMBERS {p}s
ZADD {p}z 2.5 b
ZSCORE {p}z b
ZRANGE {p}z 0 -1 WITHSCORES
GET {p}missing
DEBUG PROTOCOL map
DEBUG PROTOCOL set
DEBUG PROTOCOL double
DEBUG PROTOCOL true
DEBUG PROTOCOL false
DEBUG PROTOCOL null
DEBUG PROTOCOL verbatim
DEBUG PROTOCOL push
NOSUCHCOMMAND
DEL {p}h {p}s {p}z
`, "{p}", p)},
				{"db 2 (-n 2)", []string{"-n", "2", "--no-raw"}, strings.ReplaceAll("SET {p}db2 x\nGET {p}db2\nCLIENT INFO\nSELECT 0\nGET {p}db2\nSELECT 2\nDEL {p}db2\n", "{p}", p)},
			}
			for _, sc := range scripts {
				t.Run(sc.name, func(t *testing.T) {
					out := func(addr string) string {
						r := mustRun(t, 30*time.Second, []byte(sc.stdin), "redis-cli", st.cliArgs(addr, sc.flags...)...)
						return normalizeClientInfo(r.Stdout)
					}
					direct, proxied := out(master), out(st.Addr)
					if direct != proxied {
						t.Errorf("redis-cli output differs\ndirect:\n%s\nproxy:\n%s", direct, proxied)
					}
					if strings.Contains(sc.name, "-n 2") && !strings.Contains(proxied, " db=2 ") {
						t.Errorf("CLIENT INFO through the proxy with -n 2 does not say db=2:\n%s", proxied)
					}
				})
			}

			t.Run("db 2 lands in db 2 (-n 2)", func(t *testing.T) {
				key := p + "n2"
				mustRun(t, 10*time.Second, nil, "redis-cli", st.cliArgs(st.Addr, "-n", "2", "SET", key, "in-db-2")...)
				ctx := testContext(t, 10*time.Second)
				db2, db0 := st.Direct(st.Topo.Master(), 2), st.Direct(st.Topo.Master(), 0)
				defer db2.Close()
				defer db0.Close()
				if v, err := db2.Get(ctx, key).Result(); err != nil || v != "in-db-2" {
					t.Errorf("db 2 on the master: GET %s = %q, %v; want in-db-2", key, v, err)
				}
				if n, err := db0.Exists(ctx, key).Result(); err != nil || n != 0 {
					t.Errorf("db 0 on the master: EXISTS %s = %d, %v; want 0", key, n, err)
				}
				db2.Del(ctx, key)
			})

			t.Run("mass insert (--pipe)", func(t *testing.T) {
				const n = 10_000
				out := func(addr, prefix string) string {
					var in []byte
					for i := range n {
						in = append(in, encode("SET", prefix+strconv.Itoa(i), "v"+strconv.Itoa(i))...)
					}
					return mustRun(t, 60*time.Second, in, "redis-cli", st.cliArgs(addr, "--pipe")...).Stdout
				}
				direct, proxied := out(master, p+"d:"), out(st.Addr, p+"p:")
				if direct != proxied {
					t.Errorf("--pipe output differs\ndirect:\n%s\nproxy:\n%s", direct, proxied)
				}
				if want := fmt.Sprintf("errors: 0, replies: %d", n); !strings.Contains(proxied, want) {
					t.Errorf("--pipe through the proxy: %q, want it to contain %q", proxied, want)
				}
				// Every key arrived, with its value, on the master.
				ctx := testContext(t, 30*time.Second)
				c := st.Direct(st.Topo.Master(), 0)
				defer c.Close()
				for _, prefix := range []string{p + "p:", p + "d:"} {
					keys := make([]string, n)
					for i := range keys {
						keys[i] = prefix + strconv.Itoa(i)
					}
					vals, err := c.MGet(ctx, keys...).Result()
					if err != nil {
						t.Fatalf("MGET on the master: %v", err)
					}
					for i, v := range vals {
						if v != "v"+strconv.Itoa(i) {
							t.Fatalf("key %s on the master = %v, want v%d", keys[i], v, i)
						}
					}
					if err := c.Unlink(ctx, keys...).Err(); err != nil {
						t.Errorf("UNLINK: %v", err)
					}
				}
			})

			if !withPassword {
				return
			}
			t.Run("auth flags", func(t *testing.T) {
				host, port := st.Host(), st.Port()
				mhost, mport, _ := net.SplitHostPort(master)
				cases := []struct {
					name string
					args []string
				}{
					{"-a", []string{"-a", st.Password, "--no-auth-warning", "PING"}},
					{"--user --pass", []string{"--user", "default", "--pass", st.Password, "--no-auth-warning", "PING"}},
					{"--user --pass ACL WHOAMI", []string{"--user", "default", "--pass", st.Password, "--no-auth-warning", "ACL", "WHOAMI"}},
					{"wrong password", []string{"-a", "wrong", "--no-auth-warning", "PING"}},
					{"wrong user", []string{"--user", "nobody", "--pass", st.Password, "--no-auth-warning", "PING"}},
					{"no password", []string{"PING"}},
					{"AUTH as a command", []string{"AUTH", st.Password}},
				}
				for _, tc := range cases {
					t.Run(tc.name, func(t *testing.T) {
						d := run(t, 10*time.Second, nil, "redis-cli", append([]string{"-h", mhost, "-p", mport}, tc.args...)...)
						pr := run(t, 10*time.Second, nil, "redis-cli", append([]string{"-h", host, "-p", port}, tc.args...)...)
						if d.Combined() != pr.Combined() || (d.Err == nil) != (pr.Err == nil) {
							t.Errorf("direct: %q (exit %v)\nproxy:  %q (exit %v)", d.Combined(), d.Err, pr.Combined(), pr.Err)
						}
					})
				}
			})
		})
	}
}

// normalizeClientInfo blanks the CLIENT INFO fields that differ between two
// connections (and between a direct connection and one from the proxy).
func normalizeClientInfo(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "laddr=") {
			continue
		}
		f := strings.Fields(l)
		for j, kv := range f {
			k, _, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			switch k {
			case "id", "addr", "laddr", "fd", "name", "age", "idle", "qbuf", "qbuf-free", "argv-mem", "obl", "oll", "omem", "tot-mem", "multi-mem", "rbs", "rbp", "lib-name", "lib-ver", "events", "cmd":
				f[j] = k + "=X"
			}
		}
		lines[i] = strings.Join(f, " ")
	}
	return strings.Join(lines, "\n")
}
