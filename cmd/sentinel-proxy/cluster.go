package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// newClusterGroup builds a cluster group's router and server and opens its
// listener. The router starts with the group (start) and is closed once the
// server has drained, as a Sentinel group's watcher is.
func (a *app) newClusterGroup(cfg config.Config, gc config.Group) (*group, error) {
	name := gc.Label()
	st, err := groupSettings(cfg, gc)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	fo := fetchOptions(cfg, a.tls)
	seeds := slices.Clone(gc.ClusterNodes)
	r := cluster.NewRouter(seeds, cluster.RouterOptions{
		FetchOptions: fo,
		Logger:       a.log.Named("cluster").With(zap.String("group", name)),
	})
	s, err := proxy.NewServer(proxy.Options{
		Name:         name,
		Listen:       gc.Listen,
		DialTimeout:  cfg.DialTimeout,
		DrainTimeout: orNegative(cfg.DrainTimeout),
		SharedConns:  sharedConns(cfg, gc),
		TLS:          a.tls.Listener,
		BackendTLS:   a.tls.Backend,
		Cluster: &proxy.ClusterOptions{
			Router: r,
			// The seeds first, then the masters of the last map: the
			// seeds may be gone by the time a retry comes.
			FetchCommands: func(ctx context.Context) (cluster.Table, error) {
				return cluster.FetchCommands(ctx, append(slices.Clone(seeds), r.Masters()...), fo)
			},
		},

		HoldTimeout: st.HoldTimeout, Limits: st.Limits, Policy: st.Policy, Auth: st.Auth,
		MaxClients: st.MaxClients, IdleTimeout: st.IdleTimeout,
		HandshakeTimeout: st.HandshakeTimeout, OutputLimit: st.OutputLimit,
	}, a.log.Named("proxy"))
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	ln, err := net.Listen("tcp", gc.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for %s: %w", name, err)
	}
	return &group{name: name, listen: gc.Listen, router: r, nodes: seeds, fetch: fo,
		server: s, ln: ln, addr: ln.Addr().String()}, nil
}

// fetchOptions say how a cluster group reaches its nodes: with the
// backend credentials and TLS a Sentinel group's watcher uses on the data
// nodes (watcherOptions' DataUsername, DataPassword and DataTLS).
func fetchOptions(cfg config.Config, tlsSet *tlsSet) cluster.FetchOptions {
	return cluster.FetchOptions{
		Username:    cfg.BackendUsername,
		Password:    cfg.BackendPassword,
		TLSConfig:   tlsSet.Backend,
		DialTimeout: cfg.DialTimeout,
	}
}

// sameFetch reports whether two cluster groups reach their nodes alike.
// TLS is left out: its files reload in place, and turning it on or off
// needs a restart anyway (restartOnly).
func sameFetch(a, b cluster.FetchOptions) bool {
	return a.Username == b.Username && a.Password == b.Password &&
		a.DialTimeout == b.DialTimeout && a.QueryTimeout == b.QueryTimeout
}

// clusterReady says whether a cluster group can route every slot, and why
// not.
func clusterReady(r *cluster.Router) (bool, string) {
	m, _ := r.Map()
	switch n := r.Unassigned(); {
	case m == nil:
		return false, "no slot map yet"
	case n > 0:
		return false, fmt.Sprintf("%d slot(s) have no master", n)
	}
	return true, ""
}

// clusterStatus is a cluster group's part of /status: its slot map as the
// router has it.
type clusterStatus struct {
	Nodes      []string      `json:"cluster_nodes"`
	MapFrom    string        `json:"map_from,omitempty"` // the node that answered, and the command
	Masters    []string      `json:"masters"`            // as routing sees them, MOVED included
	Shards     []shardStatus `json:"shards"`
	Unassigned int           `json:"unassigned_slots"`
}

type shardStatus struct {
	Master   string          `json:"master"`
	Slots    []string        `json:"slots"` // inclusive ranges: "0-5460", "5461"
	Replicas []replicaStatus `json:"replicas"`
}

type replicaStatus struct {
	Addr   string `json:"addr"`
	Health string `json:"health,omitempty"`
}

// clusterStatusOf describes g's router for /status.
func clusterStatusOf(g *group) *clusterStatus {
	m, src := g.router.Map()
	cs := &clusterStatus{Nodes: g.nodes, Masters: g.router.Masters(), Unassigned: g.router.Unassigned(), Shards: []shardStatus{}}
	if m == nil {
		return cs
	}
	cs.MapFrom = src.Addr + " (" + src.Command + ")"
	for _, sh := range m.Shards {
		ss := shardStatus{Master: sh.Master.Addr, Slots: slotRanges(sh.Slots), Replicas: []replicaStatus{}}
		for _, r := range sh.Replicas {
			ss.Replicas = append(ss.Replicas, replicaStatus{Addr: r.Addr, Health: r.Health})
		}
		cs.Shards = append(cs.Shards, ss)
	}
	return cs
}

// slotRanges words inclusive slot ranges as "0-5460" (or "42" alone).
func slotRanges(rs []cluster.SlotRange) []string {
	out := []string{}
	for _, r := range rs {
		s := strconv.Itoa(int(r.Start))
		if r.End != r.Start {
			s += "-" + strconv.Itoa(int(r.End))
		}
		out = append(out, s)
	}
	return out
}

var (
	descClusterMasters    = prometheus.NewDesc("sentinel_proxy_cluster_masters", "Masters serving slots of a cluster group.", []string{"group"}, nil)
	descClusterUnassigned = prometheus.NewDesc("sentinel_proxy_cluster_unassigned_slots", "Slots of a cluster group with no master to route to.", []string{"group"}, nil)
)

// collectCluster exports a cluster group's own gauges: the routing view
// in place of the Sentinel watcher's.
func collectCluster(g *group, ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, g.name)
	}
	ready, _ := clusterReady(g.router)
	gauge(descMasterKnown, b2f(ready))
	gauge(descClusterMasters, float64(len(g.router.Masters())))
	gauge(descClusterUnassigned, float64(g.router.Unassigned()))
}
