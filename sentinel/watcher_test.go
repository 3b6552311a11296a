package sentinel

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHighestEpochWins(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s2 := newFakeSentinel(t, lo, sentView{addr: b.addr, epoch: 2})
	s3 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	r := startWatcher(t, fastOpts(addrs(s1, s2, s3)...), nil)
	waitMaster(t, r.w, b.addr, 5*time.Second)
	if got := r.pubs.get(); !slices.Equal(got, []string{b.addr}) {
		t.Errorf("published %q, want only %q (the majority's lower epoch must never be routed to)", got, b.addr)
	}
	if st := r.w.Status(); st.LastVerified.Epoch != 2 || !st.Verified || st.HighestEpoch != 2 {
		t.Errorf("status = %+v, want verified epoch 2", st)
	}
}

// The returning old master: A still answers ROLE master, but the freshest
// sentinels named B; when only stale sentinels answer, stay on B.
func TestNeverBackToLowerEpoch(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s3 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	r := startWatcher(t, fastOpts(addrs(s1, s2, s3)...), nil)
	waitMaster(t, r.w, a.addr, 5*time.Second)

	s2.set(sentView{addr: b.addr, epoch: 2})
	waitMaster(t, r.w, b.addr, 5*time.Second)

	s2.stop() // the only fresh sentinel disappears; s1, s3 still say A@1
	s1.drain()
	for range 10 { // ten more polls of the stale sentinels
		waitQuery(t, s1, "get-master-addr-by-name", 5*time.Second)
	}
	if addr, _ := r.w.Master(); addr != b.addr {
		t.Fatalf("Master() = %q after stale answers, want %q", addr, b.addr)
	}
	seq := r.pubs.get()
	if i := indexAfter(seq, b.addr, 0); indexAfter(seq, a.addr, i) >= 0 {
		t.Errorf("went back to the lower epoch: published %q", seq)
	}
	if st := r.w.Status(); st.HighestEpoch != 2 || st.LastVerified.Addr != b.addr {
		t.Errorf("status = %+v", st)
	}
}

func TestRoleMismatchNotPublished(t *testing.T) {
	a := newFakeNode(t, lo, "slave")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	r := startWatcher(t, fastOpts(addrs(s1, s2)...), nil)
	eventually(t, 5*time.Second, "ROLE mismatch in status", func() bool {
		return strings.Contains(r.w.Status().Error, "not master")
	})
	if addr, _ := r.w.Master(); addr != "" {
		t.Fatalf("Master() = %q for a node whose ROLE is slave", addr)
	}
	if !logsContain(r.logs, `ROLE on `+a.addr+` is "slave", not master`) {
		t.Errorf("ROLE mismatch not logged")
	}
	a.setRole("master")
	waitMaster(t, r.w, a.addr, 5*time.Second)
	if got := r.pubs.get(); !slices.Equal(got, []string{a.addr}) {
		t.Errorf("published %q", got)
	}
}

// §1.4: between +promoted-slave and its own +switch-master, the leader's
// SENTINEL MASTER shows the new epoch with the OLD ip, while
// GET-MASTER-ADDR-BY-NAME already names the new master.
func TestLeaderTrap(t *testing.T) {
	for _, fromA := range []bool{false, true} {
		name := "at start"
		if fromA {
			name = "after A"
		}
		t.Run(name, func(t *testing.T) {
			a := newFakeNode(t, lo, "master") // old master still alive (SENTINEL FAILOVER)
			b := newFakeNode(t, lo, "master")
			trap := sentView{addr: b.addr, infoAddr: a.addr, epoch: 2,
				flags: "master,failover_in_progress", failoverState: "reconf_slaves"}
			first := trap
			if fromA {
				first = sentView{addr: a.addr, epoch: 1}
			}
			leader := newFakeSentinel(t, lo, first)
			s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
			s3 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
			r := startWatcher(t, fastOpts(addrs(leader, s2, s3)...), nil)
			want := []string{b.addr}
			if fromA {
				waitMaster(t, r.w, a.addr, 5*time.Second)
				leader.set(trap)
				// "" while B's ROLE check runs: A is no longer what the
				// freshest sentinel names.
				want = []string{a.addr, "", b.addr}
			}
			waitMaster(t, r.w, b.addr, 5*time.Second)
			if got := r.pubs.get(); !slices.Equal(got, want) {
				t.Errorf("published %q, want %q", got, want)
			}
			if st := r.w.Status(); st.FailoverInProgress {
				t.Errorf("leader after promotion counted as failing: %+v", st)
			}
		})
	}
}

