package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

var (
	_ proxy.MasterSource = (*sentinel.Watcher)(nil)
	_ proxy.Fencer       = (*sentinel.Watcher)(nil)
)

// group is one master group: its source of masters (a Sentinel watcher or
// a cluster router) and its server.
type group struct {
	name    string          // config.Group.Label
	listen  string          // as configured
	watcher *watcherRef     // nil for a cluster group
	router  *cluster.Router // nil for a Sentinel group
	server  *proxy.Server
	ln      net.Listener // Serve closes it; a second Close is harmless
	addr    string       // where the listener listens, e.g. after port 0

	// What a reload compares to see what changed: the watcher's options,
	// or the cluster nodes and how they are reached.
	wopts sentinel.Options
	nodes []string
	fetch cluster.FetchOptions

	stopServer context.CancelFunc
	serverDone chan struct{}
	stopSource context.CancelFunc // stops the watcher or closes the router
	sourceDone chan struct{}
}

// watcherRef is a group's current watcher; a reload that changes the
// sentinels or their credentials replaces it.
type watcherRef struct {
	p atomic.Pointer[sentinel.Watcher]
}

func newWatcherRef(w *sentinel.Watcher) *watcherRef {
	r := &watcherRef{}
	r.p.Store(w)
	return r
}

func (r *watcherRef) Master() (string, <-chan struct{}) { return r.p.Load().Master() }
func (r *watcherRef) Status() sentinel.Status           { return r.p.Load().Status() }

// app is the running process: its configuration, groups and admin endpoint.
type app struct {
	args   []string
	getenv func(string) string
	log    *zap.Logger
	level  zap.AtomicLevel
	tls    *tlsSet

	ctx  context.Context // the process's; cancelled on shutdown
	fail func(error)

	mu      sync.Mutex // guards cfg and groups (reloads are serialised by it)
	cfg     config.Config
	groups  []*group
	reloads *prometheus.CounterVec
}

// runProxy runs the proxy described by the command line. When ready is not
// nil it receives the groups once every listener is open (dev and tests
// use it to learn the addresses). SIGHUP reloads the configuration.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, ready func([]*group)) error {
	cfg, err := config.Load(args, getenv)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(stdout, config.Usage())
		return nil
	}
	if err != nil {
		return usageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	procs := procsFor(cfg.Procs, getenv("GOMAXPROCS"), startProcs)
	if procs > 0 {
		setProcs(procs)
	}
	a, err := newApp(cfg, args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.log.Sync()
	a.log.Info("threads running Go code", zap.Int("procs", runtime.GOMAXPROCS(0)), zap.Bool("from_GOMAXPROCS", procs == 0))
	if ready != nil {
		ready(a.groups)
	}
	return a.serve(ctx)
}

// newApp builds the logger and every group of cfg (validated), with its
// listener open; serve runs them. args and getenv are what a reload reads
// the configuration from again.
func newApp(cfg config.Config, args []string, getenv func(string) string, stderr io.Writer) (*app, error) {
	log, level, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return nil, usageError{err}
	}
	// go-redis logs dial failures through a process-wide logger of its own;
	// main owns the process, so it routes them to ours, at Debug: the
	// watcher reports what matters about its sentinels itself.
	redis.SetLogger(goRedisLog{log.Named("go-redis").Sugar()})
	log.Info("starting", zap.Object("config", cfg))

	tlsSet, err := newTLSSet(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	a := &app{
		args: args, getenv: getenv, log: log, level: level, tls: tlsSet, cfg: cfg,
		reloads: newReloadsCounter(),
	}
	for _, gc := range cfg.Groups {
		g, err := a.newGroup(cfg, gc)
		if err != nil {
			a.closeListeners()
			return nil, err
		}
		a.groups = append(a.groups, g)
	}
	return a, nil
}

func newReloadsCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_proxy_config_reloads_total", Help: "Configuration reloads (SIGHUP), by result: ok or error.",
	}, []string{"result"})
}

