package integration

// go-redis, redis-py and phpredis sessions through the proxy while the
// cluster behind it fails over, loses a master to kill -9, and reshards.

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// clusterEvent is one scenario: what it does to the cluster while the
// writers run, and the keys it wants them to write.
type clusterEvent struct {
	name string
	// planned: no error at all, no acknowledged write lost, nothing
	// answered "may have run".
	planned bool
	// prepare picks the nodes and returns whether a key's slot is one the
	// event affects; act does it.
	prepare func(ctx context.Context, t *testing.T, c *topology.Cluster) (affected func(slot int) bool, act func() []int)
}

// TestClusterClients runs go-redis (a plain redis.Client, no retries),
// redis-py (a plain Redis()) and phpredis sessions through the proxy, each
// INCRing its own counters, half of them in the slots the event touches,
// across a CLUSTER FAILOVER, a kill -9 of a master (restarted afterwards)
// and a reshard of 500 slots. Always: no MOVED, ASK, TRYAGAIN or
// CLUSTERDOWN reaches a client, no client connection is closed (go-redis
// and redis-py open exactly one), every writer keeps working after the
// event, and every counter read back from its master lies between the
// INCRs acknowledged and those plus the ones answered "may have run".
// Failover: no error at all and no acknowledged write lost. Reshard: some
// counters were in the moved slots.
func TestClusterClients(t *testing.T) {
	cs := startClusterStack(t)
	events := []clusterEvent{
		{name: "failover", planned: true, prepare: func(ctx context.Context, t *testing.T, c *topology.Cluster) (func(int) bool, func() []int) {
			sh := shardOf(ctx, t, c, 0)
			return sh.serves, func() []int {
				if err := c.Failover(ctx, sh.Replicas[0]); err != nil {
					t.Fatalf("CLUSTER FAILOVER to %s: %v", sh.Replicas[0].Name, err)
				}
				return nil
			}
		}},
		{name: "kill", prepare: func(ctx context.Context, t *testing.T, c *topology.Cluster) (func(int) bool, func() []int) {
			sh := shardOf(ctx, t, c, 1)
			return sh.serves, func() []int {
				if err := sh.Master.Kill(); err != nil {
					t.Fatalf("kill -9 %s: %v", sh.Master.Name, err)
				}
				if err := c.WaitStable(ctx); err != nil {
					t.Fatalf("after kill -9 of %s: %v", sh.Master.Name, err)
				}
				if m, err := c.MasterOf(ctx, sh.Slots[0][0]); err != nil || m != sh.Replicas[0] {
					t.Fatalf("slot %d on %v (%v), want %s", sh.Slots[0][0], m, err, sh.Replicas[0].Name)
				}
				return nil
			}
		}},
		{name: "reshard", prepare: func(ctx context.Context, t *testing.T, c *topology.Cluster) (func(int) bool, func() []int) {
			from, to := shardOf(ctx, t, c, 0), shardOf(ctx, t, c, 2)
			// redis-cli takes the source's lowest slots; keys in its
			// first 600 are in the 500 moved with good odds.
			first := from.Slots[0][0]
			return func(s int) bool { return from.serves(s) && s < first+600 }, func() []int {
				moved, err := c.Reshard(ctx, from.Master, to.Master, 500)
				if err != nil || len(moved) != 500 {
					t.Fatalf("reshard %s -> %s: %d slots, %v", from.Master.Name, to.Master.Name, len(moved), err)
				}
				return moved
			}
		}},
	}
	for _, ev := range events {
		t.Run(ev.name, func(t *testing.T) { clusterScenario(t, cs, ev) })
	}
}

// clusterShard is a shard with its slots' membership test.
type clusterShard struct{ topology.ClusterShard }

