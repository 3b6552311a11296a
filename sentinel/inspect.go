package sentinel

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// Inspect and CheckRole are the one-shot diagnostics behind
// `sentinel-proxy check`: they ask what the Watcher asks, with the same
// clients and bounds, but report everything instead of deciding. They start
// no long-lived goroutines: Inspect runs one goroutine per sentinel and
// waits for all of them.

// Report is what one sentinel says about one master name.
type Report struct {
	// Sentinel is the sentinel's address, as normalised from Options.Sentinels.
	Sentinel string
	// Err is set when the sentinel gave no view: transport failure, refused
	// authentication (a redis.Error starting NOAUTH or WRONGPASS), or a
	// malformed reply. Nothing below is set then.
	Err error
	// Unknown is true when the sentinel does not monitor the master name.
	Unknown bool

	// Addr is the master's address from GET-MASTER-ADDR-BY-NAME, with
	// Sentinel's 0.0.0.0 placeholder replaced by the sentinel's host.
	Addr string
	// Epoch is SENTINEL MASTER's config-epoch.
	Epoch int64
	// Flags is SENTINEL MASTER's flags, e.g. "master" or "s_down,master".
	Flags string
	// FailoverState is SENTINEL MASTER's failover-state; "" for none.
	FailoverState string
	// Quorum is SENTINEL MASTER's quorum; 0 when not reported.
	Quorum int
	// OtherSentinels is SENTINEL MASTER's num-other-sentinels: the peers
	// this sentinel knows for the master.
	OtherSentinels int
	// Replicas are the replicas SENTINEL REPLICAS lists. ReplicasErr is set
	// (and Replicas empty) when that query failed.
	Replicas    []ReplicaReport
	ReplicasErr error
}

// ReplicaReport is one replica as a sentinel lists it.
type ReplicaReport struct {
	// Addr is the replica's address (placeholder substituted as for Addr).
	Addr string
	// Flags is the replica's flags, e.g. "slave" or "s_down,slave,disconnected".
	Flags string
	// Up is true when the sentinel sees the replica reachable (no s_down,
	// o_down or disconnected flag) and its link to the master is not "err".
	Up bool
}

// HasFlag reports whether the master's flags contain f (e.g. "o_down").
func (r Report) HasFlag(f string) bool {
	return slices.Contains(strings.Split(r.Flags, ","), f)
}

// Inspect asks every sentinel in o.Sentinels, concurrently, about
// o.MasterName: GET-MASTER-ADDR-BY-NAME, SENTINEL MASTER and SENTINEL
// REPLICAS, authenticated with o.Username/o.Password. Each sentinel is
// bounded by o.DialTimeout plus four o.QueryTimeout (handshake and three
// queries) and by ctx. It returns one Report per distinct sentinel address,
// in configuration order; the error is only for invalid options.
func Inspect(ctx context.Context, o Options) ([]Report, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("sentinel options: %w", err)
	}
	w := probe(o)
	reports := make([]Report, len(w.opts.Sentinels))
	var wg sync.WaitGroup
	for i, addr := range w.opts.Sentinels {
		wg.Go(func() { reports[i] = w.inspect(ctx, addr) })
	}
	wg.Wait()
	return reports, nil
}

// CheckRole connects to the data node at addr with o.DataUsername and
// o.DataPassword and returns its ROLE ("master", "slave", ...). A node that
// wants a password it was not given fails with a NOAUTH redis.Error, a
// rejected password with WRONGPASS. Bounded by o.DialTimeout plus
// o.QueryTimeout and by ctx.
func CheckRole(ctx context.Context, o Options, addr string) (string, error) {
	if err := o.validate(); err != nil {
		return "", fmt.Errorf("sentinel options: %w", err)
	}
	role, err := probe(o).checkRole(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("role on %s: %w", addr, err)
	}
	return role, nil
}

// probe returns a Watcher that is never run: it only lends its client
// constructors (newSentinelClient, newNodeClient) and ROLE check, so that
// check and proxy talk to Redis in exactly the same way.
func probe(o Options) *Watcher {
	return &Watcher{opts: o.withDefaults(), log: zap.NewNop()}
}

// inspect asks one sentinel.
func (w *Watcher) inspect(ctx context.Context, addr string) Report {
	ctx, cancel := context.WithTimeout(ctx, w.opts.DialTimeout+4*w.opts.QueryTimeout)
	defer cancel()
	c := w.newSentinelClient(addr)
	// Closing on cancel unblocks a read from a frozen sentinel.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		if stop() {
			_ = c.Close()
		}
	}()
	r := Report{Sentinel: addr}
	host := hostOf(addr)
	name := w.opts.MasterName

	// GET-MASTER-ADDR-BY-NAME first: its nil reply says "unknown name"
	// without matching the text of SENTINEL MASTER's error.
	var err error
	if r.Addr, r.Unknown, err = masterAddr(ctx, c, name, host); r.Unknown || err != nil {
		r.Err = err
		return r
	}

	info, err := c.Master(ctx, name).Result()
	if err != nil {
		r.Err = fmt.Errorf("sentinel master: %w", err)
		return r
	}
	if r.Epoch, err = strconv.ParseInt(info["config-epoch"], 10, 64); err != nil {
		r.Err = fmt.Errorf("sentinel master: config-epoch %q: %w", info["config-epoch"], err)
		return r
	}
	r.Flags = info["flags"]
	if r.FailoverState = info["failover-state"]; r.FailoverState == "none" {
		r.FailoverState = ""
	}
	r.Quorum, _ = strconv.Atoi(info["quorum"])
	r.OtherSentinels, _ = strconv.Atoi(info["num-other-sentinels"])

	reps, err := c.Replicas(ctx, name).Result()
	if err != nil {
		r.ReplicasErr = fmt.Errorf("sentinel replicas: %w", err)
		return r
	}
	for _, m := range reps {
		a, ok := nodeAddr(m["ip"], m["port"], host)
		if !ok {
			a = m["name"]
		}
		flags := strings.Split(m["flags"], ",")
		down := slices.ContainsFunc(flags, func(f string) bool {
			return f == "s_down" || f == "o_down" || f == "disconnected"
		})
		r.Replicas = append(r.Replicas, ReplicaReport{
			Addr:  a,
			Flags: m["flags"],
			Up:    !down && m["master-link-status"] != "err",
		})
	}
	return r
}
