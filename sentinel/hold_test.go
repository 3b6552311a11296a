package sentinel

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFailoverStartHoldsThenPromotion(t *testing.T) {
	for _, viaEvents := range []bool{true, false} {
		name := map[bool]string{true: "events", false: "polls only"}[viaEvents]
		t.Run(name, func(t *testing.T) {
			a := newFakeNode(t, lo, "master")
			b := newFakeNode(t, lo, "slave")
			s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
			s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
			s3 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
			opts := fastOpts(addrs(s1, s2, s3)...)
			if viaEvents {
				opts.PollInterval = time.Hour // only events move it
			}
			r := startWatcher(t, opts, nil)
			waitMaster(t, r.w, a.addr, 5*time.Second)
			if viaEvents {
				eventually(t, 5*time.Second, "subscriptions", func() bool { return allSubscribed(r.w) })
			}

			// SENTINEL FAILOVER on s1: the old master is alive and still master.
			s1.set(sentView{addr: a.addr, epoch: 1, flags: "master,failover_in_progress", failoverState: "wait_start"})
			if viaEvents {
				s1.publish("+new-epoch", "2")
				s1.publish("+try-failover", masterDetails(a.addr))
			}
			waitMaster(t, r.w, "", 2*time.Second)
			st := r.w.Status()
			if !st.FailoverInProgress || st.LastVerified.Addr != a.addr {
				t.Errorf("status during failover = %+v", st)
			}
			if viaEvents {
				s1.publish("+elected-leader", masterDetails(a.addr))
				s1.publish("+selected-slave", replicaDetails(b.addr, a.addr))
				s1.set(sentView{addr: a.addr, epoch: 1, flags: "master,failover_in_progress", failoverState: "wait_promotion"})
				s1.publish("+failover-state-wait-promotion", replicaDetails(b.addr, a.addr))
			}
			requery(t, r.w, s1)
			if addr, _ := r.w.Master(); addr != "" {
				t.Fatalf("Master() = %q before the promotion", addr)
			}

			// Promotion: the leader names B at epoch 2 (SENTINEL MASTER still
			// A). The next read is torn: SENTINEL MASTER from before the
			// promotion, GET-MASTER-ADDR-BY-NAME from after; it must be re-read,
			// not taken as B at epoch 1 nor as the end of the failover.
			b.setRole("master")
			s1.tear(sentView{addr: a.addr, epoch: 1, flags: "master,failover_in_progress", failoverState: "wait_promotion"})
			s1.set(sentView{addr: b.addr, infoAddr: a.addr, epoch: 2,
				flags: "master,failover_in_progress", failoverState: "reconf_slaves"})
			if viaEvents {
				s1.publish("+promoted-slave", replicaDetails(b.addr, a.addr))
			}
			d := waitMaster(t, r.w, b.addr, 2*time.Second)
			t.Logf("promotion published %v after the leader's answer changed", d)
			if got, want := r.pubs.get(), []string{a.addr, "", b.addr}; !slices.Equal(got, want) {
				t.Errorf("published %q, want %q", got, want)
			}
			if st := r.w.Status(); st.FailoverInProgress || st.LastVerified.Epoch != 2 {
				t.Errorf("status after promotion = %+v", st)
			}
			if !logsContain(r.logs, "master changed") || !logsContain(r.logs, "failover started") {
				t.Errorf("failover not logged")
			}
		})
	}
}

