package topology_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestCluster starts a real 3+3 cluster and, on it in turn: checks every
// slot is served by the master the cluster names, a CLUSTER FAILOVER, a
// kill -9 of a master with its replica taking over and the old master
// returning as a replica, a reshard with redis-cli while a client writes,
// a slot moved by hand with an open migration answering ASK; then that
// Stop leaves no process and no directory.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	t.Logf("StartCluster took %v (dir %s)", time.Since(began).Round(time.Millisecond), c.Dir())
	pids := clusterPIDs(t, c)

	masters, err := c.Masters(ctx)
	if err != nil || len(masters) != 3 {
		t.Fatalf("Masters() = %d nodes, %v; want 3", len(masters), err)
	}
	replicas, err := c.Replicas(ctx)
	if err != nil || len(replicas) != 3 || len(c.Nodes()) != 6 {
		t.Fatalf("Replicas() = %d nodes, %v; Nodes() = %d; want 3 and 6", len(replicas), err, len(c.Nodes()))
	}
	for _, r := range replicas {
		if role := nodeRole(ctx, t, r); role != "slave" {
			t.Errorf("replica %s has role %q", r.Name, role)
		}
	}

	t.Run("every slot served", func(t *testing.T) { everySlotServed(ctx, t, c) })
	t.Run("failover", func(t *testing.T) { clusterFailover(ctx, t, c) })
	t.Run("kill master", func(t *testing.T) { pids = append(pids, killMaster(ctx, t, c)...) })
	t.Run("reshard while writing", func(t *testing.T) { reshardWhileWriting(ctx, t, c) })
	t.Run("migration answers ASK", func(t *testing.T) { migrationASK(ctx, t, c) })

	checkStop(t, c.Stop, c.Dir(), pids, c.Nodes())
}

// everySlotServed writes one key in each of the 16384 slots through a
// cluster client, then finds each key on the master Shards names for its
// slot, directly.
func everySlotServed(ctx context.Context, t *testing.T, c *topology.Cluster) {
	keys := slotKeys()
	cc := clusterClient(c)
	defer cc.Close()
	pipe := cc.Pipeline()
	for s, k := range keys {
		pipe.Set(ctx, k, s, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("SET one key per slot: %v", err)
	}
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	total := 0
	for _, sh := range shards {
		if len(sh.Replicas) != 1 {
			t.Errorf("master %s has %d replicas, want 1", sh.Master.Name, len(sh.Replicas))
		}
		var want []string
		for _, r := range sh.Slots {
			for s := r[0]; s <= r[1]; s++ {
				want = append(want, keys[s])
			}
		}
		total += len(want)
		// One EXISTS per key: a multi-key command across slots is
		// refused (CROSSSLOT) even by the node serving them all.
		p := sh.Master.Client().Pipeline()
		for _, k := range want {
			p.Exists(ctx, k)
		}
		cmds, err := p.Exec(ctx)
		held := 0
		for _, cmd := range cmds {
			held += int(cmd.(*redis.IntCmd).Val())
		}
		if err != nil || held != len(want) {
			t.Errorf("%s serves %d slots but holds %d of their keys (%v)", sh.Master.Name, len(want), held, err)
		}
	}
	if total != cluster.Slots {
		t.Errorf("the shards serve %d slots, want %d", total, cluster.Slots)
	}
}

// clusterFailover fails the first shard over to its replica with writes
// acknowledged just before, and checks the roles swapped and no write was
// lost.
func clusterFailover(ctx context.Context, t *testing.T, c *topology.Cluster) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	old, replica := shards[0].Master, shards[0].Replicas[0]
	slot := shards[0].Slots[0][0]
	keys := keysInSlot(slot, 200)
	for i, k := range keys {
		if err := old.Client().Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("SET on %s: %v", old.Name, err)
		}
	}
	began := time.Now()
	if err := c.Failover(ctx, replica); err != nil {
		t.Fatalf("failover to %s: %v", replica.Name, err)
	}
	t.Logf("CLUSTER FAILOVER to %s took %v", replica.Name, time.Since(began).Round(time.Millisecond))
	if m, err := c.MasterOf(ctx, slot); err != nil || m != replica {
		t.Fatalf("MasterOf(%d) = %v, %v; want %s", slot, nameOf(m), err, replica.Name)
	}
	if role := nodeRole(ctx, t, old); role != "slave" {
		t.Errorf("old master %s has role %q, want slave", old.Name, role)
	}
	if n, err := replica.Client().Exists(ctx, keys...).Result(); err != nil || n != int64(len(keys)) {
		t.Errorf("new master holds %d of %d keys written before the failover (%v)", n, len(keys), err)
	}
	if err := old.Client().Set(ctx, keys[0], "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
		t.Errorf("SET on the old master: %v, want MOVED", err)
	}
}

