package sentinel

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// defaultHoldMax bounds a hold whose signalling sentinel never answers
// again (see hold.confirmed); a real failover keeps reporting itself.
const defaultHoldMax = 10 * time.Second

// resetRounds: how many poll intervals every known sentinel must agree on
// an epoch below the highest one seen before the watcher believes the
// sentinels' configuration was reset (SENTINEL REMOVE + MONITOR restarts
// config epochs at 0) and follows them down.
const resetRounds = 10

// maxVerifyRetries bounds the fast re-query pace per unverified candidate.
const maxVerifyRetries = 40

// loopState is everything the main loop decides with. Only the goroutine
// running Run touches it.
type loopState struct {
	sentinels map[string]*sentinelConn
	order     []string        // configured first, then discovered
	pending   map[string]peer // discovered peers not yet added, by run id or addr

	cur   Master // last verified master
	valid bool   // cur is what the freshest sentinels name and ROLE said master
	floor int64  // highest config epoch seen: never route below it

	hold          hold
	failoverStart time.Time
	steps         map[string]bool // failover steps already logged at Info

	blind      bool
	blindSince time.Time
	lowSince   time.Time // every sentinel has agreed on an epoch below floor since

	errMsg        string
	lastEvent     Event
	lastChange    time.Time
	memo          verifyMemo
	roleErr       map[string]string // last ROLE problem logged per addr
	unknownLogged bool
	fullLogged    bool
	retry         *time.Timer
}

// hold is a failover of the current master that has started and has neither
// been seen to promote (new master verified) nor to abort (old master
// re-verified). Master() is "" while it lasts.
type hold struct {
	active bool
	since  time.Time
	reason string
	master string // the master being failed over
	epoch  int64  // its config epoch
	// signals: each sentinel that signalled start or abort, and when. The
	// hold may only end on the old master once each of them has answered a
	// query sent after its signal, and none shows the failover any more.
	signals map[string]time.Time
}

// verifyMemo remembers the last ROLE verdict to avoid re-checking the same
// candidate on every answer.
type verifyMemo struct {
	addr  string
	epoch int64
	first time.Time // first check of this (addr, epoch)
	at    time.Time // last check
	ok    bool
}

// choice is the winning view of one evaluation.
type choice struct {
	addr  string
	epoch int64
	votes int
}

// choose picks the highest config epoch; among addresses at that epoch, the
// one most sentinels name, then prefer (the current master), then the
// smallest address so the result is deterministic.
func choose(views []answer, prefer string) choice {
	var top int64 = -1
	votes := make(map[string]int)
	for _, a := range views {
		switch {
		case a.epoch > top:
			top = a.epoch
			clear(votes)
			votes[a.addr] = 1
		case a.epoch == top:
			votes[a.addr]++
		}
	}
	cands := make([]choice, 0, len(votes))
	for addr, n := range votes {
		cands = append(cands, choice{addr: addr, epoch: top, votes: n})
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.votes != b.votes {
			return a.votes > b.votes
		}
		if (a.addr == prefer) != (b.addr == prefer) {
			return a.addr == prefer
		}
		return a.addr < b.addr
	})
	if len(cands) == 0 {
		return choice{epoch: -1}
	}
	return cands[0]
}

// onAnswer records one sentinel's answer, learns peers, and decides.
func (w *Watcher) onAnswer(ctx context.Context, wg *sync.WaitGroup, a answer) {
	s := w.st.sentinels[a.sentinel]
	if s == nil {
		return
	}
	wasOK, wasTried := s.tried && s.last.err == nil, s.tried
	s.tried, s.last = true, a
	switch {
	case a.err == nil:
		s.lastOK = a
		if a.runID != "" {
			s.runID = a.runID
		}
		if wasTried && !wasOK {
			w.log.Info("sentinel answers again", zap.String("sentinel", s.addr))
		}
	case wasOK || !wasTried:
		w.log.Warn("sentinel query failed", zap.String("sentinel", s.addr), zap.Error(a.err))
	default:
		w.log.Debug("sentinel query failed", zap.String("sentinel", s.addr), zap.Error(a.err))
	}
	w.learnPeers(ctx, wg, a)
	w.decide(ctx)
	w.apply()
}