func TestUnknownMasterName(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{unknown: true})
	s2 := newFakeSentinel(t, lo, sentView{unknown: true})
	r := startWatcher(t, fastOpts(addrs(s1, s2)...), nil)
	eventually(t, 5*time.Second, "unknown-name error", func() bool {
		return strings.Contains(r.w.Status().Error, "unknown to every sentinel")
	})
	st := r.w.Status()
	if st.Master != "" || st.Blind || !st.Sentinels[0].UnknownMaster {
		t.Errorf("status = %+v; want no master, not blind, unknown", st)
	}
	if !logsContain(r.logs, "master name unknown") {
		t.Errorf("unknown master name not logged")
	}
	// One sentinel learning the name is enough.
	s2.set(sentView{addr: a.addr, epoch: 0})
	waitMaster(t, r.w, a.addr, 5*time.Second)
}

func TestAllSentinelsDown(t *testing.T) {
	for _, stopWrites := range []bool{false, true} {
		name := map[bool]string{false: "keep last", true: "stop writes"}[stopWrites]
		t.Run(name, func(t *testing.T) {
			a := newFakeNode(t, lo, "master")
			s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 3})
			s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 3})
			opts := fastOpts(addrs(s1, s2)...)
			opts.StopWritesWhenBlind = stopWrites
			r := startWatcher(t, opts, nil)
			waitMaster(t, r.w, a.addr, 5*time.Second)

			s1.stop()
			s2.stop()
			eventually(t, 5*time.Second, "blind", func() bool { return r.w.Status().Blind })
			want := a.addr
			if stopWrites {
				want = ""
			}
			waitMaster(t, r.w, want, 5*time.Second)
			st := r.w.Status()
			if st.LastVerified.Addr != a.addr || st.Error == "" || st.BlindSince.IsZero() {
				t.Errorf("blind status = %+v", st)
			}
			if !logsContain(r.logs, "no sentinel answers") {
				t.Errorf("blind mode not logged")
			}

			s1.restart()
			s2.restart()
			eventually(t, 10*time.Second, "sentinels back", func() bool { return !r.w.Status().Blind })
			waitMaster(t, r.w, a.addr, 5*time.Second)
		})
	}
}

func TestDiscovery(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	hidden := newFakeSentinel(t, lo, sentView{addr: b.addr, epoch: 2}) // not configured
	_, hp, _ := net.SplitHostPort(hidden.addr)
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	// s2 is configured by hostname; its peers list it under its IP.
	s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	_, p2, _ := net.SplitHostPort(s2.addr)
	s1.setPeers([]map[string]string{
		{"ip": "127.0.0.1", "port": hp, "runid": hidden.runID},
		{"ip": "0.0.0.0", "port": "26999", "runid": "ghost"}, // announce-ip 0.0.0.0: unusable
		{"ip": "127.0.0.1", "port": p2, "runid": s2.runID},   // s2 again, by IP
	})
	r := startWatcher(t, fastOpts(s1.addr, "localhost:"+p2), nil)
	waitMaster(t, r.w, b.addr, 5*time.Second)
	st := r.w.Status()
	var got []string
	for _, s := range st.Sentinels {
		got = append(got, s.Addr)
		if s.Addr == hidden.addr && !s.Discovered {
			t.Errorf("%s not marked discovered", s.Addr)
		}
	}
	want := []string{s1.addr, "localhost:" + p2, hidden.addr}
	if !slices.Equal(got, want) {
		t.Errorf("known sentinels = %q, want %q", got, want)
	}
	eventually(t, 5*time.Second, "discovered sentinel subscribed", func() bool { return allSubscribed(r.w) })
}

