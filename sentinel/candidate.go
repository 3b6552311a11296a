package sentinel

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Detecting the promotion ourselves.
//
// Sentinel publishes +promoted-slave, and its leader starts naming the new
// master, only after its next INFO of the replica: ~0.8 s (up to the 1 s
// INFO period) after the replica really became master. During a hold the
// watcher therefore watches the replica the leader chose (the candidate)
// itself: ROLE every candidateEvery, and the candidate is published as soon
// as ROLE says master and the leader has sent it SLAVEOF NO ONE.
//
// Where the candidate comes from: +selected-slave,
// +failover-state-send-slaveof-noone and +failover-state-wait-promotion
// carry the replica's details; when events were lost, a query that finds
// the failover in send_slaveof_noone or wait_promotion asks that sentinel's
// SENTINEL REPLICAS, where the leader flags it "promoted". It is "armed"
// (may be published) once +failover-state-wait-promotion or a wait_promotion
// answer shows that the leader sent SLAVEOF NO ONE: a replica that already
// claimed master before that (a returning old master Sentinel picked) is not
// taken for promoted, as the failover could still abort before touching it.
//
// Which epoch it is published with. After +promoted-slave the sentinels
// report the new master with config epoch = the leader's failover epoch, so
// that is the epoch to publish. The sources, and why only one is used:
//   - +new-epoch is the sentinel's global current epoch, not tied to a
//     master: it also rises when the sentinel votes for another's request,
//     learns a higher epoch from a hello, or another master fails over. It
//     is the failover epoch only when it immediately precedes +try-failover
//     of our master on the same subscription: sentinelStartFailover emits
//     the two back to back (measured, 7.0.15), and one subscription delivers
//     a sentinel's messages in order. That pair is the exact source, kept
//     per sentinel, and used for the candidate that sentinel selects.
//   - +vote-for-leader <runid> <epoch> names no master (a sentinel may
//     monitor several), +elected-leader carries no epoch, and SENTINEL
//     MASTER has no failover epoch in 7.0.15 (config-epoch changes only at
//     +promoted-slave): none is used.
//   - Without the pair (subscribed too late, events lost, hold from a poll)
//     the epoch is a lower bound: max(highest epoch seen, current master's)
//     + 1, provided the leader's own last answer is at the highest epoch
//     seen (else none: the candidate is not watched). A failover epoch is
//     one more than the leader's current epoch, which is at least every
//     config epoch it knows. A lower bound is
//     harmless: it is still above every epoch of the old master (whose
//     stale answers are then ignored), and once the sentinels report the
//     real epoch the same address is re-verified at it without a blip. An
//     over-estimate would make the real epoch look old, so none is ever
//     guessed.
//
// Safety rules kept: a candidate whose epoch is not above the highest epoch
// seen is never watched (a stale or superseded selection), so nothing is
// published below an epoch already used; the candidate is never the master
// being failed over; it is dropped when the hold ends (promotion seen by
// the sentinels, or abort: the old master is then re-verified exactly as
// before), when its leader reports -failover-abort-*, when a newer failover
// attempt starts (+try-failover at a higher epoch), when another replica is
// selected at a higher epoch, and after the failover timeout.
//
// Risk accepted: if the leader dies or loses the replica after SLAVEOF NO
// ONE (its failover then aborts), the sentinels keep the old master at the
// old epoch while the watcher follows the promoted replica; it goes back
// only through the configuration-reset rule (every sentinel agreeing on the
// lower epoch for resetRounds polls). Without this detection the same
// replica would have been a second master unseen.

const (
	// candidateEvery is the ROLE pace on a candidate.
	candidateEvery = 20 * time.Millisecond
	// candidateFresh is how recent a ROLE=master must be when the candidate
	// is armed later (the poller reports every master it sees).
	candidateFresh = 200 * time.Millisecond
	// defaultFailoverTimeout is Sentinel's default failover-timeout, the
	// bound on watching a candidate when no sentinel reported its own.
	defaultFailoverTimeout = 3 * time.Minute
)

// failoverTry is a sentinel's failover attempt: the epoch of the +new-epoch
// that immediately preceded its +try-failover of master.
type failoverTry struct {
	master string
	epoch  int64
}

// candidate is the replica a failover leader chose for promotion.
type candidate struct {
	gen      uint64
	addr     string
	master   string // the master being failed over (the hold's)
	sentinel string // the leader that selected it
	epoch    int64  // failover epoch (exact) or a lower bound
	exact    bool
	armed    bool      // the leader sent SLAVEOF NO ONE
	masterAt time.Time // last time its ROLE said master
	since    time.Time
	via      string
	cancel   context.CancelFunc
}

