package main

import "runtime"

// startProcs is GOMAXPROCS as the runtime set it at start: the CPUs the
// process may use (its affinity mask and cgroup CPU limit), or the
// GOMAXPROCS environment variable.
var startProcs = runtime.GOMAXPROCS(0)

// setProcs sets GOMAXPROCS; tests of this package replace it, so that
// running the proxy in-process leaves the test binary's own alone.
var setProcs = runtime.GOMAXPROCS

// procsFor is the GOMAXPROCS the proxy runs with, or 0 to leave the
// runtime's own: the procs setting when given, else nothing when the
// GOMAXPROCS environment variable is set, else half of avail (the CPUs the
// process may use), at least 1.
//
// Half, because the proxy spends its time in system calls and goroutine
// wake-ups rather than computing, and it usually shares its host with Redis
// or with its clients: with a P per CPU, Go's idle threads spin looking for
// work on every wake-up and take CPU time from them. On the project's
// 2-core machine, one P instead of two cut the proxy's CPU per request by
// about a quarter and raised its throughput at pipeline depth 1 (README,
// Benchmarks).
func procsFor(procs int, env string, avail int) int {
	switch {
	case procs > 0:
		return procs
	case env != "":
		return 0
	}
	return max(1, avail/2)
}
