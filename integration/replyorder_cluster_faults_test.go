package integration

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// The cluster reply-order test's fault injector, built as the Sentinel
// one (replyorder_faults_test.go): topology faults one at a time, each
// after the cluster is stable again (WaitStable); light faults every few
// hundred milliseconds meanwhile, on a random master's shim. The same
// precautions hold: a master is killed only with its writes paused and
// its replica caught up (so no acknowledged write is lost legitimately),
// a SIGSTOP is shorter than the node timeout, and no connection is cut
// while a master is frozen. A change of masters the test did not cause
// (the cluster failing a master over on its own) is recorded and named in
// every loss reported.

type roClusterFaults struct {
	run     *roRun
	cs      *roClusterStack
	src     *shimSource
	rng     *rand.Rand // the light faults'
	enabled map[string]bool
	slots   []int // the clients' hash-tag slots, for slot moves

	frozen    atomic.Bool // no light fault while set
	unplanned atomic.Int64

	wg      sync.WaitGroup
	mu      sync.Mutex
	masters []string // the masters after the last fault, sorted
	lf      *lightFaults
}

func startClusterFaults(ctx context.Context, run *roRun, cs *roClusterStack, src *shimSource, slots []int, seed int64, enabled map[string]bool) *roClusterFaults {
	f := &roClusterFaults{run: run, cs: cs, src: src, rng: rand.New(rand.NewSource(seed)), enabled: enabled, slots: slots}
	f.lf = &lightFaults{run: run, src: src, rng: f.rng, roGap: roClusterHold, direct: roDirect}
	f.masters = f.currentMasters(ctx)
	heavy := rand.New(rand.NewSource(f.rng.Int63()))
	f.wg.Add(2)
	go func() { defer f.wg.Done(); f.heavyLoop(ctx, heavy) }()
	go func() { defer f.wg.Done(); f.lightLoop(ctx) }()
	return f
}

func (f *roClusterFaults) wait() { f.wg.Wait() }

// lossNote explains losses when the cluster changed masters on its own.
func (f *roClusterFaults) lossNote() string {
	if n := f.unplanned.Load(); n > 0 {
		return fmt.Sprintf(" (NOTE: %d master change(s) the test did not cause happened; Redis's asynchronous replication may lose acknowledged writes then)", n)
	}
	return ""
}

// currentMasters returns the addresses of the masters serving slots.
func (f *roClusterFaults) currentMasters(ctx context.Context) []string {
	ms, err := f.cs.cl.Masters(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Addr)
	}
	slices.Sort(out)
	return out
}

// checkMasters records a change of masters since the last fault ended,
// and takes the current ones as expected from now on.
func (f *roClusterFaults) checkMasters(ctx context.Context) {
	now := f.currentMasters(ctx)
	if now == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.masters != nil && !slices.Equal(now, f.masters) {
		f.unplanned.Add(1)
		f.run.event("UNPLANNED master change %v -> %v", f.masters, now)
	}
	f.masters = now
}

// expect takes the current masters as the test's doing.
func (f *roClusterFaults) expect(ctx context.Context) {
	now := f.currentMasters(ctx)
	f.mu.Lock()
	f.masters = now
	f.mu.Unlock()
}

