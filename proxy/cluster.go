package proxy

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// A cluster group's server side: the slot map (a cluster.Router the caller
// runs), the key positions of every command (read once from the cluster),
// and the pool following the set of masters. The session side is in
// clusterpath.go and redirect.go.

// ClusterOptions make a group a Redis Cluster (Options.Cluster).
type ClusterOptions struct {
	// Router is the live slot map. The caller starts it (Router.Start)
	// and closes it after Serve returns.
	Router *cluster.Router
	// FetchCommands reads the key positions of every command from the
	// cluster (cluster.FetchCommands on its nodes). The server calls it
	// from Serve until it succeeds; commands with keys wait for it.
	FetchCommands func(ctx context.Context) (cluster.Table, error)
}

// clusterState is what a cluster group's server keeps.
type clusterState struct {
	router   *cluster.Router
	fetch    func(ctx context.Context) (cluster.Table, error)
	table    atomic.Pointer[cluster.Table]
	ready    chan struct{}            // closed once table is set
	masters  atomic.Pointer[[]string] // sorted; updated by followCluster
	counters sync.Map                 // master address → prometheus.Counter (countFor)
}

func newClusterState(o *ClusterOptions) *clusterState {
	c := &clusterState{router: o.Router, fetch: o.FetchCommands, ready: make(chan struct{})}
	c.masters.Store(new([]string))
	return c
}

// fetchTable reads the command table until it has it or ctx ends.
func (s *Server) fetchTable(ctx context.Context) {
	c := s.cl
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		t, err := c.fetch(ctx)
		if err == nil && t != nil {
			c.table.Store(&t)
			close(c.ready)
			return
		}
		s.log.Warn("cannot read the cluster's command table yet", zap.String("group", s.opts.Name), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// followCluster keeps the pool to the masters of the slot map: idle
// connections to a node that is no longer a master are closed, and none
// goes back to the pool. Connections in use are left alone: a demoted
// master answers -MOVED, which the session follows.
func (s *Server) followCluster(ctx context.Context) {
	c := s.cl
	var prev []string
	for {
		changed := c.router.Changed()
		m := c.router.Masters()
		if !slices.Equal(m, prev) {
			c.masters.Store(&m)
			n := s.pool.keepMasters(m)
			if prev != nil {
				s.m.failovers.Inc()
				s.log.Info("cluster masters changed", zap.String("group", s.opts.Name),
					zap.Strings("old", prev), zap.Strings("new", m), zap.Int("closed_backends", n))
			}
			prev = m
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// countFor returns the per-master command counter of addr, cached so that
// a run costs no label lookup.
func (c *clusterState) countFor(m *metrics, addr string) prometheus.Counter {
	if v, ok := c.counters.Load(addr); ok {
		return v.(prometheus.Counter)
	}
	v, _ := c.counters.LoadOrStore(addr, m.shardCmds.WithLabelValues(addr))
	return v.(prometheus.Counter)
}

// isMaster reports whether addr is a master of the slot map.
func (c *clusterState) isMaster(addr string) bool {
	return slices.Contains(*c.masters.Load(), addr)
}

// anyMaster is the master source of a cluster group's commands that have no
// slot (and of its subscribers): the first master of the slot map.
// It reads the masters followCluster keeps, which trail a change of the
// map by a moment; before they are known it asks the router.
type anyMaster struct{ c *clusterState }

func (a *anyMaster) Master() (string, <-chan struct{}) {
	ch := a.c.router.Changed()
	m := *a.c.masters.Load()
	if len(m) == 0 {
		m = a.c.router.Masters()
	}
	if len(m) == 0 {
		a.c.router.RequestRefresh()
		return "", ch
	}
	return m[0], ch
}

func (a *anyMaster) Suspect(string) { a.c.router.RequestRefresh() }

// slotMaster is the master source of a run of commands for one slot.
type slotMaster struct {
	r    *cluster.Router
	slot int
}

func (m *slotMaster) Master() (string, <-chan struct{}) {
	ch := m.r.Changed()
	addr, ok := m.r.Lookup(m.slot)
	if !ok {
		// No master for the slot (a failover in progress): ask for a
		// new map; the router folds such requests into one fetch per
		// RedirectInterval.
		m.r.RequestRefresh()
	}
	return addr, ch
}

func (m *slotMaster) Suspect(string) { m.r.RequestRefresh() }

// fixedNode is the source of a command sent to the node an -ASK named.
type fixedNode struct {
	r    *cluster.Router
	addr string
}

func (f *fixedNode) Master() (string, <-chan struct{}) { return f.addr, f.r.Changed() }
func (f *fixedNode) Suspect(string)                    { f.r.RequestRefresh() }
