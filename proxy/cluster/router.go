package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of RouterOptions.
const (
	DefaultRefreshInterval  = 10 * time.Second
	DefaultRedirectInterval = 100 * time.Millisecond

	// noMapRetry bounds the wait between background refreshes while the
	// router has no map at all.
	noMapRetry = time.Second
	// maxHints bounds the redirect targets asked before the seeds.
	maxHints = 4
)

// FetchFunc fetches a slot map from any of addrs, as Fetch does.
type FetchFunc func(ctx context.Context, addrs []string) (*Map, Source, error)

// RouterOptions configure a Router. The zero value is valid.
type RouterOptions struct {
	// FetchOptions say how to reach the nodes (auth, TLS, timeouts)
	// when Fetch is nil.
	FetchOptions FetchOptions
	// Fetch, if set, replaces Fetch(ctx, addrs, FetchOptions): for tests,
	// or a caller with connections of its own.
	Fetch FetchFunc
	// RefreshInterval is the period of the background refresh; 0 means
	// 10s. While the router has no map it retries at least every second.
	RefreshInterval time.Duration
	// RedirectInterval is the least time between the end of a refresh
	// and the start of one triggered by Moved or RequestRefresh; 0 means
	// 100ms. A storm of MOVED thus costs at most one CLUSTER SHARDS per
	// interval, fewer when the cluster answers slowly.
	RedirectInterval time.Duration
	// Logger receives refresh events; nil means none.
	Logger *zap.Logger
}

// Router is a live view of which master serves each slot: the newest slot
// map fetched, corrected at once by the MOVED redirects reported to it.
// Lookup is lock-free; the rest is safe for concurrent use too.
type Router struct {
	seeds []string
	opts  RouterOptions // defaults filled in
	log   *zap.Logger

	view  atomic.Pointer[view]
	moved [Slots]atomic.Pointer[override] // from Moved; see view.floor

	mu    sync.Mutex // serialises writers of view and moved; guards seq, hints
	seq   uint64     // Moved calls recorded so far
	hints []string   // redirect targets since the last fetch began

	fetchMu  sync.Mutex   // one fetch at a time: the newest is installed last
	lastDone atomic.Int64 // end of the last fetch, Unix nanoseconds

	kick chan struct{} // capacity 1: a triggered refresh is wanted

	startOnce, closeOnce sync.Once
	cancel               context.CancelFunc // set by Start, if it ran
	done                 chan struct{}      // closed when the loop has ended
}

// view is what Lookup reads: immutable, replaced whole.
type view struct {
	m   *Map   // nil until the first fetch
	src Source // where m came from
	// floor is the seq at which the fetch of m began: overrides recorded
	// before it are superseded by m, later ones are newer than m.
	floor   uint64
	changed chan struct{} // closed when a view routing differently replaces this one
}

// override is a slot's master according to a MOVED.
type override struct {
	seq  uint64
	addr string
}

