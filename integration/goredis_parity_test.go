package integration

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// parityScript is run command by command by go-redis against the master and
// through the proxy; {k} stands for a key prefix. It starts by deleting its
// keys, so both runs start from the same state. Commands with random or
// time-dependent answers are left out.
var parityScript = [][]any{
	{"DEL", "{k}s", "{k}n", "{k}h", "{k}set", "{k}z", "{k}l", "{k}x", "{k}f"},
	{"PING"}, {"PING", "hello"}, {"ECHO", ""}, {"ECHO", "a\r\nb\x00c"},
	{"SET", "{k}s", "value"}, {"GET", "{k}s"}, {"APPEND", "{k}s", "+more"}, {"STRLEN", "{k}s"},
	{"GETRANGE", "{k}s", "1", "3"}, {"SETRANGE", "{k}s", "2", "XY"}, {"GET", "{k}s"},
	{"SET", "{k}s", "v", "NX"}, {"SET", "{k}s", "v2", "XX", "GET"}, {"GET", "{k}missing"},
	{"INCR", "{k}n"}, {"INCRBYFLOAT", "{k}n", "1.5"}, {"INCR", "{k}n"}, {"INCR", "{k}s"},
	{"MSET", "{k}m1", "1", "{k}m2", "2"}, {"MGET", "{k}m1", "{k}nope", "{k}m2"}, {"DEL", "{k}m1", "{k}m2"},
	{"HSET", "{k}h", "a", "1", "b", "2"}, {"HGETALL", "{k}h"}, {"HMGET", "{k}h", "a", "zz"},
	{"HINCRBYFLOAT", "{k}h", "a", "0.25"}, {"HKEYS", "{k}h"}, {"HEXISTS", "{k}h", "b"}, {"HSTRLEN", "{k}h", "a"},
	{"SADD", "{k}set", "a", "b", "c"}, {"SMEMBERS", "{k}set"}, {"SISMEMBER", "{k}set", "b"}, {"SMISMEMBER", "{k}set", "a", "q"},
	{"ZADD", "{k}z", "1", "a", "2.5", "b", "-inf", "c"}, {"ZRANGE", "{k}z", "0", "-1", "WITHSCORES"},
	{"ZSCORE", "{k}z", "b"}, {"ZMSCORE", "{k}z", "a", "nope"}, {"ZRANK", "{k}z", "b"}, {"ZINCRBY", "{k}z", "0.5", "a"},
	{"ZPOPMIN", "{k}z"}, {"ZRANGEBYSCORE", "{k}z", "(1", "+inf", "WITHSCORES", "LIMIT", "0", "1"},
	{"RPUSH", "{k}l", "a", "b", "c", "b"}, {"LRANGE", "{k}l", "0", "-1"}, {"LPOS", "{k}l", "b", "COUNT", "0"}, {"LINDEX", "{k}l", "9"},
	{"XADD", "{k}x", "1-1", "f", "v"}, {"XADD", "{k}x", "2-1", "g", "w", "h", "x"}, {"XRANGE", "{k}x", "-", "+"},
	{"XLEN", "{k}x"}, {"XREAD", "COUNT", "1", "STREAMS", "{k}x", "0"},
	{"TYPE", "{k}h"}, {"EXISTS", "{k}h", "{k}set", "{k}nope"}, {"TTL", "{k}h"}, {"EXPIRE", "{k}h", "100"}, {"PERSIST", "{k}h"},
	{"OBJECT", "ENCODING", "{k}h"}, {"OBJECT", "ENCODING", "{k}n"},
	{"EVAL", "return {1, 'a', {2, false}, redis.status_reply('FINE'), 3.5}", "0"},
	{"EVAL", "redis.setresp(3); return redis.call('hgetall', KEYS[1])", "1", "{k}h"},
	{"EVAL", "return redis.error_reply('CUSTOM bad thing')", "0"},
	{"EVAL", "return redis.call('nosuchcommand')", "0"},
	{"DEBUG", "PROTOCOL", "string"}, {"DEBUG", "PROTOCOL", "integer"}, {"DEBUG", "PROTOCOL", "double"},
	{"DEBUG", "PROTOCOL", "bignum"}, {"DEBUG", "PROTOCOL", "null"}, {"DEBUG", "PROTOCOL", "array"},
	{"DEBUG", "PROTOCOL", "set"}, {"DEBUG", "PROTOCOL", "map"}, {"DEBUG", "PROTOCOL", "attrib"},
	{"DEBUG", "PROTOCOL", "verbatim"}, {"DEBUG", "PROTOCOL", "true"}, {"DEBUG", "PROTOCOL", "false"},
	{"GET", "{k}h"}, {"GET"}, {"SET", "{k}s", "v", "NX", "XX"}, {"NOSUCHCOMMAND", "x"}, {"SELECT", "99"},
	{"CLIENT", "SETINFO", "LIB-NAME", "x"}, {"CLIENT", "NOSUCHSUB"},
	{"COMMAND", "COUNT"}, {"COMMAND", "INFO", "get", "blpop"}, {"COMMAND", "GETKEYS", "SET", "a", "b"},
	{"FUNCTION", "LOAD", "not a library"}, {"FCALL", "nosuchfunction", "0"},
	{"DEL", "{k}s", "{k}n", "{k}h", "{k}set", "{k}z", "{k}l", "{k}x"},
}

// TestGoRedisParity runs parityScript with go-redis against the master and
// through the proxy, in RESP2 and RESP3, and requires the same value or the
// same error for every command.
func TestGoRedisParity(t *testing.T) {
	st := sharedStack(t, true)
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("resp%d", proto), func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			k := keyPrefix(t)
			type result struct {
				val any
				err string
			}
			runScript := func(addr string) []result {
				c := st.Client(&redis.Options{Addr: addr, Protocol: proto, MaxRetries: -1})
				defer c.Close()
				var out []result
				for _, cmd := range parityScript {
					args := make([]any, len(cmd))
					for i, a := range cmd {
						args[i] = replaceKey(a, k)
					}
					v, err := c.Do(ctx, args...).Result()
					r := result{val: v}
					if err != nil {
						r.err = err.Error()
					}
					out = append(out, r)
				}
				return out
			}
			direct, proxied := runScript(st.Topo.Master().Addr), runScript(st.Addr)
			// The script is mostly commands that succeed: a run where
			// everything fails the same way would prove nothing.
			ok := 0
			for _, r := range direct {
				if r.err == "" {
					ok++
				}
			}
			if ok < len(parityScript)-20 {
				t.Fatalf("only %d of %d commands succeeded directly: %#v", ok, len(parityScript), direct)
			}
			for i := range direct {
				if !reflect.DeepEqual(direct[i], proxied[i]) {
					t.Errorf("%q:\ndirect: %#v\nproxy:  %#v", parityScript[i], direct[i], proxied[i])
				}
			}
		})
	}
}

// replaceKey expands {k} in a script argument.
func replaceKey(a any, k string) any {
	s, ok := a.(string)
	if !ok || len(s) < 3 || s[:3] != "{k}" {
		return a
	}
	return k + s[3:]
}
