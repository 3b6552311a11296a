// Command failoverload measures one failover as clients see it, for
// bench/failover.sh (make bench-failover). It runs a steady write load
// (SET of unique keys, ~500/s from a few plain clients, plus pinned
// clients at the same pace whose connections set a client name, every
// reply logged) through a proxy, keeps idle connections that did SELECT 2,
// triggers the event itself (SENTINEL FAILOVER, kill -9 or SIGSTOP of the
// master's PID, then SIGCONT after the switch), and watches the topology
// around it: PSUBSCRIBE * on every sentinel, ROLE of every replica every
// 10 ms (the moment of the promotion), INFO commandstats of the old master
// every 50 ms (the SETs it ran after the promotion) and MONITOR on it
// (whose writers those SETs were). After the run it checks every
// acknowledged key on the new master and uses every idle connection again,
// and prints one RESULT line of key=value fields, with the figures of the
// plain and the pinned writers apart.
//
// A measurement, not a test: it prints what it saw and fails only when it
// could not run.
//
// Goroutine model: main starts one goroutine per writer, one per sentinel
// subscription, one ROLE poller, one old-master sampler and one MONITOR
// reader on the old master; all of them end when the run's context is
// cancelled (after the event and the settle time, at most -max-run), and
// main waits for them before checking.
package main
