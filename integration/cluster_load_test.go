package integration

// The writers of the cluster client tests: go-redis (plain redis.Client),
// redis-py (testdata/cluster_py.py) and phpredis sessions
// (testdata/cluster_session.php), all through the proxy, each INCRing its
// own counters and counting what it was told.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterLoadMaxOps and clusterLoadMaxTime bound every writer.
	clusterLoadMaxOps  = 50_000
	clusterLoadMaxTime = 90 * time.Second
	// clusterGoWriters is the number of go-redis clients.
	clusterGoWriters = 3
	// mayHaveRun ends the proxy's answer to a command whose reply was lost.
	mayHaveRun = "the command may have run (sentinel-proxy)"
)

// tally is what one writer was told: per key, the INCRs acknowledged and
// those answered "may have run"; every other error; how many connections
// it opened.
type tally struct {
	name         string
	acked, maybe map[string]int64
	errs         []string
	connects     int64
}

// phpClosed matches phpredis's messages for a connection the server
// closed.
var phpClosed = regexp.MustCompile(`(?i)connection (closed|lost|reset)|read error|went away|broken pipe`)

// clusterLoad is every writer of one scenario.
type clusterLoad struct {
	stopFile string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	goReady  atomic.Int64
	mu       sync.Mutex
	tallies  []*tally
	procs    []*loadProc
}

// loadProc is a writer in a child process.
type loadProc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startClusterLoad starts the writers against addr; keys gives each its
// counters (go-redis writer i: keys("go<i>:"), redis-py: keys("py:"),
// sessions: keys("PHPREDIS_SESSION:") without that prefix). It returns
// once every writer has had its first INCRs acknowledged.
func startClusterLoad(t *testing.T, addr string, keys func(prefix string) []string) *clusterLoad {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterLoadMaxTime)
	l := &clusterLoad{stopFile: filepath.Join(t.TempDir(), "stop"), cancel: cancel}
	t.Cleanup(func() { l.stop(t) })
	for i := range clusterGoWriters {
		tl := &tally{name: "go-redis#" + strconv.Itoa(i), acked: map[string]int64{}, maybe: map[string]int64{}}
		l.tallies = append(l.tallies, tl)
		ks := keys("go" + strconv.Itoa(i) + ":")
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.goWriter(ctx, addr, tl, ks) }() // ends with ctx or clusterLoadMaxOps
	}
	host, port, _ := strings.Cut(addr, ":")
	secs := strconv.Itoa(int(clusterLoadMaxTime / time.Second))
	l.spawn(t, ctx, "redis-py", python, "testdata/cluster_py.py", host, port, l.stopFile,
		strconv.Itoa(clusterLoadMaxOps), secs, strings.Join(keys("py:"), ","))
	var ids []string
	for _, k := range keys("PHPREDIS_SESSION:") {
		ids = append(ids, strings.TrimPrefix(k, "PHPREDIS_SESSION:"))
	}
	savePath := "tcp://" + addr + "?" + url.Values{"timeout": {"2"}, "read_timeout": {"30"}}.Encode()
	l.spawn(t, ctx, "phpredis-sessions", "php", "-d", "display_errors=0", "-d", "log_errors=0", "-d", "error_reporting=-1",
		"-d", "session.save_handler=redis", "-d", `session.save_path="`+savePath+`"`,
		"-d", "redis.session.locking_enabled=0", "-d", "session.use_cookies=0", "-d", "session.use_only_cookies=0",
		"-d", "session.cache_limiter=", "testdata/cluster_session.php",
		l.stopFile, strconv.Itoa(clusterLoadMaxOps), secs, strings.Join(ids, ","))
	waitFor(t, 30*time.Second, "every writer's first acknowledged INCRs", func() bool {
		ready := l.goReady.Load() == clusterGoWriters
		for _, p := range l.procs {
			ready = ready && strings.Contains(p.out.String(), "ready\n")
			if p.exited() {
				t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, clip(p.out.String()))
			}
		}
		return ready
	})
	return l
}

