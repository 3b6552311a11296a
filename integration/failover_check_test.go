package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// foExpect is what a failover scenario allows the load's clients to see.
type foExpect struct {
	// perClient bounds the errors of each writer, reader and the
	// publisher: 0 for a planned failover, 1 (its command in flight) when
	// the master crashed or hung.
	perClient int
	// blockErrs bounds the BLPOP client's error replies: a blocked command
	// cannot move, so it gets one error per switch.
	blockErrs int
	// inFlightUntil, when set, allows errors only for commands sent before
	// it: the end of the event (a kill -9 takes the master a few
	// milliseconds to die; what was sent until then was in flight at it).
	inFlightUntil time.Time
	// unreplicatedBefore, when set, is the moment the master stopped or
	// died. Redis replicates asynchronously: it answers a client before
	// its replicas have the write, so a master that stops right after
	// answering may take the write with it. A write acknowledged within
	// replWindow before that moment may be missing on the new master, one
	// per writer at most (each waits for its reply before the next).
	unreplicatedBefore time.Time
}

// replWindow bounds how long before a crash or hang an acknowledged write
// may not have reached any replica.
const replWindow = 50 * time.Millisecond

// unreplicated reports whether a write acknowledged at acked may be
// missing on the new master for the reason given at unreplicatedBefore.
func (e foExpect) unreplicated(acked time.Time) bool {
	return !e.unreplicatedBefore.IsZero() && !acked.After(e.unreplicatedBefore) &&
		e.unreplicatedBefore.Sub(acked) <= replWindow
}

// directTo returns a plain client straight to a data node (RESP2, no
// retries, no identity): the observer the tests compare the proxy with.
func directTo(addr string, db int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, DB: db, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second,
	})
}