// serves reports whether the shard served slot when it was read.
func (sh clusterShard) serves(slot int) bool {
	for _, r := range sh.Slots {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

// shardOf returns the i-th shard of the cluster now (in Shards' order).
func shardOf(ctx context.Context, t *testing.T, c *topology.Cluster, i int) clusterShard {
	t.Helper()
	shards, err := c.Shards(ctx)
	if err != nil || len(shards) <= i || len(shards[i].Replicas) == 0 {
		t.Fatalf("shards: %d, %v; want a shard %d with a replica", len(shards), err, i)
	}
	return clusterShard{shards[i]}
}

// sessionCounter reads n from phpredis's serialised session data.
var sessionCounter = regexp.MustCompile(`(?:^|;|\})n\|i:(\d+);`)

func clusterScenario(t *testing.T, cs *clusterStack, ev clusterEvent) {
	ctx := testContext(t, 2*time.Minute)
	affected, act := ev.prepare(ctx, t, cs.c)
	keys := func(prefix string) []string {
		p := prefix + ev.name + "-" // session IDs take [a-zA-Z0-9,-]
		return append(keysIn(p+"in-", 4, affected), keysIn(p+"out-", 4, func(s int) bool { return !affected(s) })...)
	}
	l := startClusterLoad(t, cs.proxy.addr, keys)
	began := time.Now()
	moved := act()
	took := time.Since(began)
	// The writers go on after the event: each must get INCRs through.
	before := acks(l)
	waitFor(t, 30*time.Second, "every writer's INCRs after the event", func() bool {
		now := acks(l)
		for name, n := range before {
			if now[name] < n+5 {
				return false
			}
		}
		return true
	})
	tallies, problems := l.results(t)
	for _, p := range problems {
		t.Error(p)
	}
	if ev.name == "kill" {
		// Back as a replica of the new master; not while the writers run.
		for _, n := range cs.c.Nodes() {
			if !n.Running() {
				if err := n.Restart(ctx); err != nil {
					t.Fatalf("restart %s: %v", n.Name, err)
				}
			}
		}
		if err := cs.c.WaitStable(ctx); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
	}
	var acked, maybe, errs, inMoved int64
	for _, tl := range tallies {
		for _, e := range tl.errs {
			if clusterRedirect.MatchString(e) || phpClosed.MatchString(e) {
				t.Errorf("%s was told %q", tl.name, e)
			}
		}
		if len(tl.errs) > 0 && (ev.planned || tl.name != "phpredis-sessions") {
			t.Errorf("%s: %d errors besides \"may have run\", first %q", tl.name, len(tl.errs), tl.errs[0])
		}
		if tl.name != "phpredis-sessions" && tl.connects != 1 {
			t.Errorf("%s opened %d connections, want 1 (the proxy closed it)", tl.name, tl.connects)
		}
		for k, a := range tl.acked {
			m := tl.maybe[k]
			key := k
			if tl.name == "phpredis-sessions" {
				key = "PHPREDIS_SESSION:" + k
			}
			got := clusterCounter(ctx, t, cs, key)
			if got < a || got > a+m || ev.planned && got != a {
				t.Errorf("%s: %s = %d, acknowledged %d, %d answered \"may have run\"", tl.name, key, got, a, m)
			}
			if _, ok := slices.BinarySearch(moved, slotOf(key)); ok {
				inMoved++
			}
			acked, maybe = acked+a, maybe+m
		}
		errs += int64(len(tl.errs))
	}
	if ev.planned && maybe > 0 {
		t.Errorf("%d INCRs answered \"may have run\" across a planned failover", maybe)
	}
	if moved != nil && inMoved == 0 {
		t.Errorf("no counter is in the %d moved slots", len(moved))
	}
	t.Logf("%s took %v; %d writers, %d INCRs acknowledged, %d \"may have run\", %d other errors",
		ev.name, took.Round(time.Millisecond), len(tallies), acked, maybe, errs)
	if moved != nil {
		t.Logf("%d of the counters were in the %d moved slots", inMoved, len(moved))
	}
}

// acks returns the progress of every writer so far: the go-redis
// tallies' acknowledged INCRs, and the "ok" lines of the processes' output
// (one per request of the sessions, one per 10 INCRs of redis-py).
func acks(l *clusterLoad) map[string]int64 {
	m := map[string]int64{}
	l.mu.Lock()
	for _, tl := range l.tallies {
		for _, n := range tl.acked {
			m[tl.name] += n
		}
	}
	l.mu.Unlock()
	for _, p := range l.procs {
		m[p.name] = int64(strings.Count("\n"+p.out.String(), "\nok"))
	}
	return m
}

// clusterCounter reads a counter (or a session's n) from its master.
func clusterCounter(ctx context.Context, t *testing.T, cs *clusterStack, key string) int64 {
	t.Helper()
	v, err := cs.masterOf(ctx, t, key).Client().Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("GET %s on its master: %v", key, err)
	}
	if m := sessionCounter.FindStringSubmatch(v); m != nil {
		v = m[1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s = %q", key, v)
	}
	return n
}
