package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// runDevCluster is `sentinel-proxy dev --cluster`: a throwaway Redis
// Cluster (3 masters, 3 replicas on loopback) with the proxy in front of it
// as one cluster group. It prints where everything listens and runs until
// ctx is cancelled; there is no scripted demo. It stops every process it
// started.
func runDevCluster(ctx context.Context, listen, admin string, extra []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fmt.Fprintln(stdout, "starting a throwaway Redis Cluster on loopback…")
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{})
	if err != nil {
		return fmt.Errorf("dev cluster: %w", err)
	}
	defer c.Stop()
	shards, err := c.Shards(ctx)
	if err != nil {
		return fmt.Errorf("dev cluster: %w", err)
	}
	args := []string{"--listen", listen, "--cluster-nodes", strings.Join(c.Addrs(), ",")}
	if admin != "" {
		args = append(args, "--admin", admin)
	}
	args = append(args, extra...)
	return runProxy(ctx, args, stdout, stderr, getenv, func(groups []*group) {
		printDevCluster(stdout, c, shards, groups, admin)
	})
}

// printDevCluster says where the cluster's nodes and the proxy listen and
// how to play with them.
func printDevCluster(w io.Writer, c *topology.Cluster, shards []topology.ClusterShard, groups []*group, admin string) {
	addr := groups[0].addr
	host, port := splitAddr(addr)
	fmt.Fprintf(w, "\nsentinel-proxy dev --cluster is running (Ctrl-C stops everything)\n  nodes:     %s\n", strings.Join(c.Addrs(), " "))
	for i, sh := range shards {
		label := "  shards:   "
		if i > 0 {
			label = "            "
		}
		var replicas []string
		for _, r := range sh.Replicas {
			replicas = append(replicas, r.Addr)
		}
		fmt.Fprintf(w, "%s master %s slots %s, replicas %s\n", label, sh.Master.Addr, slotCell(sh.Slots), strings.Join(replicas, " "))
	}
	fmt.Fprintf(w, "  proxy:     %s  (group %s)\n", addr, groups[0].name)
	if admin != "" {
		fmt.Fprintf(w, "  admin:     http://%s/metrics  /healthz  /readyz  /status\n", admin)
	}
	fmt.Fprintf(w, `
Connect through the proxy (no -c: the proxy routes by slot):
  redis-cli -h %s -p %s
`, host, port)
	if len(shards) > 0 && len(shards[0].Replicas) > 0 {
		rhost, rport := splitAddr(shards[0].Replicas[0].Addr)
		fmt.Fprintf(w, "Fail a master over and watch clients not notice:\n  redis-cli -h %s -p %s CLUSTER FAILOVER\n", rhost, rport)
	}
	fmt.Fprintf(w, "Logs and data: %s\n\n", c.Dir())
}

// slotCell words a shard's slot ranges as check does: "0-5460,5470-5480".
func slotCell(ranges [][2]int) string {
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		parts[i] = fmt.Sprintf("%d-%d", r[0], r[1])
		if r[0] == r[1] {
			parts[i] = fmt.Sprint(r[0])
		}
	}
	return strings.Join(parts, ",")
}