// candResult is a candidate poller's report: ROLE said master at at, or
// (ended) the poller gave up at its deadline.
type candResult struct {
	gen   uint64
	at    time.Time
	ended bool
}

// trackTry pairs a sentinel's +new-epoch with the +try-failover right after
// it. It sees every event, of any master, in the order each sentinel sent
// them.
func (w *Watcher) trackTry(ev event) {
	st := &w.st
	pending, had := st.newEpoch[ev.Sentinel]
	delete(st.newEpoch, ev.Sentinel)
	switch {
	case ev.Channel == "+new-epoch":
		if e, err := strconv.ParseInt(strings.TrimSpace(ev.Payload), 10, 64); err == nil {
			st.newEpoch[ev.Sentinel] = e
		}
	case ev.Channel == "+try-failover" && ev.ours && ev.master != "":
		if !had {
			delete(st.tries, ev.Sentinel) // an attempt whose epoch we missed
			return
		}
		st.tries[ev.Sentinel] = failoverTry{master: ev.master, epoch: pending}
		if c := st.cand; c != nil && c.master == ev.master && pending > c.epoch {
			w.dropCandidate("a newer failover attempt started", zap.String("sentinel", ev.Sentinel), zap.Int64("epoch", pending))
		}
	}
}

// candidateEvent updates the candidate from one event of ours.
func (w *Watcher) candidateEvent(ctx context.Context, ev event) {
	switch ev.Channel {
	case "+selected-slave", "+failover-state-send-slaveof-noone", "+failover-state-wait-promotion":
		w.considerCandidate(ctx, ev.Sentinel, ev.master, ev.node, ev.Channel == "+failover-state-wait-promotion", ev.Channel)
	default:
		if !strings.HasPrefix(ev.Channel, "-failover-abort-") || !w.st.hold.active || ev.master != w.st.hold.master {
			return
		}
		// A query sent before the abort must not bring the candidate back.
		w.st.aborts[ev.Sentinel] = ev.At
		if c := w.st.cand; c != nil && ev.Sentinel == c.sentinel {
			w.dropCandidate("failover aborted", zap.String("channel", ev.Channel))
		}
	}
}

// candidatesFromPolls takes candidates from answers that show a failover of
// the held master selecting or promoting a replica (events lost).
func (w *Watcher) candidatesFromPolls(ctx context.Context, views []answer) {
	for _, a := range views {
		if t, ok := w.st.aborts[a.sentinel]; ok && !a.started.After(t) {
			continue // asked before this sentinel's abort
		}
		if a.promoted != "" && a.infoAddr == w.st.hold.master && a.failing() {
			w.considerCandidate(ctx, a.sentinel, a.infoAddr, a.promoted, a.state == "wait_promotion", "poll: "+a.state)
		}
	}
}

// failoverEpoch is the epoch of sentinel's failover of master: exact from
// its +new-epoch/+try-failover pair, else the lower bound (see above).
func (w *Watcher) failoverEpoch(sentinel, master string) (epoch int64, exact bool) {
	st := &w.st
	if t, ok := st.tries[sentinel]; ok && t.master == master {
		return t.epoch, true
	}
	if s := st.sentinels[sentinel]; s == nil || s.lastOK.at.IsZero() || s.lastOK.epoch < st.floor {
		// The sentinel's own config epoch is behind the highest one seen:
		// its current epoch, hence its failover epoch, may be too.
		return 0, false
	}
	return max(st.floor, st.cur.Epoch) + 1, false
}

