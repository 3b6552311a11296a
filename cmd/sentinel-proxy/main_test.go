package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

func noEnv(string) string { return "" }

func TestInvalidConfigurationExitsWithStatus2(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--listen", "nowhere", "--sentinels", "x", "--hold-timeout", "-1s"}, &stdout, &stderr, noEnv)
	if code := exitCode(err, &stderr); code != 2 {
		t.Fatalf("exit code = %d, want 2 (err %v)", code, err)
	}
	out := stderr.String()
	for _, want := range []string{"sentinels[0]", "neither master_name", "listen", "hold_timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, flag := range []string{"--listen", "--master-name", "--sentinels", "--admin", "--config", "--hold-timeout", "--sentinel-password", "--log-format"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

// TestRunServesThroughSentinel runs the whole program against a real
// topology: the quick-form flags, the watcher, the proxy and the admin
// endpoints, then a clean shutdown.
func TestRunServesThroughSentinel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo, err := topology.Start(ctx, topology.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Stop() })

	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan []*group, 1)
	done := make(chan error, 1)
	var stderr readableBuffer
	go func() {
		done <- runProxy(runCtx, []string{
			"--listen", "127.0.0.1:0", "--master-name", topo.MasterName(),
			"--sentinels", strings.Join(topo.SentinelAddrs(), ","),
		}, &bytes.Buffer{}, &stderr, noEnv, func(g []*group) { ready <- g })
	}()
	var groups []*group
	select {
	case groups = <-ready:
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	}
	addr := groups[0].addr

	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := c.Set(ctx, "k", "v", 0).Err(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("SET through the proxy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	direct := redis.NewClient(&redis.Options{Addr: topo.Master().Addr})
	defer direct.Close()
	if got, err := direct.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("master has k=%q (%v), want v", got, err)
	}

	h := adminHandler(&app{groups: groups, reloads: newReloadsCounter()})
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/status": 200} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("%s = %d, want %d: %s", path, rec.Code, want, rec.Body)
		}
		if path == "/metrics" && !strings.Contains(rec.Body.String(), `sentinel_proxy_client_connections{group="mymaster"} 1`) {
			t.Errorf("/metrics lacks the client gauge:\n%s", rec.Body)
		}
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("proxy still accepts connections after shutdown")
	}
}
