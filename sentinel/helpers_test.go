package sentinel

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

const lo = "127.0.0.1:0"

// pubLog records every value Master() took, in order.
type pubLog struct {
	mu  sync.Mutex
	seq []string
}

func (p *pubLog) add(a string) {
	p.mu.Lock()
	p.seq = append(p.seq, a)
	p.mu.Unlock()
}

func (p *pubLog) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seq)
}

// fastOpts are options with short timers for unit tests.
func fastOpts(sentinels ...string) Options {
	return Options{
		MasterName:   "mymaster",
		Sentinels:    sentinels,
		PollInterval: 50 * time.Millisecond,
		QueryTimeout: 300 * time.Millisecond,
		DialTimeout:  300 * time.Millisecond,
	}
}

// addrs returns the fakes' addresses.
func addrs(fs ...*fakeSentinel) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.addr
	}
	return out
}

// run is a started watcher with what the test observes of it.
type run struct {
	w    *Watcher
	pubs *pubLog
	logs *observer.ObservedLogs
	stop func() // cancels Run and waits for it (also done by Cleanup)
}

// startWatcher starts w.Run in the background; tweak may adjust internals
// before Run. Cleanup stops it and checks it returned nil.
func startWatcher(t *testing.T, opts Options, tweak func(*Watcher)) *run {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	w, err := New(opts, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	pubs := &pubLog{}
	w.onPublish = pubs.add
	if tweak != nil {
		tweak(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &run{w: w, pubs: pubs, logs: logs, stop: stop}
}

// waitMaster waits on the change channel until Master() == want.
func waitMaster(t *testing.T, w *Watcher, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		addr, ch := w.Master()
		if addr == want {
			return time.Since(start)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("Master() = %q after %v, want %q\nstatus: %+v", addr, d, want, w.Status())
		}
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// waitQuery waits until f receives the named query and returns when it did.
func waitQuery(t *testing.T, f *fakeSentinel, q string, d time.Duration) time.Time {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case got := <-f.queries:
			if got.name == q {
				return got.at
			}
		case <-deadline.C:
			t.Fatalf("sentinel %s got no %q within %v", f.addr, q, d)
		}
	}
}

// requery makes the watcher query f again and waits until it has decided
// on f's answer to a query f received after the call.
func requery(t *testing.T, w *Watcher, f *fakeSentinel) {
	t.Helper()
	f.drain()
	w.Suspect("192.0.2.1:6379") // not a master we know: only a re-query
	at := waitQuery(t, f, "get-master-addr-by-name", 2*time.Second)
	eventually(t, 2*time.Second, "answer processed", func() bool {
		for _, s := range w.Status().Sentinels {
			if s.Addr == f.addr {
				return !s.LastAnswerAt.Before(at)
			}
		}
		return false
	})
}

// waitRole waits until n receives a ROLE.
func waitRole(t *testing.T, n *fakeNode, d time.Duration) {
	t.Helper()
	select {
	case <-n.roles:
	case <-time.After(d):
		t.Fatalf("node %s got no ROLE within %v", n.addr, d)
	}
}

// drainRoles empties n's ROLE log.
func drainRoles(n *fakeNode) {
	for {
		select {
		case <-n.roles:
		default:
			return
		}
	}
}

// quiet drains fs until none of them has received a query for d: used only
// where a test must show that nothing but the event under test triggers a
// query (an absence cannot be awaited on a channel).
func quiet(t *testing.T, d time.Duration, fs ...*fakeSentinel) {
	t.Helper()
	for range 100 {
		for _, f := range fs {
			f.drain()
		}
		timer := time.NewTimer(d)
		<-timer.C
		busy := false
		for _, f := range fs {
			busy = busy || len(f.queries) > 0
		}
		if !busy {
			return
		}
	}
	t.Fatalf("sentinels never went quiet")
}

// allSubscribed reports whether every known sentinel's subscription is up.
func allSubscribed(w *Watcher) bool {
	st := w.Status()
	for _, s := range st.Sentinels {
		if !s.Subscribed {
			return false
		}
	}
	return len(st.Sentinels) > 0
}

// hostPort splits a fake's address for event payloads: "ip port".
func hostPort(addr string) string {
	h, p, _ := net.SplitHostPort(addr)
	return h + " " + p
}

// details is Sentinel's instance-details prefix for a master.
func masterDetails(addr string) string { return "master mymaster " + hostPort(addr) }

// replicaDetails is the instance details of a replica of master.
func replicaDetails(replica, master string) string {
	return "slave " + replica + " " + hostPort(replica) + " @ mymaster " + hostPort(master)
}

// indexAfter reports the index of the first v in seq at or after from, or -1.
func indexAfter(seq []string, v string, from int) int {
	for i := from; i < len(seq); i++ {
		if seq[i] == v {
			return i
		}
	}
	return -1
}

// logsContain reports whether a log message contains s.
func logsContain(logs *observer.ObservedLogs, s string) bool {
	for _, e := range logs.All() {
		if strings.Contains(e.Message, s) {
			return true
		}
	}
	return false
}

// startSubscribed starts a watcher that only events (and the queries they
// trigger) move: polling is off. It returns once the watcher names master
// and is subscribed to every sentinel.
func startSubscribed(t *testing.T, opts Options, tweak func(*Watcher), master string) *run {
	t.Helper()
	opts.PollInterval = time.Hour
	r := startWatcher(t, opts, tweak)
	waitMaster(t, r.w, master, 5*time.Second)
	eventually(t, 5*time.Second, "subscribed", func() bool { return allSubscribed(r.w) })
	return r
}