// goWriter INCRs ks in turn on one connection with no retries.
func (l *clusterLoad) goWriter(ctx context.Context, addr string, tl *tally, ks []string) {
	c := redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1, PoolSize: 1,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		OnConnect: func(context.Context, *redis.Conn) error { atomic.AddInt64(&tl.connects, 1); return nil },
	})
	defer c.Close()
	for i := range clusterLoadMaxOps {
		if ctx.Err() != nil {
			return
		}
		k := ks[i%len(ks)]
		err := c.Incr(context.Background(), k).Err()
		l.mu.Lock()
		switch {
		case err == nil:
			tl.acked[k]++
		case strings.Contains(err.Error(), mayHaveRun):
			tl.maybe[k]++
		default:
			tl.errs = append(tl.errs, err.Error())
		}
		n := len(tl.errs)
		l.mu.Unlock()
		if i == 99 {
			l.goReady.Add(1)
		}
		if n > 50 {
			return
		}
	}
}

// spawn starts a writer process, killed with ctx.
func (l *clusterLoad) spawn(t *testing.T, ctx context.Context, name string, argv ...string) {
	t.Helper()
	p := &loadProc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	p.cmd.WaitDelay = 5 * time.Second
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }() // ends with the process
	l.procs = append(l.procs, p)
}

func (p *loadProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends every writer and waits for it. Safe to call twice.
func (l *clusterLoad) stop(t *testing.T) {
	if err := os.WriteFile(l.stopFile, nil, 0o644); err != nil {
		t.Errorf("stop file: %v", err)
	}
	for _, p := range l.procs {
		<-p.done
	}
	l.cancel()
	l.wg.Wait()
}

// results stops the writers and returns every tally, the processes'
// included, and the problems found in their output.
func (l *clusterLoad) results(t *testing.T) ([]*tally, []string) {
	t.Helper()
	l.stop(t)
	tallies, problems := append([]*tally(nil), l.tallies...), []string(nil)
	for _, p := range l.procs {
		out := p.out.String()
		if p.err != nil {
			problems = append(problems, fmt.Sprintf("%s exited: %v\n%s", p.name, p.err, clip(out)))
			continue
		}
		var tl *tally
		var err error
		if p.name == "redis-py" {
			tl, err = pyTally(out)
		} else {
			tl, err = sessionTally(out)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v\n%s", p.name, err, clip(out)))
			continue
		}
		tl.name = p.name
		tallies = append(tallies, tl)
	}
	return tallies, problems
}

// pyTally reads cluster_py.py's last line.
func pyTally(out string) (*tally, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r struct {
		Acked, Maybe map[string]int64
		Errors       []string
		Connects     int64
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return nil, fmt.Errorf("last line: %w", err)
	}
	return &tally{acked: r.Acked, maybe: r.Maybe, errs: r.Errors, connects: r.Connects}, nil
}

// sessionTally reads cluster_session.php's lines. A request that reported an
// error counts as "may have run" (phpredis does not say whether its write
// happened) and its messages as errors; connects stays 0: phpredis
// connects per request.
func sessionTally(out string) (*tally, error) {
	tl := &tally{acked: map[string]int64{}, maybe: map[string]int64{}}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		switch {
		case line == "ready":
		case len(f) == 3 && f[0] == "ok":
			// Every acknowledged write is in the session, this one
			// too, and at most the failed ones besides.
			n, err := strconv.ParseInt(f[2], 10, 64)
			if id := f[1]; err != nil || n < tl.acked[id]+1 || n > tl.acked[id]+tl.maybe[id]+1 {
				return nil, fmt.Errorf("%q after %d acknowledged and %d failed requests", line, tl.acked[id], tl.maybe[id])
			}
			tl.acked[f[1]]++
		case len(f) == 3 && f[0] == "error":
			tl.maybe[f[1]]++
			tl.errs = append(tl.errs, line)
		default:
			return nil, fmt.Errorf("unexpected line %q", line)
		}
	}
	return tl, nil
}
