package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// serveAdmin serves /healthz, /readyz, /status and /metrics on addr until
// ctx ends.
func serveAdmin(ctx context.Context, addr string, a *app, log *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: adminHandler(a), ReadHeaderTimeout: 5 * time.Second}
	log.Info("admin listening", zap.Stringer("addr", ln.Addr()))
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

func adminHandler(a *app) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		a.reloads, groupsCollector{a})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		var missing, notes []string
		for _, g := range a.snapshot() {
			if g.router != nil {
				if ok, reason := clusterReady(g.router); !ok {
					missing = append(missing, fmt.Sprintf("%s (%s)", g.name, reason))
				}
				continue
			}
			st := g.watcher.Status()
			switch {
			case !st.Ready():
				reason := st.Error
				if st.FailoverInProgress {
					reason = "failover in progress: " + st.FailoverReason
				}
				missing = append(missing, fmt.Sprintf("%s (%s)", g.name, reason))
			case st.Blind:
				notes = append(notes, fmt.Sprintf("%s: no sentinel answers since %s; serving the last verified master %s",
					g.name, st.BlindSince.Format(time.RFC3339), st.Master))
			}
		}
		if len(missing) > 0 {
			http.Error(w, "no verified master for: "+strings.Join(missing, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(statusOf(a))
	})
	return mux
}

// groupsCollector exports the metrics of whatever groups run now: groups
// come and go with reloads, so it is an unchecked collector.
type groupsCollector struct{ a *app }

func (groupsCollector) Describe(chan<- *prometheus.Desc) {}

var (
	descMasterKnown = prometheus.NewDesc("sentinel_proxy_master_known", "1 while a verified master is known.", []string{"group"}, nil)
	descMasterInfo  = prometheus.NewDesc("sentinel_proxy_master_info", "The current master (value 1).", []string{"group", "addr"}, nil)
	descEpoch       = prometheus.NewDesc("sentinel_proxy_config_epoch", "The sentinels' config epoch of the current master.", []string{"group"}, nil)
	descKnown       = prometheus.NewDesc("sentinel_proxy_sentinels_known", "Sentinels configured and discovered.", []string{"group"}, nil)
	descReachable   = prometheus.NewDesc("sentinel_proxy_sentinels_reachable", "Sentinels whose last query succeeded.", []string{"group"}, nil)
	descBlind       = prometheus.NewDesc("sentinel_proxy_blind", "1 while no sentinel answers.", []string{"group"}, nil)
	descFailover    = prometheus.NewDesc("sentinel_proxy_failover_in_progress", "1 from a failover signal until the new master is verified.", []string{"group"}, nil)
	descLastEvent   = prometheus.NewDesc("sentinel_proxy_last_event_timestamp_seconds", "Unix time of the last sentinel event about the master.", []string{"group"}, nil)
	descEvents      = prometheus.NewDesc("sentinel_proxy_sentinel_events_total", "Sentinel events about the master, by event.", []string{"group", "event"}, nil)
)

func (c groupsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.a.snapshot() {
		for _, col := range g.server.Collectors() {
			col.Collect(ch)
		}
		if g.router != nil {
			collectCluster(g, ch)
			continue
		}
		st := g.watcher.Status()
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{g.name}, labels...)...)
		}
		gauge(descMasterKnown, b2f(st.Ready()))
		if st.Master != "" {
			gauge(descMasterInfo, 1, st.Master)
		}
		gauge(descEpoch, float64(st.LastVerified.Epoch))
		reachable := 0
		for _, s := range st.Sentinels {
			if s.OK {
				reachable++
			}
		}
		gauge(descKnown, float64(len(st.Sentinels)))
		gauge(descReachable, float64(reachable))
		gauge(descBlind, b2f(st.Blind))
		gauge(descFailover, b2f(st.FailoverInProgress))
		if !st.LastEvent.At.IsZero() {
			gauge(descLastEvent, float64(st.LastEvent.At.UnixNano())/1e9)
		}
		for ev, n := range st.EventCounts {
			ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(n), g.name, ev)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// statusJSON is what /status serves.
type statusJSON struct {
	Groups []groupStatus `json:"groups"`
}

