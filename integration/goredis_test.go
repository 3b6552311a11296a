package integration

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// goRedisCase is one way of connecting go-redis to the proxy.
type goRedisCase struct {
	name     string
	password bool
	protocol int // go-redis Options.Protocol; 0 is its default (3)
}

var goRedisCases = []goRedisCase{
	{"resp3 default", false, 0},
	{"resp2", false, 2},
	{"password resp3", true, 3},
	{"password resp2", true, 2},
}

// TestGoRedis runs go-redis v9 through the proxy, with RESP3 (go-redis's
// default: it opens with HELLO 3) and RESP2, with and without a password.
func TestGoRedis(t *testing.T) {
	checks := []struct {
		name string
		fn   func(t *testing.T, st *stack, c *redis.Client, proto int)
	}{
		{"basic commands", checkBasics},
		{"db option", checkDB},
		{"pipeline of 1000", checkPipeline},
		{"transactions and WATCH", checkTransactions},
		{"scripts", checkScripts},
		{"functions", checkFunctions},
		{"blocking commands", checkBlocking},
		{"pub/sub", checkPubSub},
	}
	for _, gc := range goRedisCases {
		t.Run(gc.name, func(t *testing.T) {
			st := sharedStack(t, gc.password)
			proto := gc.protocol
			if proto == 0 {
				proto = 3
			}
			c := st.Client(&redis.Options{Protocol: gc.protocol})
			t.Cleanup(func() { c.Close() })
			for _, ch := range checks {
				t.Run(ch.name, func(t *testing.T) { ch.fn(t, st, c, proto) })
			}
		})
	}
}

func checkBasics(t *testing.T, st *stack, c *redis.Client, proto int) {
	ctx := testContext(t, 30*time.Second)
	p := keyPrefix(t)
	info, err := c.ClientInfo(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT INFO: %v", err)
	}
	if info.Resp != proto {
		t.Errorf("CLIENT INFO through the proxy: resp=%d, want %d", info.Resp, proto)
	}
	if err := c.Set(ctx, p+"k", "v\r\n\x00binary", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if v, err := c.Get(ctx, p+"k").Result(); err != nil || v != "v\r\n\x00binary" {
		t.Errorf("GET = %q, %v", v, err)
	}
	if _, err := c.Get(ctx, p+"missing").Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET missing: %v, want redis.Nil", err)
	}
	if n, err := c.Incr(ctx, p+"n").Result(); err != nil || n != 1 {
		t.Errorf("INCR = %d, %v", n, err)
	}
	if err := c.HSet(ctx, p+"h", "a", "1", "b", "2").Err(); err != nil {
		t.Fatalf("HSET: %v", err)
	}
	if m, err := c.HGetAll(ctx, p+"h").Result(); err != nil || !reflect.DeepEqual(m, map[string]string{"a": "1", "b": "2"}) {
		t.Errorf("HGETALL = %v, %v", m, err)
	}
	c.ZAdd(ctx, p+"z", redis.Z{Score: 1.5, Member: "x"}, redis.Z{Score: -2, Member: "y"})
	if z, err := c.ZRangeWithScores(ctx, p+"z", 0, -1).Result(); err != nil ||
		!reflect.DeepEqual(z, []redis.Z{{Score: -2, Member: "y"}, {Score: 1.5, Member: "x"}}) {
		t.Errorf("ZRANGE WITHSCORES = %v, %v", z, err)
	}
	if err := c.Do(ctx, "NOSUCHCOMMAND").Err(); err == nil || !strings.HasPrefix(err.Error(), "ERR unknown command") {
		t.Errorf("unknown command: %v, want ERR unknown command", err)
	}
	// The client's connection still works after an error reply.
	if v, err := c.Echo(ctx, "after error").Result(); err != nil || v != "after error" {
		t.Errorf("ECHO after an error = %q, %v", v, err)
	}
	if n, err := c.Del(ctx, p+"k", p+"n", p+"h", p+"z").Result(); err != nil || n != 4 {
		t.Errorf("DEL = %d, %v; want 4", n, err)
	}
}

