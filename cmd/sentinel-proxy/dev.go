package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// runDev starts a throwaway topology (1 master, 2 replicas, 3 sentinels on
// loopback) and puts the proxy in front of it. By default it then runs the
// scripted demo (demo.go): a client writing through the proxy while the
// master is failed over and killed, one line per second, a summary, exit.
// With --manual it only prints where to connect and runs until ctx is
// cancelled. Either way it stops every process it started.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("sentinel-proxy dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:6380", "address the proxy listens on")
	admin := fs.String("admin", "127.0.0.1:9121", "admin HTTP address (\"\" = off)")
	manual := fs.Bool("manual", false, "no scripted demo: start everything, print how to connect and run until Ctrl-C")
	keep := fs.Bool("keep", false, "after the scripted demo, keep everything running until Ctrl-C")
	clusterMode := fs.Bool("cluster", false, "a throwaway Redis Cluster (3 masters, 3 replicas) behind the proxy instead of Sentinel; no scripted demo: print how to connect and run until Ctrl-C")
	var dc demoConfig
	fs.DurationVar(&dc.Steady, "steady", 10*time.Second, "demo: writes before the planned failover (SENTINEL FAILOVER)")
	fs.DurationVar(&dc.KillAfter, "kill-after", 15*time.Second, "demo: time from the planned failover to the kill -9 of the master (0 = no kill)")
	fs.DurationVar(&dc.Duration, "duration", 60*time.Second, "demo: length of the script, then the summary")
	fs.IntVar(&dc.Rate, "rate", 1500, "demo: writes per second, all writers together")
	fs.IntVar(&dc.Writers, "writers", 8, "demo: concurrent writers, each INCRs its own counter")
	fs.BoolVar(&dc.QuickRestart, "quick-restart", false, "demo: restart the killed master as soon as the proxy has moved, not once every sentinel has")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sentinel-proxy dev [flags] [-- proxy flags…]\n\n"+
			"Starts 1 master, 2 replicas and 3 sentinels on loopback (redis-server and\n"+
			"redis-sentinel from PATH, Debian packages redis-server and redis-sentinel) and\n"+
			"puts the proxy in front. Then, unless --manual, a client writes through the\n"+
			"proxy while the demo fails the master over (SENTINEL FAILOVER) and later\n"+
			"kills it (kill -9), printing writes/s, errors and the master every second,\n"+
			"and checks at the end that no acknowledged write was lost. Ctrl-C stops\n"+
			"everything at any time.\n\n"+
			"With --cluster it starts a Redis Cluster of 3 masters and 3 replicas instead\n"+
			"(redis-server and redis-cli from PATH), puts the proxy in front as one cluster\n"+
			"group, prints the addresses and runs until Ctrl-C.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if *clusterMode {
		return runDevCluster(ctx, *listen, *admin, fs.Args(), stdout, stderr, getenv)
	}
	if !*manual {
		if err := dc.validate(); err != nil {
			return usageError{err}
		}
	}

	fmt.Fprintln(stdout, "starting a throwaway Sentinel topology on loopback…")
	topo, err := topology.Start(ctx, topology.Options{})
	if err != nil {
		return fmt.Errorf("dev topology: %w", err)
	}
	defer topo.Stop()

	proxyArgs := []string{
		"--listen", *listen,
		"--master-name", topo.MasterName(),
		"--sentinels", strings.Join(topo.SentinelAddrs(), ","),
	}
	if *admin != "" {
		proxyArgs = append(proxyArgs, "--admin", *admin)
	}
	if !*manual {
		// The per-second lines are the show; the proxy's own log would
		// bury them. A --log-level after "--" still wins (last one counts).
		proxyArgs = append(proxyArgs, "--log-level", "warn")
	}
	proxyArgs = append(proxyArgs, fs.Args()...)
	if *manual {
		return runProxy(ctx, proxyArgs, stdout, stderr, getenv, func(groups []*group) {
			printDev(stdout, topo, topo.Master().Addr, groups, *admin)
		})
	}

	// The demo runs on its own goroutine because runProxy serves only after
	// ready returns; runDev joins it before the deferred topo.Stop.
	proxyCtx, stopProxy := context.WithCancel(ctx)
	defer stopProxy()
	out := &syncWriter{w: stdout}
	var (
		demoErr error
		done    chan struct{}
	)
	err = runProxy(proxyCtx, proxyArgs, stdout, stderr, getenv, func(groups []*group) {
		done = make(chan struct{})
		d := newDemo(dc, topo, groups[0], out)
		go func() {
			defer close(done)
			master, err := d.run(proxyCtx)
			demoErr = err
			if *keep && err == nil && proxyCtx.Err() == nil {
				printDev(out, topo, master, groups, *admin)
				return // the proxy runs until Ctrl-C
			}
			stopProxy()
		}()
	})
	stopProxy()
	if done != nil {
		<-done
	}
	return errors.Join(err, demoErr)
}