// With a one-hour poll interval only a trigger can cause a query.
func TestEventTriggersImmediateQuery(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	opts := fastOpts(addrs(s1, s2)...)
	r := startSubscribed(t, opts, nil, a.addr)
	quiet(t, 200*time.Millisecond, s1, s2)

	s2.set(sentView{addr: b.addr, epoch: 2}) // silently: only a query can see it
	sent := time.Now()
	s1.publish("+sdown", masterDetails(a.addr))
	d := waitQuery(t, s2, "get-master-addr-by-name", 2*time.Second).Sub(sent)
	t.Logf("event on one sentinel -> query on another: %v", d)
	d = waitMaster(t, r.w, b.addr, 2*time.Second)
	t.Logf("-> new master published after %v more", d)

	// Suspect triggers a re-query too.
	quiet(t, 200*time.Millisecond, s1, s2)
	r.w.Suspect("10.9.9.9:6379")
	waitQuery(t, s1, "get-master-addr-by-name", 2*time.Second)
}

func TestRapidFlapsABC(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	c := newFakeNode(t, lo, "master")
	s := []*fakeSentinel{
		newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1}),
		newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1}),
		newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1}),
	}
	r := startWatcher(t, fastOpts(addrs(s...)...), nil)
	waitMaster(t, r.w, a.addr, 5*time.Second)
	// A -> B -> C within a few milliseconds; one sentinel lags at B and A
	// (the returning old master) still claims master.
	for _, x := range s {
		x.set(sentView{addr: b.addr, epoch: 2})
		x.publish("+switch-master", "mymaster "+hostPort(a.addr)+" "+hostPort(b.addr))
	}
	for _, x := range s[:2] {
		x.set(sentView{addr: c.addr, epoch: 3})
		x.publish("+switch-master", "mymaster "+hostPort(b.addr)+" "+hostPort(c.addr))
	}
	waitMaster(t, r.w, c.addr, 5*time.Second)
	s[0].drain()
	for range 5 {
		waitQuery(t, s[0], "get-master-addr-by-name", 5*time.Second)
	}
	seq := r.pubs.get()
	epoch := map[string]int{a.addr: 1, b.addr: 2, c.addr: 3}
	last := 0
	for _, x := range seq {
		if x == "" {
			continue
		}
		if epoch[x] < last {
			t.Fatalf("moved back to a lower epoch: %q", seq)
		}
		last = epoch[x]
	}
	if addr, _ := r.w.Master(); addr != c.addr {
		t.Errorf("Master() = %q, want %q", addr, c.addr)
	}
}

func TestSuspectRechecksRole(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	opts := fastOpts(s1.addr)
	opts.PollInterval = time.Hour
	r := startWatcher(t, opts, nil)
	waitMaster(t, r.w, a.addr, 5*time.Second)
	a.setRole("slave") // demoted; the sentinel does not know yet
	r.w.Suspect(a.addr)
	d := waitMaster(t, r.w, "", 2*time.Second)
	t.Logf("Suspect -> hold in %v", d)
	a.setRole("master")
	r.w.Suspect(a.addr) // the next re-query re-verifies it
	waitMaster(t, r.w, a.addr, 2*time.Second)
}

func TestSubscriptionReconnectsAndRequeries(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	opts := fastOpts(s1.addr)
	r := startSubscribed(t, opts, func(w *Watcher) { w.pingIdle = 100 * time.Millisecond }, a.addr)

	t.Run("restart", func(t *testing.T) {
		s1.stop()
		s1.drain()
		s1.restart()
		waitQuery(t, s1, "psubscribe", 5*time.Second)
		waitQuery(t, s1, "get-master-addr-by-name", 2*time.Second) // re-query after resubscribe
		eventually(t, 5*time.Second, "subscribed again", func() bool { return allSubscribed(r.w) })
	})
	t.Run("dead link without EOF", func(t *testing.T) {
		s1.mutePing.Store(true)
		s1.drain()
		waitQuery(t, s1, "ping", 2*time.Second)
		waitQuery(t, s1, "psubscribe", 5*time.Second) // gave up on the silent link
		s1.mutePing.Store(false)
		waitQuery(t, s1, "get-master-addr-by-name", 2*time.Second)
	})
}

func TestRunStopsAndClosesEverything(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	r := startWatcher(t, fastOpts(addrs(s1, s2)...), nil)
	waitMaster(t, r.w, a.addr, 5*time.Second)
	eventually(t, 5*time.Second, "subscriptions", func() bool { return allSubscribed(r.w) })
	r.stop()
	eventually(t, 5*time.Second, "connections closed", func() bool {
		return s1.openConns() == 0 && s2.openConns() == 0 && a.openConns() == 0
	})
	if err := r.w.Run(t.Context()); err == nil {
		t.Errorf("second Run succeeded")
	}
}

