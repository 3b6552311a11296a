package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// The reply-order test's fault injector. Topology faults (planned
// failover, kill -9, SIGSTOP of the master) run one at a time, each after
// the topology is stable again; light faults (CLIENT KILL of the proxy's
// backend connections, shim cuts, -LOADING/-READONLY answers) run every few
// hundred milliseconds meanwhile, on the current master's shim.
//
// Faults must not break an invariant for reasons outside the proxy:
//   - Redis replicates asynchronously, so a kill -9 can lose acknowledged
//     writes that never reached a replica. Before a kill the injector
//     pauses the master's writes (CLIENT PAUSE WRITE) and waits until every
//     replica has its whole replication stream; commands held by the pause
//     die with the process unrun. A kill is skipped when the replicas do
//     not catch up within 3 s. So no acknowledged write is lost legitimately
//     and the counters are checked exactly.
//   - A SIGSTOP is shorter than down-after (2 s): no failover follows.
//   - While the master is frozen (SIGSTOP, the pause before a kill) no
//     connection is cut: a write answered "may have run" could then still
//     run after later writes of the same client when the master wakes.
//   - A failover the test did not cause (Sentinel deciding on its own under
//     load) would void the first point: it is recorded, and every loss
//     reported after it says so.

type roFaults struct {
	run     *roRun
	st      *stack
	src     *shimSource
	rng     *rand.Rand
	enabled map[string]bool

	frozen    atomic.Bool // no light fault while set
	expecting atomic.Bool // a master change now is the test's doing
	unplanned atomic.Int64

	wg sync.WaitGroup
	lf *lightFaults
}

func startFaults(ctx context.Context, run *roRun, st *stack, src *shimSource, seed int64, enabled map[string]bool) *roFaults {
	f := &roFaults{run: run, st: st, src: src, rng: rand.New(rand.NewSource(seed)), enabled: enabled}
	// Each -READONLY holds its client up to the hold timeout (10 s): the
	// proxy waits for another master, then passes -READONLY on.
	f.lf = &lightFaults{run: run, src: src, rng: f.rng, roGap: 10 * time.Second, direct: func(addr string) *redis.Client {
		if n := st.Topo.NodeByAddr(addr); n != nil {
			return st.Direct(n, 0)
		}
		return nil
	}}
	heavy := rand.New(rand.NewSource(f.rng.Int63()))
	f.wg.Add(3)
	go func() { defer f.wg.Done(); f.heavyLoop(ctx, heavy) }()
	go func() { defer f.wg.Done(); f.lightLoop(ctx) }()
	go func() { defer f.wg.Done(); f.watchMaster(ctx) }()
	return f
}

func (f *roFaults) wait() { f.wg.Wait() }

// lossNote explains losses when a failover happened that the test did not
// cause.
func (f *roFaults) lossNote() string {
	if n := f.unplanned.Load(); n > 0 {
		return fmt.Sprintf(" (NOTE: %d failover(s) the test did not cause happened; Redis's asynchronous replication may lose acknowledged writes then)", n)
	}
	return ""
}

