package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

var _ proxy.MasterSource = (*sentinel.Watcher)(nil)

// group is one master group: its watcher and its server.
type group struct {
	name    string
	watcher *sentinel.Watcher
	server  *proxy.Server
	ln      net.Listener // Serve closes it; a second Close is harmless
	addr    string       // where the listener listens, e.g. after port 0
}

// runProxy runs the proxy described by the command line. When ready is not
// nil it receives the groups once every listener is open (dev and tests
// use it to learn the addresses).
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
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	defer log.Sync()
	// go-redis logs dial failures through a process-wide logger of its own;
	// main owns the process, so it routes them to ours, at Debug: the
	// watcher reports what matters about its sentinels itself.
	redis.SetLogger(goRedisLog{log.Named("go-redis").Sugar()})
	log.Info("starting", zap.Object("config", cfg))

	groups, err := buildGroups(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		for _, g := range groups {
			if g.ln != nil {
				g.ln.Close()
			}
		}
	}()
	for _, g := range groups {
		if g.ln, err = net.Listen("tcp", listenAddr(cfg, g.name)); err != nil {
			return fmt.Errorf("listen for %s: %w", g.name, err)
		}
		g.addr = g.ln.Addr().String()
	}
	if ready != nil {
		ready(groups)
	}
	return serveGroups(ctx, cfg, groups, log)
}

// buildGroups makes a watcher and a server for every master group. It does
// no I/O.
func buildGroups(cfg config.Config, log *zap.Logger) ([]*group, error) {
	var groups []*group
	for _, gc := range cfg.Groups {
		glog := log.With(zap.String("group", gc.MasterName))
		w, err := sentinel.New(sentinel.Options{ // logs master_name itself
			MasterName:   gc.MasterName,
			Sentinels:    cfg.Sentinels,
			Username:     cfg.SentinelUsername,
			Password:     cfg.SentinelPassword,
			DataUsername: cfg.BackendUsername,
			DataPassword: cfg.BackendPassword,
			PollInterval: cfg.PollInterval,
			QueryTimeout: cfg.QueryTimeout,
			DialTimeout:  cfg.DialTimeout,

			StopWritesWhenBlind: cfg.StopWritesWhenBlind,
		}, log)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", gc.MasterName, err)
		}
		s, err := proxy.NewServer(proxy.Options{
			Name:         gc.MasterName,
			Listen:       gc.Listen,
			Source:       w,
			DialTimeout:  cfg.DialTimeout,
			HoldTimeout:  orNegative(cfg.HoldTimeout),
			DrainTimeout: orNegative(cfg.DrainTimeout),
		}, glog.Named("proxy"))
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", gc.MasterName, err)
		}
		groups = append(groups, &group{name: gc.MasterName, watcher: w, server: s})
	}
	return groups, nil
}

// orNegative maps the configuration's "0 = none" to proxy.Options' "negative
// = none" (where zero means the default).
func orNegative(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func listenAddr(cfg config.Config, name string) string {
	for _, g := range cfg.Groups {
		if g.MasterName == name {
			return g.Listen
		}
	}
	return ""
}

// serveGroups runs every watcher, server and the admin endpoint until ctx is
// cancelled or one of them fails. Servers drain first; watchers stop after
// them, so that in-flight commands keep a master to finish on.
func serveGroups(ctx context.Context, cfg config.Config, groups []*group, log *zap.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchCtx, stopWatchers := context.WithCancel(context.Background())
	defer stopWatchers()

	var (
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		if err == nil {
			return
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	var watchers, servers sync.WaitGroup
	for _, g := range groups {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			if err := g.watcher.Run(watchCtx); err != nil {
				fail(fmt.Errorf("sentinel watcher for %s: %w", g.name, err))
			}
		}()
		servers.Add(1)
		go func() {
			defer servers.Done()
			fail(g.server.Serve(ctx, g.ln))
		}()
	}
	if cfg.Admin != "" {
		servers.Add(1)
		go func() {
			defer servers.Done()
			fail(serveAdmin(ctx, cfg.Admin, groups, log.Named("admin")))
		}()
	}
	<-ctx.Done()
	servers.Wait()
	stopWatchers()
	watchers.Wait()
	log.Info("stopped")
	return firstErr
}

// goRedisLog adapts zap to go-redis's logging interface.
type goRedisLog struct{ l *zap.SugaredLogger }

func (g goRedisLog) Printf(_ context.Context, format string, v ...any) { g.l.Debugf(format, v...) }

// newLogger builds the process logger.
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "json" {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}