// NewRouter returns a Router that fetches the slot map from seeds first
// (host:port of any nodes of the cluster), then from the nodes of the last
// map it has. It has no map until the first fetch: call Refresh, or Start
// and wait on Changed.
func NewRouter(seeds []string, opts RouterOptions) *Router {
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.RedirectInterval <= 0 {
		opts.RedirectInterval = DefaultRedirectInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Fetch == nil {
		fo := opts.FetchOptions
		opts.Fetch = func(ctx context.Context, addrs []string) (*Map, Source, error) {
			return Fetch(ctx, addrs, fo)
		}
	}
	r := &Router{
		seeds: slices.Clone(seeds),
		opts:  opts,
		log:   opts.Logger.Named("router"),
		kick:  make(chan struct{}, 1),
	}
	r.view.Store(&view{changed: make(chan struct{})})
	return r
}

// Start runs the background refresh until ctx ends or Close: a first
// fetch at once, then one every RefreshInterval, and one soon after each
// Moved or RequestRefresh (at most one per RedirectInterval). It does not
// wait for the first fetch. Calls after the first, or after Close, do
// nothing.
func (r *Router) Start(ctx context.Context) {
	r.startOnce.Do(func() {
		ctx, r.cancel = context.WithCancel(ctx)
		r.done = make(chan struct{})
		go r.run(ctx)
	})
}

// Close stops the background refresh and waits for it; a fetch under way
// is cancelled. Safe to call twice, and without Start. The router still
// answers Lookup afterwards, from the last map it had.
func (r *Router) Close() {
	r.closeOnce.Do(func() {
		r.startOnce.Do(func() {}) // a later Start does nothing
		if r.cancel != nil {
			r.cancel()
			<-r.done
		}
	})
}

// Lookup returns the address of the master serving slot: the one a MOVED
// named since the last fetch began, else the one of the last map. ok is
// false when the slot is out of range or unserved, or before the first
// map. It takes no lock and does not allocate.
func (r *Router) Lookup(slot int) (addr string, ok bool) {
	if slot < 0 || slot >= Slots {
		return "", false
	}
	return r.lookup(r.view.Load(), slot)
}

func (r *Router) lookup(v *view, slot int) (string, bool) {
	if o := r.moved[slot].Load(); o != nil && o.seq > v.floor {
		return o.addr, true
	}
	if v.m == nil {
		return "", false
	}
	return v.m.Lookup(uint16(slot))
}

// Moved records a -MOVED reply: slot is now served by addr (host:port, as
// ResolveRedirect gives it). Lookup returns addr at once, and a refresh is
// scheduled (RequestRefresh). An addr Lookup already returns changes
// nothing; an empty or bad addr (ParseRedirect's "?" endpoint) only
// schedules the refresh.
func (r *Router) Moved(slot int, addr string) {
	if slot < 0 || slot >= Slots {
		return
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || host == "" {
		r.log.Debug("redirect without a usable address", zap.Int("slot", slot), zap.String("addr", addr))
		r.RequestRefresh()
		return
	}
	r.mu.Lock()
	v := r.view.Load()
	if cur, ok := r.lookup(v, slot); ok && cur == addr {
		r.mu.Unlock()
		return
	}
	r.seq++
	r.moved[slot].Store(&override{seq: r.seq, addr: addr})
	if len(r.hints) < maxHints && !slices.Contains(r.hints, addr) {
		r.hints = append(r.hints, addr)
	}
	nv := *v
	nv.changed = make(chan struct{})
	r.view.Store(&nv)
	close(v.changed)
	r.mu.Unlock()
	r.log.Debug("slot moved", zap.Int("slot", slot), zap.String("addr", addr))
	r.RequestRefresh()
}

// RequestRefresh asks the background refresh for a fetch soon: at once,
// or RedirectInterval after the end of the last one. Requests made
// meanwhile are folded into that one fetch. Call it when a master cannot
// be reached or a redirect cannot be followed. It never blocks; without
// Start it does nothing.
func (r *Router) RequestRefresh() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Changed returns a channel closed when the routing changes (a Moved, or a
// fetched map that routes some slot elsewhere); each change has a new
// channel. Take the channel before calling Lookup, so that no change slips
// between the two.
func (r *Router) Changed() <-chan struct{} { return r.view.Load().changed }

// Map returns the last map fetched, and where it came from; nil before
// the first fetch. Moved does not change it.
func (r *Router) Map() (*Map, Source) {
	v := r.view.Load()
	return v.m, v.src
}

// Masters returns the addresses of the masters serving slots as Lookup
// sees them, sorted.
func (r *Router) Masters() []string {
	v := r.view.Load()
	var out []string
	if v.m != nil {
		out = v.m.Masters()
	}
	for s := range Slots {
		if o := r.moved[s].Load(); o != nil && o.seq > v.floor && !slices.Contains(out, o.addr) {
			out = append(out, o.addr)
		}
	}
	slices.Sort(out)
	return out
}

// Unassigned returns the number of slots Lookup has no master for: all of
// them before the first map.
func (r *Router) Unassigned() int {
	v := r.view.Load()
	n := 0
	for s := range Slots {
		if _, ok := r.lookup(v, s); !ok {
			n++
		}
	}
	return n
}

// Refresh fetches the slot map now and installs it: from the targets of
// the redirects since the last fetch (they know the change that sent
// them), else from the seeds, else from the other nodes of the last map;
// each group is asked at once and the first answer wins (Fetch). Fetches
// are serialised, so the map installed last is the one fetched last. The
// overrides of Moved calls made before the fetch began are dropped;
// later ones stay, being newer than the map.
func (r *Router) Refresh(ctx context.Context) error {
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	began := time.Now()
	defer func() { r.lastDone.Store(time.Now().UnixNano()) }()
	r.mu.Lock()
	floor, hints := r.seq, r.hints
	r.hints = nil
	r.mu.Unlock()

	m, src, err := r.fetch(ctx, hints)
	if err != nil {
		r.mu.Lock()
		for _, h := range hints {
			if len(r.hints) < maxHints && !slices.Contains(r.hints, h) {
				r.hints = append(r.hints, h)
			}
		}
		r.mu.Unlock()
		return err
	}
	changed := r.install(m, src, floor)
	fields := []zap.Field{zap.String("from", src.Addr), zap.String("command", src.Command),
		zap.Strings("masters", m.Masters()), zap.Int("unassigned", r.Unassigned()),
		zap.Duration("took", time.Since(began))}
	if changed {
		r.log.Info("slot map changed", fields...)
	} else {
		r.log.Debug("slot map refreshed", fields...)
	}
	return nil
}

// fetch asks the hints, then the seeds, then the other known nodes.
func (r *Router) fetch(ctx context.Context, hints []string) (*Map, Source, error) {
	asked := slices.Clone(hints)
	var seeds, known []string
	for _, s := range r.seeds {
		if !slices.Contains(asked, s) {
			seeds = append(seeds, s)
			asked = append(asked, s)
		}
	}
	if m := r.view.Load().m; m != nil {
		for _, sh := range m.Shards {
			for _, n := range append([]Node{sh.Master}, sh.Replicas...) {
				if n.Addr != "" && !slices.Contains(asked, n.Addr) {
					known = append(known, n.Addr)
					asked = append(asked, n.Addr)
				}
			}
		}
	}
	groups := [][]string{hints, seeds, known}

	var errs []error
	for _, g := range groups {
		if len(g) == 0 {
			continue
		}
		m, src, err := r.opts.Fetch(ctx, g)
		if err == nil {
			return m, src, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, Source{}, errors.New("fetch slot map: no node to ask")
	}
	return nil, Source{}, fmt.Errorf("refresh slot map: %w", errors.Join(errs...))
}

// install makes m the current map, fetched from a fetch that began at seq
// floor, and reports whether the routing changed (then Changed fires).
func (r *Router) install(m *Map, src Source, floor uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.view.Load()
	nv := &view{m: m, src: src, floor: floor, changed: old.changed}
	changed := false
	for s := range Slots {
		a, okA := r.lookup(old, s)
		b, okB := r.lookup(nv, s)
		if a != b || okA != okB {
			changed = true
			break
		}
	}
	if changed {
		nv.changed = make(chan struct{})
	}
	r.view.Store(nv)
	if changed {
		close(old.changed)
	}
	return changed
}

// run is the background refresh; it ends when ctx does.
func (r *Router) run(ctx context.Context) {
	defer close(r.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.kick:
			last := time.Unix(0, r.lastDone.Load())
			if wait := r.opts.RedirectInterval - time.Since(last); wait > 0 && !sleep(ctx, wait) {
				return
			}
		}
		err := r.Refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			// Once per outage: a cluster that is down would
			// otherwise log every RedirectInterval.
			r.log.Warn("slot map refresh failed", zap.Error(err))
		case err != nil:
			r.log.Debug("slot map refresh failed again", zap.Error(err))
		case failing:
			r.log.Info("slot map refresh recovered")
		}
		failing = err != nil
		next := r.opts.RefreshInterval
		if m, _ := r.Map(); m == nil {
			next = min(next, noMapRetry)
		}
		timer.Reset(next)
	}
}

// sleep waits d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
