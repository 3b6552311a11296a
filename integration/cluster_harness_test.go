package integration

// A Redis Cluster (integration/topology, 3 masters and 3 replicas) with the
// sentinel-proxy binary in front of it as one cluster group
// (--cluster-nodes), for the cluster tests.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// clusterHoldTimeout is the proxy's hold timeout in the cluster tests: a
// killed master is replaced about 2 node timeouts (2 s each) later, and a
// busy 2-core machine adds to that.
const clusterHoldTimeout = 15 * time.Second

// clusterBuild is the binary the cluster tests run, built once per test
// binary into its own directory (removed by TestMain): the cluster tests'
// topologies, and their directories, end with each test.
var clusterBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

// clusterProxyBinary builds ./cmd/sentinel-proxy as proxyBinary does.
func clusterProxyBinary(t *testing.T) string {
	t.Helper()
	clusterBuild.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			clusterBuild.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		if clusterBuild.dir, err = os.MkdirTemp("", "sentinel-proxy-cluster-it-"); err != nil {
			clusterBuild.err = err
			return
		}
		path := filepath.Join(clusterBuild.dir, "sentinel-proxy")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/sentinel-proxy")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if b, err := cmd.CombinedOutput(); err != nil {
			clusterBuild.err = fmt.Errorf("go build: %w\n%s", err, b)
			return
		}
		clusterBuild.path = path
	})
	if clusterBuild.err != nil {
		t.Fatal(clusterBuild.err)
	}
	return clusterBuild.path
}

// removeClusterBuild removes the binary clusterProxyBinary built, if any.
func removeClusterBuild() error {
	if clusterBuild.dir == "" {
		return nil
	}
	return os.RemoveAll(clusterBuild.dir)
}

// clusterStack is a running cluster and the proxy in front of it.
type clusterStack struct {
	c     *topology.Cluster
	proxy *proxyProc
}

// startClusterStack starts a cluster and the binary in front of it (hold
// timeout clusterHoldTimeout, plus extra flags), waits until the proxy is
// ready, and stops both, by PID, when t ends.
func startClusterStack(t *testing.T, extra ...string) *clusterStack {
	t.Helper()
	ctx := testContext(t, 2*time.Minute)
	began := time.Now()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	addr, admin := freeAddr(t), freeAddr(t)
	args := append([]string{clusterProxyBinary(t), "--listen", addr, "--cluster-nodes", strings.Join(c.Addrs(), ","),
		"--admin", admin, "--log-level", "warn", "--drain-timeout", "0s",
		"--hold-timeout", clusterHoldTimeout.String()}, extra...)
	// Registered after the cluster's: the proxy stops first.
	p := launchProxy(t, admin, args...)
	p.addr = addr
	t.Logf("cluster (%s) and proxy %s ready in %v", strings.Join(c.Addrs(), " "), addr, time.Since(began).Round(time.Millisecond))
	return &clusterStack{c: c, proxy: p}
}

// masterOf returns the node serving key's slot now.
func (cs *clusterStack) masterOf(ctx context.Context, t *testing.T, key string) *topology.Node {
	t.Helper()
	n, err := cs.c.MasterOf(ctx, slotOf(key))
	if err != nil {
		t.Fatalf("master of %s: %v", key, err)
	}
	return n
}

// slotOf is key's hash slot.
func slotOf(key string) int { return int(cluster.Slot([]byte(key))) }

// keysIn returns n keys prefix<i> whose slots satisfy in, trying i from 0.
func keysIn(prefix string, n int, in func(slot int) bool) []string {
	var keys []string
	for i := 0; len(keys) < n && i < 1_000_000; i++ {
		if k := fmt.Sprintf("%s%d", prefix, i); in(slotOf(k)) {
			keys = append(keys, k)
		}
	}
	return keys
}

// clusterRedirect matches the redirections and cluster-state errors a
// client of the proxy must never see.
var clusterRedirect = regexp.MustCompile(`\b(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b`)
