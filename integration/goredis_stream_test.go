package integration

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// blockedOn waits until some client of the master is blocked in cmd.
func blockedOn(t *testing.T, st *stack, cmd string) {
	t.Helper()
	d := st.Direct(st.Topo.Master(), 0)
	defer d.Close()
	waitFor(t, 10*time.Second, "a client blocked in "+cmd, func() bool {
		list, err := d.ClientList(context.Background()).Result()
		if err != nil {
			return false
		}
		for _, l := range strings.Split(list, "\n") {
			if strings.Contains(l, " cmd="+cmd+" ") && strings.Contains(l, " flags=b ") {
				return true
			}
		}
		return false
	})
}

func checkBlocking(t *testing.T, st *stack, c *redis.Client, proto int) {
	p := keyPrefix(t)
	pusher := st.Client(&redis.Options{Protocol: proto})
	defer pusher.Close()
	ctx := testContext(t, 60*time.Second)

	type result struct {
		v   any
		err error
	}
	// block runs call on its own goroutine, waits until the master shows it
	// blocked, runs wake and returns call's result.
	block := func(t *testing.T, server string, call func() (any, error), wake func() error) (any, error) {
		t.Helper()
		done := make(chan result, 1)
		go func() {
			v, err := call()
			done <- result{v, err}
		}()
		blockedOn(t, st, server)
		if err := wake(); err != nil {
			t.Fatalf("wake %s: %v", server, err)
		}
		select {
		case r := <-done:
			return r.v, r.err
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not return after it was woken", server)
			return nil, nil
		}
	}

	t.Run("BLPOP", func(t *testing.T) {
		v, err := block(t, "blpop",
			func() (any, error) { return c.BLPop(ctx, 20*time.Second, p+"l").Result() },
			func() error { return pusher.RPush(ctx, p+"l", "x").Err() })
		if err != nil || !reflect.DeepEqual(v, []string{p + "l", "x"}) {
			t.Errorf("BLPOP = %v, %v", v, err)
		}
	})
	t.Run("BLMOVE", func(t *testing.T) {
		v, err := block(t, "blmove",
			func() (any, error) { return c.BLMove(ctx, p+"src", p+"dst", "LEFT", "RIGHT", 20*time.Second).Result() },
			func() error { return pusher.RPush(ctx, p+"src", "m").Err() })
		if err != nil || v != "m" {
			t.Errorf("BLMOVE = %v, %v", v, err)
		}
		if l := c.LRange(ctx, p+"dst", 0, -1).Val(); !reflect.DeepEqual(l, []string{"m"}) {
			t.Errorf("destination after BLMOVE = %v", l)
		}
	})
	t.Run("BZPOPMIN", func(t *testing.T) {
		v, err := block(t, "bzpopmin",
			func() (any, error) { return c.BZPopMin(ctx, 20*time.Second, p+"z").Result() },
			func() error { return pusher.ZAdd(ctx, p+"z", redis.Z{Score: 2.5, Member: "a"}).Err() })
		want := &redis.ZWithKey{Key: p + "z", Z: redis.Z{Score: 2.5, Member: "a"}}
		if err != nil || !reflect.DeepEqual(v, want) {
			t.Errorf("BZPOPMIN = %+v, %v; want %+v", v, err, want)
		}
	})
	t.Run("XREAD BLOCK", func(t *testing.T) {
		v, err := block(t, "xread",
			func() (any, error) {
				return c.XRead(ctx, &redis.XReadArgs{Streams: []string{p + "x", "$"}, Block: 20 * time.Second}).Result()
			},
			func() error {
				return pusher.XAdd(ctx, &redis.XAddArgs{Stream: p + "x", ID: "1-1", Values: []string{"f", "v"}}).Err()
			})
		want := []redis.XStream{{Stream: p + "x", Messages: []redis.XMessage{{ID: "1-1", Values: map[string]any{"f": "v"}}}}}
		if err != nil || !reflect.DeepEqual(v, want) {
			t.Errorf("XREAD BLOCK = %+v, %v; want %+v", v, err, want)
		}
	})
	t.Run("BLPOP times out on the server", func(t *testing.T) {
		began := time.Now()
		_, err := c.BLPop(ctx, time.Second, p+"empty").Result()
		if !errors.Is(err, redis.Nil) {
			t.Errorf("BLPOP with a 1s timeout on an empty list: %v, want redis.Nil", err)
		}
		// Redis starts the timeout from the time it cached for the
		// command, which can lag the client's clock by a few
		// milliseconds (CI saw 996.9 ms): the margin keeps that apart
		// from a proxy that gave up on its own, which would answer
		// sooner or with an error.
		if d := time.Since(began); d < 900*time.Millisecond {
			t.Errorf("BLPOP returned after %v, before its 1s timeout", d)
		}
	})
}

func checkPubSub(t *testing.T, st *stack, c *redis.Client, proto int) {
	p := keyPrefix(t)
	ctx := testContext(t, 30*time.Second)
	pub := st.Client(&redis.Options{Protocol: proto})
	defer pub.Close()

	cases := []struct {
		name    string
		sub     func() *redis.PubSub
		publish func(i int) error
		want    func(i int) redis.Message
	}{
		{"SUBSCRIBE",
			func() *redis.PubSub { return c.Subscribe(ctx, p+"ch") },
			func(i int) error { return pub.Publish(ctx, p+"ch", "m"+strconv.Itoa(i)).Err() },
			func(i int) redis.Message { return redis.Message{Channel: p + "ch", Payload: "m" + strconv.Itoa(i)} }},
		{"PSUBSCRIBE",
			func() *redis.PubSub { return c.PSubscribe(ctx, p+"pat.*") },
			func(i int) error { return pub.Publish(ctx, p+"pat."+strconv.Itoa(i), "m").Err() },
			func(i int) redis.Message {
				return redis.Message{Channel: p + "pat." + strconv.Itoa(i), Pattern: p + "pat.*", Payload: "m"}
			}},
		{"SSUBSCRIBE",
			func() *redis.PubSub { return c.SSubscribe(ctx, p+"sch") },
			func(i int) error { return pub.SPublish(ctx, p+"sch", "s"+strconv.Itoa(i)).Err() },
			func(i int) redis.Message { return redis.Message{Channel: p + "sch", Payload: "s" + strconv.Itoa(i)} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.sub()
			defer ps.Close()
			// Receive returns the subscription confirmation.
			if m, err := ps.Receive(ctx); err != nil {
				t.Fatalf("subscription confirmation: %v", err)
			} else if _, ok := m.(*redis.Subscription); !ok {
				t.Fatalf("first frame %T %+v, want *redis.Subscription", m, m)
			}
			const n = 50
			for i := range n {
				if err := tc.publish(i); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			for i := range n {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				m, err := ps.ReceiveMessage(rctx)
				cancel()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if want := tc.want(i); m.Channel != want.Channel || m.Pattern != want.Pattern || m.Payload != want.Payload {
					t.Fatalf("message %d = %+v, want %+v", i, *m, want)
				}
			}
			// A subscribed connection answers PING in its subscribed form.
			if err := ps.Ping(ctx, "hi"); err != nil {
				t.Errorf("PING while subscribed: %v", err)
			}
			if m, err := ps.Receive(ctx); err != nil {
				t.Errorf("PING reply while subscribed: %v", err)
			} else if pong, ok := m.(*redis.Pong); !ok || pong.Payload != "hi" {
				t.Errorf("PING reply while subscribed = %T %+v, want *redis.Pong hi", m, m)
			}
		})
	}
}
