package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "topo:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("topo", flag.ContinueOnError)
	var opts topology.Options
	fs.StringVar(&opts.Dir, "dir", "", "working directory (default: a temporary one, removed at exit)")
	fs.StringVar(&opts.MasterName, "master-name", topology.DefaultMasterName, "master name")
	fs.IntVar(&opts.Replicas, "replicas", topology.DefaultReplicas, "replicas (-1 for none)")
	fs.IntVar(&opts.Sentinels, "sentinels", topology.DefaultSentinels, "sentinels")
	fs.StringVar(&opts.Password, "password", "", "data node password")
	ports := fs.Int("free-ports", 0, "also print this many free loopback ports as FREE_PORTS")
	timeout := fs.Duration("timeout", time.Minute, "bound on start-up")
	if err := fs.Parse(args); err != nil {
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	topo, err := topology.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { _ = topo.Stop() }()

	free, err := freePorts(*ports)
	if err != nil {
		return err
	}
	var replicas, pids []string
	for _, n := range topo.Nodes() {
		pids = append(pids, strconv.Itoa(n.PID()))
		if n != topo.Master() {
			replicas = append(replicas, n.Addr)
		}
	}
	for _, n := range topo.SentinelNodes() {
		pids = append(pids, strconv.Itoa(n.PID()))
	}
	m := topo.Master()
	lines := []string{
		"TOPO_DIR=" + topo.Dir(),
		"MASTER_NAME=" + topo.MasterName(),
		"MASTER=" + m.Addr,
		"MASTER_HOST=" + m.Host,
		"MASTER_PORT=" + strconv.Itoa(m.Port),
		"MASTER_PID=" + strconv.Itoa(m.PID()),
		`REPLICAS="` + strings.Join(replicas, " ") + `"`,
		"SENTINELS=" + strings.Join(topo.SentinelAddrs(), ","),
		`NODE_PIDS="` + strings.Join(pids, " ") + `"`,
		`FREE_PORTS="` + strings.Join(free, " ") + `"`,
		"READY=1",
	}
	if _, err := fmt.Fprintln(stdout, strings.Join(lines, "\n")); err != nil {
		return err
	}

	eof := make(chan struct{})
	go func() { // exits at EOF or a read error on stdin
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-sigs:
	case <-eof:
	}
	return topo.Stop()
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago, all
// different (the listeners stay open until every port is chosen).
func freePorts(n int) ([]string, error) {
	var ports []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return ports, nil
}
