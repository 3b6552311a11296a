package proxy

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// startClusterProxy starts a 3-master cluster and a proxy in front of it
// whose router refreshes only when told (a MOVED, a failed dial), so that
// the tests see the proxy follow redirects itself.
func startClusterProxy(t *testing.T, mod func(*Options)) (*topology.Cluster, *cluster.Router, *Server, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	r, srv, addr := proxyForCluster(t, c.Addrs()[:3], cluster.FetchOptions{}, nil, mod)
	return c, r, srv, addr
}

// proxyForCluster starts a router over seeds that refreshes only when told
// (fetching with fetch, or with fo when fetch is nil), waits for its first
// slot map, and starts a proxy in front of it.
func proxyForCluster(t *testing.T, seeds []string, fo cluster.FetchOptions, fetch cluster.FetchFunc, mod func(*Options)) (*cluster.Router, *Server, string) {
	t.Helper()
	r := cluster.NewRouter(seeds, cluster.RouterOptions{FetchOptions: fo, Fetch: fetch, RefreshInterval: time.Hour})
	ch := r.Changed()
	rctx, stop := context.WithCancel(context.Background())
	r.Start(rctx)
	t.Cleanup(func() { stop(); r.Close() })
	<-ch
	srv, addr := startProxy(t, nil, func(o *Options) {
		o.Source = nil
		o.HoldTimeout = 10 * time.Second
		o.Cluster = &ClusterOptions{Router: r, FetchCommands: func(ctx context.Context) (cluster.Table, error) {
			return cluster.FetchCommands(ctx, seeds, fo)
		}}
		if mod != nil {
			mod(o)
		}
	})
	return r, srv, addr
}

// pipeline sends cmds in one write and returns their replies.
func pipeline(c *redisConn, cmds ...[]string) []string {
	var b []byte
	for _, cmd := range cmds {
		b = appendCommand(b, cmd...)
	}
	c.send(string(b))
	out := make([]string, len(cmds))
	for i := range out {
		out[i] = c.reply()
	}
	return out
}

// keyIn returns a key of the form prefix{N} whose slot is served by addr.
func keyIn(r *cluster.Router, addr, prefix string, from int) (string, int) {
	for n := from; ; n++ {
		k := fmt.Sprintf("%s%d", prefix, n)
		if a, _ := r.Lookup(int(cluster.Slot([]byte(k)))); a == addr {
			return k, n
		}
	}
}

func TestClusterRouting(t *testing.T) {
	for _, shared := range []int{0, 1} {
		t.Run(fmt.Sprintf("shared=%d", shared), func(t *testing.T) {
			c, r, srv, addr := startClusterProxy(t, func(o *Options) { o.SharedConns = shared })
			clusterRouting(t, c, r, srv, addr)
		})
	}
}

