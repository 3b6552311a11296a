package integration

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/faultshim"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// shimSource puts a faultshim in front of every master the watcher names:
// the proxy connects to the shim, and a suspicion of the shim's address is
// passed on as one of the real node's.
type shimSource struct {
	inner proxy.MasterSource
	seed  int64

	mu     sync.Mutex
	byReal map[string]*faultshim.Shim
	byShim map[string]string
}

// Master returns the shim in front of the watcher's master.
func (s *shimSource) Master() (string, <-chan struct{}) {
	addr, changed := s.inner.Master()
	if addr == "" {
		return "", changed
	}
	if sh := s.shim(addr); sh != nil {
		return sh.Addr(), changed
	}
	return addr, changed
}

// Suspect passes the suspicion on for the real node.
func (s *shimSource) Suspect(addr string) {
	s.mu.Lock()
	if real, ok := s.byShim[addr]; ok {
		addr = real
	}
	s.mu.Unlock()
	s.inner.Suspect(addr)
}

// Fenced passes the watcher's fence on as the shim in front of it.
func (s *shimSource) Fenced() string {
	f, ok := s.inner.(proxy.Fencer)
	if !ok {
		return ""
	}
	addr := f.Fenced()
	if addr == "" {
		return ""
	}
	if sh := s.shim(addr); sh != nil {
		return sh.Addr()
	}
	return addr
}

// shim returns the shim in front of real, starting it on first use (Master
// must not block; a listen on loopback does not).
func (s *shimSource) shim(real string) *faultshim.Shim {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.byReal[real]; sh != nil {
		return sh
	}
	sh, err := faultshim.New(real, s.seed+int64(len(s.byReal)))
	if err != nil {
		return nil
	}
	if s.byReal == nil {
		s.byReal, s.byShim = map[string]*faultshim.Shim{}, map[string]string{}
	}
	s.byReal[real], s.byShim[sh.Addr()] = sh, real
	return sh
}

func (s *shimSource) forReal(real string) *faultshim.Shim {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byReal[real]
}

func (s *shimSource) stats() faultshim.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all faultshim.Stats
	for _, sh := range s.byReal {
		st := sh.Stats()
		all.Accepted += st.Accepted
		all.Cuts += st.Cuts
		all.Injected += st.Injected
		all.Refusals += st.Refusals
	}
	return all
}

func (s *shimSource) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.byReal {
		sh.Close()
	}
}

// memSampler samples the heap and goroutine count while the load runs.
type memSampler struct {
	mu       sync.Mutex
	heap     uint64
	routines int
	done     chan struct{}
	cancel   context.CancelFunc
}