// newGroup builds a group's watcher (or, for a cluster group, its router)
// and server and opens its listener.
func (a *app) newGroup(cfg config.Config, gc config.Group) (*group, error) {
	if gc.IsCluster() {
		return a.newClusterGroup(cfg, gc)
	}
	name := gc.Label()
	wopts := watcherOptions(cfg, gc.MasterName, a.tls)
	w, err := sentinel.New(wopts, a.log)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	st, err := groupSettings(cfg, gc)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	ref := newWatcherRef(w)
	s, err := proxy.NewServer(proxy.Options{
		Name:         name,
		Listen:       gc.Listen,
		Source:       w,
		DialTimeout:  cfg.DialTimeout,
		DrainTimeout: orNegative(cfg.DrainTimeout),
		SharedConns:  sharedConns(cfg, gc),
		TLS:          a.tls.Listener,
		BackendTLS:   a.tls.Backend,

		HoldTimeout: st.HoldTimeout, Limits: st.Limits, Policy: st.Policy, Auth: st.Auth,
		MaxClients: st.MaxClients, IdleTimeout: st.IdleTimeout,
		HandshakeTimeout: st.HandshakeTimeout, OutputLimit: st.OutputLimit,
	}, a.log.Named("proxy")) // the server names its group in every line
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	ln, err := net.Listen("tcp", gc.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for %s: %w", name, err)
	}
	return &group{name: name, listen: gc.Listen, watcher: ref, server: s, ln: ln, addr: ln.Addr().String(), wopts: wopts}, nil
}

// watcherOptions are the sentinel.Options of group name: what the proxy's
// watcher and `check` use.
func watcherOptions(cfg config.Config, name string, tlsSet *tlsSet) sentinel.Options {
	return sentinel.Options{ // logs master_name itself
		MasterName:   name,
		Sentinels:    cfg.Sentinels,
		Username:     cfg.SentinelUsername,
		Password:     cfg.SentinelPassword,
		DataUsername: cfg.BackendUsername,
		DataPassword: cfg.BackendPassword,
		PollInterval: cfg.PollInterval,
		QueryTimeout: cfg.QueryTimeout,
		DialTimeout:  cfg.DialTimeout,
		TLS:          tlsSet.Sentinel,
		DataTLS:      tlsSet.Backend,

		StopWritesWhenBlind: cfg.StopWritesWhenBlind,
	}
}

// groupSettings are the parts of a group's server a reload can change.
func groupSettings(cfg config.Config, gc config.Group) (proxy.Settings, error) {
	mode, allow, deny := cfg.CommandPolicy, cfg.AllowCommands, cfg.DenyCommands
	if gc.CommandPolicy != "" {
		mode = gc.CommandPolicy
	}
	if gc.AllowCommands != nil {
		allow = gc.AllowCommands
	}
	if gc.DenyCommands != nil {
		deny = gc.DenyCommands
	}
	policy, err := proxy.NewPolicy(gc.Label(), mode, allow, deny)
	if err != nil {
		return proxy.Settings{}, err
	}
	var auth *proxy.Auth
	if cfg.Password != "" || len(cfg.Users) > 0 {
		var users []proxy.User
		if cfg.Password != "" {
			users = append(users, proxy.User{Name: "default", Password: cfg.Password})
		}
		for _, u := range cfg.Users {
			users = append(users, proxy.User{Name: u.Name, Password: u.Password, PasswordSHA256: u.PasswordSHA256})
		}
		if auth, err = proxy.NewAuth(users, cfg.BackendUsername, cfg.BackendPassword); err != nil {
			return proxy.Settings{}, err
		}
	}
	return proxy.Settings{
		HoldTimeout:      orNegative(cfg.HoldTimeout),
		Limits:           proxy.RequestLimits{MaxBulk: cfg.ProtoMaxBulkLen, MaxQuery: cfg.ClientQueryBufferLimit},
		Policy:           policy,
		Auth:             auth,
		MaxClients:       cfg.MaxClients,
		IdleTimeout:      cfg.IdleTimeout,
		HandshakeTimeout: cfg.HandshakeTimeout,
		OutputLimit:      cfg.PubSubOutputLimit,
	}, nil
}