// checkDB uses Options.DB (go-redis SELECTs on every new connection) and
// interleaves it with a db-0 client, so pooled backend connections of both
// states are in use at once; every key must land in its client's db.
func checkDB(t *testing.T, st *stack, c *redis.Client, proto int) {
	ctx := testContext(t, 30*time.Second)
	p := keyPrefix(t)
	c5 := st.Client(&redis.Options{DB: 5, Protocol: proto})
	defer c5.Close()
	if info, err := c5.ClientInfo(ctx).Result(); err != nil || info.DB != 5 {
		t.Fatalf("CLIENT INFO with DB 5: %+v, %v", info, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, cl := range []struct {
		c  *redis.Client
		db string
	}{{c, "0"}, {c5, "5"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if err := cl.c.Set(ctx, p+strconv.Itoa(i)+":"+cl.db, cl.db, time.Minute).Err(); err != nil {
					errs <- fmt.Errorf("SET in db %s: %w", cl.db, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d0, d5 := st.Direct(st.Topo.Master(), 0), st.Direct(st.Topo.Master(), 5)
	defer d0.Close()
	defer d5.Close()
	for i := range 200 {
		for _, d := range []struct {
			c        *redis.Client
			db, want string
		}{{d0, "0", "0"}, {d5, "5", "5"}} {
			for _, owner := range []string{"0", "5"} {
				v, err := d.c.Get(ctx, p+strconv.Itoa(i)+":"+owner).Result()
				switch {
				case owner == d.db && (err != nil || v != d.want):
					t.Fatalf("db %s on the master: key %d of db %s = %q, %v", d.db, i, owner, v, err)
				case owner != d.db && !errors.Is(err, redis.Nil):
					t.Fatalf("db %s on the master has key %d of db %s (%q, %v): leaked across dbs", d.db, i, owner, v, err)
				}
			}
		}
	}
}

func checkPipeline(t *testing.T, st *stack, c *redis.Client, proto int) {
	ctx := testContext(t, 60*time.Second)
	p := keyPrefix(t)
	const n = 1000
	cmds, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := range n {
			pipe.Set(ctx, p+strconv.Itoa(i), i, time.Minute)
			pipe.Incr(ctx, p+"count")
		}
		return nil
	})
	if err != nil || len(cmds) != 2*n {
		t.Fatalf("pipeline: %d replies, %v", len(cmds), err)
	}
	for i := range n {
		if v, err := cmds[2*i+1].(*redis.IntCmd).Result(); err != nil || v != int64(i+1) {
			t.Fatalf("INCR %d in the pipeline = %d, %v", i, v, err)
		}
	}
	gets, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := range n {
			pipe.Get(ctx, p+strconv.Itoa(i))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("GET pipeline: %v", err)
	}
	for i, cmd := range gets {
		if v, err := cmd.(*redis.StringCmd).Result(); err != nil || v != strconv.Itoa(i) {
			t.Fatalf("GET %d in the pipeline = %q, %v", i, v, err)
		}
	}
}

func checkTransactions(t *testing.T, st *stack, c *redis.Client, proto int) {
	ctx := testContext(t, 60*time.Second)
	p := keyPrefix(t)

	t.Run("MULTI/EXEC", func(t *testing.T) {
		cmds, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Incr(ctx, p+"tx")
			pipe.IncrBy(ctx, p+"tx", 10)
			pipe.Get(ctx, p+"tx")
			return nil
		})
		if err != nil || len(cmds) != 3 || cmds[2].(*redis.StringCmd).Val() != "11" {
			t.Fatalf("TxPipelined = %v, %v", cmds, err)
		}
	})

	t.Run("WATCH conflict aborts EXEC", func(t *testing.T) {
		other := st.Client(&redis.Options{Protocol: proto})
		defer other.Close()
		key := p + "watched"
		c.Set(ctx, key, "0", time.Minute)
		err := c.Watch(ctx, func(tx *redis.Tx) error {
			if _, err := tx.Get(ctx, key).Result(); err != nil {
				return err
			}
			if err := other.Set(ctx, key, "other", time.Minute).Err(); err != nil {
				return err
			}
			_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, "mine", time.Minute)
				return nil
			})
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			t.Fatalf("EXEC after a concurrent write to the watched key: %v, want redis.TxFailedErr", err)
		}
		if v := c.Get(ctx, key).Val(); v != "other" {
			t.Errorf("watched key = %q, want other (the aborted transaction must not run)", v)
		}
	})

	t.Run("optimistic increments", func(t *testing.T) {
		const workers, each = 4, 25
		key := p + "counter"
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := watchIncr(ctx, c, key); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, key).Int(); err != nil || v != workers*each {
			t.Errorf("counter = %d, %v; want %d", v, err, workers*each)
		}
	})
}

