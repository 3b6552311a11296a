package main

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// devLine is one per-second line of the demo.
var devLine = regexp.MustCompile(`(?m)^\s+t\+(\d+)s\s+writes/s\s+(\d+)\s+errors (\d+)\s+master (\S+)`)

// TestDevDemo runs the scripted demo, shortened: 3 s of writes, SENTINEL
// FAILOVER, 8 s later kill -9 of the master and its restart, the summary at
// 22 s. The output must show the writes going on, the master changing twice
// and no acknowledged write lost.
func TestDevDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, errOut readableBuffer
	began := time.Now()
	err := run(ctx, []string{"dev", "--steady", "3s", "--kill-after", "8s", "--duration", "22s",
		"--rate", "400", "--writers", "4", "--listen", "127.0.0.1:0", "--admin", ""},
		&out, &errOut, noEnv)
	text := out.String()
	t.Logf("dev took %v; stdout:\n%s\nstderr:\n%s", time.Since(began).Round(time.Second), text, errOut.String())
	if err != nil {
		t.Fatalf("dev: %v", err)
	}

	lines := devLine.FindAllStringSubmatch(text, -1)
	checks := []struct {
		name string
		ok   func() bool
	}{
		{"a line per second for the whole script", func() bool { return len(lines) >= 20 }},
		{"writes/s above 0 whenever a master is known, but for the seconds of the switches", func() bool {
			// Without a master (after the kill, until Sentinel has
			// promoted a replica: a few seconds, more on a loaded
			// machine) the proxy holds the writes; with one, they flow.
			stalled := 0
			for _, l := range lines {
				if w, _ := strconv.Atoi(l[2]); w == 0 && l[4] != "none," {
					stalled++
				}
			}
			return stalled <= 2
		}},
		{"the master changes at least twice", func() bool {
			changes, prev := 0, ""
			for _, l := range lines {
				if m := l[4]; m != "none," {
					if prev != "" && m != prev {
						changes++
					}
					prev = m
				}
			}
			return changes >= 2
		}},
		{"the failover and the kill are noted", func() bool {
			return strings.Contains(text, "SENTINEL FAILOVER sent") && strings.Contains(text, "kill -9 of master") &&
				strings.Count(text, "verified and in use by the proxy") >= 2
		}},
		{"acknowledged writes are counted", func() bool {
			m := regexp.MustCompile(`writes acknowledged: (\d+)`).FindStringSubmatch(text)
			n := 0
			if m != nil {
				n, _ = strconv.Atoi(m[1])
			}
			return n > 1000
		}},
		{"no acknowledged write lost", func() bool { return strings.Contains(text, "lost acknowledged writes: 0\n") }},
	}
	for _, c := range checks {
		if !c.ok() {
			t.Errorf("%s: not so in the output above", c.name)
		}
	}
}

// TestDevInterrupted cancels the demo after its first line (Ctrl-C): run
// returns without error and nothing it started still listens.
func TestDevInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	stdout := &readableBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"dev", "--rate", "200", "--listen", "127.0.0.1:0", "--admin", ""},
			stdout, &readableBuffer{}, noEnv)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !devLine.MatchString(stdout.String()) {
		select {
		case err := <-done:
			t.Fatalf("dev ended before its first line: %v\n%s", err, stdout.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no per-second line after 60 s:\n%s", stdout.String())
		}
	}
	interrupt()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev after Ctrl-C: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not return 30 s after Ctrl-C")
	}
	text := stdout.String()
	if !strings.Contains(text, "interrupted at t+") {
		t.Errorf("no interruption note:\n%s", text)
	}
	intro := regexp.MustCompile(`proxy (\S+) in front of \S+ \(master (\S+) \(redis-1\), sentinels \[([^\]]+)\]`).FindStringSubmatch(text)
	if intro == nil {
		t.Fatalf("no intro line with the addresses:\n%s", text)
	}
	addrs := append([]string{intro[1], intro[2]}, strings.Fields(intro[3])...)
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after dev returned", a)
		}
	}
}

// TestDevRejectsBadScript checks the script flags before anything starts.
func TestDevRejectsBadScript(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"steady beyond duration", []string{"--steady", "30s", "--duration", "20s"}, "--steady"},
		{"negative kill-after", []string{"--kill-after", "-1s"}, "--kill-after"},
		{"no writers", []string{"--writers", "0"}, "--writers"},
		{"rate below writers", []string{"--rate", "2"}, "--rate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"dev"}, c.args...), &stdout, &stderr, noEnv)
			if code := exitCode(err, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2 (err %v)", code, err)
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("stderr does not name %s: %s", c.want, stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("something started: %s", stdout.String())
			}
		})
	}
}

// readableBuffer is a buffer the test reads while run writes to it.
type readableBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (r *readableBuffer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.Write(p)
}

func (r *readableBuffer) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.String()
}

// TestDevCluster runs `dev --cluster` until its addresses are printed: the
// nodes answer, the proxy answers PING and routes SET and GET of keys of
// every shard; after Ctrl-C nothing it started still listens.
func TestDevCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	stdout := &readableBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"dev", "--cluster", "--listen", "127.0.0.1:0", "--admin", "", "--", "--log-level", "warn"},
			stdout, &readableBuffer{}, noEnv)
	}()
	proxyLine := regexp.MustCompile(`(?m)^  proxy:\s+(\S+)\s+\(group cluster\)$`)
	deadline := time.Now().Add(90 * time.Second)
	for !proxyLine.MatchString(stdout.String()) {
		select {
		case err := <-done:
			t.Fatalf("dev --cluster ended before printing the addresses: %v\n%s", err, stdout.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no addresses after 90 s:\n%s", stdout.String())
		}
	}
	text := stdout.String()
	t.Logf("stdout:\n%s", text)
	proxyAddr := proxyLine.FindStringSubmatch(text)[1]
	nodesLine := regexp.MustCompile(`(?m)^  nodes:\s+(.+)$`).FindStringSubmatch(text)
	if nodesLine == nil {
		t.Fatalf("no nodes line:\n%s", text)
	}
	nodes := strings.Fields(nodesLine[1])
	if len(nodes) != 6 || len(regexp.MustCompile(`master \S+ slots \S+, replicas \S+`).FindAllString(text, -1)) != 3 || !strings.Contains(text, "slots 0-5460, replicas ") ||
		!strings.Contains(text, "CLUSTER FAILOVER") {
		t.Errorf("want 6 nodes, 3 shards and how to fail one over:\n%s", text)
	}
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n})
		if state, err := c.ClusterInfo(ctx).Result(); err != nil || !strings.Contains(state, "cluster_state:ok") {
			t.Errorf("node %s: CLUSTER INFO %q, %v", n, state, err)
		}
		c.Close()
	}
	client := redis.NewClient(&redis.Options{Addr: proxyAddr})
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Errorf("PING through the proxy: %v", err)
	}
	t.Run("SET and GET through the proxy", func(t *testing.T) {
		for i := range 20 {
			k := "dev:" + strconv.Itoa(i)
			if err := client.Set(ctx, k, i, 0).Err(); err != nil {
				t.Fatalf("SET %s: %v", k, err)
			}
			if got, err := client.Get(ctx, k).Int(); err != nil || got != i {
				t.Fatalf("GET %s = %d, %v; want %d", k, got, err, i)
			}
		}
	})

	interrupt()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev --cluster after Ctrl-C: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev --cluster did not return 30 s after Ctrl-C")
	}
	for _, a := range append(nodes, proxyAddr) {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after dev returned", a)
		}
	}
}