func TestFailoverAbortReturnsToOldMaster(t *testing.T) {
	tests := []struct {
		name         string
		during       sentView
		start, abort string
		demoted      bool // the old master is a replica after the abort
	}{
		{name: "odown then -odown", during: sentView{flags: "master,s_down,o_down"}, start: "+odown", abort: "-odown"},
		{name: "no good slave", during: sentView{flags: "master,failover_in_progress", failoverState: "select_slave"},
			start: "+try-failover", abort: "-failover-abort-no-good-slave"},
		{name: "not elected", during: sentView{flags: "master,failover_in_progress", failoverState: "wait_start"},
			start: "+try-failover", abort: "-failover-abort-not-elected"},
		{name: "old master demoted", during: sentView{flags: "master,failover_in_progress", failoverState: "wait_start"},
			start: "+try-failover", abort: "-failover-abort-not-elected", demoted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newFakeNode(t, lo, "master")
			normal := sentView{addr: a.addr, epoch: 4}
			s1 := newFakeSentinel(t, lo, normal)
			s2 := newFakeSentinel(t, lo, normal)
			opts := fastOpts(addrs(s1, s2)...)
			r := startSubscribed(t, opts, nil, a.addr)

			during := tt.during
			during.addr, during.epoch = a.addr, 4
			s1.set(during)
			s1.publish(tt.start, masterDetails(a.addr))
			waitMaster(t, r.w, "", 2*time.Second)
			// The re-query still shows the failover: the hold stays.
			requery(t, r.w, s1)
			if addr, _ := r.w.Master(); addr != "" {
				t.Fatalf("hold released while the sentinel still reports the failover")
			}

			if tt.demoted {
				a.setRole("slave")
			}
			drainRoles(a)
			s1.set(normal)
			s1.publish(tt.abort, masterDetails(a.addr))
			if tt.demoted {
				waitRole(t, a, 2*time.Second)
				eventually(t, 2*time.Second, "ROLE error", func() bool {
					return strings.Contains(r.w.Status().Error, "not master")
				})
				if addr, _ := r.w.Master(); addr != "" {
					t.Fatalf("returned to a demoted old master")
				}
				return
			}
			waitMaster(t, r.w, a.addr, 2*time.Second)
			select {
			case <-a.roles: // re-verified after the abort
			default:
				t.Errorf("old master not re-verified with ROLE after the abort")
			}
			if got, want := r.pubs.get(), []string{a.addr, "", a.addr}; !slices.Equal(got, want) {
				t.Errorf("published %q, want %q", got, want)
			}
		})
	}
}

// The sentinel that started a failover dies mid-way; the others never saw
// it. The hold must end (after holdMax) on the re-verified old master.
func TestHoldEndsWhenSignallingSentinelDies(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	const holdMax = 300 * time.Millisecond
	r := startWatcher(t, fastOpts(addrs(s1, s2)...), func(w *Watcher) { w.holdMax = holdMax })
	waitMaster(t, r.w, a.addr, 5*time.Second)
	eventually(t, 5*time.Second, "subscriptions", func() bool { return allSubscribed(r.w) })

	s1.set(sentView{addr: a.addr, epoch: 1, flags: "master,failover_in_progress", failoverState: "wait_start"})
	s1.publish("+try-failover", masterDetails(a.addr))
	waitMaster(t, r.w, "", 2*time.Second)
	held := time.Now()
	s1.stop()
	waitMaster(t, r.w, a.addr, 5*time.Second)
	if d := time.Since(held); d < holdMax*8/10 {
		t.Errorf("hold ended after %v, before holdMax %v, without the signalling sentinel", d, holdMax)
	}
}

// A frozen old master (SIGSTOP, partition) makes its ROLE check hang for
// DialTimeout+QueryTimeout; the promotion must not wait for it.
func TestHungOldMasterDoesNotDelayPromotion(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	b := newFakeNode(t, lo, "master")
	s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1})
	opts := fastOpts(s1.addr)
	opts.QueryTimeout = 3 * time.Second
	r := startSubscribed(t, opts, nil, a.addr)

	a.hang.Store(true)
	drainRoles(a)
	r.w.Suspect(a.addr) // the proxy saw a timeout: the check now hangs
	waitRole(t, a, 2*time.Second)
	start := time.Now()
	s1.set(sentView{addr: b.addr, epoch: 2})
	s1.publish("+promoted-slave", replicaDetails(b.addr, a.addr))
	waitMaster(t, r.w, b.addr, time.Second)
	t.Logf("promotion published %v after the event, with a ROLE check of the old master hanging", time.Since(start))
}
