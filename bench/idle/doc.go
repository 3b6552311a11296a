// Command idle opens many idle client connections to a Redis-speaking
// address (by default 5,000), optionally sends one PING on each and reads
// the reply, prints a READY line, and holds them until its standard input is
// closed or it gets SIGTERM/SIGINT. bench/bench.sh uses it to measure a
// proxy's memory per idle client and the backend connections idle clients
// cost.
//
// Goroutine model: a bounded pool of dialer goroutines opens the
// connections and exits; main then waits for a signal or EOF on stdin (one
// goroutine reads stdin) and closes every connection.
package main
