package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestCheckCluster runs `check` on a cluster group against one real 3+3
// cluster with a password, with good and broken configurations, then with
// slots left unassigned.
func TestCheckCluster(t *testing.T) {
	const pass = "clu5ter-pw"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startTestCluster(ctx, t, pass)
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dead := unusedAddr(t)

	// check runs `check` on a file with one cluster group named shop.
	check := func(t *testing.T, seeds []string, password string) (string, error) {
		t.Helper()
		body := fmt.Sprintf("dial_timeout: 500ms\nquery_timeout: 500ms\ngroups:\n  - {name: shop, cluster_nodes: [%s], listen: \"127.0.0.1:0\"}\n",
			strings.Join(seeds, ", "))
		if password != "" {
			body = fmt.Sprintf("backend_password: %q\n", password) + body
		}
		path := filepath.Join(t.TempDir(), "sentinel-proxy.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		began := time.Now()
		err := run(ctx, []string{"check", "--config", path}, &stdout, &stderr, noEnv)
		out := stdout.String()
		t.Logf("check took %v; stdout:\n%s", time.Since(began), out)
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("check took %v, want it bounded by the timeouts", took)
		}
		if strings.Contains(out+stderr.String(), pass) {
			t.Error("output shows the password")
		}
		if code := exitCode(err, &stderr); code != 0 && code != 1 {
			t.Fatalf("exit code %d: %v", code, err)
		}
		return out, err
	}

	tests := []struct {
		name     string
		seeds    []string
		password string
		ok       bool
		want     []string // in stdout
		errs     []string // in the returned error
	}{
		{name: "good config", seeds: c.Addrs()[:2], password: pass, ok: true,
			want: []string{"group shop (listen 127.0.0.1:0, Redis Cluster)", "(CLUSTER SHARDS)",
				"OK: 3 shards serve all 16384 slots, ROLE master verified on each master, every master has replicas"}},
		{name: "one seed down", seeds: []string{dead, c.Addrs()[0]}, password: pass, ok: true,
			want: []string{"slot map from " + c.Addrs()[0] + " (CLUSTER SHARDS)", "OK: 3 shards"}},
		{name: "wrong backend password", seeds: c.Addrs(), password: "nope",
			want: []string{"problem: no slot map: backend password rejected (WRONGPASS)", "1 problem(s)"},
			errs: []string{"shop: no slot map: backend password rejected (WRONGPASS)"}},
		{name: "no backend password", seeds: c.Addrs(),
			errs: []string{"shop: no slot map: data node needs a password (NOAUTH)"}},
		{name: "no seed reachable", seeds: []string{dead},
			errs: []string{"shop: no slot map: fetch slot map: " + dead + ": ", "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := check(t, tt.seeds, tt.password)
			if tt.ok != (err == nil) {
				t.Fatalf("check error %v, want ok=%v", err, tt.ok)
			}
			if tt.ok {
				rows := tableRows(out, "shop")
				for _, sh := range shards {
					cells := rows[sh.Master.Addr]
					want := []string{slotCell(sh.Slots), "yes", sh.Replicas[0].Addr, "-"}
					if strings.Join(cells, "|") != strings.Join(want, "|") {
						t.Errorf("row of master %s: %q, want %q", sh.Master.Addr, cells, want)
					}
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			for _, w := range tt.errs {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
		})
	}

	// A node the cluster does not name as master: what check says when
	// ROLE disagrees with the slot map.
	t.Run("ROLE on a replica", func(t *testing.T) {
		sh := shards[0]
		fo := cluster.FetchOptions{Password: pass, DialTimeout: time.Second, QueryTimeout: time.Second}
		row := shardCheck(cluster.Shard{Slots: []cluster.SlotRange{{Start: 0, End: 9}}, Master: cluster.Node{Addr: sh.Replicas[0].Addr}},
			roleReply(ctx, fo, sh.Replicas[0].Addr))
		if row.role != "no: ROLE is slave" || len(row.problems) != 1 || row.problems[0] != `ROLE is "slave", not master` {
			t.Errorf("row %+v, want ROLE is slave", row)
		}
	})

	// Last, as it breaks the cluster: slots 0-99 unbound on every node.
	t.Run("unassigned slots", func(t *testing.T) {
		var out string
		var err error
		waitFor(t, 20*time.Second, "slots 0-99 unassigned", func() error {
			for _, n := range c.Nodes() {
				n.Client().Do(ctx, "cluster", "delslotsrange", 0, 99) // fails once done: ignored
			}
			out, err = check(t, c.Addrs(), pass)
			if !strings.Contains(out, "problem: 100 slot(s) unassigned (0-99): commands on their keys fail with CLUSTERDOWN") {
				return fmt.Errorf("check output:\n%s", out)
			}
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "shop: 100 slot(s) unassigned (0-99)") || strings.Contains(out, "OK: ") {
			t.Errorf("check error %v, want it to fail on the unassigned slots", err)
		}
	})
}