// killMaster kills a master with SIGKILL, waits for its replica to take
// over, restarts it and checks it comes back as the new master's replica.
// It returns the PIDs the restart added.
func killMaster(ctx context.Context, t *testing.T, c *topology.Cluster) []int {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	victim, replica := shards[1].Master, shards[1].Replicas[0]
	slot := shards[1].Slots[0][0]
	began := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatalf("kill %s: %v", victim.Name, err)
	}
	if err := c.WaitStable(ctx); err != nil {
		t.Fatalf("not stable after kill -9 of %s: %v", victim.Name, err)
	}
	t.Logf("kill -9 of %s: %s took over after %v", victim.Name, replica.Name, time.Since(began).Round(time.Millisecond))
	if m, err := c.MasterOf(ctx, slot); err != nil || m != replica {
		t.Fatalf("MasterOf(%d) = %v, %v; want %s", slot, nameOf(m), err, replica.Name)
	}
	if err := replica.Client().Set(ctx, keysInSlot(slot, 1)[0], "after", 0).Err(); err != nil {
		t.Errorf("SET on the new master %s: %v", replica.Name, err)
	}

	if err := victim.Restart(ctx); err != nil {
		t.Fatalf("restart %s: %v", victim.Name, err)
	}
	if err := c.WaitStable(ctx); err != nil {
		t.Fatalf("not stable after restarting %s: %v", victim.Name, err)
	}
	if role := nodeRole(ctx, t, victim); role != "slave" {
		t.Errorf("restarted %s has role %q, want slave", victim.Name, role)
	}
	reps, err := c.Replicas(ctx)
	if err != nil || !slices.Contains(reps, victim) {
		t.Errorf("Replicas() = %v, %v; want it to include %s", names(reps), err, victim.Name)
	}
	return []int{victim.PID()}
}

// TestClusterOptionsRejected checks that invalid options fail before
// anything runs.
func TestClusterOptionsRejected(t *testing.T) {
	tests := []struct {
		name string
		opts topology.ClusterOptions
		want string
	}{
		{"two masters", topology.ClusterOptions{Masters: 2}, "at least 3"},
		{"node timeout too short", topology.ClusterOptions{NodeTimeout: 500 * time.Millisecond}, "spurious failovers"},
		{"host name", topology.ClusterOptions{Host: "localhost"}, "not an IP"},
		{"missing redis-cli", topology.ClusterOptions{RedisCLI: "no-such-redis-cli"}, "redis-tools"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := topology.StartCluster(context.Background(), tc.opts)
			if err == nil {
				_ = c.Stop()
				t.Fatalf("StartCluster succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// testClusterPassword needs quoting in a config file and a shell.
const testClusterPassword = `cl "pw" \ x`

// clusterClient is a go-redis cluster client seeded with every node.
func clusterClient(c *topology.Cluster) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: c.Addrs(), Password: c.Options().Password, Protocol: 2, DisableIdentity: true,
		MaxRedirects:             16,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// slotKeys returns a key for every slot: keys[s] hashes to slot s.
func slotKeys() []string {
	keys := make([]string, cluster.Slots)
	left := cluster.Slots
	for i := 0; left > 0; i++ {
		k := "slot:" + strconv.Itoa(i)
		if s := cluster.Slot([]byte(k)); keys[s] == "" {
			keys[s] = k
			left--
		}
	}
	return keys
}

// keysInSlot returns n distinct keys that hash to slot.
func keysInSlot(slot, n int) []string {
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := "k:" + strconv.Itoa(i)
		if int(cluster.Slot([]byte(k))) == slot {
			keys = append(keys, k)
		}
	}
	return keys
}

func clusterPIDs(t *testing.T, c *topology.Cluster) []int {
	t.Helper()
	var pids []int
	for _, n := range c.Nodes() {
		if n.PID() == 0 {
			t.Fatalf("%s has no PID while running", n.Name)
		}
		pids = append(pids, n.PID())
	}
	return pids
}

func names(nodes []*topology.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

func nameOf(n *topology.Node) string {
	if n == nil {
		return "<nil>"
	}
	return n.Name
}
