package integration

// Failover scenarios of issue 3, each on its own topology (1 master, 2
// replicas, 3 sentinels, down-after 2 s, failover-timeout 3 s; see
// startStack), with the watcher and the proxy in this process, under the
// continuous load of failover_load_test.go. Each test names the event,
// breaks the topology, waits until the proxy routes to the new master and
// checks what the clients saw (failover_check_test.go): no acknowledged
// write lost, errors within what the scenario allows, the subscriber, the
// blocked BLPOP and the idle SELECT 2 connections working on their first
// connection.
//
// The tests run one after another: each starts six Redis processes and
// ~500 writes/s, and two cores under -race are busy enough with one.

import (
	"context"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// planned is what a SENTINEL FAILOVER allows: no error at all, except the
// blocked BLPOP, which cannot move.
var planned = foExpect{perClient: 0, blockErrs: 1}

// hung is what a master that hangs (SIGSTOP) allows: one error per command
// in flight; each load client waits for every reply, so it has at most one
// stuck on the hung master. A write acknowledged just before the SIGSTOP
// may not have reached a replica (foExpect.unreplicatedBefore).
func hung(stopped time.Time) foExpect {
	return foExpect{perClient: 1, blockErrs: 1, unreplicatedBefore: stopped}
}

// killed is what a kill -9 allows: errors only for commands sent before
// the master was dead (Node.Kill returned: the process is reaped, every
// socket of it closed). A client may have sent two of those: one the
// kill interrupted, and the next while the process was still dying.
func killed(dead time.Time) foExpect {
	return foExpect{perClient: 2, blockErrs: 1, inFlightUntil: dead, unreplicatedBefore: dead}
}

// foStart starts a stack and the load, and lets the load run for a second
// on the first master.
func foStart(t *testing.T) (*stack, *foLoad, context.Context) {
	t.Helper()
	began := time.Now()
	st := startStack(t, stackOptions{HoldTimeout: 10 * time.Second})
	l := startLoad(t, st.Addr, keyPrefix(t), st.Client)
	l.waitAcksAfter(t, time.Now().Add(time.Second))
	t.Logf("stack and load ready in %v: proxy %s, master %s", time.Since(began).Round(time.Millisecond), st.Addr, st.Topo.Master().Addr)
	return st, l, testContext(t, 90*time.Second)
}

// failoverTo asks the sentinels for a failover away from old and waits until
// the proxy routes to the new master.
func failoverTo(t *testing.T, st *stack, ctx context.Context, old string) (string, time.Time) {
	t.Helper()
	event := time.Now()
	if err := st.Topo.Failover(ctx); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	return switched(t, st, ctx, old, event)
}

// switched waits until the sentinels agree on a master other than old and
// the proxy routes to it; it logs how long that took since the event.
func switched(t *testing.T, st *stack, ctx context.Context, old string, event time.Time) (string, time.Time) {
	t.Helper()
	addr, err := st.Topo.WaitForNewMaster(ctx, old)
	if err != nil {
		t.Fatalf("new master: %v", err)
	}
	at := waitRoutes(t, st.Addr, addr, 30*time.Second)
	t.Logf("sentinels agree on %s and the proxy routes to it %v after the event", addr, at.Sub(event).Round(time.Millisecond))
	return addr, at
}

// TestFailoverSentinelFailover: a planned SENTINEL FAILOVER. No client
// error (but the blocked BLPOP), no acknowledged write lost, nothing
// written to the old master (which accepts writes for ~10 s more) after the
// proxy moved: for the pinned (CLIENT SETNAME) and MULTI writers too.
func TestFailoverSentinelFailover(t *testing.T) {
	st, l, ctx := foStart(t)
	old := st.Topo.Master()
	newAddr, at := failoverTo(t, st, ctx, old.Addr)

	oc := directTo(old.Addr, 0)
	defer oc.Close()
	s1 := waitSnap(t, oc, 5*time.Second)
	observe(2 * time.Second)
	s2 := waitSnap(t, oc, 5*time.Second)
	switch {
	case s1.role != "master" || s2.role != "master":
		t.Logf("the old master was converted already (roles %s, %s): no check of its SET counter", s1.role, s2.role)
	case s2.calls["set"] != s1.calls["set"] || s2.calls["incr"] != s1.calls["incr"]:
		t.Errorf("the old master executed %d SETs and %d INCRs in the 2 s after the proxy moved to %s",
			s2.calls["set"]-s1.calls["set"], s2.calls["incr"]-s1.calls["incr"], newAddr)
	}
	if stray := l.strayWrites(t, old.Addr, newAddr); len(stray) > 0 {
		t.Errorf("%d writes ran on the old master after the promotion, e.g. %v", len(stray), stray[:min(len(stray), 5)])
	}
	l.finish(t, at, newAddr, planned)
}

// TestFailoverKill9: kill -9 of the master. Commands in flight at the kill
// may fail (one per client); nothing acknowledged is lost.
func TestFailoverKill9(t *testing.T) {
	st, l, ctx := foStart(t)
	old := st.Topo.Master()
	event := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	dead := time.Now()
	t.Logf("master killed at %s, dead at %s", event.Format("15:04:05.000000"), dead.Format("15:04:05.000000"))
	newAddr, at := switched(t, st, ctx, old.Addr, event)
	if first, ok := l.firstAckAfter(event); ok {
		t.Logf("first write acknowledged by the new master %v after the kill", first.Sub(event).Round(time.Millisecond))
	}
	l.finish(t, at, newAddr, killed(dead))
}

// TestFailoverSigstop: the master hangs (SIGSTOP) and is resumed after the
// switch. Its in-flight commands fail; after SIGCONT it may run those (they
// were in its socket buffers), but nothing the proxy sent after the switch
// reaches it, although it answers as a master for ~10 s more.
func TestFailoverSigstop(t *testing.T) {
	st, l, ctx := foStart(t)
	old := st.Topo.Master()
	event := time.Now()
	if err := old.Pause(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	newAddr, at := switched(t, st, ctx, old.Addr, event)
	if err := old.Resume(); err != nil {
		t.Fatal(err)
	}
	oc := directTo(old.Addr, 0)
	defer oc.Close()
	s1 := waitSnap(t, oc, 5*time.Second)
	observe(time.Second) // it works off what was queued before the stop
	s2 := waitSnap(t, oc, 5*time.Second)
	observe(2 * time.Second)
	s3 := waitSnap(t, oc, 5*time.Second)
	t.Logf("old master after SIGCONT: role %s, SETs %d → %d → %d", s1.role, s1.calls["set"], s2.calls["set"], s3.calls["set"])
	if s2.role == "master" && s3.role == "master" && s3.calls["set"] != s2.calls["set"] {
		t.Errorf("the old master executed %d SETs between 1 s and 3 s after SIGCONT", s3.calls["set"]-s2.calls["set"])
	}
	failed, acked, exp := l.failedWrites(), l.acked(), hung(stopped)
	for _, k := range l.strayWrites(t, old.Addr, newAddr) {
		r, ok := failed[k]
		switch {
		case !ok && exp.unreplicated(acked[k]):
			// Ran and answered before the stop; checkAcked bounds these.
			t.Logf("write %s, acknowledged before the SIGSTOP, is on the old master only", k)
		case !ok:
			t.Errorf("write %s ran on the old master after the promotion but was not answered with an error", k)
		case !r.sent.Before(at):
			t.Errorf("write %s, sent at %s after the proxy switched, ran on the old master", k, r.sent.Format("15:04:05.000"))
		default:
			t.Logf("write %s, in flight at the SIGSTOP and answered %q, ran on the old master after SIGCONT", k, r.err)
		}
	}
	t.Logf("master stopped at %s", stopped.Format("15:04:05.000000"))
	l.finish(t, at, newAddr, exp)
}

// TestFailoverOldMasterRestarted: after a kill -9 and the failover, the old
// master comes back as an empty master (its config still says so) and
// stays one for ~10 s until Sentinel converts it. The proxy must send it
// nothing, and its clients see no error from the restart.
func TestFailoverOldMasterRestarted(t *testing.T) {
	st, l, ctx := foStart(t)
	old := st.Topo.Master()
	event := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	dead := time.Now()
	newAddr, at := switched(t, st, ctx, old.Addr, event)
	restarted := time.Now()
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	oc := directTo(old.Addr, 0)
	defer oc.Close()
	var last nodeSnap
	masterFor := time.Duration(0)
	waitFor(t, 25*time.Second, "Sentinel to convert the restarted old master", func() bool {
		s, err := snapNode(ctx, oc)
		if err != nil || s.role != "master" {
			return err == nil
		}
		last, masterFor = s, time.Since(restarted)
		return false
	})
	t.Logf("the restarted old master was a master for %v", masterFor.Round(time.Millisecond))
	for _, cmd := range []string{"set", "get", "blpop", "select", "publish"} {
		// Sentinel itself PUBLISHes its hellos there: only ours are errors.
		if n := last.calls[cmd]; n > 0 && (cmd != "publish" || n > 100) {
			t.Errorf("the restarted old master executed %d %s commands while it was a master", n, cmd)
		}
	}
	for _, log := range append(append([]*opLog{}, l.writers...), append(l.readers, l.pub)...) {
		for _, r := range log.errors() {
			if r.sent.After(restarted) {
				t.Errorf("%s got an error after the old master was restarted: %s", log.name, r.err)
			}
		}
	}
	l.finish(t, at, newAddr, killed(dead))
}

// TestFailoverTwice: two planned failovers in a row, the second as soon as
// Sentinel accepts it.
func TestFailoverTwice(t *testing.T) {
	st, l, ctx := foStart(t)
	first, _ := failoverTo(t, st, ctx, st.Topo.Master().Addr)
	second, at := failoverTo(t, st, ctx, first)
	l.finish(t, at, second, foExpect{perClient: 0, blockErrs: 2})
}

// TestFailoverOneSentinelDown: a planned failover while one of the three
// sentinels is down, dead (connection refused) or hung (queries time out).
func TestFailoverOneSentinelDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*topology.Node) error
	}{
		{"killed", (*topology.Node).Kill},
		{"paused", (*topology.Node).Pause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, l, ctx := foStart(t)
			s := st.Topo.SentinelNodes()[0]
			if err := tc.down(s); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the watcher to see "+s.Name+" down", func() bool {
				for _, ss := range st.Source.Status().Sentinels {
					if ss.Addr == s.Addr {
						return !ss.OK
					}
				}
				return false
			})
			newAddr, at := failoverTo(t, st, ctx, st.Topo.Master().Addr)
			l.finish(t, at, newAddr, planned)
		})
	}
}

