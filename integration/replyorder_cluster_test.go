package integration

// TestReplyOrderCluster is TestReplyOrder for a cluster group (issue 12):
// the same clients, generator and model (with run.cluster set) through the
// in-process proxy in front of a real Redis Cluster (3 masters, 1 replica
// each, node timeout 2 s), while faults are injected at random seeded
// times (replyorder_cluster_faults_test.go): CLUSTER FAILOVER on a
// replica, kill -9 of a master (restarted once its replica has taken
// over), SIGSTOP of a master, slot moves of the clients' own slots and
// reshards of a few slots, CLIENT KILL of the proxy's connections on a
// master and, through a faultshim in front of every node,
// -LOADING/-READONLY answers and connections cut at random byte offsets.
//
// In a cluster group each client's keys are in its own hash tag, so that
// its transactions, scripts and BLPOPs stay in one slot; MSET, MGET and
// DEL over its second hash tag are split by the proxy and checked too.
// SELECT of db 1 must be refused; CLIENT SETNAME is answered by the proxy
// and no name is checked. Besides the Sentinel test's invariants, no
// client may ever see -MOVED, -ASK, -TRYAGAIN or -CLUSTERDOWN outside
// MULTI (inside MULTI README documents that a redirect is passed on).
//
// The shims: the router's fetch (RouterOptions.Fetch) installs slot maps
// whose node addresses are the shims'. -MOVED and -ASK name the real
// nodes, so after a redirect the slot goes straight to the real node
// until the next refresh of the map (asked for by that redirect, at most
// 100 ms later); faults injected through a shim miss those few commands.
//
// Environment: as TestReplyOrder, with a default duration of 45 s and the
// fault kinds failover kill sigstop slotmove clientkill cutrequest
// cutreply cutall loading readonly. REPLYORDER_AVOID (a replay needs the
// same) leaves out command shapes that hit known proxy bugs, so that a
// run still checks the rest: "subkeys" (commands with keys from a
// subscribed RESP3 session: they go to the subscription's node, whose
// -MOVED reaches the client) and "afterexec" (commands after EXEC in the
// pipeline of a transaction: their redirects reach the client).

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

var roClusterFaultKinds = []string{"failover", "kill", "sigstop", "slotmove", "clientkill", "cutrequest", "cutreply", "cutall", "loading", "readonly"}

// roClusterHold is the proxy's hold timeout: a killed master is replaced
// after about two node timeouts (4 s), more on a loaded machine.
const roClusterHold = 15 * time.Second

// roClusterStack is a Redis Cluster with a router and the proxy in front.
type roClusterStack struct {
	cl     *topology.Cluster
	router *cluster.Router
	srv    *proxy.Server
	addr   string
	done   chan error // Serve's result
}