// considerCandidate starts (or updates) watching addr, which sentinel
// selected to replace master; armed says SLAVEOF NO ONE was sent to it.
func (w *Watcher) considerCandidate(ctx context.Context, sentinel, master, addr string, armed bool, via string) {
	st := &w.st
	h := &st.hold
	if !h.active || master != h.master || addr == "" || addr == master {
		return
	}
	epoch, exact := w.failoverEpoch(sentinel, master)
	newest := int64(0) // the newest attempt on this master supersedes older ones
	for _, t := range st.tries {
		if t.master == master {
			newest = max(newest, t.epoch)
		}
	}
	if epoch <= st.floor || epoch < newest {
		w.log.Debug("ignoring a failover candidate from an old epoch", zap.String("candidate", addr),
			zap.Int64("epoch", epoch), zap.Int64("highest_epoch", st.floor), zap.Int64("newest_attempt", newest),
			zap.String("sentinel", sentinel))
		return
	}
	if c := st.cand; c != nil {
		if c.addr == addr && c.sentinel == sentinel {
			if exact && !c.exact {
				c.epoch, c.exact = epoch, true
			}
			if armed && !c.armed {
				c.armed = true
				w.publishCandidate()
			}
			return
		}
		if epoch <= c.epoch {
			return // the first selection of this epoch stays
		}
		w.dropCandidate("another replica selected", zap.String("new", addr), zap.Int64("epoch", epoch))
	}
	bound := defaultFailoverTimeout
	if s := st.sentinels[sentinel]; s != nil && s.lastOK.timeout > 0 {
		bound = min(s.lastOK.timeout, defaultFailoverTimeout)
	}
	st.candGen++
	cctx, cancel := context.WithTimeout(ctx, bound+w.opts.DialTimeout+w.opts.QueryTimeout)
	c := &candidate{gen: st.candGen, addr: addr, master: master, sentinel: sentinel, epoch: epoch,
		exact: exact, armed: armed, since: time.Now(), via: via, cancel: cancel}
	st.cand = c
	w.log.Info("failover candidate selected; watching its ROLE", zap.String("candidate", addr),
		zap.String("master", master), zap.Int64("epoch", epoch), zap.Bool("epoch_exact", exact),
		zap.String("sentinel", sentinel), zap.String("via", via))
	if !h.promoting {
		h.promoting = true
		w.apply() // publish the fence
	}
	w.tasks.Add(1)
	go func() {
		defer w.tasks.Done()
		w.pollCandidate(ctx, cctx, c.gen, addr)
	}()
}

// dropCandidate stops watching the candidate, if any.
func (w *Watcher) dropCandidate(reason string, fields ...zap.Field) {
	c := w.st.cand
	if c == nil {
		return
	}
	c.cancel()
	w.st.cand = nil
	w.log.Debug("failover candidate dropped", append(fields, zap.String("candidate", c.addr),
		zap.String("reason", reason), zap.Duration("watched_for", time.Since(c.since)))...)
}

// onCandidate handles a candidate poller's report.
func (w *Watcher) onCandidate(r candResult) {
	c := w.st.cand
	if c == nil || r.gen != c.gen {
		return
	}
	if r.ended {
		w.dropCandidate("not promoted within the failover timeout")
		return
	}
	c.masterAt = r.at
	w.publishCandidate()
	w.apply()
}

// publishCandidate makes the candidate the master if it is armed, its ROLE
// said master recently, and the failover it belongs to is still the held
// one at an epoch above every epoch seen.
func (w *Watcher) publishCandidate() {
	st := &w.st
	c := st.cand
	if c == nil || !c.armed || c.masterAt.IsZero() || time.Since(c.masterAt) > candidateFresh {
		return
	}
	if !st.hold.active || st.hold.master != c.master || c.epoch <= st.floor {
		w.dropCandidate("failover no longer current")
		return
	}
	now := time.Now()
	st.floor = c.epoch
	st.verdicts[c.addr] = verdict{epoch: c.epoch, started: c.masterAt, at: now, ok: true}
	delete(st.roleErr, c.addr)
	w.log.Info("failover candidate is master; publishing it before the sentinels report it",
		zap.String("candidate", c.addr), zap.Int64("epoch", c.epoch), zap.Bool("epoch_exact", c.exact),
		zap.String("sentinel", c.sentinel), zap.Duration("watched_for", now.Sub(c.since)))
	w.setCurrent(choice{addr: c.addr, epoch: c.epoch}, "candidate ROLE ("+c.via+")")
}

// pollCandidate asks addr for ROLE every candidateEvery on one connection
// (re-dialled when Sentinel's CLIENT KILL closes it) and reports each
// "master" to the main loop, until cctx ends: dropped (cancelled), or the
// deadline, which it reports. Bounded by cctx's deadline; exit: cctx done.
func (w *Watcher) pollCandidate(ctx, cctx context.Context, gen uint64, addr string) {
	c := w.newNodeClient(addr)
	// Closing on cancel unblocks a ROLE in flight to a frozen node.
	stop := context.AfterFunc(cctx, func() { _ = c.Close() })
	defer func() {
		if stop() {
			_ = c.Close()
		}
	}()
	tick := time.NewTicker(candidateEvery)
	defer tick.Stop()
	for {
		role, err := w.askRole(cctx, c)
		if err == nil && role == "master" {
			select {
			case w.cands <- candResult{gen: gen, at: time.Now()}:
			case <-cctx.Done():
			}
		}
		select {
		case <-cctx.Done():
			if cctx.Err() == context.DeadlineExceeded {
				select {
				case w.cands <- candResult{gen: gen, ended: true}:
				case <-ctx.Done():
				}
			}
			return
		case <-tick.C:
		}
	}
}