type groupStatus struct {
	Name               string           `json:"name"`
	Kind               string           `json:"kind"` // "sentinel" or "cluster"
	Listen             string           `json:"listen"`
	Ready              bool             `json:"ready"`
	Master             string           `json:"master"`
	Epoch              int64            `json:"epoch"`
	VerifiedAt         *time.Time       `json:"verified_at,omitempty"`
	HighestEpoch       int64            `json:"highest_epoch"`
	FailoverInProgress bool             `json:"failover_in_progress"`
	FailoverSince      *time.Time       `json:"failover_since,omitempty"`
	FailoverReason     string           `json:"failover_reason,omitempty"`
	Blind              bool             `json:"blind"`
	Error              string           `json:"error,omitempty"`
	LastEvent          *eventStatus     `json:"last_event,omitempty"`
	Sentinels          []sentinelStatus `json:"sentinels"`
	Clients            int64            `json:"clients"`
	ClientsParked      int              `json:"clients_parked"`
	ClientsAccepted    uint64           `json:"clients_accepted"`
	Pool               poolStatus       `json:"backend_pool"`
	// Cluster is a cluster group's slot map; the Sentinel fields above
	// are then empty.
	Cluster *clusterStatus `json:"cluster,omitempty"`
}

type eventStatus struct {
	Sentinel string    `json:"sentinel"`
	Event    string    `json:"event"`
	Payload  string    `json:"payload"`
	At       time.Time `json:"at"`
}

type sentinelStatus struct {
	Addr          string     `json:"addr"`
	Discovered    bool       `json:"discovered"`
	OK            bool       `json:"ok"`
	Subscribed    bool       `json:"subscribed"`
	LastAnswerAt  *time.Time `json:"last_answer_at,omitempty"`
	Master        string     `json:"master,omitempty"`
	Epoch         int64      `json:"epoch"`
	Flags         string     `json:"flags,omitempty"`
	FailoverState string     `json:"failover_state,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	LastErrorAt   *time.Time `json:"last_error_at,omitempty"`
}

type poolStatus struct {
	Open   int    `json:"open"`
	Idle   int    `json:"idle"`
	Pinned int64  `json:"pinned"`
	Dials  uint64 `json:"dials"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func statusOf(a *app) statusJSON {
	var out statusJSON
	for _, g := range a.snapshot() {
		ss := g.server.Stats()
		if g.router != nil {
			ready, reason := clusterReady(g.router)
			out.Groups = append(out.Groups, groupStatus{
				Name: g.name, Kind: "cluster", Listen: g.addr, Ready: ready, Error: reason,
				Clients: ss.Clients, ClientsParked: ss.Parked, ClientsAccepted: ss.Accepted,
				Pool:    poolStatus{Open: ss.Pool.Open, Idle: ss.Pool.Idle, Pinned: ss.Pinned, Dials: ss.Pool.Dials},
				Cluster: clusterStatusOf(g),
			})
			continue
		}
		st := g.watcher.Status()
		gs := groupStatus{
			Name: g.name, Kind: "sentinel", Listen: g.addr, Ready: st.Ready(), Master: st.Master,
			Epoch: st.LastVerified.Epoch, VerifiedAt: timePtr(st.LastVerified.VerifiedAt), HighestEpoch: st.HighestEpoch,
			FailoverInProgress: st.FailoverInProgress, FailoverSince: timePtr(st.FailoverSince), FailoverReason: st.FailoverReason,
			Blind: st.Blind, Error: st.Error,
			Clients: ss.Clients, ClientsParked: ss.Parked, ClientsAccepted: ss.Accepted,
			Pool: poolStatus{Open: ss.Pool.Open, Idle: ss.Pool.Idle, Pinned: ss.Pinned, Dials: ss.Pool.Dials},
		}
		if e := st.LastEvent; !e.At.IsZero() {
			gs.LastEvent = &eventStatus{Sentinel: e.Sentinel, Event: e.Channel, Payload: e.Payload, At: e.At}
		}
		for _, s := range st.Sentinels {
			gs.Sentinels = append(gs.Sentinels, sentinelJSON(s))
		}
		out.Groups = append(out.Groups, gs)
	}
	sort.Slice(out.Groups, func(i, j int) bool { return out.Groups[i].Name < out.Groups[j].Name })
	return out
}

func sentinelJSON(s sentinel.SentinelStatus) sentinelStatus {
	return sentinelStatus{
		Addr: s.Addr, Discovered: s.Discovered, OK: s.OK, Subscribed: s.Subscribed,
		LastAnswerAt: timePtr(s.LastAnswerAt), Master: s.MasterAddr, Epoch: s.Epoch, Flags: s.Flags,
		FailoverState: s.FailoverState, LastError: s.LastErr, LastErrorAt: timePtr(s.LastErrAt),
	}
}
