package cluster_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// slotsMap builds a Map from a CLUSTER SLOTS reply: one master per range,
// given as "start-end=host:port".
func slotsMap(t testing.TB, ranges ...string) *cluster.Map {
	t.Helper()
	var reply []any
	for i, r := range ranges {
		rng, addr, _ := strings.Cut(r, "=")
		lo, hi, _ := strings.Cut(rng, "-")
		host, port, err := net.SplitHostPort(addr)
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		p, err3 := strconv.Atoi(port)
		if err := errors.Join(err, err1, err2, err3); err != nil {
			t.Fatalf("bad range %q: %v", r, err)
		}
		reply = append(reply, []any{int64(a), int64(b), []any{host, int64(p), "id" + strconv.Itoa(i)}})
	}
	m, err := cluster.ParseSlots(reply, cluster.ParseOptions{From: "127.0.0.1:1"})
	if err != nil {
		t.Fatalf("ParseSlots: %v", err)
	}
	return m
}

// fakeFetch serves a settable map and records every call.
type fakeFetch struct {
	mu     sync.Mutex
	m      *cluster.Map
	fail   map[string]bool // addresses that refuse
	calls  [][]string
	starts []time.Time
	gate   chan struct{} // if set, each call waits for a receive from it
}

func (f *fakeFetch) set(m *cluster.Map) { f.mu.Lock(); f.m = m; f.mu.Unlock() }

func (f *fakeFetch) fetch(ctx context.Context, addrs []string) (*cluster.Map, cluster.Source, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(addrs))
	f.starts = append(f.starts, time.Now())
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, cluster.Source{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		if !f.fail[a] && f.m != nil {
			return f.m, cluster.Source{Addr: a, Command: "CLUSTER SHARDS"}, nil
		}
	}
	return nil, cluster.Source{}, errors.New("refused")
}

func (f *fakeFetch) snapshot() ([][]string, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls), slices.Clone(f.starts)
}

func newTestRouter(t *testing.T, f *fakeFetch, opts cluster.RouterOptions) *cluster.Router {
	t.Helper()
	opts.Fetch = f.fetch
	r := cluster.NewRouter([]string{"seed:1", "seed:2"}, opts)
	t.Cleanup(r.Close)
	return r
}

func wantLookup(t *testing.T, r *cluster.Router, slot int, want string) {
	t.Helper()
	got, ok := r.Lookup(slot)
	if want == "" && ok || want != "" && (!ok || got != want) {
		t.Errorf("Lookup(%d) = %q, %v; want %q", slot, got, ok, want)
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestRouterMoved checks that a MOVED overrides the map at once, that a
// refresh that began after it drops it, and one that began before keeps it.
func TestRouterMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &fakeFetch{m: slotsMap(t, "0-8191=a:1", "8192-16383=b:1")}
	r := newTestRouter(t, f, cluster.RouterOptions{})

	wantLookup(t, r, 0, "")
	if n := r.Unassigned(); n != cluster.Slots {
		t.Errorf("Unassigned() before any map = %d", n)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	wantLookup(t, r, 0, "a:1")
	wantLookup(t, r, 16383, "b:1")
	wantLookup(t, r, -1, "")
	wantLookup(t, r, cluster.Slots, "")

	r.Moved(100, "c:1")
	wantLookup(t, r, 100, "c:1")
	wantLookup(t, r, 101, "a:1")
	if got := r.Masters(); !slices.Equal(got, []string{"a:1", "b:1", "c:1"}) {
		t.Errorf("Masters() = %q", got)
	}
	if m, _ := r.Map(); m.Masters()[0] != "a:1" || len(m.Masters()) != 2 {
		t.Errorf("Map() changed by Moved: %q", m.Masters())
	}
	r.Moved(100, "")              // "?" endpoint: ignored
	r.Moved(cluster.Slots, "c:1") // out of range: ignored
	wantLookup(t, r, 100, "c:1")

	// A fetch that began after the MOVED supersedes it, even when its
	// node had not heard of the move yet.
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	wantLookup(t, r, 100, "a:1")

	// A MOVED during a fetch is newer than the map it returns.
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- r.Refresh(ctx) }()
	waitFor(ctx, t, "the fetch to begin", func() bool { c, _ := f.snapshot(); return len(c) == 3 })
	r.Moved(200, "c:1")
	f.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	wantLookup(t, r, 200, "c:1")
	if n := r.Unassigned(); n != 0 {
		t.Errorf("Unassigned() = %d, want 0", n)
	}
}

// TestRouterChanged checks that Changed fires on a Moved and on a map that
// routes differently, and not on a refetch of the same routing or a
// MOVED to the master already known.
func TestRouterChanged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &fakeFetch{m: slotsMap(t, "0-16383=a:1")}
	r := newTestRouter(t, f, cluster.RouterOptions{})

	ch := r.Changed()
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if !closed(ch) {
		t.Fatal("Changed did not fire on the first map")
	}
	ch = r.Changed()
	if closed(ch) {
		t.Fatal("the new Changed channel is closed already")
	}
	f.set(slotsMap(t, "0-16383=a:1")) // same routing, new Map
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	r.Moved(5, "a:1")
	if closed(ch) {
		t.Fatal("Changed fired without a change")
	}
	r.Moved(5, "b:1")
	if !closed(ch) {
		t.Fatal("Changed did not fire on Moved")
	}
	ch = r.Changed()
	f.set(slotsMap(t, "0-9=b:1", "10-16383=a:1"))
	if err := r.Refresh(ctx); err != nil { // agrees with the MOVED, and moves 0-9
		t.Fatalf("Refresh: %v", err)
	}
	if !closed(ch) {
		t.Fatal("Changed did not fire on a new routing")
	}
	wantLookup(t, r, 0, "b:1")
}

