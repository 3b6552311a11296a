package sentinel

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// publishStart publishes, from leader s, the start of a failover of master:
// with epoch > 0 the +new-epoch/+try-failover pair (and its own vote) first,
// as sentinelStartFailover emits them; with 0, as seen by a subscription
// that came up after them.
func publishStart(s *fakeSentinel, master string, epoch int64) {
	if epoch > 0 {
		e := strconv.FormatInt(epoch, 10)
		s.publish("+new-epoch", e)
		s.publish("+try-failover", masterDetails(master))
		s.publish("+vote-for-leader", s.runID+" "+e)
	}
	s.publish("+elected-leader", masterDetails(master))
	s.publish("+failover-state-select-slave", masterDetails(master))
}

// publishSelect publishes the leader's choice of replica (SLAVEOF NO ONE
// not yet sent).
func publishSelect(s *fakeSentinel, replica, master string) {
	s.publish("+selected-slave", replicaDetails(replica, master))
	s.publish("+failover-state-send-slaveof-noone", replicaDetails(replica, master))
}

// publishWaitPromotion publishes that SLAVEOF NO ONE was sent to replica.
func publishWaitPromotion(s *fakeSentinel, replica, master string) {
	s.publish("+failover-state-wait-promotion", replicaDetails(replica, master))
}

// failing is a leader's answer while it fails over master (still named at
// epoch) and has selected promoted ("" = not yet).
func failing(master string, epoch int64, state, promoted string) sentView {
	return sentView{addr: master, epoch: epoch, flags: "master,failover_in_progress",
		failoverState: state, promoted: promoted, timeoutMs: 3000}
}

// candidateIs waits until Status().Candidate == want.
func candidateIs(t *testing.T, w *Watcher, want string) {
	t.Helper()
	eventually(t, 2*time.Second, "candidate "+strconv.Quote(want), func() bool { return w.Status().Candidate == want })
}

// rolesFor counts the ROLEs n receives during d: an observation window
// for what must not happen, not a synchronisation.
func rolesFor(n *fakeNode, d time.Duration) int {
	drainRoles(n)
	timer := time.NewTimer(d)
	<-timer.C
	return len(n.roles)
}

// The leader's candidate answers ROLE master: it is published at once,
// while every sentinel still names the old master and before any
// +promoted-slave, with the failover epoch (exact from the
// +new-epoch/+try-failover pair, else a lower bound that is raised without
// a blip once the sentinels report the real one).
func TestCandidatePublishedAtPromotion(t *testing.T) {
	tests := []struct {
		name      string
		events    bool
		pair      bool
		wantEpoch int64 // published at the promotion; the sentinels then report 4
	}{
		{name: "events with the epoch pair", events: true, pair: true, wantEpoch: 4},
		{name: "events without the epoch pair", events: true, wantEpoch: 2},
		{name: "polls only", wantEpoch: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newFakeNode(t, lo, "master")
			b := newFakeNode(t, lo, "slave")
			normal := sentView{addr: a.addr, epoch: 1, timeoutMs: 3000}
			s := []*fakeSentinel{newFakeSentinel(t, lo, normal), newFakeSentinel(t, lo, normal), newFakeSentinel(t, lo, normal)}
			opts := fastOpts(addrs(s...)...)
			opts.PollInterval = time.Hour // only events and the triggers they cause
			if !tt.events {
				opts.PollInterval = 200 * time.Millisecond
			}
			r := startWatcher(t, opts, nil)
			waitMaster(t, r.w, a.addr, 5*time.Second)
			eventually(t, 5*time.Second, "subscriptions", func() bool { return allSubscribed(r.w) })

			s[0].set(failing(a.addr, 1, "wait_promotion", b.addr))
			if tt.events {
				epoch := int64(0)
				if tt.pair {
					epoch = 4
				}
				publishStart(s[0], a.addr, epoch)
				publishSelect(s[0], b.addr, a.addr)
				publishWaitPromotion(s[0], b.addr, a.addr)
			}
			waitMaster(t, r.w, "", 2*time.Second)
			candidateIs(t, r.w, b.addr)
			waitRole(t, b, 2*time.Second)
			if addr, _ := r.w.Master(); addr != "" {
				t.Fatalf("Master() = %q while the candidate is a replica", addr)
			}
			if got := r.w.Fenced(); got != a.addr {
				t.Fatalf("Fenced() = %q once a candidate is selected, want the old master %q", got, a.addr)
			}

			b.setRole("master")
			d := waitMaster(t, r.w, b.addr, 2*time.Second)
			t.Logf("candidate published %v after its ROLE became master", d)
			if got := r.w.Fenced(); got != "" {
				t.Errorf("Fenced() = %q after the promotion, want none", got)
			}
			st := r.w.Status()
			if st.LastVerified.Epoch != tt.wantEpoch || st.FailoverInProgress || st.Candidate != "" {
				t.Errorf("status after the promotion = %+v, want epoch %d, no failover, no candidate", st, tt.wantEpoch)
			}
			for _, ss := range st.Sentinels {
				if ss.MasterAddr != a.addr || ss.Epoch != 1 {
					t.Errorf("sentinel %s already answered %s@%d: not published ahead of the sentinels", ss.Addr, ss.MasterAddr, ss.Epoch)
				}
			}
			requery(t, r.w, s[1]) // a stale answer (A@1) changes nothing
			if addr, _ := r.w.Master(); addr != b.addr {
				t.Fatalf("Master() = %q after a stale answer, want %q", addr, b.addr)
			}

			// The sentinels catch up at the real epoch 4: same master, no blip.
			s[0].set(sentView{addr: b.addr, infoAddr: a.addr, epoch: 4, flags: "master,failover_in_progress", failoverState: "reconf_slaves"})
			if tt.events {
				s[0].publish("+promoted-slave", replicaDetails(b.addr, a.addr))
			}
			for _, x := range s[1:] {
				x.set(sentView{addr: b.addr, epoch: 4})
			}
			eventually(t, 3*time.Second, "epoch 4 verified", func() bool { return r.w.Status().LastVerified.Epoch == 4 })
			if got, want := r.pubs.get(), []string{a.addr, "", b.addr}; !slices.Equal(got, want) {
				t.Errorf("published %q, want %q", got, want)
			}
		})
	}
}

