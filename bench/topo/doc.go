// Command topo starts the throwaway Sentinel topology of
// integration/topology for shell scripts (bench/bench.sh and the failover
// benchmark), prints where everything is as shell-parsable KEY=value lines,
// and stops every process it started when it gets SIGTERM or SIGINT or when
// its standard input is closed (so a script that dies takes it along).
//
// Goroutine model: main waits for the first of a signal or EOF on stdin (one
// goroutine reads stdin and exits with it), then stops the topology.
package main
