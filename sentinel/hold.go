package sentinel

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// defaultHoldMax bounds a hold whose signalling sentinel never answers
// again (see holdConfirmedOver); a real failover keeps reporting itself.
const defaultHoldMax = 10 * time.Second

// hold is a failover of the current master that has started and has neither
// been seen to promote (new master verified) nor to abort (old master
// re-verified). Master() is "" while it lasts.
type hold struct {
	active bool
	since  time.Time
	reason string
	master string // the master being failed over
	epoch  int64  // its config epoch
	// promoting: Sentinel selected a replica to promote. From then on the
	// master may be demoted at any moment, and a write it acknowledges
	// may be lost with it (Fenced).
	promoting bool
	// signals: each sentinel that signalled start or abort, and when. The
	// hold may only end on the old master once each of them has answered a
	// query sent after its signal, and none shows the failover any more.
	signals map[string]time.Time
}

// enterHold starts (or extends) a hold on master, whose config epoch is
// epoch as far as the signal tells.
func (w *Watcher) enterHold(sentinel, reason, master string, epoch int64, at time.Time) {
	st := &w.st
	h := &st.hold
	if !h.active {
		*h = hold{active: true, since: time.Now(), reason: reason, master: master,
			epoch: max(st.cur.Epoch, epoch), signals: make(map[string]time.Time)}
		st.failoverStart = h.since
		clear(st.steps)
		w.log.Info("failover started; holding writes", zap.String("master", master),
			zap.String("reason", reason), zap.String("sentinel", sentinel))
	}
	if at.After(h.signals[sentinel]) {
		h.signals[sentinel] = at
	}
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
		switch ok, done := w.verified(ctx, c.addr, c.epoch, time.Time{}); {
		case !done:
		case ok:
			w.setCurrent(c, "promotion")
		default:
			w.scheduleRetry(c.addr)
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
	// Aborted: re-verify the old master (ROLE, checked after the last
	// signal; it is still the highest epoch since c is) before routing to it.
	var last time.Time
	for _, t := range h.signals {
		if t.After(last) {
			last = t
		}
	}
	switch ok, done := w.verified(ctx, c.addr, c.epoch, last); {
	case !done:
		return
	case !ok:
		st.valid = false
		w.scheduleRetry(c.addr)
		return
	}
	w.log.Info("failover over without promotion; old master re-verified",
		zap.String("master", c.addr), zap.Int64("epoch", c.epoch),
		zap.Duration("held_for", now.Sub(h.since)), zap.String("reason", h.reason))
	w.endHold()
	st.cur = Master{Addr: c.addr, Epoch: c.epoch, VerifiedAt: now}
	st.valid, st.errMsg = true, ""
}

// endHold ends the hold, if any, with what only lives during one: the
// failover candidate and the sentinels' failover attempts.
func (w *Watcher) endHold() {
	st := &w.st
	st.hold = hold{}
	w.dropCandidate("hold over")
	clear(st.tries)
	clear(st.aborts)
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

// onEvent reacts to one sentinel event: start or abort signals for the
// current master update the hold; every event of ours triggers a re-query.
func (w *Watcher) onEvent(ctx context.Context, ev event) {
	st := &w.st
	w.trackTry(ev)
	if !ev.ours {
		w.log.Debug("sentinel event for another master", zap.String("channel", ev.Channel))
		return
	}
	st.lastEvent = ev.Event
	if st.eventCounts == nil {
		st.eventCounts = make(map[string]uint64)
	}
	if len(st.eventCounts) < 64 || st.eventCounts[ev.Channel] > 0 { // channels are a small fixed set
		st.eventCounts[ev.Channel]++
	}
	ref := st.cur.Addr
	if ref == "" {
		ref = ev.master
	}
	switch ev.kind {
	case evStart:
		if ev.master != "" && ev.master == ref {
			w.enterHold(ev.Sentinel, ev.Channel, ref, st.cur.Epoch, ev.At)
		}
	case evAbort:
		if st.hold.active && ev.master == st.hold.master {
			st.hold.signals[ev.Sentinel] = ev.At
		}
	}
	w.candidateEvent(ctx, ev)
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