// orNegative maps the configuration's "0 = none" to proxy.Options' "negative
// = none" (where zero means the default).
func orNegative(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func (a *app) closeListeners() {
	for _, g := range a.groups {
		g.ln.Close()
	}
}

// serve runs every group and the admin endpoint until ctx is cancelled or
// something fails, reloading on SIGHUP. Servers drain first; watchers and
// routers stop after them, so that in-flight commands keep a master to finish on.
func (a *app) serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		errMu    sync.Mutex
		firstErr error
	)
	a.ctx = ctx
	a.fail = func(err error) {
		if err == nil {
			return
		}
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		cancel()
	}
	a.mu.Lock()
	for _, g := range a.groups {
		a.start(g)
	}
	admin := a.cfg.Admin // a reload may replace a.cfg; admin needs a restart
	a.mu.Unlock()

	var adminDone chan struct{}
	if admin != "" {
		adminDone = make(chan struct{})
		go func() {
			defer close(adminDone)
			a.fail(serveAdmin(ctx, admin, a, a.log.Named("admin")))
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			a.reload()
		}
	}

	a.mu.Lock()
	groups := a.groups
	a.mu.Unlock()
	for _, g := range groups {
		g.stopServer()
	}
	for _, g := range groups {
		<-g.serverDone
	}
	if adminDone != nil {
		<-adminDone
	}
	for _, g := range groups {
		g.stopSource()
		<-g.sourceDone
	}
	a.log.Info("stopped")
	return firstErr
}

// start runs g's watcher (or router) and server. a.mu is held. The source
// has a context of its own, not a.ctx: it must outlive the server's drain,
// so that in-flight commands keep a master to finish on.
func (a *app) start(g *group) {
	wctx, stopW := context.WithCancel(context.Background())
	g.stopSource, g.sourceDone = stopW, make(chan struct{})
	go func() {
		defer close(g.sourceDone)
		if g.router != nil {
			g.router.Start(wctx)
			<-wctx.Done()
			g.router.Close()
			return
		}
		if err := g.watcher.p.Load().Run(wctx); err != nil {
			a.fail(fmt.Errorf("sentinel watcher for %s: %w", g.name, err))
		}
	}()
	sctx, stopS := context.WithCancel(a.ctx)
	g.stopServer, g.serverDone = stopS, make(chan struct{})
	go func() {
		defer close(g.serverDone)
		a.fail(g.server.Serve(sctx, g.ln))
	}()
}

// snapshot returns the current groups, for the admin endpoint.
func (a *app) snapshot() []*group {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*group(nil), a.groups...)
}

// goRedisLog adapts zap to go-redis's logging interface.
type goRedisLog struct{ l *zap.SugaredLogger }

func (g goRedisLog) Printf(_ context.Context, format string, v ...any) { g.l.Debugf(format, v...) }

// newLogger builds the process logger; its level can change on reload.
func newLogger(level, format string, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, zap.AtomicLevel{}, fmt.Errorf("log level: %w", err)
	}
	atom := zap.NewAtomicLevelAt(lvl)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "json" {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		encCfg.EncodeDuration = zapcore.StringDurationEncoder // 241ms, not 0.241
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), atom)), atom, nil
}

// sharedConns is the group's proxy.Options.SharedConns: shared_connections
// unless the group turns sharing off (negative) or on.
func sharedConns(cfg config.Config, gc config.Group) int {
	n := cfg.SharedConnections
	switch {
	case gc.Sharing == "off" || gc.Sharing == "" && n == 0:
		return -1
	case n == 0:
		return 1
	}
	return n
}
