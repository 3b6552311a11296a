package proxy

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

// The backend connection a session uses for a batch: its pinned one, an
// idle one from the pool in the session's state, or a new one, and the
// failover hold that every kind of session obeys while no master is known.

// poolKey returns the pool key of the session's state on addr.
func (s *session) poolKey(addr string) poolKey {
	if s.keyAddr != addr {
		s.key = s.state.key(addr, s.srv.salt)
		s.keyAddr = addr
	}
	return s.key
}

// checkPinned makes the pinned connection obey a failover like any other
// session: one the server closed is dropped, and while no master is known
// the session waits (the hold) instead of writing to the old master. If the
// hold ends on another master, or does not end in time, the connection is
// dropped as a switch would drop it: its state moves with the session (the
// client name is replayed on the next connection) and an open transaction
// is answered as lost.
func (s *session) checkPinned() {
	p := s.pinned
	if s.srv.cl != nil {
		// A cluster's node that is no longer a master answers -MOVED:
		// what was pinned there is lost as in a switch.
		if p.dead.Load() || peekClosed(p.nc, false) || !s.srv.cl.isMaster(p.addr) {
			s.lost(p)
		}
		return
	}
	if !p.dead.Load() && !peekClosed(p.nc, false) {
		addr, _ := s.source().Master()
		if addr == p.addr {
			return
		}
		if addr, err := s.srv.awaitMaster(s.source(), s.holdDeadline()); err == nil && addr == p.addr {
			return // the failover was aborted: still the same master
		}
	}
	s.lost(p)
}

// holdDeadline is when the batch stops waiting for a master: one hold
// timeout from its first wait, shared by every wait of the batch.
func (s *session) holdDeadline() time.Time {
	if s.holdUntil.IsZero() {
		s.holdUntil = time.Now().Add(s.srv.settings().HoldTimeout)
	}
	return s.holdUntil
}

// acquire returns the connection to use: the pinned one, an idle one in the
// session's state, or a new one. While no master is known, or the master
// cannot be reached, it waits until the batch's hold deadline for the source
// to name one it can reach.
func (s *session) acquire() (*backend, error) {
	if s.pinned != nil && s.pinnedServes() {
		return s.pinned, nil
	}
	var b *backend
	err := s.underHold(func(addr string, key poolKey, deadline time.Time) (err error) {
		if b = s.pooled(key); b != nil {
			return nil
		}
		b, err = s.dial(addr, key, deadline)
		return err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// underHold runs get for the current master until it succeeds, fails in a
// way that waiting cannot fix (the handshake was refused), or the batch's
// hold deadline passes. While no master is known it waits for one; after a
// failure it waits for the source to name another master, or shortly to
// try the same one again: the master may be gone before the sentinels
// noticed.
func (s *session) underHold(get func(addr string, key poolKey, deadline time.Time) error) error {
	deadline := s.holdDeadline()
	for {
		addr, err := s.srv.awaitMaster(s.source(), deadline)
		if err != nil {
			return err
		}
		err = get(addr, s.poolKey(addr), deadline)
		if err == nil || errors.Is(err, errHandshake) || time.Now().After(deadline) {
			return err
		}
		s.awaitRetry(addr, err, deadline)
	}
}

// pooled takes an idle connection in the session's state, or returns nil.
// A named session takes none: the pool key does not carry the client name,
// which only a new connection (dial replays it) gets.
func (s *session) pooled(key poolKey) *backend {
	if s.name != "" {
		return nil
	}
	return s.srv.pool.get(key)
}

func (s *session) dial(addr string, key poolKey, deadline time.Time) (*backend, error) {
	// A known master gets a whole dial timeout even when the hold time is
	// nearly (or, with hold_timeout 0, entirely) used up.
	if least := time.Now().Add(s.srv.opts.DialTimeout); deadline.Before(least) {
		deadline = least
	}
	ctx, cancel := contextWithDeadline(deadline, s.srv.opts.DialTimeout)
	defer cancel()
	b, err := s.srv.dialBackend(ctx, addr, s.state, s.name, key)
	if err != nil {
		if !errors.Is(err, errHandshake) {
			s.srv.m.dialErrors.Inc()
		}
		return nil, err
	}
	if !s.srv.pool.add(b) {
		b.close()
		return nil, errors.New("master changed while connecting")
	}
	return b, nil
}

func (s *session) acquireErrorText(err error) string {
	switch {
	case err == nil:
		return s.acquireErrorText(errNoMaster)
	case errors.Is(err, errNoMaster):
		return "MASTERDOWN no master is known for '" + s.srv.opts.Name + "' (failover in progress?) (sentinel-proxy)"
	case errors.Is(err, errHandshake):
		return "ERR " + err.Error() + " (sentinel-proxy)"
	}
	return "MASTERDOWN cannot reach the master of '" + s.srv.opts.Name + "': " + err.Error() + " (sentinel-proxy)"
}

// release gives b back to the pool after a batch, or keeps it pinned.
func (s *session) release(b *backend) {
	if s.pinned != nil && s.pinned != b {
		// A cluster run on another master than the pinned connection's.
		b.key = s.poolKey(b.addr)
		s.srv.pool.put(b)
		return
	}
	if s.needsPin() {
		s.setPinned(b)
		return
	}
	s.setPinned(nil)
	b.key = s.poolKey(b.addr)
	s.srv.pool.put(b)
}

// failed drops a connection that failed under a command. Unless the proxy
// closed it itself (a switch), the server went away or cut its clients:
// the other idle connections to it go too, and the source re-checks it.
func (s *session) failed(b *backend) {
	if !b.dead.Load() {
		s.srv.pool.evict(b.addr)
		s.source().Suspect(b.addr)
	}
	s.lost(b)
}

// lost drops a connection that failed. If it carried a transaction or a
// WATCH, later commands of that transaction are answered with errors
// instead of running outside it.
//
// b carries the session's state when it is the pinned connection, or, with
// none pinned yet, the connection of the current batch (a MULTI, WATCH or
// CLIENT SETNAME earlier in the batch has not pinned it yet).
func (s *session) lost(b *backend) {
	s.srv.pool.discard(b)
	if s.pinned != nil && s.pinned != b {
		return
	}
	s.setPinned(nil)
	s.connLost()
	s.txState, s.resync = false, false
}

// awaitRetry waits, after a failed dial to addr, for the source to name
// another master or for a short while to retry the same one.
func (s *session) awaitRetry(addr string, err error, deadline time.Time) {
	s.srv.log.Debug("dial failed, holding", zap.String("addr", addr), zap.Error(err))
	src := s.source()
	if s.srv.cl != nil {
		src.Suspect(addr) // the slot map may be out of date
	}
	_, changed := src.Master()
	t := time.NewTimer(min(100*time.Millisecond, time.Until(deadline)))
	select {
	case <-changed:
	case <-t.C:
	}
	t.Stop()
}

// source returns where the session's current run goes: a cluster run's
// master, or the group's source.
func (s *session) source() *sourceBox {
	if s.batchScratch != nil && s.route != nil {
		return s.route
	}
	return s.srv.source()
}

// pinnedServes reports whether the pinned connection carries the current
// run: always for a Sentinel group and inside a transaction; for a cluster
// run, when it is to the master the run goes to (a session pinned by
// CLIENT ID, say, sends the runs for other masters on pooled connections).
func (s *session) pinnedServes() bool {
	if s.srv.cl == nil || s.tx == txWatch || s.tx == txMulti {
		return true
	}
	addr, _ := s.source().Master()
	return addr == s.pinned.addr
}
