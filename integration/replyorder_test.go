package integration

// TestReplyOrder is the seeded, randomized, fault-injecting reply-order
// test of issue 10: many clients send random pipelines of every kind of
// command the proxy treats differently through the in-process proxy, in
// front of a real topology (1 master, 2 replicas, 3 sentinels), while
// faults are injected at random seeded times: planned failovers, kill -9
// and SIGSTOP of the master, CLIENT KILL of the proxy's backend
// connections, and, through a fault-injecting relay (integration/faultshim)
// in front of every data node, -LOADING/-READONLY answers and connections
// cut at random byte offsets. Each client checks every reply in order
// (replyorder_client_test.go, replyorder_model_test.go); at the end every
// counter and value is read back from the final master.
//
// Environment: REPLYORDER_DURATION (default 60s; `make soak` runs 30m),
// REPLYORDER_SEED (default: the time), REPLYORDER_CLIENTS (default 16),
// REPLYORDER_FAULTS (default all; "-cutreply,-readonly" turns kinds off,
// "kill,loading" runs only those; kinds: failover kill sigstop clientkill
// cutrequest cutreply cutall loading readonly). Every failure names the
// seed to replay.

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/proxy"
)

// Bounds on the test process (the proxy runs in it) while the load runs:
// generous, so that only a leak or a runaway buffer trips them.
const (
	roMaxHeap       = 1 << 30
	roMaxGoroutines = 5000
)

// roConfig is the run's configuration, from the environment.
type roConfig struct {
	duration time.Duration
	seed     int64
	clients  int
	faults   map[string]bool
}

var roFaultKinds = []string{"failover", "kill", "sigstop", "clientkill", "cutrequest", "cutreply", "cutall", "loading", "readonly"}

// roConfigFromEnv reads the run's configuration; kinds are the fault kinds
// the test knows, duration its default length.
func roConfigFromEnv(t *testing.T, kinds []string, duration time.Duration) roConfig {
	cfg := roConfig{duration: duration, seed: time.Now().UnixNano(), clients: 16, faults: map[string]bool{}}
	if v := os.Getenv("REPLYORDER_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("REPLYORDER_DURATION: %v", err)
		}
		cfg.duration = d
	}
	if v := os.Getenv("REPLYORDER_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("REPLYORDER_SEED: %v", err)
		}
		cfg.seed = s
	}
	if v := os.Getenv("REPLYORDER_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("REPLYORDER_CLIENTS: %q", v)
		}
		cfg.clients = n
	}
	spec := os.Getenv("REPLYORDER_FAULTS")
	only := spec != "" && spec != "all" && !strings.HasPrefix(spec, "-")
	for _, k := range kinds {
		cfg.faults[k] = !only
	}
	for _, k := range strings.Split(spec, ",") {
		k = strings.TrimSpace(k)
		name := strings.TrimPrefix(k, "-")
		if k == "" || k == "all" {
			continue
		}
		if _, ok := cfg.faults[name]; !ok {
			t.Fatalf("REPLYORDER_FAULTS: unknown kind %q (kinds: %v)", name, kinds)
		}
		cfg.faults[name] = !strings.HasPrefix(k, "-")
	}
	return cfg
}

// roRun is what the clients and the fault injector share.
type roRun struct {
	test     string          // the test's name, for the progress lines on stderr
	cluster  bool            // a cluster group: db 0 only, keys in the client's hash tags
	avoid    map[string]bool // REPLYORDER_AVOID: command shapes not generated
	seed     int64
	addr     string
	password string
	prefix   string
	deadline time.Time

	mu       sync.Mutex
	failures []roFailure
	events   []roEvent
	counts   map[string]int
}

type roFailure struct {
	client    int
	at        time.Time
	invariant string
	detail    string
	traffic   string
	file      string // the client's whole recent log
}

// saveLog writes the client's recent traffic to a file in the temporary
// directory, kept after the test, and returns its name.
func (r *roRun) saveLog(c *roClient) string {
	name := filepath.Join(os.TempDir(), fmt.Sprintf("replyorder-%d-client%d-%s.log", r.seed, c.id, time.Now().Format("150405.000")))
	if err := os.WriteFile(name, []byte(c.log.tail(roLogSize)+"\n"), 0o644); err != nil {
		return ""
	}
	return name
}

type roEvent struct {
	at   time.Time
	what string
}