// heavyLoop runs topology faults, one at a time, until 10 s before the end.
func (f *roClusterFaults) heavyLoop(ctx context.Context, rng *rand.Rand) {
	kinds := enabledKinds(f.enabled, "failover", "kill", "sigstop", "slotmove")
	if len(kinds) == 0 {
		return
	}
	for f.run.sleep(ctx, time.Duration(2000+rng.Intn(4000))*time.Millisecond) {
		if time.Until(f.run.deadline) < 10*time.Second {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		err := f.cs.cl.WaitStable(sctx)
		cancel()
		if err != nil {
			f.run.event("cluster not stable, no topology fault this time: %v", err)
			continue
		}
		f.checkMasters(ctx)
		if time.Until(f.run.deadline) < 10*time.Second {
			return
		}
		fctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		switch kind := kinds[rng.Intn(len(kinds))]; kind {
		case "failover":
			f.failover(fctx, rng)
		case "kill":
			f.kill(fctx, rng)
		case "sigstop":
			f.sigstop(fctx, rng, time.Duration(200+rng.Intn(700))*time.Millisecond)
		case "slotmove":
			f.slotMove(fctx, rng)
		}
		cancel()
		f.expect(ctx)
	}
}

// pick1 returns a random element of nodes, or nil.
func pick1(rng *rand.Rand, nodes []*topology.Node, err error) *topology.Node {
	if err != nil || len(nodes) == 0 {
		return nil
	}
	return nodes[rng.Intn(len(nodes))]
}

func (f *roClusterFaults) failover(ctx context.Context, rng *rand.Rand) {
	nodes, err := f.cs.cl.Replicas(ctx)
	r := pick1(rng, nodes, err)
	if r == nil {
		return
	}
	f.run.event("CLUSTER FAILOVER on the replica %s", r.Addr)
	f.run.count("failover")
	err = f.cs.cl.Failover(ctx, r)
	f.run.event("CLUSTER FAILOVER on %s done: %v", r.Addr, err)
}

func (f *roClusterFaults) kill(ctx context.Context, rng *rand.Rand) {
	nodes, err := f.cs.cl.Masters(ctx)
	m := pick1(rng, nodes, err)
	if m == nil {
		return
	}
	c := roDirect(m.Addr)
	f.frozen.Store(true)
	err = pauseCaughtUp(ctx, c)
	c.Close()
	if err != nil {
		f.frozen.Store(false)
		f.run.event("%s: %v", m.Addr, err)
		return
	}
	err = m.Kill()
	f.frozen.Store(false)
	f.run.event("kill -9 of the master %s (writes paused, replica caught up): %v", m.Addr, err)
	f.run.count("kill")
	if err := f.cs.cl.WaitStable(ctx); err != nil {
		f.run.event("no stable cluster after the kill: %v", err)
	} else {
		f.run.event("replica of %s took over", m.Addr)
	}
	// It comes back from nodes.conf, empty, and the cluster makes it a
	// replica of the master that took its slots.
	err = m.Restart(ctx)
	f.run.event("restarted %s: %v", m.Addr, err)
	if err == nil {
		if err := f.cs.cl.WaitStable(ctx); err != nil {
			f.run.event("no stable cluster after the restart: %v", err)
		}
	}
}

func (f *roClusterFaults) sigstop(ctx context.Context, rng *rand.Rand, d time.Duration) {
	nodes, err := f.cs.cl.Masters(ctx)
	m := pick1(rng, nodes, err)
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
	err = m.Resume()
	f.run.event("SIGCONT of %s: %v", m.Addr, err)
	time.Sleep(500 * time.Millisecond) // let it work off what it received while stopped
}

// slotMove moves one of the clients' slots to another master (3 in 4), or
// reshards a few slots between two masters.
func (f *roClusterFaults) slotMove(ctx context.Context, rng *rand.Rand) {
	masters, err := f.cs.cl.Masters(ctx)
	if err != nil || len(masters) < 2 {
		return
	}
	if rng.Intn(4) > 0 {
		slot := f.slots[rng.Intn(len(f.slots))]
		from, err := f.cs.cl.MasterOf(ctx, slot)
		if err != nil {
			return
		}
		to := masters[rng.Intn(len(masters))]
		for to == from {
			to = masters[rng.Intn(len(masters))]
		}
		f.run.event("moving slot %d from %s to %s", slot, from.Addr, to.Addr)
		f.run.count("slotmove")
		err = f.cs.cl.MoveSlot(ctx, slot, to)
		f.run.event("slot %d moved: %v", slot, err)
		return
	}
	i := rng.Intn(len(masters))
	from, to := masters[i], masters[(i+1+rng.Intn(len(masters)-1))%len(masters)]
	n := 1 + rng.Intn(5)
	f.run.event("resharding %d slots from %s to %s", n, from.Addr, to.Addr)
	f.run.count("reshard")
	moved, err := f.cs.cl.Reshard(ctx, from, to, n)
	f.run.event("resharded slots %v: %v", moved, err)
}

// lightLoop injects the light faults on a random master's shim until the
// end of the run.
func (f *roClusterFaults) lightLoop(ctx context.Context) {
	f.lf.loop(ctx, f.enabled, &f.frozen, func() string {
		masters := f.cs.router.Masters()
		if len(masters) == 0 {
			return ""
		}
		return f.src.real(masters[f.rng.Intn(len(masters))])
	})
}

// roDirect returns a client straight to the cluster node addr, RESP2, no
// retries. The caller closes it.
func roDirect(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: testPassword, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1, ReadTimeout: 10 * time.Second})
}
