package main

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// watcherSwapTimeout bounds how long a reload waits for a new watcher (new
// sentinels or credentials) to verify a master before it replaces the old
// one. If it cannot, the reload keeps the old watcher.
const watcherSwapTimeout = 15 * time.Second

// reload re-reads the configuration (same command line, environment and
// file) and applies it without dropping clients: settings of running groups
// change in place, groups whose sentinels or credentials changed get a new
// watcher once it has verified a master, added groups start, removed ones
// (and those whose listen address changed) drain and stop. Groups are
// matched by name (config.Group.Label). A cluster group keeps its router:
// changing its cluster_nodes or backend credentials, or turning a group
// from Sentinel to Cluster or back under the same name and address, is
// reported as needing a restart and the running group stays as it was.
// An invalid configuration is rejected and the running one kept.
func (a *app) reload() {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Now()
	log := a.log.Named("reload")
	cfg, err := config.Load(a.args, a.getenv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		// Logged before it is counted: whoever waits for the count (a
		// test, an operator's script) finds the reason in the log.
		log.Error("configuration rejected; keeping the running one", zap.Error(err))
		a.reloads.WithLabelValues("error").Inc()
		return
	}
	var problems []string
	if err := a.tls.Reload(cfg); err != nil {
		problems = append(problems, fmt.Sprintf("TLS: %v (the old certificates stay in use)", err))
	}
	for _, what := range restartOnly(a.cfg, cfg) {
		problems = append(problems, what+" changes need a restart; the old value stays in effect")
	}
	if lvl, err := zapcore.ParseLevel(cfg.LogLevel); err == nil {
		a.level.SetLevel(lvl)
	}

	want := make(map[string]config.Group)
	for _, gc := range cfg.Groups {
		want[gc.Label()] = gc
	}
	var kept []*group
	for _, g := range a.groups {
		gc, ok := want[g.name]
		if !ok || gc.Listen != g.listen {
			log.Info("group removed: draining", zap.String("group", g.name), zap.String("listen", g.addr))
			a.stopGroup(g)
			continue
		}
		if (g.router != nil) != gc.IsCluster() {
			problems = append(problems, fmt.Sprintf("group %s: switching between master_name and cluster_nodes needs a restart (or a new listen address); the group runs as before", g.name))
			kept = append(kept, g)
			continue
		}
		st, err := groupSettings(cfg, gc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("group %s: %v", g.name, err))
			kept = append(kept, g)
			continue
		}
		g.server.Update(st)
		if g.router != nil {
			if !slices.Equal(g.nodes, gc.ClusterNodes) || !sameFetch(g.fetch, fetchOptions(cfg, a.tls)) {
				problems = append(problems, fmt.Sprintf("group %s: cluster_nodes and backend credential changes of a cluster group need a restart (or a new listen address); the old ones stay in use", g.name))
			}
			kept = append(kept, g)
			continue
		}
		if wopts := watcherOptions(cfg, gc.MasterName, a.tls); !sameWatcher(g.wopts, wopts) {
			if err := a.swapWatcher(g, wopts); err != nil {
				problems = append(problems, fmt.Sprintf("group %s: %v", g.name, err))
			}
		}
		kept = append(kept, g)
	}
	a.groups = kept
	for _, gc := range cfg.Groups {
		if slices.ContainsFunc(a.groups, func(g *group) bool { return g.name == gc.Label() }) {
			continue
		}
		g, err := a.newGroup(cfg, gc)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		a.start(g)
		a.groups = append(a.groups, g)
		log.Info("group added", zap.String("group", g.name), zap.String("listen", g.addr))
	}
	a.cfg = cfg
	if len(problems) > 0 {
		log.Error("configuration reloaded with problems", zap.Strings("problems", problems), zap.Duration("took", time.Since(start)))
		a.reloads.WithLabelValues("error").Inc()
		return
	}
	log.Info("configuration reloaded", zap.Int("groups", len(a.groups)), zap.Duration("took", time.Since(start)))
	a.reloads.WithLabelValues("ok").Inc()
}

// restartOnly lists settings that differ and that only a restart applies.
func restartOnly(old, cur config.Config) []string {
	var out []string
	if old.Admin != cur.Admin {
		out = append(out, "admin")
	}
	if old.LogFormat != cur.LogFormat {
		out = append(out, "log_format")
	}
	if (old.TLSCertFile == "") != (cur.TLSCertFile == "") || old.BackendTLS != cur.BackendTLS || old.SentinelTLS != cur.SentinelTLS {
		out = append(out, "turning TLS on or off")
	}
	if old.DialTimeout != cur.DialTimeout || old.DrainTimeout != cur.DrainTimeout {
		out = append(out, "dial_timeout and drain_timeout")
	}
	if old.SharedConnections != cur.SharedConnections {
		out = append(out, "shared_connections")
	}
	if old.Procs != cur.Procs {
		out = append(out, "procs")
	}
	return out
}

// sameWatcher reports whether two watcher configurations are the same.
func sameWatcher(a, b sentinel.Options) bool {
	a.TLS, a.DataTLS, b.TLS, b.DataTLS = nil, nil, nil, nil // reloaded in place
	return reflect.DeepEqual(a, b)
}

// swapWatcher starts a watcher with opts and, once it has verified a
// master, makes it the group's source and stops the old one. a.mu is held.
func (a *app) swapWatcher(g *group, opts sentinel.Options) error {
	w, err := sentinel.New(opts, a.log)
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(wctx)
	}()
	deadline := time.NewTimer(watcherSwapTimeout)
	defer deadline.Stop()
	for {
		addr, changed := w.Master()
		if addr != "" {
			break
		}
		select {
		case <-changed:
			continue
		case <-deadline.C:
		case <-a.ctx.Done():
		}
		stop()
		<-done
		return fmt.Errorf("the new sentinel settings found no verified master in %v (%s); keeping the old ones", watcherSwapTimeout, w.Status().Error)
	}
	g.server.SetSource(w)
	g.watcher.p.Store(w)
	oldStop, oldDone := g.stopSource, g.sourceDone
	g.stopSource, g.sourceDone, g.wopts = stop, done, opts
	oldStop()
	<-oldDone
	a.log.Info("sentinel settings changed: new watcher in use", zap.String("group", g.name), zap.Strings("sentinels", opts.Sentinels))
	return nil
}

// stopGroup drains a removed group's clients, then stops its watcher or
// router. It
// returns at once; the drain goes on in the background.
func (a *app) stopGroup(g *group) {
	g.stopServer()
	go func() {
		<-g.serverDone
		g.stopSource()
		<-g.sourceDone
		a.log.Info("group stopped", zap.String("group", g.name))
	}()
}
