package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// procsSet records what runProxy passed to setProcs (0: nothing).
var procsSet atomic.Int64

func TestMain(m *testing.M) {
	// runProxy runs in this process: record GOMAXPROCS instead of
	// changing the test binary's.
	setProcs = func(n int) int {
		procsSet.Store(int64(n))
		return startProcs
	}
	os.Exit(m.Run())
}

func TestProcsFor(t *testing.T) {
	for _, tc := range []struct {
		procs int
		env   string
		avail int
		want  int
	}{
		{0, "", 1, 1},
		{0, "", 2, 1},
		{0, "", 3, 1},
		{0, "", 8, 4},
		{0, "", 64, 32},
		{0, "4", 8, 0}, // GOMAXPROCS set: the runtime's own
		{3, "", 8, 3},  // the setting wins over both
		{3, "4", 8, 3},
	} {
		if got := procsFor(tc.procs, tc.env, tc.avail); got != tc.want {
			t.Errorf("procsFor(%d, %q, %d) = %d, want %d", tc.procs, tc.env, tc.avail, got, tc.want)
		}
	}
}

// TestRunSetsProcs checks that starting the proxy applies procs: the
// setting, else half the CPUs, else (GOMAXPROCS set) nothing.
func TestRunSetsProcs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want int64
	}{
		{"default", nil, nil, int64(max(1, startProcs/2))},
		{"setting", []string{"--procs", "3"}, nil, 3},
		{"GOMAXPROCS set", nil, map[string]string{"GOMAXPROCS": "5"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			procsSet.Store(0)
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // serve returns at once: only the start-up matters
			args := append([]string{"--listen", "127.0.0.1:0", "--master-name", "m", "--sentinels", "127.0.0.1:1", "--admin", ""}, tc.args...)
			var stderr readableBuffer
			err := runProxy(ctx, args, &bytes.Buffer{}, &stderr, func(k string) string { return tc.env[k] }, nil)
			if err != nil {
				t.Fatalf("runProxy: %v\n%s", err, stderr.String())
			}
			if got := procsSet.Load(); got != tc.want {
				t.Errorf("GOMAXPROCS set to %d, want %d (0: left alone)", got, tc.want)
			}
			if !strings.Contains(stderr.String(), "threads running Go code") {
				t.Errorf("no log line with procs:\n%s", stderr.String())
			}
		})
	}
}