// decide turns the latest answer of every sentinel into the current master.
func (w *Watcher) decide(ctx context.Context) {
	st := &w.st
	now := time.Now()
	tried, answered := 0, 0
	var views []answer
	for _, addr := range st.order {
		s := st.sentinels[addr]
		if !s.tried {
			if st.cur.Addr == "" && !s.discovered {
				// First decision: wait for every configured sentinel (or its
				// timeout) so a stale one answering first is not routed to.
				return
			}
			continue
		}
		tried++
		if s.last.err != nil {
			continue
		}
		answered++
		if !s.last.unknown {
			views = append(views, s.last)
		}
	}
	if answered == 0 {
		if tried == len(st.order) {
			w.setBlind(true)
		}
		return
	}
	w.setBlind(false)
	if len(views) == 0 {
		st.valid = false
		st.errMsg = fmt.Sprintf("master name %q is unknown to every sentinel that answered", w.opts.MasterName)
		if !st.unknownLogged {
			st.unknownLogged = true
			w.log.Error("master name unknown to every sentinel that answered", zap.Int("answered", answered))
		}
		return
	}
	st.unknownLogged = false
	c := choose(views, st.cur.Addr)
	if c.epoch < st.floor && !w.acceptLower(c, views, answered, now) {
		return // stale answers: the fresher sentinels are not answering
	}
	st.floor = max(st.floor, c.epoch)

	// The polls can show a failover the events did not (lost messages).
	ref := st.cur.Addr
	if ref == "" {
		ref = c.addr
	}
	for _, a := range views {
		if a.failing() && a.infoAddr == ref && a.epoch >= st.cur.Epoch {
			reason := "poll: failover_in_progress"
			if a.hasFlag("o_down") {
				reason = "poll: o_down"
			}
			w.enterHold(a.sentinel, reason, ref, a.started)
		}
	}
	if st.hold.active {
		w.decideHeld(ctx, c, views, now)
		return
	}
	if c.addr == st.cur.Addr && c.epoch == st.cur.Epoch && st.valid {
		return
	}
	if w.verify(ctx, c.addr, c.epoch, false) {
		w.setCurrent(c, "sentinels")
		return
	}
	st.valid = false
	w.scheduleRetry()
}

// decideHeld decides during a hold: follow a verified promotion, or return
// to the old master once the failover is seen to be over.
func (w *Watcher) decideHeld(ctx context.Context, c choice, views []answer, now time.Time) {
	st := &w.st
	h := &st.hold
	if c.addr != h.master {
		if c.epoch <= h.epoch {
			return // same epoch, other address: wait for the sentinels to agree
		}
		if w.verify(ctx, c.addr, c.epoch, false) {
			w.setCurrent(c, "promotion")
		} else {
			w.scheduleRetry()
		}
		return
	}
	for _, a := range views {
		if a.failing() && a.infoAddr == h.master {
			return
		}
	}
	if !w.holdConfirmedOver(now) {
		return
	}
	// Aborted: re-verify the old master (ROLE, and it is still the highest
	// epoch since c is) before routing to it again.
	if !w.verify(ctx, c.addr, c.epoch, true) {
		st.valid = false
		w.scheduleRetry()
		return
	}
	w.log.Info("failover over without promotion; old master re-verified",
		zap.String("master", c.addr), zap.Int64("epoch", c.epoch),
		zap.Duration("held_for", now.Sub(h.since)), zap.String("reason", h.reason))
	st.hold = hold{}
	st.cur = Master{Addr: c.addr, Epoch: c.epoch, VerifiedAt: now}
	st.valid, st.errMsg = true, ""
}

// holdConfirmedOver: every sentinel that signalled has answered a query sent
// after its signal (the caller checked none of the answers is failing), or
// the hold is older than holdMax (a signalling sentinel that died mid-way
// must not stop writes for ever).
func (w *Watcher) holdConfirmedOver(now time.Time) bool {
	h := &w.st.hold
	if now.Sub(h.since) > w.holdMax {
		return true
	}
	for addr, t := range h.signals {
		s := w.st.sentinels[addr]
		if s == nil || s.last.err != nil || !s.last.started.After(t) {
			return false
		}
	}
	return true
}

