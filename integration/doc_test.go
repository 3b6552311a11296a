// Package integration tests sentinel-proxy end to end: real redis-server and
// redis-sentinel processes (started by integration/topology), the sentinel
// watcher and the proxy server running in the test process (so -race covers
// them), and real clients talking to the proxy: redis-cli, redis-benchmark,
// go-redis v9, redis-py (testdata/redis_py.py, run with /usr/bin/python3)
// and PHP with phpredis (testdata/*.php).
//
// Every test asserts what a client sees through the proxy and, where it
// can, compares it with what the same client sees against the master
// directly.
//
// Stacks (harness_test.go): startStack starts a topology (1 master, 2
// replicas, 3 sentinels), a sentinel.Watcher and a proxy.Server on
// 127.0.0.1:0 owned by one test. Read-mostly tests share two lazily started
// stacks (sharedStack: one without a password, one with), stopped by
// TestMain; they use key names derived from the test's name and never
// flush, so they may run in any order. Tests that fail over, pause nodes or
// may leave the proxy's pool in a bad state start their own and run in
// parallel with each other.
//
// Goroutines: each stack runs the watcher's Run and the server's Serve in
// one goroutine each, both ended by cancelling the stack's context and
// waited for by stack.Stop. Tests start short-lived helpers (blocked
// commands, a writer and a keyspace observer during failover); each is
// bounded in time and count, joined before the test returns, and never
// calls t.Fatal. External clients run under exec.CommandContext with a
// timeout, so they are killed by PID.
package integration