// heavyLoop runs topology faults, one at a time, until 10 s before the end.
func (f *roFaults) heavyLoop(ctx context.Context, rng *rand.Rand) {
	kinds := enabledKinds(f.enabled, "failover", "kill", "sigstop")
	if len(kinds) == 0 {
		return
	}
	for f.run.sleep(ctx, time.Duration(2000+rng.Intn(4000))*time.Millisecond) {
		if time.Until(f.run.deadline) < 10*time.Second {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		err := f.st.Topo.WaitStable(sctx)
		cancel()
		if err != nil {
			f.run.event("topology not stable, no topology fault this time: %v", err)
			continue
		}
		if time.Until(f.run.deadline) < 10*time.Second {
			return
		}
		switch kind := kinds[rng.Intn(len(kinds))]; kind {
		case "failover":
			f.failover(ctx)
		case "kill":
			f.kill(ctx)
		case "sigstop":
			f.sigstop(ctx, time.Duration(200+rng.Intn(700))*time.Millisecond)
		}
	}
}

// master returns the node the sentinels agree is master, or nil.
func (f *roFaults) master(ctx context.Context) *topology.Node {
	addr, err := f.st.Topo.CurrentMaster(ctx)
	if err != nil {
		return nil
	}
	return f.st.Topo.NodeByAddr(addr)
}

func (f *roFaults) failover(ctx context.Context) {
	m := f.master(ctx)
	if m == nil {
		return
	}
	f.expecting.Store(true)
	defer f.expecting.Store(false)
	f.run.event("SENTINEL FAILOVER (master %s)", m.Addr)
	f.run.count("failover")
	if err := f.st.Topo.Failover(ctx); err != nil {
		f.run.event("SENTINEL FAILOVER refused: %v", err)
		return
	}
	f.awaitSwitch(ctx, m.Addr)
}

// awaitSwitch waits until the sentinels agree on a master other than old
// and the watcher names it.
func (f *roFaults) awaitSwitch(ctx context.Context, old string) string {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	addr, err := f.st.Topo.WaitForNewMaster(wctx, old)
	if err != nil {
		f.run.event("no new master after the fault: %v", err)
		return ""
	}
	for wctx.Err() == nil {
		if got, _ := f.src.inner.Master(); got == addr {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.run.event("new master %s (watcher follows)", addr)
	return addr
}

// quiesce pauses the master's writes and waits until every replica has
// its whole replication stream. It returns the client to unpause with, or
// nil when the replicas did not catch up (the pause is lifted then).
func (f *roFaults) quiesce(ctx context.Context, m *topology.Node) *redis.Client {
	c := f.st.Direct(m, 0)
	f.frozen.Store(true)
	if err := pauseCaughtUp(ctx, c); err != nil {
		f.frozen.Store(false)
		c.Close()
		f.run.event("%s: %v", m.Addr, err)
		return nil
	}
	return c
}

// pauseCaughtUp pauses the writes of the master c is connected to (CLIENT
// PAUSE WRITE, 5 s) and waits up to 3 s until its replicas have its whole
// replication stream. When they do not, it lifts the pause and says so.
func pauseCaughtUp(ctx context.Context, c *redis.Client) error {
	if err := c.Do(ctx, "CLIENT", "PAUSE", "5000", "WRITE").Err(); err != nil {
		return fmt.Errorf("CLIENT PAUSE failed: %w", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if caughtUp(ctx, c) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Do(ctx, "CLIENT", "UNPAUSE")
	return errors.New("replicas did not catch up in 3 s: no kill this time")
}

// caughtUp reports whether at least one replica is online and every online
// replica's offset is the master's.
func caughtUp(ctx context.Context, c *redis.Client) bool {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return false
	}
	offset := infoField(info, "master_repl_offset")
	online := 0
	for i := 0; ; i++ {
		line := infoField(info, "slave"+strconv.Itoa(i))
		if line == "" {
			break
		}
		fields := map[string]string{}
		for _, kv := range strings.Split(line, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				fields[k] = v
			}
		}
		if fields["state"] != "online" {
			continue
		}
		if fields["offset"] != offset {
			return false
		}
		online++
	}
	return online > 0
}

func (f *roFaults) kill(ctx context.Context) {
	m := f.master(ctx)
	if m == nil {
		return
	}
	// Two soaks ended without a master when the master killed was a node
	// restarted (empty) less than a minute before and promoted since:
	// Sentinel then found no replica good enough ("-failover-abort-no-
	// good-slave") and never failed over. That is Sentinel's, not the
	// proxy's: such a master is not killed.
	if up := f.uptime(ctx, m); up < roKillMinUptime {
		f.run.event("master %s up for only %v: no kill this time", m.Addr, up)
		return
	}
	c := f.quiesce(ctx, m)
	if c == nil {
		return
	}
	c.Close()
	f.expecting.Store(true)
	defer f.expecting.Store(false)
	err := m.Kill()
	f.frozen.Store(false)
	f.run.event("kill -9 of the master %s (writes paused, replicas caught up): %v", m.Addr, err)
	f.run.count("kill")
	next := f.awaitSwitch(ctx, m.Addr)
	if next == "" {
		return
	}
	// Back as a replica of the new master, so the topology keeps three
	// data nodes (a restarted master would come back empty as a master).
	host, port, _ := strings.Cut(next, ":")
	conf, err := os.OpenFile(m.ConfigPath(), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(conf, "\nreplicaof %s %s\n", host, port)
		conf.Close()
	}
	if err == nil {
		err = m.Restart(ctx)
	}
	f.run.event("restarted %s as a replica of %s: %v", m.Addr, next, err)
}

// roKillMinUptime is how long a master must have run before it may be
// killed (see kill).
const roKillMinUptime = 60 * time.Second

// uptime returns how long m's process has run (0 when it cannot tell).
func (f *roFaults) uptime(ctx context.Context, m *topology.Node) time.Duration {
	c := f.st.Direct(m, 0)
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return 0
	}
	secs, _ := strconv.Atoi(infoField(info, "uptime_in_seconds"))
	return time.Duration(secs) * time.Second
}

func (f *roFaults) sigstop(ctx context.Context, d time.Duration) {
	m := f.master(ctx)
	if m == nil {
		return
	}
	f.frozen.Store(true)
	defer f.frozen.Store(false)
	if err := m.Pause(); err != nil {
		f.run.event("SIGSTOP of %s failed: %v", m.Addr, err)
		return
	}
	f.run.event("SIGSTOP of the master %s for %v", m.Addr, d)
	f.run.count("sigstop")
	time.Sleep(d)
	err := m.Resume()
	f.run.event("SIGCONT of %s: %v", m.Addr, err)
	time.Sleep(500 * time.Millisecond) // let it work off what it received while stopped
}

// lightLoop injects the light faults until the end of the run.
func (f *roFaults) lightLoop(ctx context.Context) {
	f.lf.loop(ctx, f.enabled, &f.frozen, func() string {
		addr, _ := f.src.inner.Master()
		return addr
	})
}

// watchMaster records master changes the test did not cause.
func (f *roFaults) watchMaster(ctx context.Context) {
	last, changed := f.src.inner.Master()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(time.Until(f.run.deadline)):
			return
		}
		var addr string
		addr, changed = f.src.inner.Master()
		if addr == "" || addr == last {
			continue
		}
		if last != "" && !f.expecting.Load() {
			f.unplanned.Add(1)
			f.run.event("UNPLANNED master change %s -> %s", last, addr)
		}
		last = addr
	}
}
