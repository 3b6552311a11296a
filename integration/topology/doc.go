// Package topology starts and controls throwaway local Redis deployments,
// all real redis-server / redis-sentinel processes bound to free loopback
// ports:
//
//   - a Sentinel deployment (Start → Topology): one master, its replicas
//     and a set of sentinels;
//   - a Redis Cluster (StartCluster → Cluster): masters and their replicas
//     started with --cluster-enabled yes and joined with `redis-cli
//     --cluster create`, with the cluster's own failover (CLUSTER
//     FAILOVER, or kill -9 of a master) and resharding (`redis-cli
//     --cluster reshard`, or a slot moved step by step with SETSLOT and
//     MIGRATE).
//
// It is the launcher behind `sentinel-proxy dev` and the integration tests,
// which is why it is an ordinary package and not a test-only one.
//
// What it owns: the processes it starts (each in its own process group, so a
// Ctrl-C in the terminal reaches the caller and not Redis), their config files,
// data directories and logs under Options.Dir, and one small go-redis client
// per node used for checks. It runs redis-cli only for a cluster's create
// and reshard (the tools operators use), and never uses fixed ports.
//
// Every process is stopped by PID: Topology.Stop (and Cluster.Stop) sends
// SIGKILL to each process group it created, reaps the processes and removes
// the temporary directory. Callers must call Stop on every path out,
// typically
//
//	topo, err := topology.Start(ctx, topology.Options{})
//	if err != nil { t.Fatal(err) }
//	t.Cleanup(func() { _ = topo.Stop() })
//
// so that a test failing half-way still kills everything. On Linux each child
// also gets SIGKILL if the process that started it dies (Pdeathsig), which
// covers a test binary killed by `go test -timeout`; redis-cli runs the same
// way, bounded by the caller's context.
//
// Goroutine model: Start, StartCluster and the Wait*/Failover/Reshard
// methods poll from the caller's goroutine with a deadline (the context's,
// or a default when it has none); there are no fixed sleeps for
// synchronisation. Each running process has one waiter goroutine that reaps
// it and exits when the process exits; when Options.Log is set, os/exec adds
// one copying goroutine per process that ends with it. All methods of
// Topology, Cluster and Node are safe for concurrent use.
package topology
