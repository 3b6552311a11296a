package topology_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// reshardWhileWriting moves 20 slots with redis-cli while a cluster client
// increments counters in them, and checks the slots moved with their keys
// and every acknowledged increment is there.
func reshardWhileWriting(ctx context.Context, t *testing.T, c *topology.Cluster) {
	masters, err := c.Masters(ctx)
	if err != nil {
		t.Fatalf("masters: %v", err)
	}
	from, to := masters[0], masters[2]
	shards, _ := c.Shards(ctx)
	first := shards[0].Slots[0][0]
	cc := clusterClient(c)
	defer cc.Close()
	// Counters in the first 40 slots of the source: redis-cli moves a
	// source's slots from its lowest.
	var counters []string
	for s := first; s < first+40; s++ {
		counters = append(counters, keysInSlot(s, 3)...)
	}
	for _, k := range counters {
		if err := cc.Set(ctx, k, 0, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}

	// Other steps left keys in these slots too: all must move.
	before := make(map[int]int64)
	for s := first; s < first+40; s++ {
		n, err := from.Client().ClusterCountKeysInSlot(ctx, s).Result()
		if err != nil {
			t.Fatalf("countkeysinslot %d: %v", s, err)
		}
		before[s] = n
	}

	acked := make(map[string]int)
	var writeErrs []error
	var done atomic.Int64 // acknowledged increments so far
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(time.Minute)
		for i := 0; i < 1_000_000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := counters[i%len(counters)]
			if err := cc.Incr(ctx, k).Err(); err != nil {
				writeErrs = append(writeErrs, fmt.Errorf("INCR %s: %w", k, err))
				continue
			}
			acked[k]++
			done.Add(1)
		}
	}()
	// The writer runs before, during and after the reshard.
	waitWrites := func(n int64) {
		deadline := time.Now().Add(20 * time.Second)
		for done.Load() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	waitWrites(200)
	began, atStart := time.Now(), done.Load()
	moved, err := c.Reshard(ctx, from, to, 20)
	took, during := time.Since(began), done.Load()-atStart
	waitWrites(done.Load() + 200)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("reshard: %v", err)
	}
	t.Logf("reshard of %d slots %s -> %s took %v; %d increments acknowledged during it, %d errors in all",
		len(moved), from.Name, to.Name, took.Round(time.Millisecond), during, len(writeErrs))
	if during == 0 {
		t.Errorf("no increment was acknowledged during the reshard")
	}
	if len(writeErrs) > 0 {
		t.Errorf("writes failed during the reshard: %v", errors.Join(writeErrs[:min(5, len(writeErrs))]...))
	}
	if len(moved) != 20 {
		t.Fatalf("Reshard moved %d slots, want 20", len(moved))
	}
	total := 0
	for _, s := range moved {
		if m, err := c.MasterOf(ctx, s); err != nil || m != to {
			t.Errorf("MasterOf(%d) = %v, %v; want %s", s, nameOf(m), err, to.Name)
		}
		if n, err := to.Client().ClusterCountKeysInSlot(ctx, s).Result(); err != nil || n != before[s] {
			t.Errorf("%s holds %d keys of moved slot %d, want %d (%v)", to.Name, n, s, before[s], err)
		}
		if n, err := from.Client().ClusterCountKeysInSlot(ctx, s).Result(); err != nil || n != 0 {
			t.Errorf("%s still holds %d keys of moved slot %d (%v)", from.Name, n, s, err)
		}
	}
	for _, k := range counters {
		got, err := cc.Get(ctx, k).Int()
		if err != nil || got != acked[k] {
			t.Errorf("%s = %d (%v), want the %d acknowledged increments", k, got, err, acked[k])
		}
		total += acked[k]
	}
	if total < 400 {
		t.Errorf("%d increments acknowledged in all, want at least 400", total)
	}
}

