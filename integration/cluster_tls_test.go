package integration

// A Redis Cluster whose nodes speak TLS only (port 0, tls-port, TLS on the
// cluster bus and for replication, client certificates required), with the
// sentinel-proxy binary in front of it configured by a file: TLS to the
// clients and to the nodes (backend_tls*). The topology package's cluster
// speaks plain TCP, so this test starts its own processes, as TestTLS does.

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// tlsCluster is a TLS-only cluster of 3 masters with 1 replica each.
type tlsCluster struct {
	*tlsTopo
	nodes []string          // TLS addresses
	ids   map[string]string // address → node ID
}

// startTLSCluster starts six TLS-only cluster nodes, joins them with
// redis-cli --cluster create (over TLS, with the client certificate in
// certFile and keyFile) and waits until every node sees all slots served
// and every replica is in sync. Every process is killed by PID when t ends.
func startTLSCluster(t *testing.T, pki *testpki.Files, certFile, keyFile string, clientTLS *tls.Config) *tlsCluster {
	t.Helper()
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		t.Fatalf("redis-server and redis-cli are required (make deps): %v %v", err1, err2)
	}
	tc := &tlsCluster{tlsTopo: newTLSProcs(t, clientTLS), ids: map[string]string{}}
	for i := range 6 {
		name := "node-" + strconv.Itoa(i+1)
		for attempt := 1; ; attempt++ {
			port, bus := freeLoopbackPort(t), freeLoopbackPort(t)
			exited := tc.start(t, name, server, append(tlsOnlyConf(pki, port),
				"tls-cluster yes", // the cluster bus is TLS too
				"cluster-enabled yes", "cluster-config-file "+name+"-nodes.conf",
				"cluster-port "+strconv.Itoa(bus), "cluster-node-timeout 2000",
				// See topology.clusterConfig.
				"cluster-replica-validity-factor 0", "repl-ping-replica-period 1",
				`save ""`, "appendonly no", "repl-diskless-sync yes", "repl-diskless-sync-delay 0"))
			if !tc.bindFailed(t, name, exited) {
				tc.nodes = append(tc.nodes, tlsJoin(port))
				break
			}
			if attempt == 5 {
				t.Fatalf("%s: a port taken by another process, 5 times", name)
			}
			t.Logf("%s: port %d or %d taken, trying others", name, port, bus)
			os.Remove(filepath.Join(tc.dir, name+"-nodes.conf")) // it names the ports tried
		}
	}
	for _, n := range tc.nodes {
		tc.waitCmd(t, n, 15*time.Second, n+" up", func(ctx context.Context, c *redis.Client) error {
			id, err := c.Do(ctx, "cluster", "myid").Text()
			tc.ids[n] = id
			return err
		})
	}

	ctx := testContext(t, time.Minute)
	args := append([]string{"--tls", "--cert", certFile, "--key", keyFile, "--cacert", pki.CAFile, "--cluster", "create"}, tc.nodes...)
	cmd := exec.CommandContext(ctx, cli, append(args, "--cluster-replicas", "1", "--cluster-yes")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range tc.nodes {
		tc.waitCmd(t, n, 30*time.Second, n+" sees the cluster formed", func(ctx context.Context, c *redis.Client) error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			for k, want := range map[string]string{"cluster_state": "ok", "cluster_slots_ok": "16384", "cluster_known_nodes": "6"} {
				if v := infoField(info, k); v != want {
					return fmt.Errorf("%s %q, want %q", k, v, want)
				}
			}
			repl, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if infoField(repl, "role") == "slave" && infoField(repl, "master_link_status") != "up" {
				return fmt.Errorf("master_link_status %q", infoField(repl, "master_link_status"))
			}
			return nil
		})
	}
	return tc
}

// slotMap reads the slot map straight from the nodes over TLS.
func (tc *tlsCluster) slotMap(t *testing.T) *cluster.Map {
	t.Helper()
	m, _, err := cluster.Fetch(testContext(t, 10*time.Second), tc.nodes, cluster.FetchOptions{TLSConfig: tc.clientTLS})
	if err != nil {
		t.Fatalf("slot map: %v", err)
	}
	return m
}

// get is GET key on the node at addr, asked directly.
func (tc *tlsCluster) get(t *testing.T, addr, key string) string {
	t.Helper()
	c := tc.client(addr)
	defer c.Close()
	v, err := c.Get(testContext(t, 5*time.Second), key).Result()
	if err != nil {
		t.Fatalf("GET %s on %s: %v", key, addr, err)
	}
	return v
}