// fail records a broken invariant with the client's recent traffic (c nil:
// not a client's).
func (r *roRun) fail(c *roClient, invariant, detail string) {
	f := roFailure{client: -1, at: time.Now(), invariant: invariant, detail: detail}
	if c != nil {
		f.client, f.traffic = c.id, c.log.tail(roLogShown)
		f.file = r.saveLog(c)
		if c.tainted {
			f.detail += " (after an earlier failure of this client, which may be the cause)"
		}
	}
	r.mu.Lock()
	r.failures = append(r.failures, f)
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "%s: client %d: %s: %s (replay with REPLYORDER_SEED=%d)\n", r.test, f.client, invariant, detail, r.seed)
}

// event records a fault or a topology change.
func (r *roRun) event(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, roEvent{at: time.Now(), what: fmt.Sprintf(format, args...)})
	r.mu.Unlock()
}

func (r *roRun) count(name string) {
	r.mu.Lock()
	r.counts[name]++
	r.mu.Unlock()
}

// eventsAround lists the events from 10 s before at to 1 s after.
func (r *roRun) eventsAround(at time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.at.After(at.Add(-10*time.Second)) && e.at.Before(at.Add(time.Second)) {
			out = append(out, e.at.Format("15:04:05.000")+" "+e.what)
		}
	}
	if len(out) == 0 {
		return "    (none)"
	}
	return "    " + strings.Join(out, "\n    ")
}

func TestReplyOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a topology under faults for a minute")
	}
	cfg := roConfigFromEnv(t, roFaultKinds, 60*time.Second)
	fmt.Fprintf(os.Stderr, "TestReplyOrder: seed %d, %v, %d clients (replay with REPLYORDER_SEED=%d)\n", cfg.seed, cfg.duration, cfg.clients, cfg.seed)
	t.Logf("seed %d, duration %v, %d clients, faults %v", cfg.seed, cfg.duration, cfg.clients, cfg.faults)

	src := &shimSource{seed: cfg.seed}
	st := startStack(t, stackOptions{Password: testPassword, HoldTimeout: 10 * time.Second,
		WrapSource: func(in proxy.MasterSource) proxy.MasterSource { src.inner = in; return src }})
	t.Cleanup(src.close) // before the stack stops (cleanups run last first)

	run := &roRun{test: t.Name(), seed: cfg.seed, addr: st.Addr, password: testPassword, counts: map[string]int{},
		prefix: fmt.Sprintf("ro:%d:", cfg.seed%1_000_000), deadline: time.Now().Add(cfg.duration)}
	rng := rand.New(rand.NewSource(cfg.seed))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	baseGoroutines := runtime.NumGoroutine()
	mem := startMemSampler(ctx, run)
	faults := startFaults(ctx, run, st, src, rng.Int63(), cfg.faults)
	clients := make([]*roClient, cfg.clients)
	var wg sync.WaitGroup
	for i := range clients {
		c := &roClient{run: run, id: i, rng: rand.New(rand.NewSource(rng.Int63()))}
		clients[i] = c
		wg.Add(1)
		go func() { defer wg.Done(); c.loop() }()
	}
	wg.Wait()
	faults.wait()
	if len(st.done) > 0 {
		run.fail(nil, "Serve and the watcher keep running", "one of them returned while clients were connected")
	}
	mem.stop()

	roCheckFinal(t, run, st, clients, faults)
	roCheckResources(t, run, st.Server, mem, baseGoroutines)
	roReport(t, run, clients, src)
}

