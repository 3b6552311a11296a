package proxy

import (
	"errors"
	"net"
	"time"

	"go.uber.org/zap"
)

// Moving a subscriber to a new connection when its connection is lost: the
// copier connects to the current master in the state the replies recorded,
// subscribes to what the lost connection had confirmed, and sends again,
// in order, what it did not answer.

// move replaces the lost connection old. It returns the new connection, or
// nil when the session cannot move (MONITOR, tracking, a transaction, stop,
// drain) or no master could be had in time; with the new connection, an
// error from answering what was due at once (errHandover, errQuitAnswered,
// a failed client).
func (d *duplex) move(old *backend, cause error) (*backend, error) {
	s := d.s
	s.srv.pool.discard(old) // also fails a write of the session's in progress
	if !d.beginMove() {
		return nil, nil
	}
	log := s.srv.log.With(zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()))
	log.Debug("moving subscriber", zap.String("from", old.addr), zap.Error(cause))
	deadline := time.Now().Add(max(s.srv.settings().HoldTimeout, 10*time.Second))
	if errors.Is(cause, errMoveAgain) {
		d.pause(deadline) // give the master a moment to get ready
	}
	for !d.stopped() && !s.srv.draining.Load() {
		if b := d.redial(deadline); b != nil {
			if ok, err := d.install(b); ok {
				log.Debug("subscriber moved", zap.String("to", b.addr))
				return b, err
			}
		}
		if time.Now().After(deadline) {
			log.Info("could not move subscriber to the new master; closing it")
			return nil, nil
		}
	}
	return nil, nil
}

// beginMove makes the session wait, waits for its write in progress, and
// reports whether it can move.
func (d *duplex) beginMove() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.moving = true
	for d.writing {
		d.cond.Wait()
	}
	return d.movable()
}

// movable reports whether the session can move to a new connection. d.mu
// is held.
func (d *duplex) movable() bool {
	l := &d.link
	if d.quit || l.monitor || l.tracking || l.tx != txNone || l.unsure || d.s.srv.draining.Load() {
		return false
	}
	for _, e := range d.fifo {
		switch e.op {
		case opMonitor, opTrackOn, opMulti, opWatch:
			return false // unanswered: whether it ran is not known
		}
	}
	return true
}

func (d *duplex) stopped() bool {
	select {
	case <-d.stopc:
		return true
	default:
		return false
	}
}

// redial waits for a master and connects to it in the recorded state. It
// returns nil after a short pause when that failed, at once on stop.
func (d *duplex) redial(deadline time.Time) *backend {
	s := d.s
	addr := d.master(deadline)
	if addr == "" {
		return nil
	}
	st := d.link.st
	if a := s.srv.settings().Auth; a != nil && d.authed {
		st = a.backendState(st) // the backend credentials may have been reloaded
	}
	dl := deadline
	if least := time.Now().Add(s.srv.opts.DialTimeout); dl.Before(least) {
		dl = least
	}
	ctx, cancel := contextWithDeadline(dl, s.srv.opts.DialTimeout)
	defer cancel()
	go func() {
		select {
		case <-d.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	b, err := s.srv.dialBackend(ctx, addr, st, d.link.name, st.key(addr, s.srv.salt))
	if err == nil && !s.srv.pool.add(b) {
		b.close()
		err = errors.New("master changed while connecting")
	}
	if err != nil {
		s.srv.log.Debug("moving subscriber: dial failed", zap.String("addr", addr), zap.Error(err))
		d.pause(deadline)
		return nil
	}
	d.link.st = st
	return b
}

// pause waits 100 ms, less if deadline comes first, or until stop.
func (d *duplex) pause(deadline time.Time) {
	t := time.NewTimer(min(100*time.Millisecond, time.Until(deadline)))
	defer t.Stop()
	select {
	case <-d.stopc:
	case <-t.C:
	}
}

// master waits until the source names a master; "" when deadline passed,
// stop was called or the server drains first.
func (d *duplex) master(deadline time.Time) string {
	for {
		d.mu.Lock()
		box := d.src // a cluster's SSUBSCRIBE may change it (moveToShard)
		d.mu.Unlock()
		if box == nil {
			box = d.s.srv.source()
		}
		addr, changed := box.Master()
		if addr != "" {
			return addr
		}
		wait := time.Until(deadline)
		if wait <= 0 || d.s.srv.draining.Load() {
			return ""
		}
		// The drain sets a flag, not a channel: look again now and then.
		t := time.NewTimer(min(wait, 250*time.Millisecond))
		select {
		case <-changed:
		case <-box.swapped:
		case <-d.stopc:
		case <-t.C:
		}
		t.Stop()
		if d.stopped() {
			return ""
		}
	}
}

// install makes b the connection: in one write, the subscriptions the lost
// connection had confirmed (their confirmations are dropped), then every
// command it did not answer that may be sent again, in the client's order.
// The others are answered "may have run" (written) or "did not run" (not
// written) in their turn. All of it under d.mu, so that stop cannot miss b
// and the session cannot write before it. It reports false when stop was
// called (b is discarded) or the write failed; once installed, the error of
// answering what is due at once.
func (d *duplex) install(b *backend) (bool, error) {
	s := d.s
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.quit {
		s.srv.pool.discard(b)
		return false, nil
	}
	l := &d.link
	for _, e := range d.fifo {
		if e.swallow && e.op == opSub {
			// The resubscription of an earlier move, not confirmed yet:
			// what it still had to confirm was confirmed before it.
			for _, ch := range e.chans {
				l.subs[e.set][ch] = struct{}{}
			}
		}
	}
	fifo := make([]*entry, 0, len(d.fifo)+len(l.subs))
	for set, chans := range l.subs {
		if len(chans) == 0 {
			continue
		}
		args := make([]string, 0, len(chans)+1)
		args = append(args, subNames[set][0])
		for ch := range chans {
			args = append(args, ch)
		}
		fifo = append(fifo, &entry{raw: appendCommand(nil, args...), owned: true, op: opSub, set: set, chans: args[1:], swallow: true})
	}
	for _, e := range d.fifo {
		switch {
		case e.local != "":
		case e.swallow:
			continue // the proxy's own, for the lost connection
		case e.op == opSub:
			args := []string{subNames[e.set][0]}
			if e.unsub {
				args[0] = subNames[e.set][1]
			}
			if !e.all {
				args = append(args, e.chans...) // those still to be confirmed
			}
			e.raw, e.owned = appendCommand(nil, args...), true
		case e.raw != nil && (!e.sent || e.again):
		case e.sent:
			e.local, e.raw = "-"+mayHaveRun(e.info)+"\r\n", nil
			s.srv.m.cmdProxyErr.Inc()
		default:
			e.local = "-" + errNotSent + "\r\n"
			s.srv.m.cmdProxyErr.Inc()
		}
		fifo = append(fifo, e)
	}
	var bufs net.Buffers
	for _, e := range fifo {
		if e.local == "" {
			bufs = append(bufs, e.raw)
		}
	}
	b.nc.SetWriteDeadline(time.Now().Add(s.srv.opts.DialTimeout))
	n, err := bufs.WriteTo(b.nc)
	b.nc.SetWriteDeadline(time.Time{})
	var off int64
	for _, e := range fifo {
		if e.local == "" {
			e.sent = off < n
			off += int64(len(e.raw))
		}
	}
	d.fifo = fifo
	if err != nil {
		s.srv.pool.discard(b)
		return false, nil
	}
	for i := range l.subs {
		clear(l.subs[i]) // filled again by the confirmations
	}
	d.b, d.moving = b, false
	d.cond.Broadcast()
	return true, d.settle(b)
}
