package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:6379", "address to connect to")
	n := fs.Int("n", 5000, "connections to open")
	ping := fs.Bool("ping", true, "send one PING on each connection and read the reply")
	parallel := fs.Int("parallel", 50, "connections opened at once")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on opening all connections")
	if err := fs.Parse(args); err != nil {
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conns, failed, firstErr := open(ctx, *addr, *n, *parallel, *ping)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	msg := ""
	if firstErr != nil {
		msg = " first_error=" + strings.ReplaceAll(firstErr.Error(), " ", "_")
	}
	if _, err := fmt.Fprintf(stdout, "READY opened=%d failed=%d%s\n", len(conns), failed, msg); err != nil {
		return err
	}

	eof := make(chan struct{})
	go func() { // exits at EOF or a read error on stdin
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-sigs:
	case <-eof:
	}
	return nil
}

// open dials n connections, parallel at a time, each with an optional
// PING round trip, and returns the ones that succeeded.
func open(ctx context.Context, addr string, n, parallel int, ping bool) ([]net.Conn, int, error) {
	var (
		mu       sync.Mutex
		conns    []net.Conn
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan struct{})
	for range max(parallel, 1) {
		wg.Add(1)
		go func() { // exits when jobs is closed
			defer wg.Done()
			var d net.Dialer
			for range jobs {
				c, err := dialOne(ctx, &d, addr, ping)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return conns, failed, firstErr
}

func dialOne(ctx context.Context, d *net.Dialer, addr string, ping bool) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || !ping {
		return c, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, "*1\r\n$4\r\nPING\r\n"); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("ping: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "+PONG\r\n" {
		_ = c.Close()
		return nil, fmt.Errorf("ping: reply %q: %v", line, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