// roCheckFinal reads every counter and value back from the final master.
func roCheckFinal(t *testing.T, run *roRun, st *stack, clients []*roClient, faults *roFaults) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := st.Topo.WaitStable(ctx); err != nil {
		t.Logf("topology not stable at the end (reading from the current master anyway): %v", err)
	}
	var addr string
	for addr == "" && ctx.Err() == nil {
		if a, err := st.Topo.CurrentMaster(ctx); err == nil {
			addr = a
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if addr == "" {
		run.fail(nil, "a master at the end", "the sentinels agree on no master")
		return
	}
	for db := range roDBs {
		rc := st.Direct(st.Topo.NodeByAddr(addr), db)
		for _, c := range clients {
			if c.stopped {
				continue // it gave up after repeated failures, all reported
			}
			c.checkStored(ctx, rc, db, faults.lossNote())
		}
		rc.Close()
	}
}

// checkStored compares what the final master (or cluster) holds in db
// with what the client was told; note explains losses that may not be the
// proxy's.
func (c *roClient) checkStored(ctx context.Context, rc redis.Cmdable, db int, note string) {
	for i := range roCounters {
		v, err := rc.Get(ctx, c.key("n", i)).Int64()
		if err != nil && err != redis.Nil {
			c.run.fail(c, "counters read back", err.Error())
			return
		}
		if err := c.counters[db][i].check(v); err != nil {
			c.run.fail(c, "no acknowledged INCR lost, none run twice", fmt.Sprintf("db %d %s: %v%s", db, c.key("n", i), err, note))
		}
	}
	n := roKeys + 1
	if c.run.cluster {
		n += roKeys // the keys in the client's second hash tag
	}
	for i := range n {
		k, st := c.key("big", 0), &c.big[db]
		switch {
		case i < roKeys:
			k, st = c.key("k", i), &c.values[db][i]
		case i > roKeys:
			k, st = c.xkey(i-roKeys-1), &c.xvalues[i-roKeys-1]
		}
		v, err := rc.Get(ctx, k).Result()
		if err != nil && err != redis.Nil {
			c.run.fail(c, "values read back", err.Error())
			return
		}
		if err := st.observe(v, err == redis.Nil); err != nil {
			c.run.fail(c, "no acknowledged SET lost", fmt.Sprintf("db %d %s: %v%s", db, k, err, note))
		}
	}
}

// roCheckResources checks the process's memory and goroutines during the
// run, and that the proxy let go of every client afterwards.
func roCheckResources(t *testing.T, run *roRun, srv *proxy.Server, mem *memSampler, base int) {
	heap, gs := mem.peak()
	t.Logf("peak heap in use %d MiB, peak goroutines %d (%d before the load)", heap>>20, gs, base)
	if heap > roMaxHeap {
		run.fail(nil, "memory stays bounded", fmt.Sprintf("heap in use reached %d MiB (bound %d MiB)", heap>>20, roMaxHeap>>20))
	}
	if gs > roMaxGoroutines {
		run.fail(nil, "goroutines stay bounded", fmt.Sprintf("%d goroutines (bound %d)", gs, roMaxGoroutines))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := srv.Stats()
		if s.Clients == 0 && s.Pinned == 0 {
			return
		}
		if time.Now().After(deadline) {
			run.fail(nil, "the proxy releases closed clients", fmt.Sprintf("15 s after every client closed: %d clients, %d pinned", s.Clients, s.Pinned))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// roReport prints the run's figures and every recorded failure.
func roReport(t *testing.T, run *roRun, clients []*roClient, src *shimSource) {
	var cmds, reconnects int64
	var outs [3]int64
	for _, c := range clients {
		cmds += c.commands
		reconnects += int64(c.reconnect)
		for i := range outs {
			outs[i] += c.outcomes[i]
		}
	}
	run.mu.Lock()
	names := make([]string, 0, len(run.counts))
	for k := range run.counts {
		names = append(names, fmt.Sprintf("%s %d", k, run.counts[k]))
	}
	failures := slices.Clone(run.failures)
	run.mu.Unlock()
	slices.Sort(names)
	sh := src.stats()
	t.Logf("seed %d: %d commands (%d ran, %d did not run, %d may have run), %d reconnects; faults: %s; shims: %d connections, %d cut, %d commands answered by the shim on %d connections",
		run.seed, cmds, outs[ran], outs[notRun], outs[mayRun], reconnects, strings.Join(names, ", "), sh.Accepted, sh.Cuts, sh.Injected, sh.Refusals)
	if cmds == 0 {
		t.Errorf("no command was sent (replay with REPLYORDER_SEED=%d)", run.seed)
	}
	if len(failures) > 0 {
		byInv := map[string]int{}
		for _, f := range failures {
			byInv[f.invariant]++
		}
		var lines []string
		for inv, n := range byInv {
			lines = append(lines, fmt.Sprintf("  %3d × %s", n, inv))
		}
		slices.Sort(lines)
		t.Errorf("seed %d: %d failures by invariant (replay with REPLYORDER_SEED=%d):\n%s", run.seed, len(failures), run.seed, strings.Join(lines, "\n"))
	}
	for i, f := range failures {
		if i == 30 {
			t.Errorf("… and %d more failures (replay with REPLYORDER_SEED=%d)", len(failures)-30, run.seed)
			break
		}
		who := "the run"
		if f.client >= 0 {
			who = fmt.Sprintf("client %d", f.client)
		}
		msg := fmt.Sprintf("%s at %s: invariant %q broken: %s\nreplay with REPLYORDER_SEED=%d\nfaults and topology changes just before:\n%s",
			who, f.at.Format("15:04:05.000"), f.invariant, f.detail, run.seed, run.eventsAround(f.at))
		if f.traffic != "" {
			msg += "\nthe client's last commands and replies (all of the last " + strconv.Itoa(roLogSize) + " in " + f.file + "):\n" + f.traffic
		}
		t.Error(msg)
	}
}
