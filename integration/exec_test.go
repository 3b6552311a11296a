package integration

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// execResult is what a finished external client printed.
type execResult struct {
	Stdout, Stderr string
	Err            error // non-nil on a non-zero exit, a timeout or a failed start
}

// Combined is stdout and stderr together, for checks that must see both.
func (r execResult) Combined() string { return r.Stdout + r.Stderr }

// run executes name with args and stdin, killed (by PID, through
// exec.CommandContext) if it runs longer than timeout.
func run(t testing.TB, timeout time.Duration, stdin []byte, name string, args ...string) execResult {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = 5 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return execResult{Stdout: out.String(), Stderr: errOut.String(), Err: err}
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t testing.TB, timeout time.Duration, stdin []byte, name string, args ...string) execResult {
	t.Helper()
	r := run(t, timeout, stdin, name, args...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.Err, clip(r.Stdout), clip(r.Stderr))
	}
	return r
}

// clip shortens long outputs in failure messages.
func clip(s string) string {
	const n = 4000
	if len(s) <= n {
		return s
	}
	return s[:n/2] + "\n…\n" + s[len(s)-n/2:]
}
