package integration

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// defaultBenchmarkTests are the tests redis-benchmark 7.0 runs without -t,
// in the names -q prints.
var defaultBenchmarkTests = []string{
	"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP",
	"SADD", "HSET", "SPOP", "ZADD", "ZPOPMIN", "LPUSH (needed to benchmark LRANGE)",
	"LRANGE_100 (first 100 elements)", "LRANGE_300 (first 300 elements)",
	"LRANGE_500 (first 500 elements)", "LRANGE_600 (first 600 elements)", "MSET (10 keys)",
}

// benchLine is a -q result line: "NAME: 12345.67 requests per second, p50=…".
var benchLine = regexp.MustCompile(`^(.+): ([0-9.]+) requests per second`)

// TestRedisBenchmark runs redis-benchmark through the proxy to completion:
// the default test set (inline PING, MSET, LRANGE, …) and a pipelined
// SET/GET run, authenticated with -a.
func TestRedisBenchmark(t *testing.T) {
	if testing.Short() {
		t.Skip("redis-benchmark")
	}
	// Parallel: it overlaps with the failover tests, which mostly wait
	// for Sentinel.
	t.Parallel()
	st := sharedStack(t, true)
	cases := []struct {
		name  string
		args  []string
		tests []string
	}{
		{"default tests", []string{"-n", "20000", "-c", "20"}, defaultBenchmarkTests},
		{"pipelined -P 16", []string{"-n", "20000", "-c", "20", "-P", "16", "-t", "set,get"}, []string{"SET", "GET"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-h", st.Host(), "-p", st.Port(), "-a", st.Password, "-q"}, tc.args...)
			began := time.Now()
			r := run(t, 3*time.Minute, nil, "redis-benchmark", args...)
			t.Logf("redis-benchmark %s took %v:\n%s", strings.Join(tc.args, " "), time.Since(began).Round(time.Millisecond), resultLines(r.Stdout))
			if r.Err != nil {
				t.Fatalf("redis-benchmark: %v\n%s", r.Err, clip(r.Combined()))
			}
			got := map[string]bool{}
			// -q rewrites its progress line with \r; results end with \n.
			for _, line := range strings.FieldsFunc(r.Combined(), func(c rune) bool { return c == '\r' || c == '\n' }) {
				if strings.Contains(line, "Error") || strings.Contains(line, "ERR") || strings.Contains(line, "WARNING") {
					t.Errorf("redis-benchmark printed %q", line)
				}
				if m := benchLine.FindStringSubmatch(line); m != nil {
					got[m[1]] = true
				}
			}
			for _, name := range tc.tests {
				if !got[name] {
					t.Errorf("no requests-per-second line for %q; output:\n%s", name, clip(r.Stdout))
				}
			}
			if len(got) != len(tc.tests) {
				t.Errorf("%d result lines, want %d: %v", len(got), len(tc.tests), got)
			}
		})
	}
}

// resultLines returns the result lines of -q output, without the progress.
func resultLines(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		if benchLine.MatchString(line) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
