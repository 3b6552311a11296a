package integration

// The sentinel-proxy binary as a child process, for the tests that attack
// or operate it from outside: build, start, memory, metrics.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// proxyBuild builds the binary once per test binary, into the shared
// topology's directory (removed with it by TestMain).
var proxyBuild struct {
	once sync.Once
	path string
	err  error
}

func proxyBinary(t *testing.T, topo *topology.Topology) string {
	t.Helper()
	proxyBuild.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			proxyBuild.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		path := filepath.Join(topo.Dir(), "sentinel-proxy-abuse")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/sentinel-proxy")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if b, err := cmd.CombinedOutput(); err != nil {
			proxyBuild.err = fmt.Errorf("go build: %w\n%s", err, b)
			return
		}
		proxyBuild.path = path
	})
	if proxyBuild.err != nil {
		t.Fatal(proxyBuild.err)
	}
	return proxyBuild.path
}

// proxyProc is one sentinel-proxy child process.
type proxyProc struct {
	cmd         *exec.Cmd
	pid         int
	addr, admin string
	out         *syncBuffer
	exited      chan struct{}
	waitErr     error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProxy starts the binary in front of topo with extra flags, waits
// for /readyz and kills it (by PID) when t ends.
func startProxy(t *testing.T, topo *topology.Topology, extra ...string) *proxyProc {
	t.Helper()
	addr, admin := freeAddr(t), freeAddr(t)
	args := append([]string{proxyBinary(t, topo), "--listen", addr, "--master-name", topo.MasterName(),
		"--sentinels", strings.Join(topo.SentinelAddrs(), ","), "--admin", admin,
		"--log-level", "warn", "--drain-timeout", "0s"}, extra...)
	p := launchProxy(t, admin, args...)
	p.addr = addr
	return p
}

// launchProxy runs argv (the binary, or a wrapper that execs it, such as
// prlimit) whose admin endpoint is admin, waits for /readyz, and stops it
// by PID when t ends (SIGTERM, then SIGKILL after 5 s).
func launchProxy(t *testing.T, admin string, argv ...string) *proxyProc {
	t.Helper()
	p := &proxyProc{admin: admin, out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	p.pid = p.cmd.Process.Pid
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		if !p.dead() {
			_ = syscall.Kill(p.pid, syscall.SIGTERM)
		}
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("proxy output (tail):\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get("http://" + p.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if p.dead() || time.Now().After(deadline) {
			t.Fatalf("proxy %v not ready (%s); output:\n%s", argv, p.state(), p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func (p *proxyProc) dead() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// state says whether the proxy runs, or how it exited. waitErr is read
// only once exited is closed: before, the waiting goroutine may write it.
func (p *proxyProc) state() string {
	if !p.dead() {
		return "running"
	}
	return fmt.Sprintf("exited: %v", p.waitErr)
}

// mem is the proxy's memory in bytes: VmRSS, VmHWM and the Go heap in use.
type mem struct{ rss, hwm, heap int64 }

func (m mem) String() string {
	return fmt.Sprintf("VmRSS %.1f MB, VmHWM %.1f MB, heap %.1f MB", mb(m.rss), mb(m.hwm), mb(m.heap))
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func (p *proxyProc) mem(t *testing.T) mem {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		t.Fatalf("proxy status: %v (%s)", err, p.state())
	}
	var m mem
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				m.rss = kb << 10
			} else {
				m.hwm = kb << 10
			}
		}
	}
	m.heap = int64(p.metric(t, "go_memstats_heap_inuse_bytes"))
	return m
}

// metric returns the first sample of name on /metrics (-1 if missing).
func (p *proxyProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v (%s)", err, p.state())
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok && (rest[0] == ' ' || rest[0] == '{') {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			return v
		}
	}
	return -1
}

// peakWatch samples the Go heap in use every 100 ms (VmHWM is the kernel's
// own peak) until stopped.
func (p *proxyProc) peakWatch(t *testing.T) (stop func() (peakHeap int64)) {
	done, finished := make(chan struct{}), make(chan struct{})
	var peak int64
	go func() {
		defer close(finished)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for i := 0; i < 1200; i++ {
			if resp, err := http.Get("http://" + p.admin + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if i := bytes.Index(b, []byte("\ngo_memstats_heap_inuse_bytes ")); i >= 0 {
					line, _, _ := bytes.Cut(b[i+30:], []byte("\n"))
					v, _ := strconv.ParseFloat(string(line), 64)
					peak = max(peak, int64(v))
				}
			}
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	}()
	return func() int64 { close(done); <-finished; return peak }
}

// checkAlive asserts the proxy still runs and answers PING on a new
// connection.
func (p *proxyProc) checkAlive(t *testing.T) {
	t.Helper()
	if p.dead() {
		t.Fatalf("proxy exited: %v\n%s", p.waitErr, p.out.String())
	}
	c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy after the attack: %v", err)
	}
}