// migrationASK opens a migration of one slot, moves half its keys, checks
// the source answers ASK for a moved key and the target answers it after
// ASKING, then finishes and checks the source answers MOVED.
func migrationASK(ctx context.Context, t *testing.T, c *topology.Cluster) {
	masters, err := c.Masters(ctx)
	if err != nil {
		t.Fatalf("masters: %v", err)
	}
	to := masters[1]
	slot := 0
	from, err := c.MasterOf(ctx, slot)
	if err != nil || from == to {
		t.Fatalf("MasterOf(0) = %v, %v", nameOf(from), err)
	}
	keys := keysInSlot(slot, 10)
	for _, k := range keys {
		if err := from.Client().Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}
	m, err := c.BeginMigration(ctx, slot, to)
	if err != nil {
		t.Fatalf("begin migration: %v", err)
	}
	if n, err := m.MoveKeys(ctx, 5); err != nil || n != 5 {
		t.Fatalf("MoveKeys(5) = %d, %v", n, err)
	}
	movedKey := ""
	for _, k := range keys {
		if n, _ := from.Client().Exists(ctx, k).Result(); n == 0 {
			movedKey = k
		}
	}
	err = from.Client().Get(ctx, movedKey).Err()
	if want := fmt.Sprintf("ASK %d %s", slot, to.Addr); err == nil || err.Error() != want {
		t.Errorf("GET of a moved key on the source: %v, want %q", err, want)
	}
	var get *redis.StringCmd
	_, err = to.Client().Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "asking")
		get = p.Get(ctx, movedKey)
		return nil
	})
	if err != nil || get.Val() != movedKey {
		t.Errorf("ASKING + GET on the target = %q, %v; want %q", get.Val(), err, movedKey)
	}
	if err := m.Finish(ctx); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if got, err := c.MasterOf(ctx, slot); err != nil || got != to {
		t.Errorf("MasterOf(0) after the move = %v, %v; want %s", nameOf(got), err, to.Name)
	}
	if n, err := to.Client().Exists(ctx, keys...).Result(); err != nil || n != int64(len(keys)) {
		t.Errorf("target holds %d of %d keys (%v)", n, len(keys), err)
	}
	if err := from.Client().Get(ctx, keys[0]).Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED 0 ") {
		t.Errorf("GET on the source after the move: %v, want MOVED", err)
	}
}

// TestClusterPassword starts a password-protected cluster without
// replicas, checks that clients need the password, and moves slots with
// keys both by hand (MIGRATE … AUTH) and with redis-cli (REDISCLI_AUTH).
func TestClusterPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{ReplicasPerMaster: -1, Password: testClusterPassword})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	n := c.Nodes()[0]
	unauth := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer unauth.Close()
	if err := unauth.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("PING without password: %v, want NOAUTH", err)
	}
	masters, err := c.Masters(ctx)
	if err != nil || len(masters) != 3 {
		t.Fatalf("Masters() = %d, %v", len(masters), err)
	}
	reps, err := c.Replicas(ctx)
	if err != nil || len(reps) != 0 {
		t.Errorf("Replicas() = %v, %v; want none", names(reps), err)
	}
	from, to := masters[0], masters[1]
	keys := keysInSlot(0, 3)
	for _, k := range keys {
		if err := from.Client().Set(ctx, k, 1, 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}
	if err := c.MoveSlot(ctx, 0, to); err != nil {
		t.Fatalf("move slot 0: %v", err)
	}
	if got, err := to.Client().Exists(ctx, keys...).Result(); err != nil || got != 3 {
		t.Errorf("after MoveSlot the target holds %d of 3 keys (%v)", got, err)
	}
	moved, err := c.Reshard(ctx, to, masters[2], 2)
	if err != nil || len(moved) != 2 {
		t.Fatalf("reshard = %v, %v; want 2 slots", moved, err)
	}
	// redis-cli moves the source's lowest slots first: slot 0 with them.
	if !slices.Contains(moved, 0) {
		t.Fatalf("reshard moved slots %v, not slot 0", moved)
	}
	if got, err := masters[2].Client().Exists(ctx, keys...).Result(); err != nil || got != 3 {
		t.Errorf("after the reshard %s holds %d of 3 keys (%v)", masters[2].Name, got, err)
	}
}