// TestFailoverAllSentinelsDown: with every sentinel dead the proxy keeps
// serving the last verified master without an error; once they are back it
// follows a planned failover again, with no error and no write lost: once
// the watcher has subscribed to them again, and also as soon as they answer
// queries (its subscriptions may not be back yet; it must not let writes
// land on the old master after the promotion meanwhile).
func TestFailoverAllSentinelsDown(t *testing.T) {
	for _, tc := range []struct {
		name           string
		waitSubscribed bool
	}{
		{"failover once subscribed again", true},
		{"failover as soon as they answer", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, l, ctx := foStart(t)
			old := st.Topo.Master()
			down := time.Now()
			for _, s := range st.Topo.SentinelNodes() {
				if err := s.Kill(); err != nil {
					t.Fatal(err)
				}
			}
			observe(3 * time.Second)
			status := st.Source.Status()
			t.Logf("watcher with every sentinel down: master %q, blind %v, error %q", status.Master, status.Blind, status.Error)
			waitRoutes(t, st.Addr, old.Addr, 5*time.Second)
			l.waitAcksAfter(t, down.Add(3*time.Second))
			back := time.Now()
			for _, s := range st.Topo.SentinelNodes() {
				if err := s.Restart(ctx); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 20*time.Second, "the watcher to query the sentinels again", func() bool {
				s := st.Source.Status()
				ok := !s.Blind && s.Master != ""
				for _, ss := range s.Sentinels {
					ok = ok && ss.OK && ss.LastAnswerAt.After(back) && (ss.Subscribed || !tc.waitSubscribed)
				}
				return ok
			})
			newAddr, at := failoverTo(t, st, ctx, old.Addr)
			l.finish(t, at, newAddr, planned)
		})
	}
}

// TestFailoverSentinelRestarted: a sentinel is killed and restarted; the
// watcher queries and subscribes to it again, and a failover it leads is
// followed.
func TestFailoverSentinelRestarted(t *testing.T) {
	st, l, ctx := foStart(t)
	s := st.Topo.SentinelNodes()[0]
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the watcher to query and subscribe to the restarted "+s.Name, func() bool {
		for _, ss := range st.Source.Status().Sentinels {
			if ss.Addr == s.Addr {
				return ss.OK && ss.Subscribed && ss.LastAnswerAt.After(restarted)
			}
		}
		return false
	})
	// Topology.Failover asks the first live sentinel: the restarted one.
	newAddr, at := failoverTo(t, st, ctx, st.Topo.Master().Addr)
	l.finish(t, at, newAddr, planned)
}
