package sentinel

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Watcher follows one master name across every known sentinel and publishes
// the verified master. Create it with New, run it with Run; Master, Suspect
// and Status are safe to call from any goroutine at any time.
type Watcher struct {
	opts Options
	log  *zap.Logger

	// Tuning the tests shorten; set by New.
	pingIdle   time.Duration // subscription idle time before a liveness PING
	backoffMin time.Duration // subscription reconnect backoff, first step
	backoffMax time.Duration // and cap
	fastPoll   time.Duration // poll pace of an answering sentinel without a live subscription
	holdMax    time.Duration // see holdConfirmedOver
	retryEvery time.Duration // re-query pace while a newer candidate is unverified
	onPublish  func(string)  // test hook: every change of Master(), under mu

	running atomic.Bool
	tasks   sync.WaitGroup // every goroutine Run starts

	answers chan answer     // pollers -> main loop
	inbox   chan inboxMsg   // subscribers -> main loop
	roles   chan roleResult // ROLE checks -> main loop
	cands   chan candResult // candidate poller -> main loop

	suspectMu sync.Mutex
	suspects  map[string]bool
	suspectC  chan struct{} // cap 1

	mu       sync.Mutex // guards the published view below
	pubAddr  string
	pubFence string // Fenced()
	changed  chan struct{}
	snap     Status

	st loopState // owned by the goroutine running Run
}

// New validates opts and returns a Watcher; it does no I/O. log may be nil.
func New(opts Options, log *zap.Logger) (*Watcher, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	opts = opts.withDefaults()
	w := &Watcher{
		opts:       opts,
		log:        log.Named("sentinel").With(zap.String("master_name", opts.MasterName)),
		pingIdle:   pingIdle,
		backoffMin: backoffMin,
		backoffMax: backoffMax,
		fastPoll:   min(fastPollEvery, opts.PollInterval),
		holdMax:    defaultHoldMax,
		retryEvery: min(max(opts.PollInterval/10, 20*time.Millisecond), 200*time.Millisecond),
		answers:    make(chan answer, maxSentinels),
		inbox:      make(chan inboxMsg, 256),
		roles:      make(chan roleResult, 8),
		cands:      make(chan candResult, 1),
		suspects:   make(map[string]bool),
		suspectC:   make(chan struct{}, 1),
		changed:    make(chan struct{}),
	}
	w.st = loopState{
		sentinels: make(map[string]*sentinelConn),
		pending:   make(map[string]peer),
		steps:     make(map[string]bool),
		roleErr:   make(map[string]string),
		verdicts:  make(map[string]verdict),
		checking:  make(map[string]time.Time),
		recheck:   make(map[string]time.Time),
		newEpoch:  make(map[string]int64),
		tries:     make(map[string]failoverTry),
		aborts:    make(map[string]time.Time),
	}
	w.snap = Status{MasterName: opts.MasterName, Error: "not started"}
	return w, nil
}

// Master returns the verified master's address, or "" while there is none
// (nothing verified yet, a failover in progress, blind with
// StopWritesWhenBlind), and a channel closed at the next change. It never
// blocks.
func (w *Watcher) Master() (addr string, changed <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pubAddr, w.changed
}

// Suspect asks for an immediate re-check of addr (a -READONLY from it, or an
// EOF after Sentinel's CLIENT KILL). It never blocks.
func (w *Watcher) Suspect(addr string) {
	w.suspectMu.Lock()
	if len(w.suspects) < 16 {
		w.suspects[addr] = true
	}
	w.suspectMu.Unlock()
	select {
	case w.suspectC <- struct{}{}:
	default: // a check is already pending; it will see addr
	}
}

// Status returns a snapshot of what the watcher knows.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.snap
	s.Sentinels = slices.Clone(s.Sentinels) // the caller may modify its copy
	return s
}