// do runs one command on the node at addr.
func (tc *tlsCluster) do(t *testing.T, addr string, args ...any) {
	t.Helper()
	c := tc.client(addr)
	defer c.Close()
	if err := c.Do(testContext(t, 10*time.Second), args...).Err(); err != nil {
		t.Fatalf("%v on %s: %v", args, addr, err)
	}
}

// startTLSClusterProxy writes a config file for one cluster group with
// TLS on both sides and runs the binary on it (stopped by PID when t
// ends), and returns it and the config file.
func startTLSClusterProxy(t *testing.T, pki *testpki.Files, certFile, keyFile string, seeds []string) (*proxyProc, string) {
	t.Helper()
	addr, admin := freeAddr(t), freeAddr(t)
	conf := fmt.Sprintf(`admin: %q
log_level: info
drain_timeout: 0s
hold_timeout: %s
tls_cert_file: %q
tls_key_file: %q
backend_tls: true
backend_tls_ca_file: %q
backend_tls_cert_file: %q
backend_tls_key_file: %q
groups:
  - name: tlscluster
    listen: %q
    cluster_nodes: [%s]
`, admin, clusterHoldTimeout, pki.CertFile, pki.KeyFile, pki.CAFile, certFile, keyFile, addr, strings.Join(seeds, ", "))
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := launchProxy(t, admin, clusterProxyBinary(t), "--config", path)
	p.addr = addr
	return p, path
}

