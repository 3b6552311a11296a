package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestClusterHeldMultiRefused: a cluster session answers MULTI itself and
// holds it until a key shows the master. When Redis then refuses it (here
// -NOAUTH: the client has not authenticated to a password-protected
// cluster), nothing of the transaction may run: not the commands sent with
// the MULTI, not those after (which Redis would run on their own on a
// connection without the MULTI), not at EXEC.
func TestClusterHeldMultiRefused(t *testing.T) {
	const pw = "held-multi-pw"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{Password: pw})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	seeds := c.Addrs()
	fo := cluster.FetchOptions{Password: pw}
	r := cluster.NewRouter(seeds, cluster.RouterOptions{FetchOptions: fo, RefreshInterval: time.Hour})
	ch := r.Changed()
	rctx, stop := context.WithCancel(context.Background())
	r.Start(rctx)
	t.Cleanup(func() { stop(); r.Close() })
	<-ch
	_, addr := startProxy(t, nil, func(o *Options) {
		o.Source = nil
		o.HoldTimeout = 10 * time.Second
		o.Cluster = &ClusterOptions{Router: r, FetchCommands: func(ctx context.Context) (cluster.Table, error) {
			return cluster.FetchCommands(ctx, seeds, fo)
		}}
	})
	check := func(what string, got []string, want ...string) {
		t.Helper()
		for i := range want {
			if !strings.HasPrefix(got[i], want[i]) {
				t.Errorf("%s: reply %d = %q, want %q…", what, i+1, got[i], want[i])
			}
		}
	}

	t.Run("one pipeline", func(t *testing.T) {
		cl := dialRedis(t, addr)
		got := pipeline(cl, []string{"MULTI"}, []string{"SET", "held{1}", "a"}, []string{"EXEC"},
			[]string{"MULTI"}, []string{"PING"}, []string{"SET", "held{1}", "b"}, []string{"DISCARD"},
			[]string{"AUTH", pw}, []string{"GET", "held{1}"})
		check("one pipeline", got, "+OK", "-NOAUTH", "-EXECABORT", "+OK", "+QUEUED", "-NOAUTH", "+OK", "+OK", "$-1")
	})

	t.Run("across pipelines", func(t *testing.T) {
		cl := dialRedis(t, addr)
		check("MULTI", pipeline(cl, []string{"MULTI"}), "+OK")
		check("SET", pipeline(cl, []string{"SET", "held{2}", "a"}), "-NOAUTH")
		// AUTH goes with the MULTI held again, which Redis refuses once
		// more: AUTH runs on its own, as it would directly.
		check("AUTH", pipeline(cl, []string{"AUTH", pw}), "+OK")
		// Authenticated now: the MULTI goes with SET, and SET is queued,
		// not run on its own.
		check("SET after AUTH", pipeline(cl, []string{"SET", "held{2}", "b"}), "+QUEUED")
		check("EXEC", pipeline(cl, []string{"EXEC"}), "-EXECABORT")
		check("after EXEC", pipeline(cl, []string{"GET", "held{2}"}, []string{"MULTI"}, []string{"SET", "held{2}", "c"}, []string{"EXEC"}, []string{"GET", "held{2}"}),
			"$-1", "+OK", "+QUEUED", "*1", "$1\r\nc")
	})
}
