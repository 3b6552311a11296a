package cluster_test

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestRouterAgainstCluster runs two Routers against a real 3+3 cluster:
// one refreshed only when told (Moved, RequestRefresh), one only by its
// periodic refresh. It checks their lookups against the cluster, the
// redirect lines Redis sends, and that both follow a slot move, a CLUSTER
// FAILOVER and a kill -9 of a master within a bounded time.
func TestRouterAgainstCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })

	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	seeds := c.Addrs()[:3]
	told := cluster.NewRouter(seeds, cluster.RouterOptions{RefreshInterval: time.Hour, Logger: log.Named("told")})
	periodic := cluster.NewRouter(seeds, cluster.RouterOptions{RefreshInterval: 250 * time.Millisecond, Logger: log.Named("periodic")})
	for _, r := range []*cluster.Router{told, periodic} {
		ch := r.Changed()
		r.Start(ctx)
		t.Cleanup(r.Close)
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("no first slot map")
		}
	}

	t.Run("lookup agrees with the cluster", func(t *testing.T) { routerAgrees(ctx, t, c, told, periodic) })
	t.Run("redirect lines", func(t *testing.T) { redirectLines(ctx, t, c) })
	t.Run("moved slot", func(t *testing.T) { routerMovedSlot(ctx, t, c, told, periodic) })
	t.Run("failover", func(t *testing.T) { routerFailover(ctx, t, c, told, periodic) })
	t.Run("kill -9 master", func(t *testing.T) { routerKill(ctx, t, c, told, periodic) })
}

// routerAgrees compares every slot with Shards, sample slots with
// MasterOf, and Masters and Unassigned.
func routerAgrees(ctx context.Context, t *testing.T, c *topology.Cluster, routers ...*cluster.Router) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	var masters []string
	for _, sh := range shards {
		masters = append(masters, sh.Master.Addr)
		for _, rg := range sh.Slots {
			for s := rg[0]; s <= rg[1]; s++ {
				for _, r := range routers {
					if got, ok := r.Lookup(s); !ok || got != sh.Master.Addr {
						t.Fatalf("Lookup(%d) = %q, %v; Shards says %s", s, got, ok, sh.Master.Addr)
					}
				}
			}
		}
	}
	slices.Sort(masters)
	sample := []int{0, 1, 5460, 5461, 10922, 10923, 16383}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 13 {
		sample = append(sample, rng.IntN(cluster.Slots))
	}
	for _, s := range sample {
		m, err := c.MasterOf(ctx, s)
		if err != nil {
			t.Fatalf("MasterOf(%d): %v", s, err)
		}
		for _, r := range routers {
			if got, _ := r.Lookup(s); got != m.Addr {
				t.Errorf("Lookup(%d) = %q; MasterOf says %s", s, got, m.Addr)
			}
		}
	}
	for _, r := range routers {
		if got := r.Masters(); !slices.Equal(got, masters) {
			t.Errorf("Masters() = %q, want %q", got, masters)
		}
		if n := r.Unassigned(); n != 0 {
			t.Errorf("Unassigned() = %d", n)
		}
	}
}

