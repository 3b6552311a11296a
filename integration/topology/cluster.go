package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Defaults applied by StartCluster to zero-valued ClusterOptions fields.
const (
	DefaultClusterMasters           = 3
	DefaultClusterReplicasPerMaster = 1

	// DefaultNodeTimeout is cluster-node-timeout. A killed master is
	// replaced about 2 node timeouts later (failure reports, then the
	// replica's election delay); below 1 s a busy test machine causes
	// spurious failovers.
	DefaultNodeTimeout = 2 * time.Second

	// clusterSlots is the number of hash slots of every Redis Cluster.
	clusterSlots = 16384
)

// ClusterOptions describes the Redis Cluster to start. The zero value is
// valid: 3 masters with one replica each on 127.0.0.1, no password, a 2 s
// node timeout, in a temporary directory.
type ClusterOptions struct {
	// Dir holds config files, data directories and logs. "" means a new
	// temporary directory, removed by Stop. A directory given here is
	// created if needed and left in place.
	Dir string

	// Masters is the number of masters; the slots are split evenly among
	// them. 0 means 3, the least `redis-cli --cluster create` accepts.
	Masters int

	// ReplicasPerMaster is the number of replicas of each master. 0 means
	// 1; use a negative value for none.
	ReplicasPerMaster int

	// NodeTimeout is cluster-node-timeout. 0 means 2s; less than 1s is
	// rejected.
	NodeTimeout time.Duration

	// Password, if set, is every node's requirepass and masterauth, and
	// what redis-cli and the check clients authenticate with.
	Password string

	// Host is the IP address every node binds to and announces. "" means
	// 127.0.0.1. It must be an IP: CLUSTER MEET takes no names.
	Host string

	// RedisServer and RedisCLI are the binaries to run. "" means
	// "redis-server" / "redis-cli" from PATH.
	RedisServer, RedisCLI string

	// RedisConfig are extra lines appended to every node's config file.
	RedisConfig []string

	// Log, if non-nil, also receives every process's output (redis-cli's
	// included), each line prefixed with the node name. The output always
	// goes to Dir/<node>.log as well. Writes to Log are serialised.
	Log io.Writer

	// Logger receives lifecycle events. nil means no logging.
	Logger *zap.Logger
}

// withDefaults returns a copy of o with zero fields filled in and the
// binaries resolved, or every problem found.
func (o ClusterOptions) withDefaults() (ClusterOptions, error) {
	if o.Masters == 0 {
		o.Masters = DefaultClusterMasters
	}
	switch {
	case o.ReplicasPerMaster == 0:
		o.ReplicasPerMaster = DefaultClusterReplicasPerMaster
	case o.ReplicasPerMaster < 0:
		o.ReplicasPerMaster = 0
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = DefaultNodeTimeout
	}
	if o.Host == "" {
		o.Host = DefaultHost
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	var errs []error
	if o.Masters < 3 {
		errs = append(errs, fmt.Errorf("masters must be at least 3 (redis-cli --cluster create), got %d", o.Masters))
	}
	if o.NodeTimeout < time.Second {
		errs = append(errs, fmt.Errorf("node timeout %v is below 1s: a busy machine then causes spurious failovers", o.NodeTimeout))
	}
	if net.ParseIP(o.Host) == nil {
		errs = append(errs, fmt.Errorf("host %q is not an IP address (CLUSTER MEET takes IPs only)", o.Host))
	}
	var err error
	if o.RedisServer, err = lookBinary(o.RedisServer, "redis-server"); err != nil {
		errs = append(errs, err)
	}
	if o.RedisCLI == "" {
		o.RedisCLI = "redis-cli"
	}
	if p, lerr := exec.LookPath(o.RedisCLI); lerr != nil {
		errs = append(errs, fmt.Errorf("%s not found (%w): install the Debian/Ubuntu package redis-tools (apt-get install -y redis-tools), or run `make deps`", o.RedisCLI, lerr))
	} else {
		o.RedisCLI = p
	}
	return o, errors.Join(errs...)
}

// Cluster is a running Redis Cluster started by StartCluster. Stop it on
// every path (t.Cleanup / defer). Its nodes keep their addresses and
// cluster node IDs for their whole life; their roles change with
// failovers.
type Cluster struct {
	procs
	opts  ClusterOptions
	nodes []*Node          // fixed after StartCluster
	ids   map[*Node]string // cluster node IDs; fixed after StartCluster
}

// StartCluster launches the nodes (redis-server --cluster-enabled yes, each
// on a free port and a free cluster bus port), joins them with `redis-cli
// --cluster create … --cluster-replicas N`, and waits until the cluster is
// stable (see WaitStable): every node says cluster_state:ok, all agree on
// who serves every slot, and every replica is in sync. ctx bounds only this
// wait (60 s when it has no deadline). If anything fails, everything
// already started is stopped.
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("cluster options: %w", err)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	c := &Cluster{opts: o, ids: make(map[*Node]string)}
	if err := c.open("cluster", o.Dir, o.Log); err != nil {
		return nil, err
	}
	began := time.Now()
	if err := c.start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start cluster: %w", err), c.Stop())
	}
	o.Logger.Info("cluster started", zap.String("dir", c.dir), zap.Strings("nodes", c.Addrs()),
		zap.Duration("took", time.Since(began)))
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	o := c.opts
	total := o.Masters * (1 + o.ReplicasPerMaster)
	for i := range total {
		n, err := c.launch(ctx, "node-"+strconv.Itoa(i+1))
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, n)
	}
	// redis-cli makes the first Masters nodes of the list the masters
	// when all share one IP; the roles are read back from the cluster
	// anyway, never assumed.
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(o.ReplicasPerMaster), "--cluster-yes")
	if err := c.redisCLI(ctx, "cluster-create", args...); err != nil {
		return err
	}
	for _, n := range c.nodes {
		id, err := n.client.Do(ctx, "cluster", "myid").Text()
		if err != nil {
			return fmt.Errorf("cluster myid on %s: %w", n.Name, err)
		}
		c.ids[n] = id
	}
	return poll(ctx, 50*time.Millisecond, "wait for stable cluster", c.checkStable)
}

