// Command sentinel-proxy is a Redis proxy that forwards every command to the
// master Redis Sentinel currently names.
//
// main only maps run's error to an exit code; run parses the command line,
// builds the logger, wires one sentinel.Watcher to one proxy.Server per
// master group, serves the admin endpoints and drains on cancel.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a problem with the command line or the configuration: exit
// status 2, nothing started.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "sentinel-proxy: %v\n(sentinel-proxy --help lists every flag)\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "sentinel-proxy: %v\n", err)
	return 1
}

// run is the whole program; it returns when ctx is cancelled and everything
// has stopped, or when something fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 {
		switch args[0] {
		case "dev":
			return runDev(ctx, args[1:], stdout, stderr, getenv)
		case "check":
			return runCheck(ctx, args[1:], stdout, stderr, getenv)
		case "health":
			return runHealth(ctx, args[1:], stdout, stderr)
		}
	}
	return runProxy(ctx, args, stdout, stderr, getenv, nil)
}