// redirectLines reads the -MOVED and -ASK lines Redis writes, off the wire,
// for each cluster-preferred-endpoint-type, and parses them.
func redirectLines(ctx context.Context, t *testing.T, c *topology.Cluster) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	a, b := shards[0].Master, shards[1].Master
	slot := shards[1].Slots[0][0] + 3
	key := keyInSlot(slot)
	_, port, _ := net.SplitHostPort(b.Addr)
	defer func() { _ = a.Client().ConfigSet(context.Background(), "cluster-preferred-endpoint-type", "ip").Err() }()
	for _, tc := range []struct{ endpointType, line, addr string }{
		{"ip", "-MOVED " + strconv.Itoa(slot) + " " + b.Addr, b.Addr},
		{"unknown-endpoint", "-MOVED " + strconv.Itoa(slot) + " :" + port, ":" + port},
		{"hostname", "-MOVED " + strconv.Itoa(slot) + " ?:" + port, ""}, // no hostname announced
	} {
		if err := a.Client().ConfigSet(ctx, "cluster-preferred-endpoint-type", tc.endpointType).Err(); err != nil {
			t.Fatalf("config set cluster-preferred-endpoint-type %s: %v", tc.endpointType, err)
		}
		line := rawLine(ctx, t, a.Addr, "GET", key)
		t.Logf("%s: %q", tc.endpointType, line)
		if line != tc.line {
			t.Errorf("%s: GET on %s answered %q, want %q", tc.endpointType, a.Name, line, tc.line)
		}
		kind, s, addr, ok := cluster.ParseRedirect([]byte(line))
		if !ok || kind != cluster.KindMoved || s != slot || addr != tc.addr {
			t.Errorf("ParseRedirect(%q) = %q, %d, %q, %v", line, kind, s, addr, ok)
		}
		if got := cluster.ResolveRedirect(addr, a.Addr); tc.addr != "" && got != b.Addr {
			t.Errorf("ResolveRedirect(%q, %q) = %q, want %s", addr, a.Addr, got, b.Addr)
		}
	}

	// A key not yet moved of a migrating slot is asked of the target.
	m, err := c.BeginMigration(ctx, slot, a)
	if err != nil {
		t.Fatalf("begin migration: %v", err)
	}
	line := rawLine(ctx, t, b.Addr, "GET", key)
	t.Logf("migrating: %q", line)
	if kind, s, addr, ok := cluster.ParseRedirect([]byte(line)); !ok || kind != cluster.KindAsk || s != slot || addr != a.Addr {
		t.Errorf("GET during a migration: %q parses as %q, %d, %q, %v; want ASK to %s", line, kind, s, addr, ok, a.Addr)
	}
	if err := m.Finish(ctx); err != nil {
		t.Fatalf("finish migration: %v", err)
	}
}

// routerMovedSlot moves a slot and checks the told router keeps the old
// owner until a MOVED, takes the new one at once, and has it from its
// triggered refresh; the periodic one finds it alone.
func routerMovedSlot(ctx context.Context, t *testing.T, c *topology.Cluster, told, periodic *cluster.Router) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	from, to := shards[2].Master, shards[0].Master
	slot := shards[2].Slots[0][0] + 1
	key := keyInSlot(slot)
	if err := from.Client().Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatalf("SET on %s: %v", from.Name, err)
	}
	began := time.Now()
	if err := c.MoveSlot(ctx, slot, to); err != nil {
		t.Fatalf("move slot %d: %v", slot, err)
	}
	moved := time.Now()
	if got, _ := told.Lookup(slot); got != from.Addr {
		t.Fatalf("the told router has %q for slot %d before any MOVED, want the old %s", got, slot, from.Addr)
	}
	line := rawLine(ctx, t, from.Addr, "GET", key)
	_, s, addr, ok := cluster.ParseRedirect([]byte(line))
	if !ok || s != slot || addr != to.Addr {
		t.Fatalf("GET on the old owner: %q, want -MOVED %d %s", line, slot, to.Addr)
	}
	told.Moved(s, addr)
	if got, _ := told.Lookup(slot); got != to.Addr {
		t.Errorf("Lookup(%d) right after Moved = %q, want %s", slot, got, to.Addr)
	}
	waitRouted(ctx, t, told, "the told router's refresh", func(m *cluster.Map) bool { a, _ := m.Lookup(uint16(slot)); return a == to.Addr })
	t.Logf("told router: refreshed map has slot %d on %s %v after the MOVED", slot, to.Name, time.Since(moved).Round(time.Millisecond))
	waitRouted(ctx, t, periodic, "the periodic refresh", func(m *cluster.Map) bool { a, _ := m.Lookup(uint16(slot)); return a == to.Addr })
	t.Logf("periodic router: slot %d on %s %v after MoveSlot began", slot, to.Name, time.Since(began).Round(time.Millisecond))
}