// SENTINEL REMOVE + MONITOR restarts config epochs at 0: when every known
// sentinel agrees on the lower epoch for resetRounds polls, follow it.
func TestConfigResetFollowedWhenEverySentinelAgrees(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: b.addr, epoch: 7})
	s2 := newFakeSentinel(t, lo, sentView{addr: b.addr, epoch: 7})
	opts := fastOpts(addrs(s1, s2)...)
	opts.PollInterval = 20 * time.Millisecond
	r := startWatcher(t, opts, nil)
	waitMaster(t, r.w, b.addr, 5*time.Second)
	for _, s := range []*fakeSentinel{s1, s2} {
		s.tear(sentView{addr: b.addr, epoch: 7}) // first read torn: A at epoch 7 must not follow
		s.set(sentView{addr: a.addr, epoch: 0})
	}
	start := time.Now()
	waitMaster(t, r.w, a.addr, 5*time.Second)
	if d := time.Since(start); d < resetRounds*opts.PollInterval {
		t.Errorf("followed the lower epoch after %v, before %d polls", d, resetRounds)
	}
	if !logsContain(r.logs, "every sentinel reports a lower config epoch") {
		t.Errorf("reset not logged")
	}
}

// A failover landing between SENTINEL MASTER and GET-MASTER-ADDR-BY-NAME
// pairs the new address with the old epoch: the watcher must re-read, not
// record B at epoch 1.
func TestTornReadIsReread(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	opts := fastOpts(s1.addr)
	// Subscribed: an answering sentinel without a subscription is polled
	// every 100ms, which would add reads.
	r := startSubscribed(t, opts, nil, a.addr)
	quiet(t, 100*time.Millisecond, s1)

	s1.tear(sentView{addr: a.addr, epoch: 1, flags: "master,failover_in_progress", failoverState: "wait_promotion"})
	s1.set(sentView{addr: b.addr, infoAddr: a.addr, epoch: 2, flags: "master,failover_in_progress", failoverState: "reconf_slaves"})
	r.w.Suspect("192.0.2.1:6379")
	waitMaster(t, r.w, b.addr, 2*time.Second)
	if st := r.w.Status(); st.LastVerified.Epoch != 2 {
		t.Errorf("published B at epoch %d, want 2 (torn read taken as is)", st.LastVerified.Epoch)
	}
	var reads []string
	for len(s1.queries) > 0 {
		reads = append(reads, (<-s1.queries).name)
	}
	if want := []string{"master", "get-master-addr-by-name", "master", "get-master-addr-by-name"}; !slices.Equal(reads, want) {
		t.Errorf("reads = %q, want %q", reads, want)
	}
}

// A brief agreement on a lower epoch that ends must not count towards a
// later one: otherwise the next lower-epoch moment (the sentinels lagging
// behind a published candidate, say) would be followed at once.
func TestConfigResetCountsOnlyUnbrokenAgreement(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: b.addr, epoch: 7})
	s2 := newFakeSentinel(t, lo, sentView{addr: b.addr, epoch: 7})
	opts := fastOpts(addrs(s1, s2)...)
	opts.PollInterval = 20 * time.Millisecond
	r := startWatcher(t, opts, nil)
	waitMaster(t, r.w, b.addr, 5*time.Second)
	set := func(v sentView) {
		for _, s := range []*fakeSentinel{s1, s2} {
			s.set(v)
		}
	}
	set(sentView{addr: a.addr, epoch: 5}) // a short lower-epoch moment…
	time.Sleep(3 * opts.PollInterval)
	set(sentView{addr: b.addr, epoch: 7}) // …that ends
	time.Sleep(2 * resetRounds * opts.PollInterval)
	if addr, _ := r.w.Master(); addr != b.addr {
		t.Fatalf("Master() = %q, want %q", addr, b.addr)
	}
	set(sentView{addr: a.addr, epoch: 5})
	start := time.Now()
	waitMaster(t, r.w, a.addr, 5*time.Second)
	if d := time.Since(start); d < resetRounds*opts.PollInterval {
		t.Errorf("followed the lower epoch %v after the new agreement began, before %d polls: the earlier moment counted", d, resetRounds)
	}
}