// TestRouterFetchOrder checks who is asked: the redirect targets first,
// then the seeds, then the other nodes of the last map.
func TestRouterFetchOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &fakeFetch{m: slotsMap(t, "0-8191=a:1", "8192-16383=b:1"), fail: map[string]bool{}}
	r := newTestRouter(t, f, cluster.RouterOptions{})
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	r.Moved(1, "c:1")
	f.fail["c:1"], f.fail["seed:1"], f.fail["seed:2"] = true, true, true
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	calls, _ := f.snapshot()
	want := [][]string{{"seed:1", "seed:2"}, {"c:1"}, {"seed:1", "seed:2"}, {"a:1", "b:1"}}
	if !slices.EqualFunc(calls, want, slices.Equal) {
		t.Errorf("fetches asked %q, want %q", calls, want)
	}

	f.fail["a:1"], f.fail["b:1"] = true, true
	if err := r.Refresh(ctx); err == nil {
		t.Error("Refresh succeeded with every node refusing")
	}
	wantLookup(t, r, 0, "a:1") // the last map stays
}

// TestRouterRedirectRateLimit sends a storm of MOVED from many goroutines
// and checks the refreshes it triggers start at least RedirectInterval
// apart (the interval runs from the end of a fetch), and that the storm's
// last MOVED is followed by a refresh.
func TestRouterRedirectRateLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const interval = 100 * time.Millisecond
	f := &fakeFetch{m: slotsMap(t, "0-16383=a:1")}
	r := newTestRouter(t, f, cluster.RouterOptions{RefreshInterval: time.Hour, RedirectInterval: interval})
	ch := r.Changed()
	r.Start(ctx)
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no first map")
	}

	began := time.Now()
	var moved atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(began) < 600*time.Millisecond; i++ {
				r.Moved((g*2000+i)%cluster.Slots, "b:"+strconv.Itoa(1+i%2))
				moved.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	// The last MOVED is followed by one more refresh within an interval.
	waitFor(ctx, t, "the refresh after the storm", func() bool {
		_, starts := f.snapshot()
		return starts[len(starts)-1].After(began.Add(elapsed))
	})
	_, starts := f.snapshot()
	for i := 2; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < interval {
			t.Errorf("refreshes %d and %d started %v apart, want at least %v", i-1, i, gap, interval)
		}
	}
	limit := 2 + int(time.Since(began)/interval)
	if n := len(starts) - 1; n < 2 || n > limit {
		t.Errorf("%d MOVED in %v caused %d refreshes, want 2 … %d", moved.Load(), elapsed, n, limit)
	}
	t.Logf("%d MOVED in %v caused %d refreshes", moved.Load(), elapsed.Round(time.Millisecond), len(starts)-1)
}

// TestRouterPeriodic checks the background refresh picks up a new map
// without any redirect, and that Close stops it.
func TestRouterPeriodic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &fakeFetch{m: slotsMap(t, "0-16383=a:1")}
	r := newTestRouter(t, f, cluster.RouterOptions{RefreshInterval: 20 * time.Millisecond})
	r.Start(ctx)
	r.Start(ctx) // no second loop
	waitFor(ctx, t, "the first map", func() bool { _, ok := r.Lookup(0); return ok })
	f.set(slotsMap(t, "0-16383=b:1"))
	waitFor(ctx, t, "the new map", func() bool { a, _ := r.Lookup(0); return a == "b:1" })
	r.Close()
	r.Close()
	calls, _ := f.snapshot()
	// Close waited for the loop; three periods show none is left.
	time.Sleep(60 * time.Millisecond)
	if after, _ := f.snapshot(); len(after) != len(calls) {
		t.Errorf("%d fetches after Close", len(after)-len(calls))
	}
	r.Start(ctx) // after Close: nothing
	r.RequestRefresh()
	wantLookup(t, r, 0, "b:1")
}

// waitFor polls cond every 5 ms until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// BenchmarkRouterLookup measures the per-command lookup, with and without
// MOVED overrides in force.
func BenchmarkRouterLookup(b *testing.B) {
	f := &fakeFetch{m: slotsMap(b, "0-5460=a:1", "5461-10922=b:1", "10923-16383=c:1")}
	r := cluster.NewRouter([]string{"seed:1"}, cluster.RouterOptions{Fetch: f.fetch})
	if err := r.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		r.Moved(i*7, "d:1")
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := 0
		for pb.Next() {
			if _, ok := r.Lookup(s); !ok {
				b.Fatal("no master")
			}
			s = (s + 1) % cluster.Slots
		}
	})
}
