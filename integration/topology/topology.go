package topology

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Topology is a running set of Redis data nodes and sentinels started by
// Start. Stop it on every path (t.Cleanup / defer).
type Topology struct {
	procs
	opts      Options
	data      []*Node // data[0] is the initial master; fixed after Start
	sentinels []*Node // fixed after Start
}

// Start launches the master, then its replicas (replicaof), waits until
// every replica is online, then launches the sentinels and waits until every
// sentinel knows the master, every replica and every other sentinel, so the
// first failover is not flaky. ctx bounds only this wait (60 s when it has
// no deadline); the processes run until Stop. If anything fails, everything
// already started is stopped.
func Start(ctx context.Context, opts Options) (*Topology, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("topology options: %w", err)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	t := &Topology{opts: o}
	if err := t.open("topology", o.Dir, o.Log); err != nil {
		return nil, err
	}

	began := time.Now()
	if err := t.start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start topology: %w", err), t.Stop())
	}
	o.Logger.Info("topology started", zap.String("dir", t.dir),
		zap.String("master", t.data[0].Addr), zap.Strings("sentinels", t.SentinelAddrs()),
		zap.Duration("took", time.Since(began)))
	return t, nil
}

func (t *Topology) start(ctx context.Context) error {
	o := t.opts
	master, err := t.launch(ctx, "redis-1", false, func(port int, dir string) string {
		return dataConfig(o, port, dir, "")
	})
	if err != nil {
		return err
	}
	t.data = append(t.data, master)
	for i := range o.Replicas {
		n, err := t.launch(ctx, "redis-"+strconv.Itoa(i+2), false, func(port int, dir string) string {
			return dataConfig(o, port, dir, master.Addr)
		})
		if err != nil {
			return err
		}
		t.data = append(t.data, n)
	}
	// Sentinels started after the replicas are online see them in their
	// first INFO of the master, instead of 10 s later.
	if err := poll(ctx, 20*time.Millisecond, "wait for replicas", func(ctx context.Context) error {
		return t.checkReplication(ctx, master)
	}); err != nil {
		return err
	}
	for i := range o.Sentinels {
		n, err := t.launch(ctx, "sentinel-"+strconv.Itoa(i+1), true, func(port int, dir string) string {
			return sentinelConfig(o, port, dir, master.Addr)
		})
		if err != nil {
			return err
		}
		t.sentinels = append(t.sentinels, n)
	}
	return poll(ctx, 100*time.Millisecond, "wait for sentinels", t.checkStable)
}

// launch writes a node's config on a free port and starts it (launchNode).
func (t *Topology) launch(ctx context.Context, name string, sentinel bool, render func(port int, dir string) string) (*Node, error) {
	o := t.opts
	dir := filepath.Join(t.dir, name)
	conf := filepath.Join(dir, "redis.conf")
	argv := []string{o.RedisServer, conf}
	password := o.Password
	if sentinel {
		conf = filepath.Join(dir, "sentinel.conf")
		argv = []string{o.RedisSentinel, conf}
		if o.RedisSentinel == "" {
			argv = []string{o.RedisServer, conf, "--sentinel"}
		}
		password = o.SentinelPassword
	}
	return launchNode(ctx, nodeSpec{
		name: name, sentinel: sentinel, host: o.Host, dir: dir, conf: conf, argv: argv,
		logPath: filepath.Join(t.dir, name+".log"), password: password,
		out: t.nodeOutput(name), logger: o.Logger, render: render,
		record: t.record,
	})
}

// MasterName is the name the sentinels monitor.
func (t *Topology) MasterName() string { return t.opts.MasterName }

// Options returns the options in force, defaults filled in.
func (t *Topology) Options() Options { return t.opts }

// Dir is the directory holding configs, data and logs.
func (t *Topology) Dir() string { return t.dir }

// SentinelAddrs returns every sentinel's host:port.
func (t *Topology) SentinelAddrs() []string {
	addrs := make([]string, len(t.sentinels))
	for i, n := range t.sentinels {
		addrs[i] = n.Addr
	}
	return addrs
}

// Master returns the node that was master at Start. After a failover it is
// a replica or dead; CurrentMaster names the live master.
func (t *Topology) Master() *Node { return t.data[0] }

// Nodes returns the data nodes, the initial master first.
func (t *Topology) Nodes() []*Node { return slices.Clone(t.data) }

// SentinelNodes returns the sentinels.
func (t *Topology) SentinelNodes() []*Node { return slices.Clone(t.sentinels) }

// NodeByAddr returns the data node or sentinel listening on addr, or nil.
// A host that differs only in spelling (a name for the IP) matches by port.
func (t *Topology) NodeByAddr(addr string) *Node {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	var byPort *Node
	for _, n := range append(t.Nodes(), t.sentinels...) {
		if n.Addr == addr {
			return n
		}
		if strconv.Itoa(n.Port) == port {
			byPort = n
		}
	}
	return byPort
}

// Stop kills every process the topology started (SIGKILL to each process
// group, sentinels first so none starts a failover), waits for them, closes
// the check clients and removes the temporary directory. The data is thrown
// away, so there is no graceful shutdown. Safe to call twice; the second
// call returns the first one's result.
func (t *Topology) Stop() error {
	return t.stop(t.opts.Logger, func(nodes []*Node) {
		slices.SortStableFunc(nodes, func(a, b *Node) int {
			switch {
			case a.sentinel == b.sentinel:
				return 0
			case a.sentinel:
				return -1
			}
			return 1
		})
	})
}

// withDefaultTimeout bounds ctx by defaultWait when it has no deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultWait)
}