// startROClusterStack starts the cluster, the router (fetching through the
// shims of src) and the proxy, and waits until a write through the proxy
// succeeds. Everything stops when t ends.
func startROClusterStack(t *testing.T, src *shimSource) *roClusterStack {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := topology.StartCluster(ctx, topology.ClusterOptions{Password: testPassword, Logger: log.Named("topology")})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := cl.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	fo := cluster.FetchOptions{Password: testPassword}
	seeds := cl.Addrs()
	r := cluster.NewRouter(seeds, cluster.RouterOptions{Fetch: src.clusterFetch(fo), Logger: log.Named("cluster")})
	rctx, stopRouter := context.WithCancel(context.Background())
	r.Start(rctx)
	t.Cleanup(func() { stopRouter(); r.Close() })
	t.Cleanup(src.close) // after the proxy has stopped (cleanups run last first)
	srv, err := proxy.NewServer(proxy.Options{
		Name: "cluster",
		Cluster: &proxy.ClusterOptions{Router: r, FetchCommands: func(ctx context.Context) (cluster.Table, error) {
			return cluster.FetchCommands(ctx, seeds, fo)
		}},
		HoldTimeout:  roClusterHold,
		SharedConns:  sharedConnsFromEnv(),
		DrainTimeout: time.Second,
	}, log.Named("proxy"))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	sctx, stopServe := context.WithCancel(context.Background())
	cs := &roClusterStack{cl: cl, router: r, srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { cs.done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stopServe()
		select {
		case err := <-cs.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return within 30 s of its cancel")
		}
	})
	c := redis.NewClient(&redis.Options{Addr: cs.addr, Password: testPassword, MaxRetries: -1})
	defer c.Close()
	var last error
	for ctx.Err() == nil {
		if last = c.Set(ctx, "ro:ready", "1", 0).Err(); last == nil {
			return cs
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the proxy does not serve the cluster: %v", last)
	return nil
}

func TestReplyOrderCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster under faults for 45 s")
	}
	cfg := roConfigFromEnv(t, roClusterFaultKinds, 45*time.Second)
	fmt.Fprintf(os.Stderr, "TestReplyOrderCluster: seed %d, %v, %d clients (replay with REPLYORDER_SEED=%d)\n", cfg.seed, cfg.duration, cfg.clients, cfg.seed)
	t.Logf("seed %d, duration %v, %d clients, faults %v", cfg.seed, cfg.duration, cfg.clients, cfg.faults)

	src := &shimSource{seed: cfg.seed}
	cs := startROClusterStack(t, src)

	avoid := map[string]bool{}
	for _, k := range strings.Split(os.Getenv("REPLYORDER_AVOID"), ",") {
		switch k = strings.TrimSpace(k); k {
		case "":
		case "subkeys", "afterexec":
			avoid[k] = true
		default:
			t.Fatalf("REPLYORDER_AVOID: unknown %q (subkeys, afterexec)", k)
		}
	}
	t.Logf("avoiding %v", avoid)
	run := &roRun{test: t.Name(), cluster: true, avoid: avoid, seed: cfg.seed, addr: cs.addr, password: testPassword, counts: map[string]int{},
		prefix: fmt.Sprintf("roc:%d:", cfg.seed%1_000_000), deadline: time.Now().Add(cfg.duration)}
	rng := rand.New(rand.NewSource(cfg.seed))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	baseGoroutines := runtime.NumGoroutine()
	clients := make([]*roClient, cfg.clients)
	var slots []int
	for i := range clients {
		c := &roClient{run: run, id: i, rng: rand.New(rand.NewSource(rng.Int63()))}
		clients[i] = c
		slots = append(slots, int(cluster.Slot([]byte(c.key("k", 0)))), int(cluster.Slot([]byte(c.xkey(0)))))
	}
	mem := startMemSampler(ctx, run)
	faults := startClusterFaults(ctx, run, cs, src, slots, rng.Int63(), cfg.faults)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.loop() }()
	}
	wg.Wait()
	faults.wait()
	if len(cs.done) > 0 {
		run.fail(nil, "Serve keeps running", "it returned while clients were connected")
	}
	mem.stop()

	roCheckClusterFinal(run, cs, clients, faults)
	roCheckResources(t, run, cs.srv, mem, baseGoroutines)
	roReport(t, run, clients, src)
}

// roCheckClusterFinal reads every counter and value back from the cluster
// once it is stable, straight from the masters.
func roCheckClusterFinal(run *roRun, cs *roClusterStack, clients []*roClient, faults *roClusterFaults) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := cs.cl.WaitStable(ctx); err != nil {
		run.event("cluster not stable at the end (reading anyway): %v", err)
	}
	faults.checkMasters(ctx)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cs.cl.Addrs(), Password: testPassword,
		MaxRedirects: 16, ReadTimeout: 10 * time.Second})
	defer cc.Close()
	if err := cc.Ping(ctx).Err(); err != nil && !errors.Is(err, redis.Nil) {
		run.fail(nil, "the cluster answers at the end", err.Error())
		return
	}
	for _, c := range clients {
		if !c.stopped {
			c.checkStored(ctx, cc, 0, faults.lossNote())
		}
	}
}
