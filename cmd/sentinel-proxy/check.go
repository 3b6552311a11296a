package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// checkUsage heads `sentinel-proxy check --help`; the flags are the proxy's.
const checkUsage = `Usage:
  sentinel-proxy check --config FILE [flags]

Validates the configuration, asks every sentinel about every master group
(GET-MASTER-ADDR-BY-NAME, SENTINEL MASTER, SENTINEL REPLICAS), checks ROLE on
the master each one names with the backend credentials, and prints a table per
group. For a cluster group (cluster_nodes) it reads the slot map from the
nodes (CLUSTER SHARDS, or CLUSTER SLOTS before Redis 7) and prints each
shard's master, slot ranges, ROLE (asked directly) and the replicas ROLE
lists; unassigned slots are a problem. Exit status 0 when everything is fine, 1 when a problem was found, 2
when the configuration is invalid. It takes the same flags, environment and
file as the proxy itself:

`

// runCheck is `sentinel-proxy check`: the pre-deployment check of a
// configuration against the live sentinels and data nodes. Every group is
// checked concurrently (sentinel.Inspect asks that group's sentinels
// concurrently, then the ROLE checks run concurrently); the whole run is
// bounded by the configured timeouts. It returns usageError for a bad
// configuration and a plain error listing the problems found.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(stdout, checkUsage+config.Usage())
		return nil
	}
	if err != nil {
		return usageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	tlsSet, err := newTLSSet(cfg)
	if err != nil {
		return usageError{err}
	}
	// go-redis logs dial failures through a process-wide logger of its
	// own; every failure is in the table already.
	redis.SetLogger(silentRedisLog{})
	// Sentinel phase (dial + handshake + 3 queries), then the ROLE phase
	// (dial + handshake + ROLE), plus slack for scheduling.
	bound := 2*cfg.DialTimeout + 6*cfg.QueryTimeout + time.Second
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()

	results := make([]groupResult, len(cfg.Groups))
	var wg sync.WaitGroup
	for i, g := range cfg.Groups {
		if g.IsCluster() {
			wg.Go(func() { results[i] = checkCluster(ctx, cfg, tlsSet, g) })
			continue
		}
		wg.Go(func() { results[i] = checkGroup(ctx, cfg, tlsSet, g) })
	}
	wg.Wait()

	var all []string
	for i, r := range results {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		r.print(stdout)
		for _, p := range r.problems {
			all = append(all, r.name+": "+p)
		}
	}
	if len(all) == 0 {
		return nil
	}
	return fmt.Errorf("check found %d problem(s):\n  - %s", len(all), strings.Join(all, "\n  - "))
}

// groupResult is the outcome of checking one master group.
type groupResult struct {
	name, listen string
	rows         []checkRow
	problems     []string       // every problem of the group, rows' included
	summary      string         // one line when there is no problem
	cluster      *clusterResult // a cluster group's table, in place of rows
}

// checkRow is one sentinel's line in the table.
type checkRow struct {
	sentinel, master, epoch, role, replicas string
	problems                                []string
}

// roleVerdict is the ROLE check of one master address.
type roleVerdict struct {
	cell    string // the ROLE VERIFIED column: "yes" or "no: reason"
	problem string // "" when verified
}

// checkGroup asks every sentinel about g, then checks ROLE on every master
// address they name.
func checkGroup(ctx context.Context, cfg config.Config, tlsSet *tlsSet, g config.Group) groupResult {
	res := groupResult{name: g.Label(), listen: g.Listen}
	o := watcherOptions(cfg, g.MasterName, tlsSet)
	reports, err := sentinel.Inspect(ctx, o)
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}

	var answered []sentinel.Report // reachable and monitoring the name
	reachable := 0
	for _, r := range reports {
		if r.Err == nil {
			reachable++
		}
		if r.Err == nil && !r.Unknown {
			answered = append(answered, r)
		}
	}
	roles := checkRoles(ctx, o, answered)

	for _, r := range reports {
		row := checkRow{sentinel: r.Sentinel, master: "-", epoch: "-", role: "-", replicas: "-"}
		switch {
		case r.Err != nil:
			row.problems = append(row.problems, sentinelProblem(r.Err))
		case r.Unknown:
			row.problems = append(row.problems, fmt.Sprintf("unknown master name %q (no such master with that name)", g.MasterName))
		default:
			row.master, row.epoch = r.Addr, strconv.FormatInt(r.Epoch, 10)
			row.role = roles[r.Addr].cell
			row.replicas, row.problems = replicaCell(r, len(reports))
		}
		res.rows = append(res.rows, row)
		for _, p := range row.problems {
			res.problems = append(res.problems, "sentinel "+r.Sentinel+": "+p)
		}
	}
	res.problems = append(res.problems, groupProblems(g.MasterName, reports, answered, reachable)...)
	for _, addr := range slices.Sorted(maps.Keys(roles)) {
		if p := roles[addr].problem; p != "" {
			res.problems = append(res.problems, p)
		}
	}
	if len(res.problems) == 0 && len(answered) > 0 {
		a := answered[0]
		res.summary = fmt.Sprintf("OK: %d/%d sentinels name %s (epoch %d, quorum %d), ROLE master verified",
			len(answered), len(reports), a.Addr, a.Epoch, a.Quorum)
	}
	return res
}