func clusterRouting(t *testing.T, c *topology.Cluster, r *cluster.Router, srv *Server, addr string) {
	ctx := context.Background()

	t.Run("pipeline over every master", func(t *testing.T) {
		conn := dialRedis(t, addr)
		var cmds [][]string
		for i := range 300 {
			cmds = append(cmds, []string{"SET", "k" + strconv.Itoa(i), "v" + strconv.Itoa(i)})
			cmds = append(cmds, []string{"GET", "k" + strconv.Itoa(i)})
		}
		got := pipeline(conn, cmds...)
		for i := range 300 {
			if got[2*i] != "+OK\r\n" || got[2*i+1] != bulk("v"+strconv.Itoa(i)) {
				t.Fatalf("key %d: %q %q", i, got[2*i], got[2*i+1])
			}
		}
		// Every master holds some of them: the keys really were spread.
		for _, m := range r.Masters() {
			if n := doIn(t, m, "0", "DBSIZE"); n == ":0\r\n" {
				t.Fatalf("master %s holds no key", m)
			}
			if n := testutil.ToFloat64(srv.m.shardCmds.WithLabelValues(m)); n == 0 {
				t.Errorf("sentinel_proxy_cluster_commands_total{master=%q} is 0", m)
			}
		}
	})

	t.Run("multi-key commands split and merged", func(t *testing.T) {
		conn := dialRedis(t, addr)
		got := pipeline(conn,
			[]string{"MSET", "a", "1", "b", "2", "c", "3", "d", "4"},
			[]string{"MGET", "d", "nope", "a", "c", "b"},
			[]string{"EXISTS", "a", "b", "a", "zz"},
			[]string{"DEL", "a", "b", "zz"},
			[]string{"MGET", "a", "b", "c"},
			[]string{"SUNION", "a", "b"},
			[]string{"MSET", "{t}x", "1", "{t}y", "2"},
			[]string{"SUNIONSTORE", "{t}z", "{t}x"},
		)
		want := []string{"+OK\r\n", "*5\r\n" + bulk("4") + "$-1\r\n" + bulk("1") + bulk("3") + bulk("2"),
			":3\r\n", ":2\r\n", "*3\r\n$-1\r\n$-1\r\n" + bulk("3"),
			"-" + cluster.CrossSlotError + "\r\n", "+OK\r\n", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
			}
		}
	})

	t.Run("select", func(t *testing.T) {
		conn := dialRedis(t, addr)
		got := pipeline(conn, []string{"SELECT", "1"}, []string{"SELECT", "0"}, []string{"PING"})
		if got[0] != "-"+errSelectCluster+"\r\n" || got[1] != "+OK\r\n" || got[2] != "+PONG\r\n" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("transactions", func(t *testing.T) {
		conn := dialRedis(t, addr)
		// MULTI alone, then the commands batch by batch: the proxy holds
		// MULTI until the first key shows where the transaction goes.
		for _, step := range [][2]string{{"MULTI", "+OK\r\n"}, {"SET {u}a 1", "+QUEUED\r\n"}, {"INCR {u}b", "+QUEUED\r\n"},
			{"EXEC", "*2\r\n+OK\r\n:1\r\n"}} {
			if got := conn.do(strings.Fields(step[0])...); got != step[1] {
				t.Fatalf("%s = %q, want %q", step[0], got, step[1])
			}
		}
		got := pipeline(conn, []string{"MULTI"}, []string{"SET", "{u}a", "2"}, []string{"SET", "{v}a", "2"}, []string{"EXEC"}, []string{"GET", "{u}a"})
		want := []string{"+OK\r\n", "+QUEUED\r\n", "-" + cluster.CrossSlotError + "\r\n", "-" + errExecAbort + "\r\n", bulk("1")}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("cross-slot transaction: reply %d = %q, want %q", i, got[i], want[i])
			}
		}
		got = pipeline(conn, []string{"WATCH", "{w}k"}, []string{"MULTI"}, []string{"INCR", "{w}k"}, []string{"EXEC"}, []string{"MULTI"}, []string{"EXEC"})
		want = []string{"+OK\r\n", "+OK\r\n", "+QUEUED\r\n", "*1\r\n:1\r\n", "+OK\r\n", "*0\r\n"}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("watch: reply %d = %q, want %q", i, got[i], want[i])
			}
		}
	})

	t.Run("transaction opened by a command without keys", func(t *testing.T) {
		// Whatever master the key is on, the MULTI and PING wait for it.
		for _, m := range r.Masters() {
			conn := dialRedis(t, addr)
			k, _ := keyIn(r, m, "tk", 0)
			for _, step := range [][2]string{{"MULTI", "+OK\r\n"}, {"PING", "+QUEUED\r\n"}, {"ECHO x", "+QUEUED\r\n"},
				{"SET " + k + " 1", "+QUEUED\r\n"}, {"EXEC", "*3\r\n+PONG\r\n" + bulk("x") + "+OK\r\n"},
				{"MULTI", "+OK\r\n"}, {"PING", "+QUEUED\r\n"}, {"EXEC", "*1\r\n+PONG\r\n"},
				{"MULTI", "+OK\r\n"}, {"PING", "+QUEUED\r\n"}, {"DISCARD", "+OK\r\n"}, {"GET " + k, bulk("1")}} {
				if got := conn.do(strings.Fields(step[0])...); got != step[1] {
					t.Fatalf("master %s: %s = %q, want %q", m, step[0], got, step[1])
				}
			}
		}
		// A WATCH the server holds is not forgotten by a DISCARD in the
		// same batch, and ends with it.
		conn := dialRedis(t, addr)
		got := pipeline(conn, []string{"WATCH", "{t}k"}, []string{"MULTI"}, []string{"DISCARD"}, []string{"SET", "{t}k", "x"},
			[]string{"MULTI"}, []string{"INCR", "{t}n"}, []string{"EXEC"})
		if got[6] != "*1\r\n:1\r\n" {
			t.Fatalf("EXEC after WATCH, MULTI, DISCARD = %q, want one INCR (all replies %q)", got[6], got)
		}
	})

	t.Run("subscribed connection and keys of another master", func(t *testing.T) {
		conn := dialRedis(t, addr)
		first := r.Masters()[0]
		here, _ := keyIn(r, first, "here", 0)
		there, _ := keyIn(r, r.Masters()[1], "there", 0)
		got := pipeline(conn, []string{"HELLO", "3"}, []string{"SUBSCRIBE", "c"}, []string{"SET", here, "1"}, []string{"GET", there})
		if got[2] != "+OK\r\n" || got[3] != "-"+errDuplexOtherMaster+"\r\n" {
			t.Fatalf("got %q", got[2:])
		}
		// The slot of "here" moves behind the proxy's back: Redis's -MOVED
		// on the subscribed connection becomes the same refusal.
		if err := c.MoveSlot(ctx, int(cluster.Slot([]byte(here))), c.NodeByAddr(r.Masters()[1])); err != nil {
			t.Fatal(err)
		}
		if got := conn.do("GET", here); got != "-"+errDuplexOtherMaster+"\r\n" {
			t.Fatalf("GET of a moved key on the subscribed connection = %q", got)
		}
	})

	t.Run("keyspace commands fan out", func(t *testing.T) {
		conn := dialRedis(t, addr)
		if got := conn.do("FLUSHALL"); got != "+OK\r\n" {
			t.Fatalf("FLUSHALL = %q", got)
		}
		var want []string
		for i := range 100 {
			k := "s" + strconv.Itoa(i)
			want = append(want, k)
			conn.do("SET", k, "x")
		}
		if got := conn.do("DBSIZE"); got != ":100\r\n" {
			t.Fatalf("DBSIZE = %q", got)
		}
		seen := map[string]bool{}
		cursor := "0"
		for range 1000 {
			conn.send(string(appendCommand(nil, "SCAN", cursor, "COUNT", "7")))
			reply := conn.reply()
			parts := strings.Split(reply, "\r\n")
			cursor = parts[2]
			for j := 5; j < len(parts); j += 2 {
				seen[parts[j]] = true
			}
			if cursor == "0" {
				break
			}
		}
		var keys []string
		for k := range seen {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sort.Strings(want)
		if strings.Join(keys, ",") != strings.Join(want, ",") {
			t.Fatalf("SCAN saw %d keys %v, want %d", len(keys), keys, len(want))
		}
		if got := conn.do("KEYS", "s1*"); !strings.HasPrefix(got, "*11\r\n") {
			t.Fatalf("KEYS s1* = %q", got)
		}
	})

	t.Run("scripts, pub/sub and connection commands", func(t *testing.T) {
		conn := dialRedis(t, addr)
		got := pipeline(conn,
			[]string{"EVAL", "return redis.call('incr', KEYS[1])", "1", "{e}n"},
			[]string{"EVAL", "return {KEYS[1], KEYS[2]}", "2", "{e}a", "{f}b"},
			[]string{"SCRIPT", "LOAD", "return 7"},
			[]string{"EVALSHA", "59b6ab2fbe0ee4b25733de0f62e6cda4899ef8e9", "1", "anykey"},
			[]string{"CLIENT", "SETNAME", "app"},
			[]string{"PUBLISH", "news", "x"},
		)
		want := []string{":1\r\n", "-" + cluster.CrossSlotError + "\r\n", bulk("59b6ab2fbe0ee4b25733de0f62e6cda4899ef8e9"), ":7\r\n", "+OK\r\n", ":0\r\n"}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
			}
		}
		for _, m := range r.Masters() {
			if got := doIn(t, m, "0", "SCRIPT", "EXISTS", "59b6ab2fbe0ee4b25733de0f62e6cda4899ef8e9"); got != "*1\r\n:1\r\n" {
				t.Errorf("SCRIPT LOAD did not reach master %s: %q", m, got)
			}
		}
		// A shard channel's subscriber is on its slot's master: an
		// SPUBLISH from another client reaches it.
		sub := dialRedis(t, addr)
		if got := sub.do("SSUBSCRIBE", "{s}ch"); got != "*3\r\n$10\r\nssubscribe\r\n"+bulk("{s}ch")+":1\r\n" {
			t.Fatalf("SSUBSCRIBE = %q", got)
		}
		if got := conn.do("SPUBLISH", "{s}ch", "hello"); got != ":1\r\n" {
			t.Fatalf("SPUBLISH = %q, want one receiver", got)
		}
		if got := sub.reply(); got != "*3\r\n$8\r\nsmessage\r\n"+bulk("{s}ch")+bulk("hello") {
			t.Fatalf("message = %q", got)
		}
		psub := dialRedis(t, addr)
		psub.do("SUBSCRIBE", "news")
		if got := conn.do("PUBLISH", "news", "y"); got != ":1\r\n" {
			t.Fatalf("PUBLISH = %q, want one receiver", got)
		}
	})

	t.Run("shard subscriber after its slot moved", func(t *testing.T) {
		sub := dialRedis(t, addr)
		pub := dialRedis(t, addr)
		slot := int(cluster.Slot([]byte("{mv}")))
		if got := sub.do("SSUBSCRIBE", "{mv}ch"); got != "*3\r\n$10\r\nssubscribe\r\n"+bulk("{mv}ch")+":1\r\n" {
			t.Fatalf("SSUBSCRIBE = %q", got)
		}
		from, _ := r.Lookup(slot)
		to := r.Masters()[0]
		if to == from {
			to = r.Masters()[1]
		}
		if err := c.MoveSlot(ctx, slot, c.NodeByAddr(to)); err != nil {
			t.Fatal(err)
		}
		// Redis tells the subscriber its channel is gone; subscribing
		// again moves the connection to the slot's new master, where
		// SPUBLISH delivers.
		if got := sub.reply(); got != "*3\r\n$12\r\nsunsubscribe\r\n"+bulk("{mv}ch")+":0\r\n" {
			t.Fatalf("after the move: %q", got)
		}
		if got := sub.do("SSUBSCRIBE", "{mv}ch"); got != "*3\r\n$10\r\nssubscribe\r\n"+bulk("{mv}ch")+":1\r\n" {
			t.Fatalf("SSUBSCRIBE again = %q", got)
		}
		if got := pub.do("SPUBLISH", "{mv}ch", "m"); got != ":1\r\n" {
			t.Fatalf("SPUBLISH = %q, want one receiver", got)
		}
		if got := sub.reply(); got != "*3\r\n$8\r\nsmessage\r\n"+bulk("{mv}ch")+bulk("m") {
			t.Fatalf("message = %q", got)
		}
		// A channel of another master while {mv}ch is still served here:
		// moving would lose {mv}ch, so it is refused.
		other := r.Masters()[0]
		if other == to {
			other = r.Masters()[1]
		}
		ch, _ := keyIn(r, other, "ch", 0)
		if got := sub.do("SSUBSCRIBE", ch); got != "-"+errShardElsewhere+"\r\n" {
			t.Fatalf("SSUBSCRIBE %s (another master) = %q", ch, got)
		}
	})

	t.Run("moved slot is followed", func(t *testing.T) {
		conn := dialRedis(t, addr)
		masters := r.Masters()
		k, _ := keyIn(r, masters[0], "m", 0)
		other, _ := keyIn(r, masters[1], "o", 0)
		conn.do("SET", k, "before")
		slot := int(cluster.Slot([]byte(k)))
		if err := c.MoveSlot(ctx, slot, c.NodeByAddr(masters[2])); err != nil {
			t.Fatal(err)
		}
		// The proxy's router still names the old master: it is told by the
		// MOVED, and the replies stay in order around it.
		// One run for masters[0] as the router sees it: GET k is
		// redirected, INCR same runs there, and its reply waits for GET's.
		same, _ := keyIn(r, masters[0], "same", 0)
		got := pipeline(conn, []string{"SET", other, "1"}, []string{"GET", k}, []string{"INCR", same}, []string{"SET", k, "after"}, []string{"GET", k}, []string{"INCR", other})
		want := []string{"+OK\r\n", bulk("before"), ":1\r\n", "+OK\r\n", bulk("after"), ":2\r\n"}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
			}
		}
		if n := testutil.ToFloat64(srv.m.redirects); n != 3 {
			t.Errorf("%v redirects followed, want 3 (the GET, SET and GET of %s)", n, k)
		}
		if a, _ := r.Lookup(slot); a != masters[2] {
			t.Errorf("router: slot %d on %s, want %s", slot, a, masters[2])
		}
	})

	t.Run("redirect after EXEC in the same run", func(t *testing.T) {
		conn := dialRedis(t, addr)
		masters := r.Masters()
		tx, _ := keyIn(r, masters[0], "tx", 0)
		k, _ := keyIn(r, masters[0], "after", 0)
		conn.do("SET", k, "v")
		if err := c.MoveSlot(ctx, int(cluster.Slot([]byte(k))), c.NodeByAddr(masters[1])); err != nil {
			t.Fatal(err)
		}
		// One run for masters[0] as the router sees it; the GET after
		// EXEC is outside the transaction: its -MOVED is followed.
		got := pipeline(conn, []string{"MULTI"}, []string{"SET", tx, "1"}, []string{"EXEC"}, []string{"GET", k}, []string{"PING"})
		want := []string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n+OK\r\n", bulk("v"), "+PONG\r\n"}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
			}
		}
	})

	t.Run("watch redirected in a pipelined transaction", func(t *testing.T) {
		conn := dialRedis(t, addr)
		masters := r.Masters()
		k, _ := keyIn(r, masters[0], "w", 0)
		n := "{" + k + "}n"
		conn.do("SET", k, "v")
		if err := c.MoveSlot(ctx, int(cluster.Slot([]byte(k))), c.NodeByAddr(masters[1])); err != nil {
			t.Fatal(err)
		}
		// The router still names masters[0]: WATCH is answered -MOVED
		// there. The transaction must follow it to masters[1] (not run
		// MULTI and EXEC where WATCH failed, then WATCH after EXEC).
		got := pipeline(conn, []string{"WATCH", k}, []string{"MULTI"}, []string{"INCR", n}, []string{"GET", k}, []string{"EXEC"})
		want := []string{"+OK\r\n", "+OK\r\n", "+QUEUED\r\n", "+QUEUED\r\n", "*2\r\n:1\r\n" + bulk("v")}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
			}
		}
		// No transaction is left open: a cross-slot MGET is split.
		other, _ := keyIn(r, masters[2], "o", 0)
		got = pipeline(conn, []string{"MGET", k, other})
		if want := "*2\r\n" + bulk("v") + "$-1\r\n"; got[0] != want {
			t.Errorf("MGET after the transaction = %q, want %q", got[0], want)
		}
	})

	t.Run("ask during a migration", func(t *testing.T) {
		conn := dialRedis(t, addr)
		slot := int(cluster.Slot([]byte("{mig}")))
		from, _ := r.Lookup(slot)
		to := r.Masters()[0]
		if to == from {
			to = r.Masters()[1]
		}
		conn.do("SET", "{mig}a", "1")
		conn.do("SET", "{mig}b", "2")
		m, err := c.BeginMigration(ctx, slot, c.NodeByAddr(to))
		if err != nil {
			t.Fatal(err)
		}
		// Move {mig}a only.
		if err := c.NodeByAddr(from).Client().Do(ctx, "migrate", c.NodeByAddr(to).Host, c.NodeByAddr(to).Port, "{mig}a", 0, 5000).Err(); err != nil {
			t.Fatal(err)
		}
		got := pipeline(conn, []string{"GET", "{mig}a"}, []string{"INCR", "{mig}b"}, []string{"SET", "{mig}c", "3"}, []string{"GET", "{mig}c"}, []string{"GET", "{mig}b"})
		want := []string{bulk("1"), ":3\r\n", "+OK\r\n", bulk("3"), bulk("3")}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
			}
		}
		if err := m.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		got = pipeline(conn, []string{"MGET", "{mig}a", "{mig}b", "{mig}c"})
		if got[0] != "*3\r\n"+bulk("1")+bulk("3")+bulk("3") {
			t.Errorf("after the migration: %q", got[0])
		}
	})

	t.Run("blocked command across a CLUSTER FAILOVER", func(t *testing.T) {
		// Last: it changes the topology. A BLPOP blocked on a master that
		// a CLUSTER FAILOVER demotes is answered -UNBLOCKED by Redis; it
		// took nothing, so the proxy sends it again to the new master,
		// where the next push wakes it.
		masters := r.Masters()
		k, _ := keyIn(r, masters[0], "bl", 0)
		shards, err := c.Shards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var replica *topology.Node
		for _, sh := range shards {
			if sh.Master.Addr == masters[0] && len(sh.Replicas) > 0 {
				replica = sh.Replicas[0]
			}
		}
		if replica == nil {
			t.Fatalf("no replica of %s in %v", masters[0], shards)
		}
		before := testutil.ToFloat64(srv.m.redirects)
		blocked := dialRedis(t, addr)
		// In a run between two writes: Redis closes the connection after
		// its -UNBLOCKED, before the INCR after it.
		n := "{" + k + "}n"
		// After a subscription ended by RESET, and a transaction the proxy
		// held (MULTI without WATCH) in the same run, on the connection it
		// pinned.
		if got := pipeline(blocked, []string{"SUBSCRIBE", "ch"}, []string{"PING"}, []string{"RESET"}); got[2] != "+RESET\r\n" {
			t.Fatalf("SUBSCRIBE, PING, RESET = %q", got)
		}
		other, _ := keyIn(r, masters[1], "blo", 0)
		got := pipeline(blocked, []string{"MULTI"}, []string{"INCR", n}, []string{"EXEC"}, []string{"MSET", n + "a", "1", other, "1"}, []string{"DEL", n + "a", other}, []string{"ECHO", "x"})
		if !slices.Equal(got, []string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n:1\r\n", "+OK\r\n", ":2\r\n", bulk("x")}) {
			t.Fatalf("a transaction, then split commands = %q", got)
		}
		var b []byte
		for _, c := range [][]string{{"MULTI"}, {"SET", n, "0"}, {"EXEC"}, {"INCR", n}, {"BLPOP", k, "20"}, {"INCR", n}} {
			b = appendCommand(b, c...)
		}
		blocked.send(string(b))
		for i, want := range []string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n+OK\r\n", ":1\r\n"} {
			if got := blocked.reply(); got != want {
				t.Fatalf("reply %d before the BLPOP = %q, want %q", i, got, want)
			}
		}
		time.Sleep(200 * time.Millisecond) // blocked on masters[0]
		if err := c.Failover(ctx, replica); err != nil {
			t.Fatal(err)
		}
		dialRedis(t, addr).do("RPUSH", k, "after")
		if got, want := blocked.reply(), "*2\r\n"+bulk(k)+bulk("after"); got != want {
			t.Errorf("BLPOP across the failover = %q, want %q", got, want)
		}
		if got := blocked.reply(); got != ":2\r\n" && got != "-"+errMayHaveRun+"\r\n" {
			t.Errorf("INCR after the BLPOP = %q, want :2 or %q", got, errMayHaveRun)
		}
		if n := testutil.ToFloat64(srv.m.redirects) - before; n < 1 {
			t.Errorf("%v redirects followed, want the -UNBLOCKED one at least", n)
		}
	})
}
