package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// switchWait bounds how long the demo waits for the proxy to route to a new
// master after a failover or a kill (they take 1 to 5 s here).
const switchWait = 30 * time.Second

// demo is one run of the script against one group.
//
// Goroutines, all started and joined by run: one per writer, the reporter
// (a line per second), the follower (a note at each change of the master
// the proxy routes to) and one rejoin watcher per displaced master. Each
// ends when the script's context does.
type demo struct {
	cfg   demoConfig
	topo  *topology.Topology
	g     *group
	out   io.Writer // safe for concurrent use
	start time.Time

	acked, failed atomic.Int64
	waiting       atomic.Int64 // writers in an INCR now

	mu      sync.Mutex
	notes   []string       // for the next line
	errs    map[string]int // error text → count
	event   string         // the last scripted event, for "took" notes
	eventAt time.Time
	masters []string // each master the proxy routed to, in order
}

func newDemo(cfg demoConfig, topo *topology.Topology, g *group, out io.Writer) *demo {
	return &demo{cfg: cfg, topo: topo, g: g, out: out, errs: make(map[string]int)}
}

// run plays the script and prints the summary. It returns the master the
// proxy routes to at the end, and an error if the script could not be
// played or an acknowledged write was lost. A cancelled ctx (Ctrl-C) ends
// it early with a short summary and no error.
func (d *demo) run(ctx context.Context) (string, error) {
	master, err := d.waitMaster(ctx)
	if err != nil {
		return "", d.quit(ctx, err)
	}
	d.intro(master)

	c := redis.NewClient(&redis.Options{
		Addr: d.g.addr,
		// No client retries: the proxy alone has to hide the failover.
		MaxRetries: -1,
		PoolSize:   d.cfg.Writers,
		// Longer than the proxy's hold, so that a client timeout never
		// hides what the proxy answered.
		ReadTimeout:  20 * time.Second,
		WriteTimeout: 20 * time.Second,
	})
	defer c.Close()

	sctx, stop := context.WithDeadline(ctx, time.Now().Add(d.cfg.Duration))
	defer stop()
	d.start = time.Now()
	counters := make([]counter, d.cfg.Writers) // writer i owns counters[i] until wg.Wait
	var wg sync.WaitGroup
	for i := range counters {
		counters[i].key = "demo:counter:" + strconv.Itoa(i+1)
		wg.Go(func() { d.write(sctx, c, &counters[i]) })
	}
	wg.Go(func() { d.report(sctx) })
	wg.Go(func() { d.follow(sctx) })

	scriptErr := d.script(sctx, &wg)
	if scriptErr == nil {
		<-sctx.Done() // the script ran ahead of Duration: steady writes until then
	}
	stop()
	wg.Wait()
	if ctx.Err() != nil {
		d.printf("\ninterrupted at t+%s: %d writes acknowledged, %d errors; stopping everything\n",
			secs(time.Since(d.start)), d.acked.Load(), d.failed.Load())
		return "", nil
	}
	if n := d.takeNotes(); n != "" {
		d.printf("  t+%-4s %s\n", secs(time.Since(d.start)), n)
	}
	final, err := d.summary(ctx, counters)
	return final, errors.Join(scriptErr, err)
}

// quit maps an error before the script started: none on Ctrl-C.
func (d *demo) quit(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("demo: %w", err)
}

// waitMaster waits until the proxy has a verified master.
func (d *demo) waitMaster(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, switchWait)
	defer cancel()
	for {
		addr, changed := d.g.watcher.Master()
		if addr != "" {
			return addr, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("no verified master after %v: %s", switchWait, d.g.watcher.Status().Error)
		}
	}
}

func (d *demo) intro(master string) {
	kill := "no kill"
	if d.cfg.Steady+d.cfg.KillAfter < d.cfg.Duration && d.cfg.KillAfter > 0 {
		kill = fmt.Sprintf("t+%s kill -9 of the master, then its restart", secs(d.cfg.Steady+d.cfg.KillAfter))
	}
	d.printf(`
proxy %s in front of %s (master %s, sentinels %v)
%d clients INCR their own counter through the proxy, %d writes/s in all, go-redis with
no retries. Script: t+%s SENTINEL FAILOVER; %s; summary at t+%s.
Ctrl-C stops everything.

`, d.g.addr, d.topo.MasterName(), d.name(master), d.topo.SentinelAddrs(),
		d.cfg.Writers, d.cfg.Rate, secs(d.cfg.Steady), kill, secs(d.cfg.Duration))
}