// waitRoutes polls until a command through the proxy at proxyAddr reaches
// the data node at addr (same run_id) and returns when it first did.
func waitRoutes(t *testing.T, proxyAddr, addr string, d time.Duration) time.Time {
	t.Helper()
	ctx := testContext(t, d)
	dc := directTo(addr, 0)
	defer dc.Close()
	want, err := runID(ctx, dc)
	if err != nil {
		t.Fatalf("run_id of %s: %v", addr, err)
	}
	pc := redis.NewClient(&redis.Options{Addr: proxyAddr, Protocol: 2, MaxRetries: -1, PoolSize: 1,
		DisableIdentity: true, ReadTimeout: 15 * time.Second,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer pc.Close()
	var last string
	for {
		got, err := runID(ctx, pc)
		if err == nil && got == want {
			return time.Now()
		}
		last = fmt.Sprintf("run_id %q, %v", got, err)
		select {
		case <-ctx.Done():
			t.Fatalf("the proxy does not route to %s after %v (last: %s)", addr, d, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// nodeSnap is what a data node reports about itself.
type nodeSnap struct {
	role  string
	calls map[string]int64 // command name -> calls, from INFO commandstats
}

// snapNode reads the role and the command counters of a node.
func snapNode(ctx context.Context, c *redis.Client) (nodeSnap, error) {
	info, err := c.Info(ctx, "replication", "commandstats").Result()
	if err != nil {
		return nodeSnap{}, err
	}
	s := nodeSnap{role: infoField(info, "role"), calls: make(map[string]int64)}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		s.calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(n, 10, 64)
	}
	return s, nil
}

// waitSnap polls a node until it answers (it may just have been resumed).
func waitSnap(t *testing.T, c *redis.Client, d time.Duration) nodeSnap {
	t.Helper()
	var s nodeSnap
	var err error
	waitFor(t, d, "the old master to answer INFO", func() bool {
		s, err = snapNode(context.Background(), c)
		return err == nil
	})
	return s
}

// observe lets the load run for d. It is an observation window, not a
// synchronisation: the tests check that nothing happens during it.
func observe(d time.Duration) { time.Sleep(d) }

// scanKeys returns every key matching pattern on a node.
func scanKeys(ctx context.Context, c *redis.Client, pattern string) ([]string, error) {
	var keys []string
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// missingOn returns the keys that do not exist on the node c talks to.
func missingOn(ctx context.Context, c *redis.Client, keys []string) ([]string, error) {
	var missing []string
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(start+500, len(keys))]
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				p.Exists(ctx, k)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for i, cmd := range cmds {
			if cmd.(*redis.IntCmd).Val() == 0 {
				missing = append(missing, batch[i])
			}
		}
	}
	return missing, nil
}

// strayWrites returns the load's keys on the old master that the new master
// does not have: writes that ran on the old master after the promotion.
func (l *foLoad) strayWrites(t *testing.T, oldAddr, newAddr string) []string {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	oc, nc := directTo(oldAddr, 0), directTo(newAddr, 0)
	defer oc.Close()
	defer nc.Close()
	keys, err := scanKeys(ctx, oc, l.prefix+"w*")
	if err != nil {
		t.Fatalf("SCAN the old master %s: %v", oldAddr, err)
	}
	stray, err := missingOn(ctx, nc, keys)
	if err != nil {
		t.Fatalf("EXISTS on the new master %s: %v", newAddr, err)
	}
	return stray
}

// finish runs once the proxy routes to newMaster (since switched): it
// checks that writers, the subscriber and the blocker work there, stops the
// load, checks the idle connections, the acknowledged writes and the
// errors against exp.
func (l *foLoad) finish(t *testing.T, switched time.Time, newMaster string, exp foExpect) {
	t.Helper()
	l.waitAcksAfter(t, switched)
	c := l.client(2)
	ctx := testContext(t, 60*time.Second)

	// The subscriber, still on its first connection, receives what is
	// published through the proxy now. Its move to the new master may
	// lag the switch a little: publish until a marker arrives.
	var subOK time.Time
	waitFor(t, 15*time.Second, "the subscriber to receive a message published after the failover", func() bool {
		marker := "after-" + strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := c.Publish(ctx, l.prefix+"ch", marker).Err(); err != nil {
			return false
		}
		for range 20 {
			l.sub.mu.Lock()
			at, ok := l.sub.markers[marker]
			dropped := l.sub.dropped
			l.sub.mu.Unlock()
			if ok || dropped != nil {
				subOK = at
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	})
	l.block.wake(t, c, "after")
	observe(300 * time.Millisecond)
	l.stopClients()

	// Every message published (to a subscriber) after the move arrives.
	var late []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		late = late[:0]
		l.sub.mu.Lock()
		for _, r := range l.pub.snapshot() {
			if _, ok := l.sub.got[r.seq]; !ok && r.err == "" && r.n > 0 && !subOK.IsZero() && r.sent.After(subOK) {
				late = append(late, r.seq)
			}
		}
		l.sub.mu.Unlock()
		if len(late) == 0 {
			break
		}
	}
	l.checkSubscriber(t, late)
	l.checkBlocker(t, exp)
	l.checkIdle(t, newMaster)
	l.checkAcked(t, newMaster, exp)
	l.checkPinned(t, newMaster, exp)
	l.checkErrors(t, exp)
	t.Logf("load: %s", l.summary())
}

func (l *foLoad) checkSubscriber(t *testing.T, late []int) {
	t.Helper()
	l.sub.mu.Lock()
	defer l.sub.mu.Unlock()
	if l.sub.dropped != nil {
		t.Errorf("the subscriber's connection was closed: %v", l.sub.dropped)
	}
	if len(late) > 0 {
		t.Errorf("the subscriber missed %d messages published after it moved: %v", len(late), late[:min(len(late), 10)])
	}
	if len(l.sub.other) > 0 {
		t.Errorf("the subscriber got %d frames that are not messages (subscription confirmations of a move?): %q",
			len(l.sub.other), l.sub.other[:min(len(l.sub.other), 3)])
	}
	published, lost := 0, 0
	for _, r := range l.pub.snapshot() {
		if r.err == "" && r.n > 0 {
			published++
			if _, ok := l.sub.got[r.seq]; !ok {
				lost++
			}
		}
	}
	t.Logf("subscriber: %d of %d messages published to a subscriber arrived (%d lost around the switch)",
		published-lost, published, lost)
}

func (l *foLoad) checkBlocker(t *testing.T, exp foExpect) {
	t.Helper()
	l.block.mu.Lock()
	defer l.block.mu.Unlock()
	if l.block.dropped != nil {
		t.Errorf("the BLPOP client's connection was closed: %v", l.block.dropped)
	}
	if len(l.block.errs) > exp.blockErrs {
		t.Errorf("the BLPOP client got %d error replies, want at most %d: %q", len(l.block.errs), exp.blockErrs, l.block.errs)
	} else if len(l.block.errs) > 0 {
		t.Logf("BLPOP client errors (allowed): %q", l.block.errs)
	}
}

// checkIdle uses every idle connection again: it must still be in db 2 and
// write to the new master, without reconnecting.
func (l *foLoad) checkIdle(t *testing.T, newMaster string) {
	t.Helper()
	ctx := testContext(t, 20*time.Second)
	d2, d0 := directTo(newMaster, 2), directTo(newMaster, 0)
	defer d2.Close()
	defer d0.Close()
	for i, c := range l.idle {
		want := "$" + strconv.Itoa(len("v"+strconv.Itoa(i))) + "\r\nv" + strconv.Itoa(i) + "\r\n"
		if r, err := c.do("GET", l.idleKey("a", i)); err != nil || r != want {
			t.Errorf("idle connection %d after the failover: GET = %q, %v; want %q", i, r, err, want)
			continue
		}
		if r, err := c.do("SET", l.idleKey("b", i), "w"); err != nil || r != "+OK\r\n" {
			t.Errorf("idle connection %d after the failover: SET = %q, %v", i, r, err)
			continue
		}
		if n, err := d2.Exists(ctx, l.idleKey("b", i)).Result(); err != nil || n != 1 {
			t.Errorf("idle connection %d wrote, but db %s of the new master does not have the key (%d, %v)", i, loadIdleDB, n, err)
		}
		if n, err := d0.Exists(ctx, l.idleKey("b", i)).Result(); err != nil || n != 0 {
			t.Errorf("idle connection %d wrote to db 0 of the new master (%d, %v)", i, n, err)
		}
	}
}

// checkAcked checks that every acknowledged write is on the new master,
// but for what exp allows Redis's asynchronous replication to lose.
func (l *foLoad) checkAcked(t *testing.T, newMaster string, exp foExpect) {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	nc := directTo(newMaster, 0)
	defer nc.Close()
	acked := l.acked()
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	missing, err := missingOn(ctx, nc, keys)
	if err != nil {
		t.Fatalf("EXISTS on the new master %s: %v", newMaster, err)
	}
	perWriter := map[string]int{}
	missing = slices.DeleteFunc(missing, func(k string) bool {
		w, _, _ := strings.Cut(strings.TrimPrefix(k, l.prefix), ":")
		if !exp.unreplicated(acked[k]) || perWriter[w] > 0 {
			return false
		}
		perWriter[w]++
		t.Logf("write %s, acknowledged %v before the master stopped, is not on the new master: Redis had not replicated it (asynchronous replication)",
			k, exp.unreplicatedBefore.Sub(acked[k]).Round(time.Microsecond))
		return true
	})
	if len(missing) > 0 {
		slices.SortFunc(missing, func(a, b string) int { return acked[a].Compare(acked[b]) })
		var ex []string
		for _, k := range missing[:min(len(missing), 5)] {
			ex = append(ex, k+" acked at "+acked[k].Format("15:04:05.000"))
		}
		t.Errorf("%d of %d acknowledged writes are missing on the new master %s, e.g. %s",
			len(missing), len(keys), newMaster, strings.Join(ex, ", "))
	} else {
		t.Logf("all %d acknowledged writes are on the new master %s", len(keys), newMaster)
	}
}

// checkErrors bounds the errors of every writer, reader and the publisher,
// and checks that readers never read a wrong value.
func (l *foLoad) checkErrors(t *testing.T, exp foExpect) {
	t.Helper()
	for _, log := range append(append([]*opLog{}, l.writers...), append(l.readers, l.pub)...) {
		errs := log.errors()
		var texts []string
		for _, r := range errs {
			texts = append(texts, "sent "+r.sent.Format("15:04:05.000000")+" answered "+r.done.Format("15:04:05.000000")+": "+r.err)
		}
		late := 0
		for _, r := range errs {
			if !exp.inFlightUntil.IsZero() && !r.sent.Before(exp.inFlightUntil) {
				late++
			}
		}
		switch {
		case late > 0:
			t.Errorf("%s got %d errors for commands sent after the event ended at %s: %q",
				log.name, late, exp.inFlightUntil.Format("15:04:05.000000"), texts)
		case len(errs) > exp.perClient:
			t.Errorf("%s got %d errors, want at most %d: %q", log.name, len(errs), exp.perClient, texts)
		case len(errs) > 0:
			t.Logf("%s errors (allowed): %q", log.name, texts)
		}
	}
	l.wrong.Range(func(k, v any) bool {
		t.Errorf("%s read %q, want read-only-value", k, v)
		return true
	})
}