// launch writes a cluster node's config on a free port and starts it.
func (c *Cluster) launch(ctx context.Context, name string) (*Node, error) {
	o := c.opts
	dir := filepath.Join(c.dir, name)
	conf := filepath.Join(dir, "redis.conf")
	return launchNode(ctx, nodeSpec{
		name: name, host: o.Host, dir: dir, conf: conf, argv: []string{o.RedisServer, conf},
		logPath: filepath.Join(c.dir, name+".log"), password: o.Password,
		out: c.nodeOutput(name), logger: o.Logger,
		render: func(port int, dir string) string {
			// The bus port is not port+10000: that can be above 65535
			// or taken. A taken one fails the start like a taken port
			// ("Address already in use"), and launchNode retries both.
			bus, err := freePort(o.Host)
			for i := 0; err == nil && bus == port && i < portAttempts; i++ {
				bus, err = freePort(o.Host) // the kernel may hand out port again
			}
			if err != nil {
				bus = port // let the start fail ("Address already in use") and retry
			}
			return clusterConfig(o, port, bus, dir)
		},
		record: c.record,
	})
}

// clusterConfig renders a cluster node's config file: the data node config
// of the Sentinel topology (no persistence, immediate diskless sync) plus
// cluster mode. The node itself keeps its cluster state in nodes.conf next
// to it, so a restarted node comes back with its node ID and last known
// configuration (and no data).
func clusterConfig(o ClusterOptions, port, bus int, dir string) string {
	lines := []string{
		"cluster-enabled yes",
		"cluster-config-file nodes.conf",
		"cluster-port " + strconv.Itoa(bus),
		"cluster-node-timeout " + strconv.FormatInt(o.NodeTimeout.Milliseconds(), 10),
		// A replica whose master was killed always stands for election,
		// however long its link has been down: tests kill masters
		// repeatedly and must not end with an unserved slot.
		"cluster-replica-validity-factor 0",
		// Redis 7.0 lists a replica whose replication offset is still 0
		// as "loading" in CLUSTER SHARDS and leaves it out of CLUSTER
		// SLOTS; in an idle new cluster only the master's replication
		// PING moves the offset, every 10 s by default.
		"repl-ping-replica-period 1",
	}
	return dataConfig(Options{
		Host:        o.Host,
		Password:    o.Password,
		RedisConfig: append(lines, o.RedisConfig...),
	}, port, dir, "")
}

// redisCLI runs redis-cli with args, authenticated through the environment
// (never on the command line, where ps shows it), in its own process group
// with Pdeathsig, bounded by ctx. Its output goes to Dir/<name>.log and
// ClusterOptions.Log; the end of it is in the error when it fails.
func (c *Cluster) redisCLI(ctx context.Context, name string, args ...string) error {
	logPath := filepath.Join(c.dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, c.opts.RedisCLI, args...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Env = os.Environ()
	if c.opts.Password != "" {
		cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+c.opts.Password)
	}
	cmd.Stdout = logf
	if c.out != nil {
		cmd.Stdout = io.MultiWriter(logf, &prefixWriter{w: c.out, prefix: name + " | "})
	}
	cmd.Stderr = cmd.Stdout
	c.opts.Logger.Info("running redis-cli", zap.String("log", logPath), zap.Strings("args", args))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args[:2], " "), err, fileTail(logPath))
	}
	return nil
}

// Options returns the options in force, defaults filled in.
func (c *Cluster) Options() ClusterOptions { return c.opts }

// Dir is the directory holding configs, data and logs.
func (c *Cluster) Dir() string { return c.dir }

// Nodes returns every node, in start order (node-1 …), whatever its role
// or state.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// Addrs returns every node's host:port, the seed list for a client.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// ID returns n's cluster node ID (CLUSTER MYID), or "" if n is not a node
// of this cluster. It survives restarts: the node reads it from nodes.conf.
func (c *Cluster) ID(n *Node) string { return c.ids[n] }

// NodeByID returns the node with the cluster node ID id, or nil.
func (c *Cluster) NodeByID(id string) *Node {
	for n, nid := range c.ids {
		if nid == id {
			return n
		}
	}
	return nil
}

// NodeByAddr returns the node listening on addr, or nil. A host that
// differs only in spelling matches by port.
func (c *Cluster) NodeByAddr(addr string) *Node {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	var byPort *Node
	for _, n := range c.nodes {
		if n.Addr == addr {
			return n
		}
		if strconv.Itoa(n.Port) == port {
			byPort = n
		}
	}
	return byPort
}

// Stop kills every process the cluster started (SIGKILL to each process
// group), waits for them, closes the check clients and removes the
// temporary directory. Safe to call twice; the second call returns the
// first one's result.
func (c *Cluster) Stop() error { return c.stop(c.opts.Logger, nil) }