func startMemSampler(ctx context.Context, run *roRun) *memSampler {
	ctx, cancel := context.WithCancel(ctx)
	m := &memSampler{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(m.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			n := runtime.NumGoroutine()
			m.mu.Lock()
			m.heap, m.routines = max(m.heap, ms.HeapInuse), max(m.routines, n)
			m.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memSampler) stop() { m.cancel(); <-m.done }

func (m *memSampler) peak() (uint64, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heap, m.routines
}

// real returns the node a shim address stands for; any other address is
// returned as it is.
func (s *shimSource) real(addr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byShim[addr]; ok {
		return r
	}
	return addr
}

// front returns the shim in front of the real node addr ("" stays "").
func (s *shimSource) front(addr string) string {
	if addr == "" {
		return ""
	}
	if sh := s.shim(addr); sh != nil {
		return sh.Addr()
	}
	return addr
}

// clusterFetch is a cluster.Router's fetch through the shims: the slot map
// is read from the real nodes and installed with every node's address
// replaced by its shim's, so that the proxy's connections go through them.
// Addresses to ask that are shims are asked at their real node.
func (s *shimSource) clusterFetch(fo cluster.FetchOptions) cluster.FetchFunc {
	return func(ctx context.Context, addrs []string) (*cluster.Map, cluster.Source, error) {
		real := make([]string, len(addrs))
		for i, a := range addrs {
			real[i] = s.real(a)
		}
		m, src, err := cluster.Fetch(ctx, real, fo)
		if err != nil {
			return nil, src, err
		}
		out := *m // the slot index is an array: copied with it
		out.Shards = slices.Clone(m.Shards)
		for i := range out.Shards {
			sh := &out.Shards[i]
			sh.Master.Addr = s.front(sh.Master.Addr)
			sh.Replicas = slices.Clone(sh.Replicas)
			for j := range sh.Replicas {
				sh.Replicas[j].Addr = s.front(sh.Replicas[j].Addr)
			}
		}
		return &out, src, nil
	}
}

// dumpGoroutines writes every goroutine's stack (the proxy runs in this
// process) to a file in the temporary directory and returns its name.
func dumpGoroutines(seed int64) string {
	name := filepath.Join(os.TempDir(), fmt.Sprintf("replyorder-%d-goroutines-%s.txt", seed, time.Now().Format("150405.000")))
	f, err := os.Create(name)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	pprof.Lookup("goroutine").WriteTo(f, 2)
	return name
}

// lightFaults are the faults both reply-order tests inject through a
// node's shim (cuts, -LOADING, -READONLY) or on the node itself (CLIENT
// KILL of the proxy's connections).
type lightFaults struct {
	run   *roRun
	src   *shimSource
	rng   *rand.Rand
	roGap time.Duration // the least time between two -READONLY: each may hold its client up to the hold timeout
	// direct returns a client straight to the node addr (nil if none);
	// the caller closes it.
	direct func(addr string) *redis.Client

	lastRO, lastKill time.Time
}

func (f *lightFaults) light(ctx context.Context, kind, addr string, sh *faultshim.Shim) {
	switch kind {
	case "clientkill":
		if time.Since(f.lastKill) < time.Second {
			return
		}
		f.lastKill = time.Now()
		n := f.clientKill(ctx, addr, sh, f.rng.Intn(2) == 0)
		f.run.event("CLIENT KILL of %d proxy connections on %s", n, addr)
		f.run.count("clientkill")
	case "cutrequest", "cutreply":
		dir, name := faultshim.ToServer, "requests"
		if kind == "cutreply" {
			dir, name = faultshim.ToClient, "replies"
		}
		within := []int{16, 512, 8 << 10, 256 << 10}[f.rng.Intn(4)]
		rst := f.rng.Intn(2) == 0
		if sh.Cut(dir, within, rst) {
			f.run.event("shim %s: cut a connection within the next %d bytes of %s (reset %v)", addr, within, name, rst)
			f.run.count(kind)
		}
	case "cutall":
		f.run.event("shim %s: cut all %d connections", addr, sh.CutAll())
		f.run.count("cutall")
	case "loading":
		sh.Inject(faultshim.Loading)
		f.run.event("shim %s: -LOADING armed", addr)
		f.run.count("loading")
	case "readonly":
		if time.Since(f.lastRO) < f.roGap {
			return
		}
		f.lastRO = time.Now()
		sh.Inject(faultshim.Readonly)
		f.run.event("shim %s: -READONLY armed", addr)
		f.run.count("readonly")
	}
}

// clientKill kills the proxy's connections on the node addr (those that
// come from its shim, not the sentinels'), one at random or all, and
// returns how many.
func (f *lightFaults) clientKill(ctx context.Context, addr string, sh *faultshim.Shim, all bool) int {
	c := f.direct(addr)
	if c == nil {
		return 0
	}
	defer c.Close()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return 0
	}
	ours := map[string]bool{}
	for _, a := range sh.UpstreamAddrs() {
		ours[a] = true
	}
	var ids []string
	for _, line := range strings.Split(list, "\n") {
		fields := clientInfo(line)
		if ours[fields["addr"]] && !strings.HasPrefix(fields["name"], "sentinel-") {
			ids = append(ids, fields["id"])
		}
	}
	if len(ids) == 0 {
		return 0
	}
	if !all {
		ids = []string{ids[f.rng.Intn(len(ids))]}
	}
	for _, id := range ids {
		c.Do(ctx, "CLIENT", "KILL", "ID", id)
	}
	return len(ids)
}

// sleep waits d or until the run's deadline; it reports whether time is
// left.
func (r *roRun) sleep(ctx context.Context, d time.Duration) bool {
	left := time.Until(r.deadline)
	if left <= 0 {
		return false
	}
	t := time.NewTimer(min(d, left))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	return time.Now().Before(r.deadline)
}

// loop injects light faults of the enabled kinds, at random weighted
// kinds and times, on the node target names (through its shim), until the
// end of the run; not while frozen.
func (f *lightFaults) loop(ctx context.Context, enabled map[string]bool, frozen *atomic.Bool, target func() string) {
	kinds := enabledKinds(enabled, "clientkill", "cutrequest", "cutreply", "cutall", "loading", "readonly")
	if len(kinds) == 0 {
		return
	}
	weights := map[string]int{"clientkill": 20, "cutrequest": 20, "cutreply": 20, "cutall": 5, "loading": 30, "readonly": 5}
	total := 0
	for _, k := range kinds {
		total += weights[k]
	}
	for f.run.sleep(ctx, time.Duration(100+f.rng.Intn(400))*time.Millisecond) {
		if frozen.Load() {
			continue
		}
		w := f.rng.Intn(total)
		kind := kinds[0]
		for _, k := range kinds {
			if w < weights[k] {
				kind = k
				break
			}
			w -= weights[k]
		}
		addr := target()
		if sh := f.src.forReal(addr); addr != "" && sh != nil {
			f.light(ctx, kind, addr, sh)
		}
	}
}

// enabledKinds returns the fault kinds among kinds that enabled turns on,
// in their order.
func enabledKinds(enabled map[string]bool, kinds ...string) []string {
	var on []string
	for _, k := range kinds {
		if enabled[k] {
			on = append(on, k)
		}
	}
	return on
}