// A replica that already claims master (a returning old master Sentinel
// picked) is not taken for promoted before the leader sent it SLAVEOF NO
// ONE: the failover could still abort before touching it.
func TestCandidateArmedOnlyAfterSlaveofNoOne(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	opts := fastOpts(s1.addr)
	r := startSubscribed(t, opts, nil, a.addr)

	s1.set(failing(a.addr, 1, "send_slaveof_noone", b.addr))
	publishStart(s1, a.addr, 2)
	publishSelect(s1, b.addr, a.addr)
	candidateIs(t, r.w, b.addr)
	for range 3 {
		waitRole(t, b, 2*time.Second)
	}
	requery(t, r.w, s1)
	if addr, _ := r.w.Master(); addr != "" {
		t.Fatalf("Master() = %q before SLAVEOF NO ONE was sent to the candidate", addr)
	}
	s1.set(failing(a.addr, 1, "wait_promotion", b.addr))
	publishWaitPromotion(s1, b.addr, a.addr)
	waitMaster(t, r.w, b.addr, 2*time.Second)
	if st := r.w.Status(); st.LastVerified.Epoch != 2 {
		t.Errorf("published at epoch %d, want 2", st.LastVerified.Epoch)
	}
}

// The candidate never becomes master and the leader aborts: the watcher
// stops polling it at once (while another sentinel still reports the master
// down, so the hold goes on), then goes back to the re-verified old master,
// and does not publish the candidate if it claims master afterwards.
func TestCandidateNotPromotedThenAbort(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "slave")
	normal := sentView{addr: a.addr, epoch: 1}
	s1 := newFakeSentinel(t, lo, normal)
	s2 := newFakeSentinel(t, lo, normal)
	opts := fastOpts(addrs(s1, s2)...)
	r := startSubscribed(t, opts, nil, a.addr)

	s2.set(sentView{addr: a.addr, epoch: 1, flags: "master,s_down,o_down"})
	s2.publish("+odown", masterDetails(a.addr)+" #quorum 2/2")
	s1.set(failing(a.addr, 1, "wait_promotion", b.addr))
	publishStart(s1, a.addr, 2)
	publishSelect(s1, b.addr, a.addr)
	publishWaitPromotion(s1, b.addr, a.addr)
	candidateIs(t, r.w, b.addr)
	waitRole(t, b, 2*time.Second)

	s1.set(normal)
	s1.publish("-failover-abort-slave-timeout", masterDetails(a.addr))
	candidateIs(t, r.w, "")
	if addr, _ := r.w.Master(); addr != "" {
		t.Fatalf("Master() = %q while a sentinel still reports the master down", addr)
	}
	b.setRole("master") // e.g. promoted after all, unknown to the sentinels
	if n := rolesFor(b, 200*time.Millisecond); n > 0 {
		t.Errorf("the aborted candidate got %d ROLEs after the abort", n)
	}

	drainRoles(a)
	s2.set(normal)
	s2.publish("-odown", masterDetails(a.addr))
	waitMaster(t, r.w, a.addr, 2*time.Second)
	select {
	case <-a.roles:
	default:
		t.Errorf("old master not re-verified with ROLE after the abort")
	}
	requery(t, r.w, s1)
	if got, want := r.pubs.get(), []string{a.addr, "", a.addr}; !slices.Equal(got, want) {
		t.Errorf("published %q, want %q", got, want)
	}
	if st := r.w.Status(); st.Candidate != "" || st.LastVerified.Epoch != 1 {
		t.Errorf("status after the abort = %+v", st)
	}
}

