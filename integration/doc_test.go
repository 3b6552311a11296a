// Package integration tests sentinel-proxy end to end: real redis-server and
// redis-sentinel processes (started by integration/topology), the sentinel
// watcher and the proxy server running in the test process (so -race covers
// them), and real clients talking to the proxy: redis-cli, redis-benchmark,
// go-redis v9, redis-py and PHP with phpredis.
//
// Every test asserts what a client sees through the proxy, and where it can,
// compares it with what the same client sees against the master directly.
//
// Stacks: read-mostly tests share two lazily started stacks (one without a
// password, one with), stopped by TestMain; tests that force a failover
// start their own. Shared-stack tests use key names derived from the test's
// name and never flush, so they may run in any order.
//
// Goroutines: each stack runs the watcher's Run and the server's Serve in
// one goroutine each, both ended by cancelling the stack's context and
// waited for on stop. Tests start short-lived helpers (pushers, publishers,
// a writer during failover); each is bounded in time and count and joined
// before the test returns; none calls t.Fatal.
package integration