// watchIncr increments key with WATCH/GET/MULTI/SET/EXEC, retrying on
// conflicts at most 200 times.
func watchIncr(ctx context.Context, c *redis.Client, key string) error {
	for range 200 {
		err := c.Watch(ctx, func(tx *redis.Tx) error {
			n, err := tx.Get(ctx, key).Int()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, n+1, time.Minute)
				return nil
			})
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return errors.New("optimistic increment: too many conflicts")
}

func checkScripts(t *testing.T, st *stack, c *redis.Client, proto int) {
	ctx := testContext(t, 30*time.Second)
	p := keyPrefix(t)
	src := "redis.call('set', KEYS[1], ARGV[1]); return {KEYS[1], redis.call('get', KEYS[1]), 42}"
	sha, err := c.ScriptLoad(ctx, src).Result()
	if err != nil || len(sha) != 40 {
		t.Fatalf("SCRIPT LOAD = %q, %v", sha, err)
	}
	want := []any{p + "s", "val", int64(42)}
	if v, err := c.EvalSha(ctx, sha, []string{p + "s"}, "val").Result(); err != nil || !reflect.DeepEqual(v, want) {
		t.Errorf("EVALSHA = %#v, %v; want %#v", v, err, want)
	}
	if v, err := c.Eval(ctx, src, []string{p + "s"}, "val").Result(); err != nil || !reflect.DeepEqual(v, want) {
		t.Errorf("EVAL = %#v, %v; want %#v", v, err, want)
	}
	if ok, err := c.ScriptExists(ctx, sha, strings.Repeat("0", 40)).Result(); err != nil || !reflect.DeepEqual(ok, []bool{true, false}) {
		t.Errorf("SCRIPT EXISTS = %v, %v", ok, err)
	}
	if err := c.EvalSha(ctx, strings.Repeat("0", 40), nil).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
		t.Errorf("EVALSHA of an unknown script: %v, want NOSCRIPT", err)
	}
	// redis.Script tries EVALSHA, falls back to EVAL on NOSCRIPT.
	s := redis.NewScript("return 'fresh " + p + "'")
	if v, err := s.Run(ctx, c, nil).Result(); err != nil || v != "fresh "+p {
		t.Errorf("Script.Run = %v, %v", v, err)
	}
	if err := c.Eval(ctx, "return redis.error_reply('MYERR custom')", nil).Err(); err == nil || err.Error() != "MYERR custom" {
		t.Errorf("script error reply: %v, want MYERR custom", err)
	}
}

func checkFunctions(t *testing.T, st *stack, c *redis.Client, proto int) {
	ctx := testContext(t, 30*time.Second)
	p := keyPrefix(t)
	lib := "lib_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, p)
	code := "#!lua name=" + lib + "\n" +
		"redis.register_function('" + lib + "_incr', function(keys, args) return redis.call('incrby', keys[1], args[1]) end)\n" +
		"redis.register_function{function_name='" + lib + "_ro', callback=function(keys, args) return redis.call('get', keys[1]) end, flags={'no-writes'}}\n"
	if name, err := c.FunctionLoadReplace(ctx, code).Result(); err != nil || name != lib {
		t.Fatalf("FUNCTION LOAD = %q, %v", name, err)
	}
	defer c.FunctionDelete(context.Background(), lib)
	for i := 1; i <= 3; i++ {
		if v, err := c.FCall(ctx, lib+"_incr", []string{p + "f"}, 5).Int(); err != nil || v != 5*i {
			t.Fatalf("FCALL #%d = %d, %v; want %d", i, v, err, 5*i)
		}
	}
	if v, err := c.FCallRO(ctx, lib+"_ro", []string{p + "f"}).Text(); err != nil || v != "15" {
		t.Errorf("FCALL_RO = %q, %v; want 15", v, err)
	}
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: lib}).Result()
	if err != nil || len(libs) != 1 || len(libs[0].Functions) != 2 {
		t.Errorf("FUNCTION LIST = %+v, %v; want one library with 2 functions", libs, err)
	}
}