// checkRoles runs one ROLE check per distinct master address, concurrently.
func checkRoles(ctx context.Context, o sentinel.Options, answered []sentinel.Report) map[string]roleVerdict {
	var addrs []string
	for _, r := range answered {
		if !slices.Contains(addrs, r.Addr) {
			addrs = append(addrs, r.Addr)
		}
	}
	verdicts := make([]roleVerdict, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() { verdicts[i] = roleOf(ctx, o, addr) })
	}
	wg.Wait()
	roles := make(map[string]roleVerdict, len(addrs))
	for i, addr := range addrs {
		roles[addr] = verdicts[i]
	}
	return roles
}

// roleOf checks ROLE on addr and words the outcome.
func roleOf(ctx context.Context, o sentinel.Options, addr string) roleVerdict {
	role, err := sentinel.CheckRole(ctx, o, addr)
	var reason string
	switch {
	case err == nil && role == "master":
		return roleVerdict{cell: "yes"}
	case err == nil:
		v := roleVerdict{cell: "no: ROLE is " + role}
		v.problem = fmt.Sprintf("ROLE on %s is %q, not master", addr, role)
		return v
	case redis.HasErrorPrefix(err, "NOAUTH"):
		reason = "data node needs a password (NOAUTH); set backend_password"
	case redis.HasErrorPrefix(err, "WRONGPASS"):
		reason = "backend password rejected (WRONGPASS); check backend_username/backend_password"
	case redis.IsPermissionError(err):
		reason = "backend user may not run ROLE (NOPERM)"
	default:
		reason = err.Error()
		if inner := errors.Unwrap(err); inner != nil {
			reason = inner.Error() // CheckRole's own prefix names addr, as the row does
		}
	}
	return roleVerdict{cell: "no: " + reason, problem: fmt.Sprintf("ROLE on %s unverifiable: %s", addr, reason)}
}

// sentinelProblem words a sentinel that gave no view.
func sentinelProblem(err error) string {
	var rerr redis.Error
	switch {
	case redis.HasErrorPrefix(err, "NOAUTH"):
		return "auth failed: the sentinel needs a password (NOAUTH); set sentinel_password"
	case redis.HasErrorPrefix(err, "WRONGPASS"):
		return "auth failed: sentinel password rejected (WRONGPASS); check sentinel_username/sentinel_password"
	case redis.IsPermissionError(err):
		return fmt.Sprintf("permission denied: %v", err)
	case errors.As(err, &rerr):
		return fmt.Sprintf("sentinel error: %v", err)
	}
	return fmt.Sprintf("unreachable: %v", err)
}