// routerFailover fails a shard over and checks both routers end with the
// replica serving all its slots: the told one after the one MOVED the old
// master answers.
func routerFailover(ctx context.Context, t *testing.T, c *topology.Cluster, told, periodic *cluster.Router) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	sh := shards[1]
	old, replica := sh.Master, sh.Replicas[0]
	changed := []<-chan struct{}{told.Changed(), periodic.Changed()}
	if err := c.Failover(ctx, replica); err != nil {
		t.Fatalf("failover to %s: %v", replica.Name, err)
	}
	done := time.Now()
	slot := sh.Slots[0][0]
	line := rawLine(ctx, t, old.Addr, "GET", keyInSlot(slot))
	_, s, addr, ok := cluster.ParseRedirect([]byte(line))
	if !ok || s != slot || addr != replica.Addr {
		t.Fatalf("GET on the old master: %q, want -MOVED %d %s", line, slot, replica.Addr)
	}
	told.Moved(s, addr)
	for i, r := range []*cluster.Router{told, periodic} {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		waitRouted(ctx, t, r, "every slot of "+old.Name+" on "+replica.Name, servedBy(sh.Slots, replica.Addr))
		cancel()
		if !closed(changed[i]) {
			t.Errorf("router %d: Changed did not fire", i)
		}
		t.Logf("router %d: all %s's slots on %s %v after the failover", i, old.Name, replica.Name, time.Since(done).Round(time.Millisecond))
	}
}

// routerKill kills a master with SIGKILL and checks both routers end with
// its replica serving all its slots: the told one asked to refresh every
// 50 ms, as sessions failing to reach the dead master would.
func routerKill(ctx context.Context, t *testing.T, c *topology.Cluster, told, periodic *cluster.Router) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	sh := shards[2]
	victim, replica := sh.Master, sh.Replicas[0]
	began := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatalf("kill %s: %v", victim.Name, err)
	}
	// About two node timeouts (2 s each) for the replica to win.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				told.RequestRefresh()
			}
		}
	}()
	for i, r := range []*cluster.Router{told, periodic} {
		waitRouted(ctx, t, r, "every slot of "+victim.Name+" on "+replica.Name, servedBy(sh.Slots, replica.Addr))
		t.Logf("router %d: all %s's slots on %s %v after kill -9", i, victim.Name, replica.Name, time.Since(began).Round(time.Millisecond))
	}
	if m, err := c.MasterOf(ctx, sh.Slots[0][0]); err != nil || m != replica {
		t.Errorf("MasterOf(%d) = %v, %v; want %s", sh.Slots[0][0], m, err, replica.Name)
	}
}

// servedBy reports whether a map has addr serving every slot of ranges.
func servedBy(ranges [][2]int, addr string) func(*cluster.Map) bool {
	return func(m *cluster.Map) bool {
		for _, rg := range ranges {
			for s := rg[0]; s <= rg[1]; s++ {
				if a, _ := m.Lookup(uint16(s)); a != addr {
					return false
				}
			}
		}
		return true
	}
}

// waitRouted waits, on Changed, until the router's fetched map satisfies
// ok and Lookup agrees with that map for every slot.
func waitRouted(ctx context.Context, t *testing.T, r *cluster.Router, what string, ok func(*cluster.Map) bool) {
	t.Helper()
	poll := time.NewTicker(20 * time.Millisecond) // the map changes without Changed when only Moved overrides differ
	defer poll.Stop()
	for {
		ch := r.Changed()
		if m, _ := r.Map(); m != nil && ok(m) && agrees(r, m) {
			return
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func agrees(r *cluster.Router, m *cluster.Map) bool {
	for s := range cluster.Slots {
		a, _ := r.Lookup(s)
		b, _ := m.Lookup(uint16(s))
		if a != b {
			return false
		}
	}
	return true
}

// keyInSlot returns a key that hashes to slot.
func keyInSlot(slot int) string {
	for i := 0; ; i++ {
		k := "router:" + strconv.Itoa(i)
		if int(cluster.Slot([]byte(k))) == slot {
			return k
		}
	}
}

// rawLine sends one command to addr over a fresh connection and returns
// the first line of the reply, CRLF removed: the bytes a proxy sees.
func rawLine(ctx context.Context, t *testing.T, addr string, args ...string) string {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var b strings.Builder
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSuffix(line, "\r\n")
}