// TestClusterTLS runs the TLS-only cluster behind the proxy: see the
// subtests. A client of the proxy never sees a redirect.
func TestClusterTLS(t *testing.T) {
	began := time.Now()
	pki := testpki.NewFiles(t, "cluster tls ca")
	certFile, keyFile := pki.CA.WriteKeyPair(t, t.TempDir(), "client", testpki.ClientLeaf(3))
	clientCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	tc := startTLSCluster(t, pki, certFile, keyFile, pki.CA.ClientConfig(clientCert))
	m := tc.slotMap(t)
	masters := m.Masters()
	if len(masters) != 3 {
		t.Fatalf("masters %v, want 3", masters)
	}
	for _, a := range masters {
		if !slices.Contains(tc.nodes, a) {
			t.Fatalf("slot map names master %s, not one of the nodes' TLS addresses %v", a, tc.nodes)
		}
	}
	// One seed: the proxy learns the other nodes from the cluster.
	p, conf := startTLSClusterProxy(t, pki, certFile, keyFile, tc.nodes[:1])
	t.Logf("cluster and proxy ready in %v", time.Since(began).Round(time.Millisecond))
	c := tlsProxyClient(p.addr, &tls.Config{RootCAs: pki.CA.Pool()})
	defer c.Close()

	// keysOf returns n keys named prefix<i> in slots master serves in m.
	keysOf := func(m *cluster.Map, prefix, master string, n int) []string {
		return keysIn(prefix, n, func(slot int) bool {
			a, ok := m.Lookup(uint16(slot))
			return ok && a == master
		})
	}

	t.Run("set get mget across masters", func(t *testing.T) {
		ctx := testContext(t, 30*time.Second)
		var keys, want []any
		for _, master := range masters {
			for _, k := range keysOf(m, keyPrefix(t), master, 3) {
				if err := c.Set(ctx, k, "v-"+k, 0).Err(); err != nil {
					t.Fatalf("SET %s through the proxy: %v", k, err)
				}
				if v := tc.get(t, master, k); v != "v-"+k {
					t.Fatalf("GET %s on its master %s: %q", k, master, v)
				}
				if v, err := c.Get(ctx, k).Result(); err != nil || v != "v-"+k {
					t.Fatalf("GET %s through the proxy: %q, %v", k, v, err)
				}
				keys, want = append(keys, k), append(want, "v-"+k)
			}
		}
		got, err := c.Do(ctx, append([]any{"mget"}, keys...)...).Slice()
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("MGET over 3 masters through the proxy: %v, %v; want %v", got, err, want)
		}
	})

	// check reads the slot map and asks ROLE on every master over TLS.
	t.Run("check", func(t *testing.T) {
		// The new cluster may not have settled yet (a replica loading its
		// first sync, a replica still listed as a master without slots),
		// which check rightly reports: asked again until it has.
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := exec.CommandContext(testContext(t, 30*time.Second), clusterProxyBinary(t), "check", "--config", conf).CombinedOutput()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sentinel-proxy check, 20 s after the cluster was ready: %v\n%s", err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	// CLUSTER SLOTS (the fallback before Redis 7) lists one port per
	// node: the TLS port when asked over TLS.
	t.Run("cluster slots over tls", func(t *testing.T) {
		d := tc.client(tc.nodes[0])
		defer d.Close()
		reply, err := d.Do(testContext(t, 5*time.Second), "cluster", "slots").Result()
		if err != nil {
			t.Fatalf("CLUSTER SLOTS: %v", err)
		}
		sm, err := cluster.ParseSlots(reply, cluster.ParseOptions{From: tc.nodes[0], TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sm.Masters(), masters) {
			t.Fatalf("CLUSTER SLOTS names masters %v, CLUSTER SHARDS %v", sm.Masters(), masters)
		}
	})

	t.Run("slot moved behind the proxy", func(t *testing.T) {
		ctx := testContext(t, 30*time.Second)
		redirects := p.metric(t, "sentinel_proxy_cluster_redirects_total")
		from, to := masters[0], masters[1]
		keys := keysOf(m, keyPrefix(t), from, 1)
		key, slot := keys[0], slotOf(keys[0])
		// A second key of the same slot, for ASK: absent from both.
		other := keysIn(keyPrefix(t)+"other", 1, func(s int) bool { return s == slot })[0]
		if err := c.Set(ctx, key, "before", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		tc.do(t, to, "cluster", "setslot", slot, "importing", tc.ids[from])
		tc.do(t, from, "cluster", "setslot", slot, "migrating", tc.ids[to])
		host, port, _ := strings.Cut(to, ":")
		tc.do(t, from, "migrate", host, port, "", 0, 5000, "keys", key)

		// The key is on the target only: from answers -ASK with the
		// target's TLS port.
		if v, err := c.Get(ctx, key).Result(); err != nil || v != "before" {
			t.Fatalf("GET while the slot migrates (ASK): %q, %v", v, err)
		}
		if err := c.Set(ctx, other, "asked", 0).Err(); err != nil {
			t.Fatalf("SET of a new key while the slot migrates (ASK): %v", err)
		}

		for _, n := range masters {
			tc.do(t, n, "cluster", "setslot", slot, "node", tc.ids[to])
		}
		if v := tc.get(t, to, other); v != "asked" {
			t.Fatalf("GET %s on the target: %q", other, v)
		}
		// The proxy's map still names from: from answers -MOVED with the
		// target's TLS port.
		if v, err := c.Get(ctx, key).Result(); err != nil || v != "before" {
			t.Fatalf("GET after the move (MOVED): %q, %v", v, err)
		}
		if err := c.Set(ctx, key, "after", 0).Err(); err != nil {
			t.Fatalf("SET after the move: %v", err)
		}
		if v := tc.get(t, to, key); v != "after" {
			t.Fatalf("GET on the new master %s: %q", to, v)
		}
		// Two -ASK, then at least one -MOVED: followed, not refreshed
		// around.
		if n := p.metric(t, "sentinel_proxy_cluster_redirects_total") - redirects; n < 3 {
			t.Fatalf("the proxy followed %v redirects, want at least 3", n)
		}
	})

	t.Run("cluster failover", func(t *testing.T) {
		ctx := testContext(t, 60*time.Second)
		// A node can know all six nodes before gossip has told it which
		// master each replica follows (CI saw a shard with no replica
		// here): wait for the map to show this master's replica.
		master := masters[2]
		var m *cluster.Map
		var keys []string
		var sh *cluster.Shard
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			m = tc.slotMap(t)
			keys = keysOf(m, keyPrefix(t), master, 1)
			sh, _ = m.Shard(uint16(slotOf(keys[0])))
			if sh != nil && len(sh.Replicas) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard of %s: %+v, want 1 replica", master, sh)
			}
		}
		replica := sh.Replicas[0].Addr
		if err := c.Set(ctx, keys[0], "before", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		// CLUSTER FAILOVER is dropped silently after 5 s when the
		// replica cannot take over; send it again then.
		var sent time.Time
		tc.waitCmd(t, replica, 45*time.Second, replica+" promoted", func(ctx context.Context, r *redis.Client) error {
			role, err := r.Do(ctx, "role").Slice()
			if err != nil {
				return err
			}
			if role[0] == "master" {
				return nil
			}
			if time.Since(sent) > 6*time.Second {
				if err := r.Do(ctx, "cluster", "failover").Err(); err != nil {
					return err
				}
				sent = time.Now()
			}
			return fmt.Errorf("role %v", role[0])
		})
		if v, err := c.Get(ctx, keys[0]).Result(); err != nil || v != "before" {
			t.Fatalf("GET after the failover: %q, %v", v, err)
		}
		if err := c.Set(ctx, keys[0], "after", 0).Err(); err != nil {
			t.Fatalf("SET after the failover: %v", err)
		}
		if v := tc.get(t, replica, keys[0]); v != "after" {
			t.Fatalf("GET on the promoted replica %s: %q", replica, v)
		}
	})
}
