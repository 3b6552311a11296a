package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestClusterGroup runs a cluster group (and no sentinels) against a real
// 3+3 cluster with a password: the router, /status, /readyz and /metrics,
// PING through the proxy, reloads, and a clean shutdown.
func TestClusterGroup(t *testing.T) {
	const pass = "clu5ter-pw"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startTestCluster(ctx, t, pass)
	nodes := c.Addrs()

	path := filepath.Join(t.TempDir(), "sentinel-proxy.yaml")
	writeConfig := func(seeds []string, extra string) {
		t.Helper()
		body := fmt.Sprintf("backend_password: %q\nlog_level: error\n%sgroups:\n  - {name: shop, cluster_nodes: [%s], listen: \"127.0.0.1:0\"}\n",
			pass, extra, strings.Join(seeds, ", "))
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(nodes[:2], "")
	args := []string{"--config", path}
	cfg, err := config.Load(args, noEnv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	var logs readableBuffer
	a, err := newApp(cfg, args, noEnv, &logs)
	if err != nil {
		t.Fatal(err)
	}
	g := a.groups[0]
	if g.name != "shop" || g.watcher != nil || g.router == nil {
		t.Fatalf("group %q: watcher %v, router %v; want shop with a router only", g.name, g.watcher, g.router)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.serve(runCtx) }()

	client := redis.NewClient(&redis.Options{Addr: g.addr, Password: pass})
	defer client.Close()
	waitFor(t, 20*time.Second, "PING through the proxy", func() error { return client.Ping(ctx).Err() })
	waitFor(t, 20*time.Second, "a full slot map", func() error {
		if ok, reason := clusterReady(g.router); !ok {
			return fmt.Errorf("%s", reason)
		}
		return nil
	})

	h := adminHandler(a)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d: %s", code, body)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`sentinel_proxy_master_known{group="shop"} 1`,
		`sentinel_proxy_cluster_masters{group="shop"} 3`,
		`sentinel_proxy_cluster_unassigned_slots{group="shop"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	checkClusterStatus(t, get, c, nodes[:2])

	t.Run("SET and GET of keys on every shard", func(t *testing.T) {
		for i := range 30 {
			k := fmt.Sprintf("key:%d", i)
			if err := client.Set(ctx, k, i, 0).Err(); err != nil {
				t.Fatalf("SET %s through the proxy: %v", k, err)
			}
			if got, err := client.Get(ctx, k).Int(); err != nil || got != i {
				t.Fatalf("GET %s through the proxy = %d, %v; want %d", k, got, err, i)
			}
		}
	})

	// A reload that changes a setting applies it; one that changes the
	// seeds keeps the router and says a restart is needed.
	writeConfig(nodes[:2], "hold_timeout: 3s\n")
	a.reload()
	if n := testutil.ToFloat64(a.reloads.WithLabelValues("ok")); n != 1 {
		t.Errorf("reload of hold_timeout: %v ok reloads, want 1; log:\n%s", n, logs.String())
	}
	writeConfig(nodes[2:], "")
	a.reload()
	if n := testutil.ToFloat64(a.reloads.WithLabelValues("error")); n != 1 {
		t.Errorf("reload of cluster_nodes: %v failed reloads, want 1", n)
	}
	if !strings.Contains(logs.String(), "cluster_nodes and backend credential changes of a cluster group need a restart") {
		t.Errorf("the reload log does not say cluster_nodes need a restart:\n%s", logs.String())
	}
	if gs := a.snapshot(); len(gs) != 1 || gs[0] != g {
		t.Errorf("groups after reloads %v, want the same group", gs)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after the reloads: %v", err)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	select {
	case <-g.sourceDone:
	default:
		t.Error("the router still runs after serve returned")
	}
	if _, err := net.DialTimeout("tcp", g.addr, time.Second); err == nil {
		t.Error("proxy still accepts connections after shutdown")
	}
}

// checkClusterStatus checks /status against the cluster's own view.
func checkClusterStatus(t *testing.T, get func(string) (int, string), c *topology.Cluster, seeds []string) {
	t.Helper()
	code, body := get("/status")
	var st statusJSON
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("/status = %d, %v: %s", code, err, body)
	}
	if len(st.Groups) != 1 || st.Groups[0].Cluster == nil {
		t.Fatalf("/status has no cluster group: %s", body)
	}
	gs := st.Groups[0]
	cs := gs.Cluster
	if gs.Kind != "cluster" || !gs.Ready || cs.Unassigned != 0 || len(cs.Shards) != 3 || len(cs.Masters) != 3 ||
		strings.Join(cs.Nodes, ",") != strings.Join(seeds, ",") || !strings.Contains(cs.MapFrom, "CLUSTER SHARDS") {
		t.Errorf("/status of the cluster group:\n%s", body)
	}
	shards, err := c.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range shards {
		var found bool
		for _, got := range cs.Shards {
			if got.Master != want.Master.Addr {
				continue
			}
			found = true
			var slots []string
			for _, r := range want.Slots {
				slots = append(slots, fmt.Sprintf("%d-%d", r[0], r[1]))
			}
			if strings.Join(got.Slots, ",") != strings.Join(slots, ",") ||
				len(got.Replicas) != 1 || got.Replicas[0].Addr != want.Replicas[0].Addr || got.Replicas[0].Health != "online" {
				t.Errorf("/status shard %+v, want slots %v and replica %s", got, slots, want.Replicas[0].Addr)
			}
		}
		if !found {
			t.Errorf("/status lacks the shard of master %s:\n%s", want.Master.Addr, body)
		}
	}
	if strings.Contains(body, "clu5ter-pw") {
		t.Error("/status shows the backend password")
	}
}

// waitFor polls fn until it succeeds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterGroupWithoutMap checks what the admin endpoint says of a
// cluster group whose nodes never answered: not ready, and why.
func TestClusterGroupWithoutMap(t *testing.T) {
	r := cluster.NewRouter([]string{unusedAddr(t)}, cluster.RouterOptions{})
	defer r.Close()
	g := &group{name: "shop", router: r, nodes: []string{"x:1"}}
	h := adminHandler(&app{groups: []*group{g}, reloads: newReloadsCounter()})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "shop (no slot map yet)") {
		t.Errorf("/readyz = %d %q, want 503 naming shop", rec.Code, rec.Body)
	}
	cs := clusterStatusOf(g)
	if cs.Unassigned != cluster.Slots || len(cs.Shards) != 0 || cs.Shards == nil || cs.MapFrom != "" {
		t.Errorf("status %+v, want every slot unassigned and no shards", cs)
	}
}

// startTestCluster starts a real 3+3 cluster whose nodes require pass,
// stopped when the test ends.
func startTestCluster(ctx context.Context, t *testing.T, pass string) *topology.Cluster {
	t.Helper()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}
