// Package topology starts and controls a throwaway local Redis Sentinel
// deployment: one master, its replicas and a set of sentinels, all real
// redis-server / redis-sentinel processes bound to free loopback ports.
//
// It is the launcher behind `sentinel-proxy dev` and the integration tests,
// which is why it is an ordinary package and not a test-only one.
//
// What it owns: the processes it starts (each in its own process group, so a
// Ctrl-C in the terminal reaches the caller and not Redis), their config files,
// data directories and logs under Options.Dir, and one small go-redis client
// per node used for checks. It never runs redis-cli and never uses fixed ports.
//
// Every process is stopped by PID: Topology.Stop sends SIGKILL to each process
// group it created, reaps the processes and removes the temporary directory.
// Callers must call Stop on every path out, typically
//
//	topo, err := topology.Start(ctx, topology.Options{})
//	if err != nil { t.Fatal(err) }
//	t.Cleanup(func() { _ = topo.Stop() })
//
// so that a test failing half-way still kills everything. On Linux each child
// also gets SIGKILL if the process that started it dies (Pdeathsig), which
// covers a test binary killed by `go test -timeout`.
//
// Goroutine model: Start and the Wait*/Failover methods poll from the caller's
// goroutine with a deadline (the context's, or a default when it has none);
// there are no fixed sleeps for synchronisation. Each running process has one
// waiter goroutine that reaps it and exits when the process exits; when
// Options.Log is set, os/exec adds one copying goroutine per process that ends
// with it. All methods of Topology and Node are safe for concurrent use.
package topology
