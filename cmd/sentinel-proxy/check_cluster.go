package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// clusterResult is what check found about a cluster group: where the slot
// map came from and one row per shard.
type clusterResult struct {
	from string // "127.0.0.1:7000 (CLUSTER SHARDS)"; "" when no seed answered
	rows []shardRow
}

// shardRow is one shard's line in the table.
type shardRow struct {
	master, slots, role, replicas string
	problems                      []string
}

// masterRole is ROLE as one master answered it.
type masterRole struct {
	role     string   // "master", "slave", ...
	replicas []string // host:port of the replicas a master lists
	err      error
}

// checkCluster reads the slot map of a cluster group from its seeds (the
// first good answer, as the proxy's router does), then asks ROLE on every
// master at once with the backend credentials, and compares.
func checkCluster(ctx context.Context, cfg config.Config, tlsSet *tlsSet, g config.Group) groupResult {
	res := groupResult{name: g.Label(), listen: g.Listen, cluster: &clusterResult{}}
	fo := fetchOptions(cfg, tlsSet)
	fo.QueryTimeout = cfg.QueryTimeout
	m, src, err := cluster.Fetch(ctx, g.ClusterNodes, fo)
	if err != nil {
		res.problems = append(res.problems, "no slot map: "+backendReason(err))
		return res
	}
	res.cluster.from = src.Addr + " (" + src.Command + ")"

	var masters []string
	for _, sh := range m.Shards {
		if sh.Master.Addr != "" && !slices.Contains(masters, sh.Master.Addr) {
			masters = append(masters, sh.Master.Addr)
		}
	}
	replies := make([]masterRole, len(masters))
	var wg sync.WaitGroup
	for i, addr := range masters {
		wg.Go(func() { replies[i] = roleReply(ctx, fo, addr) })
	}
	wg.Wait()
	roles := make(map[string]masterRole, len(masters))
	for i, addr := range masters {
		roles[addr] = replies[i]
	}

	served := 0
	for _, sh := range m.Shards {
		row := shardCheck(sh, roles[sh.Master.Addr])
		res.cluster.rows = append(res.cluster.rows, row)
		for _, p := range row.problems {
			res.problems = append(res.problems, "master "+row.master+" (slots "+row.slots+"): "+p)
		}
		if len(sh.Slots) > 0 {
			served++
		}
	}
	var unassigned int
	for _, r := range m.Unassigned() {
		unassigned += int(r.End-r.Start) + 1
	}
	if unassigned > 0 {
		res.problems = append(res.problems, fmt.Sprintf("%d slot(s) unassigned (%s): commands on their keys fail with CLUSTERDOWN",
			unassigned, strings.Join(slotRanges(m.Unassigned()), ", ")))
	}
	if len(res.problems) == 0 {
		res.summary = fmt.Sprintf("OK: %d shards serve all %d slots, ROLE master verified on each master, every master has replicas",
			served, cluster.Slots)
	}
	return res
}

// shardCheck builds a shard's row: its slots, its master's ROLE and the
// replicas ROLE lists, and the shard's problems.
func shardCheck(sh cluster.Shard, r masterRole) shardRow {
	row := shardRow{master: sh.Master.Addr, slots: strings.Join(slotRanges(sh.Slots), ","), role: "-", replicas: "-"}
	if row.slots == "" {
		row.slots = "-" // a master without slots: nothing routes to it
	}
	if row.master == "" {
		row.master = "-"
		if len(sh.Slots) > 0 {
			row.problems = append(row.problems, "the cluster names no reachable master for these slots")
		}
		return row
	}
	if !sh.Master.Online() {
		row.problems = append(row.problems, "the cluster lists the master as "+sh.Master.Health)
	}
	switch {
	case r.err != nil:
		reason := backendReason(r.err)
		row.role = "no: " + reason
		row.problems = append(row.problems, "ROLE unverifiable: "+reason)
		return row
	case r.role != "master":
		row.role = "no: ROLE is " + r.role
		row.problems = append(row.problems, fmt.Sprintf("ROLE is %q, not master", r.role))
		return row
	}
	row.role = "yes"
	if len(r.replicas) > 0 {
		row.replicas = strings.Join(r.replicas, " ")
	}
	if len(sh.Slots) > 0 && len(sh.Replicas) == 0 && len(r.replicas) == 0 {
		row.problems = append(row.problems, "no replicas: a failover has nothing to promote")
	}
	for _, rep := range sh.Replicas {
		switch {
		case !rep.Online():
			row.problems = append(row.problems, fmt.Sprintf("replica %s is %s", nodeName(rep), rep.Health))
		case !slices.ContainsFunc(r.replicas, func(a string) bool { return sameNode(rep, a) }):
			row.problems = append(row.problems, fmt.Sprintf("replica %s is not connected to its master (ROLE does not list it)", nodeName(rep)))
		}
	}
	return row
}