// printDev says where everything listens and how to play with it; master is
// the current master's address.
func printDev(w io.Writer, topo *topology.Topology, master string, groups []*group, admin string) {
	var replicas []string
	for _, n := range topo.Nodes() {
		if n.Addr != master {
			replicas = append(replicas, n.Addr)
		}
	}
	sentinels := topo.SentinelAddrs()
	addr := groups[0].addr
	host, port := splitAddr(addr)
	shost, sport := splitAddr(sentinels[0])
	fmt.Fprintf(w, `
sentinel-proxy dev is running (Ctrl-C stops everything)
  master:    %s  (%s)
  replicas:  %s
  sentinels: %s
  proxy:     %s
`, master, topo.MasterName(), strings.Join(replicas, " "), strings.Join(sentinels, " "), addr)
	if admin != "" {
		fmt.Fprintf(w, "  admin:     http://%s/metrics  /healthz  /readyz\n", admin)
	}
	fmt.Fprintf(w, `
Connect through the proxy:
  redis-cli -h %s -p %s
Force a failover and watch clients not notice:
  redis-cli -h %s -p %s SENTINEL FAILOVER %s
Logs and data: %s

`, host, port, shost, sport, topo.MasterName(), topo.Dir())
}

func splitAddr(addr string) (string, string) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return addr, ""
	}
	return strings.Trim(addr[:i], "[]"), addr[i+1:]
}

// demoConfig is the script of `sentinel-proxy dev`: writes for Steady, then
// SENTINEL FAILOVER, KillAfter later kill -9 of the master (then its
// restart), the summary at Duration.
type demoConfig struct {
	Steady    time.Duration // writes before the planned failover
	KillAfter time.Duration // from the planned failover to the kill; 0 = no kill
	Duration  time.Duration // the whole script
	Rate      int           // writes per second, all writers together
	Writers   int           // goroutines, each INCRs its own counter
	// QuickRestart restarts the killed master as soon as the proxy has
	// moved, as a supervisor would, instead of once every sentinel names
	// the new master.
	QuickRestart bool
}

func (c demoConfig) validate() error {
	var errs []error
	if c.Steady <= 0 || c.Steady >= c.Duration {
		errs = append(errs, fmt.Errorf("--steady %v: must be above 0 and below --duration %v", c.Steady, c.Duration))
	}
	if c.KillAfter < 0 {
		errs = append(errs, fmt.Errorf("--kill-after %v: must not be negative", c.KillAfter))
	}
	if c.Writers < 1 || c.Writers > 64 {
		errs = append(errs, fmt.Errorf("--writers %d: must be 1 to 64", c.Writers))
	}
	if c.Rate < c.Writers || c.Rate > 20000 {
		errs = append(errs, fmt.Errorf("--rate %d: must be from --writers to 20000", c.Rate))
	}
	return errors.Join(errs...)
}

// syncWriter serialises writes from the demo's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