// script plays the scheduled events; helpers it starts join wg.
func (d *demo) script(ctx context.Context, wg *sync.WaitGroup) error {
	if err := d.sleepUntil(ctx, d.cfg.Steady); err != nil {
		return nil
	}
	old, _ := d.g.watcher.Master()
	d.mark("SENTINEL FAILOVER")
	d.note("failover: SENTINEL FAILOVER sent")
	if err := d.topo.Failover(ctx); err != nil {
		return d.fail(ctx, err)
	}
	if _, err := d.waitSwitch(ctx, old); err != nil {
		return d.fail(ctx, err)
	}
	if n := d.topo.NodeByAddr(old); n != nil {
		wg.Go(func() { d.watchRejoin(ctx, n, "old master", "the switch", time.Now()) })
	}

	if d.cfg.KillAfter <= 0 || d.cfg.Steady+d.cfg.KillAfter >= d.cfg.Duration {
		return nil
	}
	if err := d.sleepUntil(ctx, d.cfg.Steady+d.cfg.KillAfter); err != nil {
		return nil
	}
	cur, _ := d.g.watcher.Master()
	n := d.topo.NodeByAddr(cur)
	if n == nil {
		return d.fail(ctx, fmt.Errorf("the proxy routes to %q, not a node of the topology", cur))
	}
	d.mark("the kill")
	d.note(fmt.Sprintf("kill -9 of master %s (pid %d)", n.Name, n.PID()))
	if err := n.Kill(); err != nil {
		return d.fail(ctx, err)
	}
	if _, err := d.waitSwitch(ctx, cur); err != nil {
		return d.fail(ctx, err)
	}
	// Never before the sentinels have seen it down: back that soon, empty,
	// it would be resynced from by its replicas.
	if !d.cfg.QuickRestart {
		next, err := d.topo.WaitForNewMaster(ctx, cur)
		if err != nil {
			return d.fail(ctx, err)
		}
		d.note(fmt.Sprintf("every sentinel names %s now; restarting %s", d.name(next), n.Name))
	}
	if err := n.Restart(ctx); err != nil {
		return d.fail(ctx, err)
	}
	d.note(fmt.Sprintf("%s restarted, empty and claiming to be a master until Sentinel demotes it; the proxy sends it nothing", n.Name))
	wg.Go(func() { d.watchRejoin(ctx, n, "killed master", "its restart", time.Now()) })
	return nil
}

// fail notes a script failure, unless the script is simply over.
func (d *demo) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	d.note("script stopped: " + err.Error())
	return fmt.Errorf("demo: %w", err)
}

func (d *demo) sleepUntil(ctx context.Context, at time.Duration) error {
	t := time.NewTimer(time.Until(d.start.Add(at)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitSwitch waits until the proxy routes to a master other than old.
func (d *demo) waitSwitch(ctx context.Context, old string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, switchWait)
	defer cancel()
	for {
		addr, changed := d.g.watcher.Master()
		if addr != "" && addr != old {
			return addr, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("the proxy still has no new master %v after %s", switchWait, d.eventName())
		}
	}
}

// counter is one writer's key and what INCR acknowledged on it.
type counter struct {
	key   string
	acked int64 // INCRs answered with a value
	last  int64 // the last value acknowledged
	back  int   // replies not above the last one: two masters acknowledged
}

// write INCRs its counter at its share of the rate until ctx ends.
func (d *demo) write(ctx context.Context, c *redis.Client, k *counter) {
	tick := time.NewTicker(time.Second * time.Duration(d.cfg.Writers) / time.Duration(d.cfg.Rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C: // a slow reply drops ticks: no burst afterwards
		}
		d.waiting.Add(1)
		v, err := c.Incr(ctx, k.key).Result()
		d.waiting.Add(-1)
		if err != nil {
			if ctx.Err() != nil {
				return // stopped mid-command: neither acknowledged nor an error
			}
			d.failed.Add(1)
			d.mu.Lock()
			d.errs[err.Error()]++
			d.mu.Unlock()
			continue
		}
		d.acked.Add(1)
		k.acked++
		if v <= k.last {
			k.back++
			d.note(fmt.Sprintf("WRITES LOST: %s went back from %d to %d", k.key, k.last, v))
		}
		k.last = v
	}
}

// report prints a line per second.
func (d *demo) report(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	prev, prevAt := int64(0), d.start
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-tick.C:
		}
		acked, failed := d.acked.Load(), d.failed.Load()
		rate := float64(acked-prev) / now.Sub(prevAt).Seconds()
		prev, prevAt = acked, now
		line := fmt.Sprintf("  t+%-4s writes/s %5.0f  errors %d  master %s",
			secs(now.Sub(d.start)), rate, failed, d.proxyMaster())
		if w := d.waiting.Load(); rate < float64(d.cfg.Rate)/2 && w > 0 {
			line += fmt.Sprintf("  [%d writes waiting for a reply]", w)
		}
		if n := d.takeNotes(); n != "" {
			line += "  (" + n + ")"
		}
		d.printf("%s\n", line)
	}
}