// Run follows the master until ctx is done, then stops its goroutines,
// closes every client it opened and returns nil. It may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("sentinel watcher: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		// Closing the clients unblocks queries in flight; every goroutine
		// then sees ctx done and exits.
		for _, addr := range w.st.order {
			_ = w.st.sentinels[addr].client.Close()
		}
		w.tasks.Wait()
		w.log.Info("watcher stopped")
	}()
	for _, addr := range w.opts.Sentinels {
		w.addSentinel(ctx, addr, false)
	}
	w.log.Info("watcher started", zap.Strings("sentinels", w.opts.Sentinels),
		zap.Duration("poll_interval", w.opts.PollInterval), zap.Bool("stop_writes_when_blind", w.opts.StopWritesWhenBlind))
	w.apply()

	tick := time.NewTicker(w.opts.PollInterval)
	defer tick.Stop()
	var fastC <-chan time.Time
	if w.fastPoll < w.opts.PollInterval {
		fast := time.NewTicker(w.fastPoll)
		defer fast.Stop()
		fastC = fast.C
	}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	w.st.retry = retry
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			w.kickAll()
		case <-fastC:
			w.kickUnsubscribed()
		case <-retry.C:
			w.kickAll()
		case <-w.suspectC:
			w.onSuspect(ctx)
		case m := <-w.inbox:
			w.onInbox(ctx, m)
		case a := <-w.answers:
			w.onAnswer(ctx, a)
		case res := <-w.roles:
			w.onRole(ctx, res)
		case r := <-w.cands:
			w.onCandidate(r)
		}
	}
}

// addSentinel starts a poller and a subscriber for addr.
func (w *Watcher) addSentinel(ctx context.Context, addr string, discovered bool) {
	s := &sentinelConn{
		addr:       addr,
		host:       hostOf(addr),
		client:     w.newSentinelClient(addr),
		kick:       make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		discovered: discovered,
	}
	w.st.sentinels[addr] = s
	w.st.order = append(w.st.order, addr)
	w.tasks.Add(2)
	go func() { defer w.tasks.Done(); w.poll(ctx, s) }()
	go func() { defer w.tasks.Done(); w.subscribe(ctx, s) }()
	s.kick <- struct{}{}
}

