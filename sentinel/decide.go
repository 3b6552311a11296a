package sentinel

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
)

// resetRounds: how many poll intervals every known sentinel must agree on
// an epoch below the highest one seen before the watcher believes the
// sentinels' configuration was reset (SENTINEL REMOVE + MONITOR restarts
// config epochs at 0) and follows them down.
const resetRounds = 10

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
	eventCounts   map[string]uint64 // events about this master, by channel
	lastChange    time.Time
	verdicts      map[string]verdict   // last ROLE check result per address
	checking      map[string]time.Time // running ROLE checks, by address: start time
	recheck       map[string]time.Time // check again once the running one ends, if it began before
	roleErr       map[string]string    // last ROLE problem logged per address
	unknownLogged bool
	fullLogged    bool
	retry         *time.Timer

	newEpoch map[string]int64       // a sentinel's +new-epoch, until its next message
	tries    map[string]failoverTry // each sentinel's failover attempt (epoch), during a hold
	aborts   map[string]time.Time   // each sentinel's last -failover-abort-* of the held master
	cand     *candidate             // the replica being watched during a hold, or nil
	candGen  uint64
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
func (w *Watcher) onAnswer(ctx context.Context, a answer) {
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
		if !s.subscribed {
			// Reachable again: resubscribe now, not at the end of the
			// subscriber's backoff (up to 3.2 s).
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
		if wasTried && !wasOK {
			w.log.Info("sentinel answers again", zap.String("sentinel", s.addr))
		}
	case wasOK || !wasTried:
		w.log.Warn("sentinel query failed", zap.String("sentinel", s.addr), zap.Error(a.err))
	default:
		w.log.Debug("sentinel query failed", zap.String("sentinel", s.addr), zap.Error(a.err))
	}
	w.learnPeers(ctx, a)
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
	if c.epoch >= st.floor {
		// The agreement on a lower epoch, if any, was broken: a later one
		// must last resetRounds on its own (a stale start would let the
		// next failover's published candidate be undone at once).
		st.lowSince = time.Time{}
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
			w.enterHold(a.sentinel, reason, ref, a.epoch, a.started)
		}
	}
	if st.hold.active {
		w.candidatesFromPolls(ctx, views)
		if !st.hold.active {
			return // the candidate was published
		}
		w.decideHeld(ctx, c, views, now)
		return
	}
	if c.addr == st.cur.Addr && c.epoch == st.cur.Epoch && st.valid {
		return
	}
	if c.addr != st.cur.Addr {
		// The freshest sentinels name another node: stop routing to the old
		// one now, not after the candidate's ROLE check.
		st.valid = false
	}
	ok, done := w.verified(ctx, c.addr, c.epoch, time.Time{})
	switch {
	case !done: // a ROLE check runs; its result calls decide again
	case ok:
		w.setCurrent(c, "sentinels")
	default:
		st.valid = false
		w.scheduleRetry(c.addr)
	}
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
	w.endHold()
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