// proxyMaster is the master as the proxy sees it now.
func (d *demo) proxyMaster() string {
	st := d.g.watcher.Status()
	if st.Master != "" {
		return d.name(st.Master)
	}
	why := st.Error
	if st.FailoverInProgress {
		why = "failover in progress"
	}
	if why == "" {
		return "none, commands held"
	}
	return "none, commands held (" + why + ")"
}

// follow notes every change of the master the proxy routes to.
func (d *demo) follow(ctx context.Context) {
	addr, changed := d.g.watcher.Master()
	d.mu.Lock()
	d.masters = append(d.masters, addr)
	d.mu.Unlock()
	held := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		addr, changed = d.g.watcher.Master()
		d.mu.Lock()
		switch {
		case addr == "" && !held:
			held = true
			d.notes = append(d.notes, "the proxy holds commands: no verified master")
		case addr != "" && addr != d.masters[len(d.masters)-1]:
			held = false
			d.masters = append(d.masters, addr)
			n := "new master " + d.name(addr) + " verified and in use by the proxy"
			if d.event != "" {
				n += fmt.Sprintf(", %s after %s", time.Since(d.eventAt).Round(time.Millisecond), d.event)
			}
			d.notes = append(d.notes, n)
		case addr != "" && held:
			held = false
			d.notes = append(d.notes, "the proxy routes to "+d.name(addr)+" again")
		}
		d.mu.Unlock()
	}
}

// watchRejoin notes when n is a connected replica of the proxy's master;
// since is when event happened.
func (d *demo) watchRejoin(ctx context.Context, n *topology.Node, what, event string, since time.Time) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		of, err := replicaOf(ctx, n)
		if cur, _ := d.g.watcher.Master(); err == nil && of != "" && of == cur {
			d.note(fmt.Sprintf("%s %s back as a replica of %s, %s after %s",
				what, n.Name, d.name(of), secs(time.Since(since)), event))
			return
		}
	}
}

// replicaOf returns the master n replicates from with its link up, or ""
// when it is not such a replica.
func replicaOf(ctx context.Context, n *topology.Node) (string, error) {
	v, err := n.Client().Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", err
	}
	if len(v) < 4 || v[0] != "slave" || v[3] != "connected" {
		return "", nil
	}
	host, _ := v[1].(string)
	port, _ := v[2].(int64)
	return net.JoinHostPort(host, strconv.FormatInt(port, 10)), nil
}

func (d *demo) mark(event string) {
	d.mu.Lock()
	d.event, d.eventAt = event, time.Now()
	d.mu.Unlock()
}

func (d *demo) eventName() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.event
}

func (d *demo) note(s string) {
	d.mu.Lock()
	d.notes = append(d.notes, s)
	d.mu.Unlock()
}

func (d *demo) takeNotes() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := strings.Join(d.notes, "; ")
	d.notes = nil
	return s
}

// name is addr with the node's name, e.g. "127.0.0.1:40123 (redis-2)".
func (d *demo) name(addr string) string {
	if n := d.topo.NodeByAddr(addr); n != nil {
		return addr + " (" + n.Name + ")"
	}
	return addr
}