// kickAll asks every sentinel's poller for a query now (coalesced).
func (w *Watcher) kickAll() {
	for _, s := range w.st.sentinels {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// fastPollEvery is the poll pace of a sentinel that answers but has no live
// subscription: without its events, the start of a failover (which must stop
// writes before the promotion, ~0.2 s after SENTINEL FAILOVER) is only seen
// by a query.
const fastPollEvery = 100 * time.Millisecond

// kickUnsubscribed asks every sentinel that answered its last query but has
// no live subscription for a query now.
func (w *Watcher) kickUnsubscribed() {
	for _, s := range w.st.sentinels {
		if s.tried && s.last.err == nil && !s.subscribed {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
}

// onInbox handles a subscriber's report.
func (w *Watcher) onInbox(ctx context.Context, m inboxMsg) {
	s := w.st.sentinels[m.sentinel]
	if s == nil {
		return
	}
	if m.kind != inEvent {
		delete(w.st.newEpoch, s.addr) // a +new-epoch pairs only within one subscription
	}
	switch m.kind {
	case inSubscribed:
		if !s.subscribed {
			w.log.Info("subscribed to sentinel events", zap.String("sentinel", s.addr))
		}
		s.subscribed = true
		w.kickAll() // events may have been missed while not subscribed
	case inDown:
		if s.subscribed {
			w.log.Warn("sentinel event subscription lost", zap.String("sentinel", s.addr), zap.Error(m.err))
		} else {
			w.log.Debug("sentinel event subscription failed", zap.String("sentinel", s.addr), zap.Error(m.err))
		}
		s.subscribed = false
	case inEvent:
		w.onEvent(ctx, m.ev)
	}
	w.apply()
}

// onSuspect re-checks ROLE on the current master at once if the proxy
// suspects it, and re-queries every sentinel.
func (w *Watcher) onSuspect(ctx context.Context) {
	w.suspectMu.Lock()
	set := w.suspects
	w.suspects = make(map[string]bool)
	w.suspectMu.Unlock()
	w.kickAll()
	st := &w.st
	if !set[st.cur.Addr] || !st.valid {
		return
	}
	w.log.Debug("master suspected", zap.String("master", st.cur.Addr))
	if _, busy := st.checking[st.cur.Addr]; busy {
		st.recheck[st.cur.Addr] = time.Now() // that check may predate the suspicion
		return
	}
	w.startCheck(ctx, st.cur.Addr, st.cur.Epoch)
}

// effective is what Master() should return now.
func (w *Watcher) effective() string {
	st := &w.st
	switch {
	case st.cur.Addr == "" || !st.valid, st.hold.active:
		return ""
	case st.blind && w.opts.StopWritesWhenBlind:
		return ""
	}
	return st.cur.Addr
}

// Fenced returns the master being failed over once Sentinel has selected a
// replica to promote in its place, else "". From then on that master may be
// demoted at any moment, so a write it acknowledges may be lost with it.
// The channel Master returns is closed when it changes too.
func (w *Watcher) Fenced() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pubFence
}

// apply publishes the effective master and the fence (close-and-replace of
// the change channel under the mutex: never blocks) and refreshes the
// Status snapshot.
func (w *Watcher) apply() {
	eff := w.effective()
	fence := ""
	if h := w.st.hold; h.active && h.promoting {
		fence = h.master
	}
	snap := w.snapshot(eff)
	w.mu.Lock()
	defer w.mu.Unlock()
	if eff != w.pubAddr || fence != w.pubFence {
		close(w.changed)
		w.changed = make(chan struct{})
	}
	w.pubFence = fence
	if eff != w.pubAddr {
		w.pubAddr = eff
		w.st.lastChange = time.Now()
		if w.onPublish != nil {
			w.onPublish(eff)
		}
	}
	snap.LastChange = w.st.lastChange
	w.snap = snap
}

// snapshot builds a Status from the main loop's state.
func (w *Watcher) snapshot(eff string) Status {
	st := &w.st
	s := Status{
		MasterName:         w.opts.MasterName,
		Master:             eff,
		LastVerified:       st.cur,
		Verified:           st.valid && st.cur.Addr != "",
		HighestEpoch:       st.floor,
		FailoverInProgress: st.hold.active,
		Blind:              st.blind,
		Candidate:          candAddr(st.cand),
		Error:              st.errMsg,
		LastEvent:          st.lastEvent,
		EventCounts:        maps.Clone(st.eventCounts),
	}
	if st.hold.active {
		s.FailoverSince, s.FailoverReason = st.hold.since, st.hold.reason
	}
	if st.blind {
		s.BlindSince = st.blindSince
		if s.Error == "" {
			s.Error = "no sentinel answers"
		}
	}
	for _, addr := range st.order {
		c := st.sentinels[addr]
		ss := SentinelStatus{Addr: addr, Discovered: c.discovered, RunID: c.runID, Subscribed: c.subscribed,
			OK: c.tried && c.last.err == nil}
		if !c.lastOK.at.IsZero() {
			a := c.lastOK
			ss.LastAnswerAt, ss.MasterAddr, ss.Epoch = a.at, a.addr, a.epoch
			ss.Flags, ss.FailoverState, ss.UnknownMaster = a.flags, a.state, a.unknown
		}
		if c.last.err != nil {
			ss.LastErr, ss.LastErrAt = c.last.err.Error(), c.last.at
		}
		s.Sentinels = append(s.Sentinels, ss)
	}
	return s
}

// candAddr is the candidate's address, "" when there is none.
func candAddr(c *candidate) string {
	if c == nil {
		return ""
	}
	return c.addr
}
