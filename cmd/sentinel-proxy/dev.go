package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// runDev starts a throwaway topology (1 master, 2 replicas, 3 sentinels on
// loopback), puts the proxy in front of it and runs until ctx is cancelled;
// then it stops every process it started.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("sentinel-proxy dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:6380", "address the proxy listens on")
	admin := fs.String("admin", "127.0.0.1:9121", "admin HTTP address (\"\" = off)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sentinel-proxy dev [--listen ADDR] [--admin ADDR] [-- proxy flags…]\n\n"+
			"Starts 1 master, 2 replicas and 3 sentinels on loopback (redis-server and\n"+
			"redis-sentinel from PATH, Debian packages redis-server and redis-sentinel),\n"+
			"puts the proxy in front and runs until Ctrl-C, which stops everything.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
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
	proxyArgs = append(proxyArgs, fs.Args()...)
	return runProxy(ctx, proxyArgs, stdout, stderr, getenv, func(groups []*group) {
		printDev(stdout, topo, groups, *admin)
	})
}

func printDev(w io.Writer, topo *topology.Topology, groups []*group, admin string) {
	var replicas []string
	for _, n := range topo.Nodes()[1:] {
		replicas = append(replicas, n.Addr)
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
`, topo.Master().Addr, topo.MasterName(), strings.Join(replicas, " "), strings.Join(sentinels, " "), addr)
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