func (d *demo) printf(format string, a ...any) { fmt.Fprintf(d.out, format, a...) }

// secs renders a duration in whole seconds, e.g. "12s".
func secs(t time.Duration) string { return strconv.Itoa(int(t.Round(time.Second)/time.Second)) + "s" }

// summary prints the counts and checks every acknowledged INCR against the
// final master. It returns that master, and an error if a write was lost.
func (d *demo) summary(ctx context.Context, counters []counter) (string, error) {
	elapsed := time.Since(d.start)
	acked, failed := d.acked.Load(), d.failed.Load()
	d.mu.Lock()
	errs := maps.Clone(d.errs)
	masters := slices.Clone(d.masters)
	d.mu.Unlock()

	d.printf("\nsummary after %s\n", secs(elapsed))
	d.printf("  writes acknowledged: %d (%.0f/s on average)\n", acked, float64(acked)/elapsed.Seconds())
	d.printf("  errors: %d\n", failed)
	texts := slices.Collect(maps.Keys(errs))
	slices.SortFunc(texts, func(a, b string) int { return cmp.Or(cmp.Compare(errs[b], errs[a]), cmp.Compare(a, b)) })
	for _, t := range texts {
		d.printf("    %6d × %s\n", errs[t], t)
	}
	names := make([]string, len(masters))
	for i, m := range masters {
		names[i] = d.name(m)
	}
	d.printf("  masters the proxy routed to: %s\n", strings.Join(names, " → "))

	master, vals, err := d.readBack(ctx, counters)
	if err != nil && ctx.Err() != nil {
		d.printf("  interrupted before the read-back\n")
		return "", nil
	}
	if err != nil {
		d.printf("  lost acknowledged writes: unknown, read-back failed: %v\n", err)
		return "", fmt.Errorf("demo: read back: %w", err)
	}
	// The counters start at 0 and only INCR writes them: each must hold at
	// least its acknowledged INCRs (more if some answered with an error
	// ran), and no reply may have gone back.
	var lost, sum int64
	back := 0
	for i, k := range counters {
		sum += vals[i]
		lost += max(k.acked-vals[i], 0)
		back += k.back
	}
	d.printf("  read back from the final master %s: %d counters sum to %d for %d acknowledged INCRs\n"+
		"    (and %d answered with an error, which may or may not have run)\n",
		d.name(master), len(counters), sum, acked, failed)
	if back > 0 {
		d.printf("  INCR replies that went back (writes acknowledged by two masters): %d\n", back)
	}
	d.printf("  lost acknowledged writes: %d\n\n", lost)
	if lost > 0 || back > 0 {
		return master, fmt.Errorf("demo: %d acknowledged writes lost, %d INCR replies went back", lost, back)
	}
	return master, nil
}

// readBack reads every counter directly from the master the sentinels
// agree on (retrying while they settle), which must be the proxy's.
func (d *demo) readBack(ctx context.Context, counters []counter) (string, []int64, error) {
	ctx, cancel := context.WithTimeout(ctx, switchWait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		addr, err := d.topo.CurrentMaster(ctx)
		if proxy, _ := d.g.watcher.Master(); err == nil && addr != proxy {
			err = fmt.Errorf("the sentinels name %s, the proxy routes to %s", addr, proxy)
		}
		if err == nil {
			vals, rerr := readCounters(ctx, d.topo.NodeByAddr(addr), counters)
			if rerr == nil {
				return addr, vals, nil
			}
			err = rerr
		}
		select {
		case <-ctx.Done():
			return "", nil, err
		case <-tick.C:
		}
	}
}

func readCounters(ctx context.Context, n *topology.Node, counters []counter) ([]int64, error) {
	keys := make([]string, len(counters))
	for i, k := range counters {
		keys[i] = k.key
	}
	raw, err := n.Client().MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("mget on %s: %w", n.Name, err)
	}
	vals := make([]int64, len(raw))
	for i, r := range raw {
		if r == nil {
			continue // never written: 0
		}
		s, _ := r.(string)
		if vals[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, fmt.Errorf("mget on %s: %s: %w", n.Name, keys[i], err)
		}
	}
	return vals, nil
}