// A candidate whose failover epoch is not above the highest epoch seen, or
// that an attempt at a newer epoch superseded, is never watched nor
// published, even when it answers ROLE master.
func TestStaleCandidateNeverPublished(t *testing.T) {
	t.Run("epoch below the highest seen", func(t *testing.T) {
		a := newFakeNode(t, lo, "master")
		b := newFakeNode(t, lo, "master")
		// s1 missed the failovers of epochs 4 and 5 (a partition): it still
		// has A at epoch 3 and fails it over at epoch 4, promoting B.
		stale := sentView{addr: a.addr, epoch: 3}
		s1 := newFakeSentinel(t, lo, stale)
		s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 5})
		opts := fastOpts(addrs(s1, s2)...)
		r := startSubscribed(t, opts, nil, a.addr)

		drainRoles(b)
		s1.set(failing(a.addr, 3, "wait_promotion", b.addr))
		publishStart(s1, a.addr, 4)
		publishSelect(s1, b.addr, a.addr)
		publishWaitPromotion(s1, b.addr, a.addr)
		waitMaster(t, r.w, "", 2*time.Second)
		requery(t, r.w, s1) // the poll path sees the promoted replica too
		requery(t, r.w, s1)
		if n := len(b.roles); n > 0 || r.w.Status().Candidate != "" {
			t.Fatalf("stale candidate watched: %d ROLEs, status %+v", n, r.w.Status())
		}
		s1.set(stale)
		s1.publish("-failover-abort-slave-timeout", masterDetails(a.addr))
		waitMaster(t, r.w, a.addr, 2*time.Second)
		if got, want := r.pubs.get(), []string{a.addr, "", a.addr}; !slices.Equal(got, want) {
			t.Errorf("published %q, want %q", got, want)
		}
		if n := len(b.roles); n > 0 {
			t.Errorf("stale candidate got %d ROLEs", n)
		}
	})
	t.Run("superseded by a newer attempt", func(t *testing.T) {
		a := newFakeNode(t, lo, "master")
		b := newFakeNode(t, lo, "slave")
		c := newFakeNode(t, lo, "slave")
		normal := sentView{addr: a.addr, epoch: 1}
		s1 := newFakeSentinel(t, lo, normal)
		s2 := newFakeSentinel(t, lo, normal)
		opts := fastOpts(addrs(s1, s2)...)
		r := startSubscribed(t, opts, nil, a.addr)

		s1.set(failing(a.addr, 1, "wait_promotion", b.addr))
		publishStart(s1, a.addr, 2)
		publishSelect(s1, b.addr, a.addr)
		publishWaitPromotion(s1, b.addr, a.addr)
		candidateIs(t, r.w, b.addr)

		s2.set(failing(a.addr, 1, "select_slave", ""))
		s2.publish("+new-epoch", "3")
		s2.publish("+try-failover", masterDetails(a.addr))
		candidateIs(t, r.w, "")
		b.setRole("master") // the epoch-2 candidate, superseded
		requery(t, r.w, s1) // s1 still flags b as promoted at epoch 2
		if st := r.w.Status(); st.Candidate != "" || st.Master != "" {
			t.Fatalf("superseded candidate taken: %+v", st)
		}

		s2.set(failing(a.addr, 1, "wait_promotion", c.addr))
		publishSelect(s2, c.addr, a.addr)
		publishWaitPromotion(s2, c.addr, a.addr)
		candidateIs(t, r.w, c.addr)
		waitRole(t, c, 2*time.Second)
		c.setRole("master")
		waitMaster(t, r.w, c.addr, 2*time.Second)
		if st := r.w.Status(); st.LastVerified.Epoch != 3 {
			t.Errorf("published at epoch %d, want 3", st.LastVerified.Epoch)
		}
		if got, want := r.pubs.get(), []string{a.addr, "", c.addr}; !slices.Equal(got, want) {
			t.Errorf("published %q, want %q", got, want)
		}
	})
}

