package proxy

import (
	"time"

	"go.uber.org/zap"
)

// The session's side of shared connections: which batches may share one,
// and how their replies, refusals and a lost connection are answered.

// shareMaxBytes is the largest batch sent on a shared connection. A larger
// one (a big SET, a deep pipeline of them) goes on a connection of its own,
// so that writing it does not hold up the other sessions' commands.
const shareMaxBytes = 64 << 10

// shareMaxReply is the most reply bytes a batch on a shared connection may
// have before its session stops sharing. The shared connection's reader
// never waits for a client: it buffers a batch's replies whole, and a client
// that reads large values (which a connection of its own streams to it, at
// the pace it reads) is better served off the shared connection, where its
// replies do not hold up everyone else's either.
const shareMaxReply = 1 << 20

// mayShare reports whether a run of commands may go on a shared connection:
// the session's path is the shared one (sharing is on, its state lives in
// the pool key alone: no pinned connection, transaction, client name or
// full duplex), and every command neither blocks, nor pins, nor changes or
// asks about the connection.
func (s *session) mayShare(cmds []Command, infos []cmdInfo) bool {
	if s.path() != pathShared || s.gathering {
		return false
	}
	size := 0
	for i := range infos {
		if !infos[i].share {
			return false
		}
		size += len(cmds[i].Raw)
	}
	return size <= shareMaxBytes
}

// forwardShared sends cmds on a shared connection and answers their
// replies. Like forward, it answers what concerns only these commands with
// error replies; a returned error ends the session.
func (s *session) forwardShared(cmds []Command, infos []cmdInfo) error {
	r := s.srv.reqs.Get().(*shareReq)
	defer func() {
		r.release()
		s.srv.reqs.Put(r)
	}()
	r.load(cmds)
	var c *sharedConn
	for try := 0; ; try++ {
		var err error
		if c, err = s.sharedConn(); err != nil {
			for range cmds {
				s.writeError(s.acquireErrorText(err))
			}
			return nil
		}
		if c.submit(r) {
			break
		}
		// It failed before the batch was queued: nothing was written.
		s.shared = nil
		if try == retryTries {
			for range cmds {
				s.writeError("ERR could not send the command to the master; it did not run (sentinel-proxy)")
			}
			return nil
		}
	}
	<-r.done
	return s.sharedReplies(c, r, cmds, infos)
}

// sharedConn returns the shared connection for the session's state on the
// current master, waiting for one (the failover hold) as acquire does.
func (s *session) sharedConn() (*sharedConn, error) {
	err := s.underHold(func(addr string, key poolKey, deadline time.Time) error {
		if c := s.shared; c != nil && c.b.key == key && c.usable() {
			return nil
		}
		c, err := s.srv.shared.get(key, s.shareIdx, deadline, func() (*backend, error) {
			return s.dial(addr, key, deadline)
		})
		if err == nil {
			s.shared = c
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.shared, nil
}

// sharedReplies answers the commands of a batch that went on c, in order.
// A reply that says the node is not a writable master (-READONLY, -LOADING,
// -MASTERDOWN) is held back and the command sent again, with every command
// after it, as on a connection of the session's own (replies). When the
// connection failed, the commands it never wrote are sent again; those
// written without a reply may have run, unless they are all safe to repeat.
func (s *session) sharedReplies(c *sharedConn, r *shareReq, cmds []Command, infos []cmdInfo) error {
	a := s.newShareAnswer(c.b, infos)
	if r.stream != nil {
		return s.sharedStream(&a, r, cmds, infos)
	}
	if len(r.out) > shareMaxReply {
		s.noShare = true
	}
	a.latency = time.Since(s.batchStart).Seconds() // the replies came together
	prev := 0
	for i := range r.replies() {
		a.reply(i, r.out[prev:r.stops[i]], r.out[r.starts[i]:r.stops[i]], r.types[i])
		prev = r.stops[i]
	}
	s.srv.m.countTally(&a.tally, a.latency)
	return s.sharedSettle(&a, r, cmds, infos)
}

// shareAnswer is how the replies of one batch on a shared connection are
// being answered.
type shareAnswer struct {
	s       *session
	b       *backend
	infos   []cmdInfo
	fenced  bool       // see fencedWrite: replies are answered "may have run"
	refused bool       // a reply said the node is not a writable master: the rest is sent again
	latency float64    // of every reply, when they came together (else 0: each its own)
	tally   replyTally // the replies counted at latency, once answered (sharedReplies)
}

func (s *session) newShareAnswer(b *backend, infos []cmdInfo) shareAnswer {
	fence := s.srv.fenced.Load()
	s.pending = s.pending[:0]
	return shareAnswer{s: s, b: b, infos: infos, fenced: fence != nil && *fence == b.addr}
}

// reply answers reply i: unit is its bytes with any push or attribute
// frames before it, frame the reply alone, typ its type. A unit already
// passed on as it came (or dropped), being large, is nil.
func (a *shareAnswer) reply(i int, unit, frame []byte, typ byte) {
	s := a.s
	isErr := typ == '-' || typ == '!'
	if !a.refused && isErr && frame != nil && s.redirected(i, frame, a.b.addr) {
		return // followed once the batch is answered
	}
	if !a.refused && isErr && isRetryable(frame) {
		a.refused = true
		s.noteError(a.b, errorText(frame))
	}
	if a.refused {
		held := ""
		if isErr {
			held = string(unit)
		}
		s.pending = append(s.pending, pendingReply{idx: i, held: held})
		return
	}
	if a.latency != 0 {
		a.tally.add(a.infos[i], isErr)
	} else {
		s.srv.m.countReply(a.infos[i], isErr, time.Since(s.batchStart).Seconds())
	}
	switch {
	case isErr:
		if frame != nil {
			s.noteError(a.b, errorText(frame))
		}
		s.out().Write(unit)
	case a.fenced:
		s.writeError(errMayHaveRun) // see fencedWrite
	default:
		s.out().Write(unit)
	}
}

// sharedSettle answers what the connection's failure left unanswered, and
// sends again what is to be sent again.
func (s *session) sharedSettle(a *shareAnswer, r *shareReq, cmds []Command, infos []cmdInfo) error {
	b := a.b
	if n := r.replies(); n < len(cmds) {
		// The connection failed first.
		if r.external {
			s.srv.pool.evict(b.addr)
			s.source().Suspect(b.addr)
		}
		written := n
		for written < len(cmds) && r.ends[written] <= r.sent {
			written++
		}
		mayHaveRun := !a.refused && !allSafe(infos[n:written])
		for j := n; j < len(cmds); j++ {
			s.pending = append(s.pending, pendingReply{idx: j, lost: mayHaveRun && j < written})
		}
	}
	if len(s.pending) > 0 {
		return s.resolve(b.addr, cmds, infos, len(cmds))
	}
	if d := s.srv.fo.answered(b.addr); d > 0 {
		s.srv.m.failoverDur.Observe(d.Seconds())
		s.srv.log.Info("failover: first command answered by the new master",
			zap.String("group", s.srv.opts.Name), zap.String("master", b.addr), zap.Duration("since_master_lost", d))
	}
	return nil
}

// errorText returns the message of an error frame ("-READONLY …\r\n").
func errorText(frame []byte) string {
	return Frame{Type: frame[0], Small: frame}.ErrorText()
}
