package topology_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// TestStartFailoverStop starts real topologies, checks every node's role and
// the sentinels' view, forces one failover, and checks that Stop leaves no
// process and no directory behind.
func TestStartFailoverStop(t *testing.T) {
	tests := []struct {
		name string
		opts topology.Options
	}{
		{name: "default"},
		{name: "passwords", opts: topology.Options{
			MasterName:       "sessions",
			Password:         `data "pw" \ with spaces`,
			SentinelPassword: "sentinel-pw",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			began := time.Now()
			topo, err := topology.Start(ctx, tc.opts)
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			t.Cleanup(func() { _ = topo.Stop() })
			t.Logf("Start took %v (dir %s)", time.Since(began).Round(time.Millisecond), topo.Dir())

			opts := topo.Options()
			if len(topo.Nodes()) != 3 || len(topo.SentinelNodes()) != 3 || len(topo.SentinelAddrs()) != 3 {
				t.Fatalf("got %d data nodes, %d sentinels; want 3 and 3", len(topo.Nodes()), len(topo.SentinelNodes()))
			}
			if want := tc.opts.MasterName; want != "" && topo.MasterName() != want {
				t.Errorf("MasterName() = %q, want %q", topo.MasterName(), want)
			}
			old := topo.Master().Addr
			if got, err := topo.CurrentMaster(ctx); err != nil || got != old {
				t.Fatalf("CurrentMaster() = %q, %v; want %q", got, err, old)
			}
			for _, n := range topo.Nodes()[1:] {
				if role := nodeRole(ctx, t, n); role != "slave" {
					t.Errorf("%s role %q, want slave", n.Name, role)
				}
			}
			for _, s := range topo.SentinelNodes() {
				sc := sentinelClient(s, opts)
				others, err := sc.Sentinels(ctx, topo.MasterName()).Result()
				_ = sc.Close()
				if err != nil || len(others) != 2 {
					t.Errorf("%s: SENTINEL SENTINELS = %d entries, %v; want 2", s.Name, len(others), err)
				}
			}
			if tc.opts.Password != "" {
				unauth := redis.NewClient(&redis.Options{Addr: old, Protocol: 2, DisableIdentity: true})
				defer unauth.Close()
				if err := unauth.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
					t.Errorf("PING without password on the master: %v, want NOAUTH", err)
				}
			}
			if err := topo.Master().Client().Set(ctx, "k", "before", 0).Err(); err != nil {
				t.Fatalf("SET on master: %v", err)
			}

			pids := allPIDs(t, topo)

			began = time.Now()
			if err := topo.Failover(ctx); err != nil {
				t.Fatalf("failover: %v", err)
			}
			newAddr, err := topo.WaitForNewMaster(ctx, old)
			if err != nil {
				t.Fatalf("wait for new master: %v", err)
			}
			t.Logf("failover to %s took %v", newAddr, time.Since(began).Round(time.Millisecond))
			n := topo.NodeByAddr(newAddr)
			if n == nil || n == topo.Master() || n.IsSentinel() {
				t.Fatalf("new master %s is not one of the initial replicas", newAddr)
			}
			if err := n.Client().Set(ctx, "k", "after", 0).Err(); err != nil {
				t.Errorf("SET on new master %s: %v", n.Name, err)
			}

			checkStop(t, topo.Stop, topo.Dir(), pids, append(topo.Nodes(), topo.SentinelNodes()...))
		})
	}
}

// checkStop stops a topology or a cluster twice and checks that every
// process it started (pids), and each one's process group, is gone, that
// its nodes say so, and that its temporary directory is removed.
func checkStop(t *testing.T, stop func() error, dir string, pids []int, nodes []*topology.Node) {
	t.Helper()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	for _, n := range nodes {
		if n.Running() || n.PID() != 0 {
			t.Errorf("%s reports running (pid %d) after Stop", n.Name, n.PID())
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary dir %s not removed: %v", dir, err)
	}
}

// TestNodeKillRestart checks that a killed replica restarts on its port as
// a replica and that the topology settles again, and that Pause/Resume
// leave the node running.
func TestNodeKillRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, err := topology.Start(ctx, topology.Options{Replicas: 1, Sentinels: 1, Quorum: 1})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = topo.Stop() })

	replica := topo.Nodes()[1]
	oldPID := replica.PID()
	if err := replica.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if replica.Running() {
		t.Fatalf("%s running after Kill", replica.Name)
	}
	if err := syscall.Kill(oldPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("killed process %d still exists: %v", oldPID, err)
	}
	if err := replica.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if replica.PID() == 0 || replica.PID() == oldPID {
		t.Errorf("PID after restart = %d (before %d)", replica.PID(), oldPID)
	}
	if err := replica.Restart(ctx); err == nil {
		t.Errorf("Restart of a running node succeeded, want an error")
	}
	if err := topo.WaitStable(ctx); err != nil {
		t.Fatalf("not stable after restart: %v", err)
	}

	if err := replica.Pause(); err != nil || !replica.Paused() {
		t.Fatalf("pause: %v, Paused() = %v", err, replica.Paused())
	}
	if err := replica.Resume(); err != nil || replica.Paused() || !replica.Running() {
		t.Fatalf("resume: %v, Paused() = %v, Running() = %v", err, replica.Paused(), replica.Running())
	}
	if role := nodeRole(ctx, t, replica); role != "slave" {
		t.Errorf("%s role after resume %q, want slave", replica.Name, role)
	}
}

// TestOptionsRejected checks that invalid options fail before anything runs.
func TestOptionsRejected(t *testing.T) {
	tests := []struct {
		name string
		opts topology.Options
		want string
	}{
		{"down-after too short", topology.Options{DownAfter: time.Second}, "spurious double failovers"},
		{"quorum above sentinels", topology.Options{Sentinels: 1, Quorum: 2}, "quorum"},
		{"missing binary", topology.Options{RedisServer: "no-such-redis-server"}, "apt-get install -y redis-server redis-sentinel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topo, err := topology.Start(context.Background(), tc.opts)
			if err == nil {
				_ = topo.Stop()
				t.Fatalf("Start succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func nodeRole(ctx context.Context, t *testing.T, n *topology.Node) string {
	t.Helper()
	v, err := n.Client().Do(ctx, "role").Slice()
	if err != nil || len(v) == 0 {
		t.Fatalf("ROLE on %s: %v %v", n.Name, v, err)
	}
	s, _ := v[0].(string)
	return s
}

func sentinelClient(s *topology.Node, o topology.Options) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: s.Addr, Password: o.SentinelPassword, Protocol: 2, DisableIdentity: true})
}

func allPIDs(t *testing.T, topo *topology.Topology) []int {
	t.Helper()
	var pids []int
	for _, n := range append(topo.Nodes(), topo.SentinelNodes()...) {
		if n.PID() == 0 {
			t.Fatalf("%s has no PID while running", n.Name)
		}
		pids = append(pids, n.PID())
	}
	if slices.Contains(pids, os.Getpid()) {
		t.Fatalf("a node reports the test's own PID")
	}
	return pids
}