// acceptLower decides whether answers below the highest epoch seen are a
// configuration reset rather than stale sentinels: only when every known
// sentinel answers, all name the same address at the same epoch, for
// resetRounds poll intervals.
func (w *Watcher) acceptLower(c choice, views []answer, answered int, now time.Time) bool {
	st := &w.st
	same := answered == len(st.order) && len(views) == answered && c.votes == len(views)
	if !same {
		st.lowSince = time.Time{}
		w.log.Debug("ignoring answers below the highest epoch seen",
			zap.Int64("epoch", c.epoch), zap.Int64("highest_epoch", st.floor))
		return false
	}
	if st.lowSince.IsZero() {
		st.lowSince = now
	}
	if now.Sub(st.lowSince) < resetRounds*w.opts.PollInterval {
		return false
	}
	w.log.Warn("every sentinel reports a lower config epoch; following them (sentinel configuration reset?)",
		zap.String("master", c.addr), zap.Int64("epoch", c.epoch), zap.Int64("highest_epoch", st.floor))
	st.floor, st.lowSince = c.epoch, time.Time{}
	return true
}

// verify checks ROLE=master on addr. Unless force, a failed verdict for the
// same (addr, epoch) is reused for retryEvery, and a good one for the
// current master is not re-checked.
func (w *Watcher) verify(ctx context.Context, addr string, epoch int64, force bool) bool {
	st := &w.st
	m := st.memo
	if !force && m.addr == addr && m.epoch == epoch && !m.ok && time.Since(m.at) < w.retryEvery {
		return false
	}
	role, err := w.checkRole(ctx, addr)
	ok := err == nil && role == "master"
	now := time.Now()
	if m.addr != addr || m.epoch != epoch {
		m.first = now
	}
	st.memo = verifyMemo{addr: addr, epoch: epoch, first: m.first, at: now, ok: ok}
	if ok {
		delete(st.roleErr, addr)
		return true
	}
	var problem string
	if err != nil {
		problem = fmt.Sprintf("cannot verify ROLE on %s: %v", addr, err)
	} else {
		problem = fmt.Sprintf("ROLE on %s is %q, not master", addr, role)
	}
	st.errMsg = problem
	if st.roleErr[addr] != problem {
		if len(st.roleErr) > 64 {
			clear(st.roleErr)
		}
		st.roleErr[addr] = problem
		w.log.Warn(problem, zap.String("addr", addr), zap.Int64("epoch", epoch))
	} else {
		w.log.Debug(problem, zap.String("addr", addr))
	}
	return false
}

// setCurrent makes c the verified master and ends any hold.
func (w *Watcher) setCurrent(c choice, why string) {
	st := &w.st
	now := time.Now()
	old := st.cur
	fields := []zap.Field{zap.String("old", old.Addr), zap.String("new", c.addr),
		zap.Int64("epoch", c.epoch), zap.Int64("old_epoch", old.Epoch), zap.String("via", why)}
	if st.hold.active {
		fields = append(fields, zap.Duration("held_for", now.Sub(st.hold.since)))
	}
	if !st.failoverStart.IsZero() && now.Sub(st.failoverStart) < time.Minute {
		fields = append(fields, zap.Duration("since_failover_start", now.Sub(st.failoverStart)))
	}
	switch {
	case old.Addr == "":
		w.log.Info("master verified", fields...)
	case old.Addr != c.addr:
		w.log.Info("master changed", fields...)
		clear(st.steps)
	case !st.valid || old.Epoch != c.epoch:
		w.log.Info("master re-verified", fields...)
	}
	st.cur = Master{Addr: c.addr, Epoch: c.epoch, VerifiedAt: now}
	st.valid, st.errMsg = true, ""
	st.hold = hold{}
}

// enterHold starts (or extends) a hold on master.
func (w *Watcher) enterHold(sentinel, reason, master string, at time.Time) {
	st := &w.st
	h := &st.hold
	if !h.active {
		*h = hold{active: true, since: time.Now(), reason: reason, master: master,
			epoch: st.cur.Epoch, signals: make(map[string]time.Time)}
		st.failoverStart = h.since
		clear(st.steps)
		w.log.Info("failover started; holding writes", zap.String("master", master),
			zap.String("reason", reason), zap.String("sentinel", sentinel))
	}
	if at.After(h.signals[sentinel]) {
		h.signals[sentinel] = at
	}
}