// roleReply asks ROLE on addr directly and reads a master's replicas from
// the reply: ["master", offset, [[ip, port, offset], ...]].
func roleReply(ctx context.Context, fo cluster.FetchOptions, addr string) masterRole {
	c := redis.NewClient(&redis.Options{
		Addr: addr, Username: fo.Username, Password: fo.Password,
		TLSConfig: fo.TLSConfig, Dialer: cluster.TLSDialer(fo.TLSConfig, fo.DialTimeout),
		Protocol: 2, DialTimeout: fo.DialTimeout, ReadTimeout: fo.QueryTimeout, WriteTimeout: fo.QueryTimeout,
		ContextTimeoutEnabled: true, MaxRetries: -1, PoolSize: 1, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer c.Close()
	reply, err := c.Do(ctx, "role").Slice()
	if err != nil {
		return masterRole{err: err}
	}
	if len(reply) == 0 {
		return masterRole{err: errors.New("empty ROLE reply")}
	}
	r := masterRole{role: fmt.Sprint(reply[0])}
	if r.role != "master" || len(reply) < 3 {
		return r
	}
	list, _ := reply[2].([]any)
	for _, item := range list {
		if f, ok := item.([]any); ok && len(f) >= 2 {
			r.replicas = append(r.replicas, net.JoinHostPort(fmt.Sprint(f[0]), fmt.Sprint(f[1])))
		}
	}
	slices.Sort(r.replicas)
	return r
}

// sameNode reports whether a replica of the slot map is the one ROLE lists
// as addr (ip:port): by address, or by IP and either listed port (with
// TLS the map's address has the TLS port, ROLE the plain one).
func sameNode(n cluster.Node, addr string) bool {
	if n.Addr == addr {
		return true
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != n.IP && host != n.Endpoint {
		return false
	}
	return port == strconv.Itoa(n.Port) || port == strconv.Itoa(n.TLSPort)
}

func nodeName(n cluster.Node) string {
	if n.Addr != "" {
		return n.Addr
	}
	return n.ID
}

// backendReason words an error from a data node, as roleOf does for
// Sentinel groups.
func backendReason(err error) string {
	switch {
	case redis.HasErrorPrefix(err, "NOAUTH"):
		return "data node needs a password (NOAUTH); set backend_password"
	case redis.HasErrorPrefix(err, "WRONGPASS"):
		return "backend password rejected (WRONGPASS); check backend_username/backend_password"
	case redis.IsPermissionError(err):
		return fmt.Sprintf("backend user may not run it (NOPERM): %v", err)
	}
	return err.Error()
}

// print writes a cluster group's table; groupResult.print adds the rest.
func (c *clusterResult) print(w io.Writer) (rowProblems int) {
	if c.from == "" {
		return 0 // no map: the problems say why
	}
	fmt.Fprintf(w, "  slot map from %s\n", c.from)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  MASTER\tSLOTS\tROLE VERIFIED\tREPLICAS (ROLE)\tPROBLEMS")
	for _, row := range c.rows {
		probs := "-"
		if len(row.problems) > 0 {
			probs = strings.Join(row.problems, "; ")
			rowProblems += len(row.problems)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", row.master, row.slots, row.role, row.replicas, probs)
	}
	_ = tw.Flush()
	return rowProblems
}