// replicaCell returns the REPLICAS column (up/total) and the sentinel's own
// problems: the master flagged down or failing over, replicas down, fewer
// peers than configured.
func replicaCell(r sentinel.Report, configured int) (string, []string) {
	var p []string
	if r.HasFlag("s_down") || r.HasFlag("o_down") {
		p = append(p, fmt.Sprintf("sees the master down (flags %s)", r.Flags))
	}
	if r.HasFlag("failover_in_progress") || r.FailoverState != "" {
		p = append(p, fmt.Sprintf("failover in progress (state %s)", r.FailoverState))
	}
	if r.OtherSentinels+1 < configured {
		p = append(p, fmt.Sprintf("knows %d other sentinel(s); the config lists %d sentinels", r.OtherSentinels, configured))
	}
	if r.ReplicasErr != nil {
		return "?", append(p, r.ReplicasErr.Error())
	}
	var down []string
	for _, rep := range r.Replicas {
		if !rep.Up {
			down = append(down, fmt.Sprintf("%s (%s)", rep.Addr, rep.Flags))
		}
	}
	switch {
	case len(r.Replicas) == 0:
		p = append(p, "no replicas: a failover has nothing to promote")
	case len(down) > 0:
		p = append(p, fmt.Sprintf("%d replica(s) down: %s", len(down), strings.Join(down, ", ")))
	}
	return fmt.Sprintf("%d/%d", len(r.Replicas)-len(down), len(r.Replicas)), p
}

// groupProblems finds what no single sentinel shows: nobody answering,
// disagreement, too few sentinels for quorum or a failover majority.
func groupProblems(name string, reports, answered []sentinel.Report, reachable int) []string {
	var p []string
	switch {
	case reachable == 0:
		return append(p, fmt.Sprintf("no reachable sentinel (%d configured)", len(reports)))
	case len(answered) == 0:
		return append(p, fmt.Sprintf("no sentinel monitors a master named %q", name))
	}
	if d := disagreement(answered, func(r sentinel.Report) string { return r.Addr }); d != "" {
		p = append(p, "sentinels disagree on the master: "+d)
	}
	if d := disagreement(answered, func(r sentinel.Report) string { return strconv.FormatInt(r.Epoch, 10) }); d != "" {
		p = append(p, "sentinels disagree on the config epoch: "+d)
	}
	quorum, known := 0, len(reports)
	for _, r := range answered {
		quorum = max(quorum, r.Quorum)
		known = max(known, r.OtherSentinels+1)
	}
	if len(answered) < quorum {
		p = append(p, fmt.Sprintf("only %d sentinel(s) answer, fewer than the quorum %d: a down master cannot be agreed on", len(answered), quorum))
	}
	if majority := known/2 + 1; len(answered) < majority {
		p = append(p, fmt.Sprintf("only %d of %d sentinels answer: a failover needs a majority of %d", len(answered), known, majority))
	}
	return p
}

// disagreement lists the distinct values of key among answers with the
// sentinels giving each ("a (s1, s2); b (s3)"), or "" when they all agree.
func disagreement(answers []sentinel.Report, key func(sentinel.Report) string) string {
	by := make(map[string][]string)
	var order []string
	for _, r := range answers {
		k := key(r)
		if by[k] == nil {
			order = append(order, k)
		}
		by[k] = append(by[k], r.Sentinel)
	}
	if len(order) < 2 {
		return ""
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%s (%s)", k, strings.Join(by[k], ", "))
	}
	return strings.Join(parts, "; ")
}

// print writes the group's table, its group-level problems and a verdict.
func (r groupResult) print(w io.Writer) {
	if r.cluster != nil {
		fmt.Fprintf(w, "group %s (listen %s, Redis Cluster)\n", r.name, r.listen)
		r.printRest(w, r.cluster.print(w))
		return
	}
	fmt.Fprintf(w, "group %s (listen %s)\n", r.name, r.listen)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SENTINEL\tMASTER\tEPOCH\tROLE VERIFIED\tREPLICAS\tPROBLEMS")
	rowProblems := 0
	for _, row := range r.rows {
		probs := "-"
		if len(row.problems) > 0 {
			probs = strings.Join(row.problems, "; ")
			rowProblems += len(row.problems)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", row.sentinel, row.master, row.epoch, row.role, row.replicas, probs)
	}
	_ = tw.Flush() // w's errors (a closed stdout) have nowhere better to go
	r.printRest(w, rowProblems)
}

// printRest writes the group-level problems (those after the first
// rowProblems, which the table shows) and the verdict.
func (r groupResult) printRest(w io.Writer, rowProblems int) {
	for _, p := range r.problems[rowProblems:] {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	if r.summary != "" {
		fmt.Fprintf(w, "  %s\n", r.summary)
	} else {
		fmt.Fprintf(w, "  %d problem(s)\n", len(r.problems))
	}
}

// silentRedisLog drops go-redis's own log lines.
type silentRedisLog struct{}

func (silentRedisLog) Printf(context.Context, string, ...any) {}
