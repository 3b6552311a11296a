package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// serveAdmin serves /healthz, /readyz and /metrics on addr until ctx ends.
func serveAdmin(ctx context.Context, addr string, groups []*group, log *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: adminHandler(groups), ReadHeaderTimeout: 5 * time.Second}
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

func adminHandler(groups []*group) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, g := range groups {
		labels := prometheus.Labels{"group": g.name}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sentinel_proxy_client_connections", Help: "Client connections open now.", ConstLabels: labels,
			}, func() float64 { return float64(g.server.Stats().Clients) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sentinel_proxy_client_connections_total", Help: "Client connections accepted.", ConstLabels: labels,
			}, func() float64 { return float64(g.server.Stats().Accepted) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sentinel_proxy_backend_connections", Help: "Backend connections open now (idle, busy or pinned).", ConstLabels: labels,
			}, func() float64 { return float64(g.server.Stats().Pool.Open) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sentinel_proxy_backend_connections_idle", Help: "Backend connections idle in the pool.", ConstLabels: labels,
			}, func() float64 { return float64(g.server.Stats().Pool.Idle) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sentinel_proxy_backend_dials_total", Help: "Backend connections opened.", ConstLabels: labels,
			}, func() float64 { return float64(g.server.Stats().Pool.Dials) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sentinel_proxy_master_known", Help: "1 while a verified master is known.", ConstLabels: labels,
			}, func() float64 {
				if addr, _ := g.watcher.Master(); addr != "" {
					return 1
				}
				return 0
			}),
		)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		var missing, notes []string
		for _, g := range groups {
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
	return mux
}
