package topology_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

func TestExperimentTwoFailovers(t *testing.T) {
	if os.Getenv("EXPERIMENT") == "" {
		t.Skip()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ft, _ := time.ParseDuration(os.Getenv("FT"))
	topo, err := topology.Start(ctx, topology.Options{FailoverTimeout: ft})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.Stop() })
	cur := topo.Master().Addr
	for i := 0; i < 3; i++ {
		b := time.Now()
		if err := topo.Failover(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("failover %d accepted after %v", i, time.Since(b))
		n, err := topo.WaitForNewMaster(ctx, cur)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("failover %d: %s -> %s in %v", i, cur, n, time.Since(b))
		cur = n
	}
	b := time.Now()
	if err := topo.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stable after %v", time.Since(b))
	// kill -9 the master
	b = time.Now()
	topo.NodeByAddr(cur).Kill()
	n, err := topo.WaitForNewMaster(ctx, cur)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill: %s -> %s in %v", cur, n, time.Since(b))
	b = time.Now()
	if err := topo.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stable after %v", time.Since(b))
}

func TestExperimentCancel(t *testing.T) {
	if os.Getenv("EXPERIMENT") == "" {
		t.Skip()
	}
	for _, d := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 1500 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		topo, err := topology.Start(ctx, topology.Options{Log: os.Stderr})
		cancel()
		t.Logf("%v: %v %v", d, topo, err)
	}
	// graceful stop of a master and a sentinel
	ctx := context.Background()
	topo, err := topology.Start(ctx, topology.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Stop()
	b := time.Now()
	err = topo.Master().Stop()
	t.Logf("graceful master stop: %v in %v", err, time.Since(b))
	b = time.Now()
	err = topo.SentinelNodes()[0].Stop()
	t.Logf("graceful sentinel stop: %v in %v", err, time.Since(b))
	n, err := topo.WaitForNewMaster(ctx, topo.Master().Addr)
	t.Logf("new master %v %v", n, err)
	b = time.Now()
	err = topo.Master().Restart(ctx)
	t.Logf("restart old master: %v in %v", err, time.Since(b))
	b = time.Now()
	err = topo.SentinelNodes()[0].Restart(ctx)
	t.Logf("restart sentinel: %v in %v", err, time.Since(b))
	b = time.Now()
	err = topo.WaitStable(ctx)
	t.Logf("stable: %v in %v", err, time.Since(b))
}