// A sentinel that answers a query again gets its subscription back at
// once, not at the end of the subscriber's backoff.
func TestResubscribedAtOnceWhenSentinelAnswers(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	const backoff = 5 * time.Second // a retry waits at least 2.5 s
	r := startWatcher(t, fastOpts(s1.addr), func(w *Watcher) { w.backoffMin, w.backoffMax = backoff, backoff })
	waitMaster(t, r.w, a.addr, 5*time.Second)
	eventually(t, 5*time.Second, "subscribed", func() bool { return allSubscribed(r.w) })

	s1.stop()
	eventually(t, 5*time.Second, "sentinel down", func() bool {
		ss := r.w.Status().Sentinels[0]
		return !ss.OK && !ss.Subscribed
	})
	s1.drain()
	s1.restart()
	answered := waitQuery(t, s1, "get-master-addr-by-name", 2*time.Second)
	subscribed := waitQuery(t, s1, "psubscribe", backoff/4)
	t.Logf("resubscribed %v after the first answer", subscribed.Sub(answered))
	eventually(t, backoff/4, "subscribed again", func() bool { return allSubscribed(r.w) })
}

// A sentinel that answers but has no live subscription is polled fast;
// one that refuses the subscription itself is not resubscribed at that
// pace (its backoff goes on).
func TestUnsubscribedSentinelPolledFast(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1}, func(f *fakeSentinel) { f.refuseSub.Store(true) })
	opts := fastOpts(s1.addr)
	opts.PollInterval = time.Hour
	const backoff = 5 * time.Second
	r := startWatcher(t, opts, func(w *Watcher) { w.backoffMin, w.backoffMax = backoff, backoff })
	waitMaster(t, r.w, a.addr, 5*time.Second)
	waitQuery(t, s1, "psubscribe", 2*time.Second) // refused: the backoff starts
	s1.drain()
	start := time.Now()
	const polls = 5
	polled, resub := 0, 0
	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	for polled < polls {
		select {
		case q := <-s1.queries:
			switch q.name {
			case "get-master-addr-by-name":
				polled++
			case "psubscribe":
				resub++
			}
		case <-deadline.C:
			t.Fatalf("%d polls in 2s with a one-hour poll interval, want %d", polled, polls)
		}
	}
	d := time.Since(start)
	t.Logf("%d polls in %v with a one-hour poll interval", polls, d)
	if d > polls*3*fastPollEvery {
		t.Errorf("%d polls took %v, want about %v each", polls, d, fastPollEvery)
	}
	if resub > 0 || r.w.Status().Sentinels[0].Subscribed {
		t.Errorf("a refusing sentinel was resubscribed %d times during fast polls", resub)
	}
}

// The failover epoch is taken from +new-epoch only when it immediately
// precedes +try-failover of our master on the same sentinel's subscription;
// otherwise a lower bound is used, and none from a sentinel behind the
// highest epoch seen.
func TestFailoverEpochPairing(t *testing.T) {
	const a, other = "10.0.0.1:6379", "10.0.0.9:6379"
	ev := func(sentinel, channel, payload string) event {
		e := parseEvent(channel, payload, "mymaster", "h")
		e.Sentinel = sentinel
		return e
	}
	try := func(s string) event { return ev(s, "+try-failover", "master mymaster 10.0.0.1 6379") }
	tests := []struct {
		name      string
		events    []event
		s1Epoch   int64 // s1's last answer's config epoch
		wantEpoch int64
		wantExact bool
	}{
		{"pair", []event{ev("s1", "+new-epoch", "7"), try("s1")}, 3, 7, true},
		{"pair, another sentinel's messages in between", []event{ev("s1", "+new-epoch", "7"), ev("s2", "+new-epoch", "9"), try("s1")}, 3, 7, true},
		{"not adjacent: a vote in between", []event{ev("s1", "+new-epoch", "7"), ev("s1", "+vote-for-leader", "x 7"), try("s1")}, 3, 4, false},
		{"the epoch went to another master's failover", []event{ev("s1", "+new-epoch", "7"), ev("s1", "+try-failover", "master other 10.0.0.9 6379"), try("s1")}, 3, 4, false},
		{"another sentinel's pair", []event{ev("s2", "+new-epoch", "7"), try("s2")}, 3, 4, false},
		{"a later attempt whose epoch was missed", []event{ev("s1", "+new-epoch", "7"), try("s1"), try("s1")}, 3, 4, false},
		{"no pair, sentinel behind the highest epoch", nil, 2, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := New(fastOpts("127.0.0.1:1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			w.st.floor, w.st.cur = 3, Master{Addr: a, Epoch: 3}
			w.st.sentinels["s1"] = &sentinelConn{addr: "s1", lastOK: answer{at: time.Now(), epoch: tt.s1Epoch}}
			for _, e := range tt.events {
				w.trackTry(e)
			}
			if e, exact := w.failoverEpoch("s1", a); e != tt.wantEpoch || exact != tt.wantExact {
				t.Errorf("failoverEpoch = %d, %v; want %d, %v", e, exact, tt.wantEpoch, tt.wantExact)
			}
			if e, exact := w.failoverEpoch("s1", other); exact {
				t.Errorf("failoverEpoch for another master = %d, exact", e)
			}
		})
	}
}