// onEvent reacts to one sentinel event: start or abort signals for the
// current master update the hold; every event of ours triggers a re-query.
func (w *Watcher) onEvent(ev event) {
	st := &w.st
	if !ev.ours {
		w.log.Debug("sentinel event for another master", zap.String("channel", ev.Channel))
		return
	}
	st.lastEvent = ev.Event
	ref := st.cur.Addr
	if ref == "" {
		ref = ev.master
	}
	switch ev.kind {
	case evStart:
		if ev.master != "" && ev.master == ref {
			w.enterHold(ev.Sentinel, ev.Channel, ref, ev.At)
		}
	case evAbort:
		if st.hold.active && ev.master == st.hold.master {
			st.hold.signals[ev.Sentinel] = ev.At
		}
	}
	w.logStep(ev)
	w.kickAll()
}

// logStep logs each failover step once at Info, repeats at Debug.
func (w *Watcher) logStep(ev event) {
	st := &w.st
	fields := []zap.Field{zap.String("channel", ev.Channel), zap.String("sentinel", ev.Sentinel),
		zap.String("payload", ev.Payload)}
	if !st.failoverStart.IsZero() && time.Since(st.failoverStart) < time.Minute {
		fields = append(fields, zap.Duration("since_failover_start", time.Since(st.failoverStart)))
	}
	if ev.kind == evOther || st.steps[ev.Channel] {
		w.log.Debug("sentinel event", fields...)
		return
	}
	st.steps[ev.Channel] = true
	w.log.Info("failover step", fields...)
}

// setBlind records whether no sentinel answers.
func (w *Watcher) setBlind(b bool) {
	st := &w.st
	switch {
	case b && !st.blind:
		st.blind, st.blindSince = true, time.Now()
		switch {
		case st.cur.Addr == "":
			w.log.Warn("no sentinel answers; no master known yet")
		case w.opts.StopWritesWhenBlind:
			w.log.Warn("no sentinel answers; stopping writes", zap.String("last_verified", st.cur.Addr))
		default:
			w.log.Warn("no sentinel answers; keeping the last verified master",
				zap.String("last_verified", st.cur.Addr), zap.Int64("epoch", st.cur.Epoch))
		}
	case !b && st.blind:
		st.blind = false
		w.log.Info("sentinels answer again", zap.Duration("blind_for", time.Since(st.blindSince)))
	}
}

// scheduleRetry re-queries soon while a newer candidate is unverified.
func (w *Watcher) scheduleRetry() {
	st := &w.st
	if st.retry == nil || st.memo.ok {
		return
	}
	if time.Since(st.memo.first) > maxVerifyRetries*w.retryEvery {
		return // give up the fast pace; the poll interval goes on
	}
	st.retry.Reset(w.retryEvery)
}

// learnPeers adds sentinels named by SENTINEL SENTINELS. It waits until
// every configured sentinel has been asked once, so that a configured
// sentinel (say localhost:26379) is recognised by its run id and not added
// a second time under the address it announces (127.0.0.1:26379).
func (w *Watcher) learnPeers(ctx context.Context, wg *sync.WaitGroup, a answer) {
	st := &w.st
	for _, p := range a.peers {
		key := p.runID
		if key == "" {
			key = p.addr
		}
		if key != "" && len(st.pending) < 4*maxSentinels {
			st.pending[key] = p
		}
	}
	known := make(map[string]bool)
	for _, addr := range st.order {
		s := st.sentinels[addr]
		if !s.tried && !s.discovered {
			return
		}
		if s.runID != "" {
			known[s.runID] = true
		}
	}
	for key, p := range st.pending {
		delete(st.pending, key)
		switch {
		case p.addr == "":
			w.log.Debug("sentinel peer announced no usable address", zap.String("run_id", p.runID))
		case known[p.runID] || st.sentinels[p.addr] != nil:
		case len(st.order) >= maxSentinels:
			if !st.fullLogged {
				st.fullLogged = true
				w.log.Warn("too many sentinels; not adding more", zap.Int("max", maxSentinels))
			}
		default:
			w.log.Info("sentinel discovered", zap.String("sentinel", p.addr),
				zap.String("run_id", p.runID), zap.String("from", a.sentinel))
			w.addSentinel(ctx, wg, p.addr, true)
			if p.runID != "" {
				st.sentinels[p.addr].runID = p.runID
				known[p.runID] = true
			}
		}
	}
}
