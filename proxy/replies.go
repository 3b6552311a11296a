package proxy

import (
	"bufio"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// What happens to the replies of a forwarded batch: streaming them to the
// client, retrying the commands a non-master refused, and recording what
// each command changed in the session's state.

const pingCmd = "*1\r\n$4\r\nPING\r\n"

// skipReply reads and drops the reply to a command the proxy sent itself
// (and any push frames before it); refused reports an error reply.
func (s *session) skipReply(b *backend) (refused bool, err error) {
	for {
		f, err := b.fr.Next(nil)
		if err != nil {
			return false, err
		}
		if f.IsReply() {
			return f.IsError(), nil
		}
	}
}

// replies streams the replies to cmds from b. A command the server refused
// because it is not (or not yet) a writable master (-READONLY, -LOADING,
// -MASTERDOWN) did not run: its error is held back and it is sent again to
// the master the source names next, and so is every command after it in
// the batch (their answers came from a node that is not the master), so
// that the client gets every reply in order and from the master.
func (s *session) replies(b *backend, cmds []Command, infos []cmdInfo) error {
	rw := &s.rw
	rw.client, rw.err, rw.discarding = s.out(), nil, false
	retryable := s.tx != txMulti && allRetryable(infos)
	s.pending = s.pending[:0]
	for i := range cmds {
		// A cluster's redirects are held back from any command outside
		// MULTI (which an EXEC earlier in the run may have ended).
		rw.holdErrors = retryable || s.srv.cl != nil && s.tx != txMulti
		err := s.reply(b, cmds[i], infos[i])
		switch {
		case err != nil && rw.err != nil:
			s.lost(b) // the client is gone
			return err
		case err != nil && rw.n > 0:
			s.lost(b) // part of a reply went out: the stream cannot be repaired
			return err
		case err != nil && (rw.discarding || s.tx != txMulti && allSafe(infos[i:])):
			// None of the commands from here on wrote anything: either
			// everything after a refusal went to a node that is not the
			// master, or the connection broke (the master died) before
			// replies to commands that change nothing (a read, SELECT,
			// AUTH, HELLO in flight). Send them all again.
			s.failed(b)
			for j := i; j < len(cmds); j++ {
				s.pending = append(s.pending, pendingReply{idx: j})
			}
			return s.resolve(b.addr, cmds, infos, len(cmds))
		case err != nil:
			s.failed(b)
			s.answerMayHaveRun(infos[i:])
			return nil
		case rw.holding && !rw.discarding && s.redirected(i, rw.held, b.addr):
			// Followed once the run is answered (followRedirects).
		case rw.holding && !rw.discarding && retryable && isRetryable(rw.held):
			rw.discarding = true
			s.pending = append(s.pending, pendingReply{idx: i, held: string(rw.held)})
		case rw.holding && !rw.discarding:
			s.out().Write(rw.held) // an ordinary error
		case rw.discarding:
			held := ""
			if rw.holding {
				held = string(rw.held)
			}
			s.pending = append(s.pending, pendingReply{idx: i, held: held})
		}
	}
	rw.holding, rw.holdErrors = false, false
	if !rw.discarding {
		if s.resync {
			if err := s.resyncState(b); err != nil {
				s.lost(b)
				return nil
			}
		}
		if d := s.srv.fo.answered(b.addr); d > 0 {
			s.srv.m.failoverDur.Observe(d.Seconds())
			s.srv.log.Info("failover: first command answered by the new master",
				zap.String("group", s.srv.opts.Name), zap.String("master", b.addr), zap.Duration("since_master_lost", d))
		}
		s.release(b)
		return nil
	}
	s.lost(b) // it answered like a replica
	return s.resolve(b.addr, cmds, infos, len(cmds))
}

const (
	errMayHaveRun    = "ERR connection to the master lost before the reply; the command may have run (sentinel-proxy)"
	errBlockedMayRun = "UNBLOCKED connection to the master lost while the command was blocked; it may have run (sentinel-proxy)"
)

// answerMayHaveRun answers commands whose replies were lost with their
// connection (failed has run), and settles what they may have done to the
// transaction.
func (s *session) answerMayHaveRun(infos []cmdInfo) {
	for i := range infos {
		s.writeError(mayHaveRun(infos[i]))
	}
	s.settleTx(infos)
}

// mayHaveRun is the error for a command whose reply was lost with the
// connection. A blocked command gets Redis's own UNBLOCKED code, which is
// what a client blocked on a master that is demoted sees from Redis.
func mayHaveRun(info cmdInfo) string {
	if info.kind == kindBlocking {
		return errBlockedMayRun
	}
	return errMayHaveRun
}

// write sends cmds to b in one write and reports how many bytes went out.
// Pipelined requests sit next to each other in the read buffer: runs of
// adjacent requests go out as one slice, usually the whole batch as a single
// write(2) rather than a writev of one piece per command.
func (s *session) write(b *backend, cmds []Command) (int64, error) {
	s.bufs = s.bufs[:0]
	for i := range cmds {
		raw := cmds[i].Raw
		if n := len(s.bufs); n > 0 && adjacent(s.bufs[n-1], raw) {
			s.bufs[n-1] = s.bufs[n-1][:len(s.bufs[n-1])+len(raw)]
			continue
		}
		s.bufs = append(s.bufs, raw)
	}
	if len(s.bufs) == 1 {
		n, err := b.nc.Write(s.bufs[0])
		return int64(n), err
	}
	bufs := s.bufs // WriteTo consumes its receiver
	return bufs.WriteTo(b.nc)
}

// adjacent reports whether b starts in memory right where a ends.
func adjacent(a, b []byte) bool {
	return len(b) > 0 && cap(a) > len(a) && &a[:len(a)+1][len(a)] == &b[0]
}

// reply streams the reply to one command (and any push or attribute frames
// before it) to s.rw, then records what the command changed.
func (s *session) reply(b *backend, cmd Command, info cmdInfo) error {
	if s.clusterTx != nil && s.multiRefused && (info.kind == kindExec || info.kind == kindDiscard) {
		return s.answerRefusedTx(b, info.kind)
	}
	if info.kind == kindBlocking {
		defer s.watchClient(b)()
	}
	out := s.rw.client
	for {
		if b.fr.Buffered() == 0 && out.Buffered() > 0 {
			// About to wait for the server: let the client have what is
			// ready (this also streams deep pipelines).
			if err := out.Flush(); err != nil {
				s.rw.err = err
				return err
			}
		}
		s.rw.frame()
		f, err := b.fr.Next(&s.rw)
		fenced := err == nil && f.IsReply() && !f.IsError() && s.fencedWrite(b, info)
		if fenced {
			s.rw.part = s.rw.part[:0] // answered "may have run" instead, below
		}
		if err == nil {
			err = s.rw.end()
		}
		if err != nil {
			return err
		}
		if !f.IsReply() {
			continue
		}
		if fenced {
			s.writeError(mayHaveRun(info))
		}
		s.srv.m.countReply(info, f.IsError(), time.Since(s.batchStart).Seconds())
		if f.IsError() {
			s.noteError(b, f.ErrorText())
			if info.kind == kindExec || info.kind == kindDiscard {
				s.endTx()
			}
			return nil
		}
		s.apply(cmd, info, f)
		return nil
	}
}

// fencedWrite reports whether the reply just read from b acknowledges a
// write that may be lost: Sentinel has selected a replica to replace b's
// master (Fencer), which may already be promoted, so what b's master runs
// now may never reach it. Such a reply is answered "may have run". Only a
// reply kept whole can be replaced (not one streamed, nor one dropped or
// held back for a retry), and only a command's that may write or show
// what was written: not a state command, nor a +QUEUED inside MULTI.
func (s *session) fencedWrite(b *backend, info cmdInfo) bool {
	p := s.srv.fenced.Load()
	if p == nil || *p != b.addr || s.rw.streaming || s.rw.discarding || s.rw.holding {
		return false
	}
	switch info.kind {
	case kindExec, kindBlocking:
		return true
	case kindPlain:
		// A read too: it may show a write the old master ran after the
		// selection, which the new master will not have.
		return s.tx != txMulti
	}
	return false
}

// noteError reacts to error replies that say the master moved.
func (s *session) noteError(b *backend, text string) {
	if strings.HasPrefix(text, "READONLY") || strings.HasPrefix(text, "MASTERDOWN") {
		s.source().Suspect(b.addr)
	}
}

// apply records the effect of a command that succeeded (f is its reply).
func (s *session) apply(cmd Command, info cmdInfo, f Frame) {
	args := cmd.Args
	// Inside MULTI, +QUEUED: it runs at EXEC, or never. Another success
	// there ran on its own (Redis refused a cluster's held MULTI:
	// answerRefusedTx).
	if s.tx == txMulti && queuesState(info.kind) && string(f.Small) == queuedReply {
		s.queueState(args, info.kind)
		return
	}
	switch info.kind {
	case kindAuth:
		switch len(args) {
		case 2:
			s.setAuth("default", string(args[1]))
		case 3:
			s.setAuth(string(args[1]), string(args[2]))
		}
	case kindHello:
		s.applyHello(args)
	case kindSelect:
		if len(args) == 2 {
			if db, err := strconv.Atoi(string(args[1])); err == nil {
				s.state.db = db
				s.keyAddr = ""
			}
		}
	case kindReset:
		if s.deauthAfterReset {
			s.authed, s.deauthAfterReset = false, false
		}
		s.state, s.keyAddr = cleanState, ""
		s.sessionState.reset()
	case kindMulti:
		s.multi()
	case kindExec:
		if s.txState && !isNullReply(f) {
			s.resync = true // the queued state commands ran
		}
		s.endTx()
	case kindDiscard:
		s.endTx()
	case kindWatch:
		s.watch()
	case kindUnwatch:
		s.unwatch()
	case kindPin:
		if len(args) == 3 && strings.EqualFold(string(args[1]), "setname") {
			s.setName(string(args[2]))
		} else {
			s.stick()
		}
		if len(args) == 2 && strings.EqualFold(string(args[1]), "id") && f.Type == ':' && len(f.Small) > 3 {
			s.clientID, _ = strconv.ParseInt(string(f.Small[1:len(f.Small)-2]), 10, 64)
		}
	}
}

// applyHello records HELLO [protover [AUTH user pass] [SETNAME name]].
func (s *session) applyHello(args [][]byte) {
	if len(args) < 2 {
		return
	}
	if v, err := strconv.Atoi(string(args[1])); err == nil {
		s.state.proto = v
		s.keyAddr = ""
	}
	for i := 2; i < len(args); i++ {
		switch {
		case strings.EqualFold(string(args[i]), "auth") && i+2 < len(args):
			s.setAuth(string(args[i+1]), string(args[i+2]))
			i += 2
		case strings.EqualFold(string(args[i]), "setname") && i+1 < len(args):
			s.setName(string(args[i+1]))
			i++
		}
	}
}

func (s *session) setAuth(user, pass string) {
	s.state.user, s.state.pass = user, pass
	s.keyAddr = ""
}

// partLimit is the largest reply frame kept whole until its last byte has
// arrived. A backend connection that breaks inside such a frame leaves the
// client's stream intact: the command is answered with an error instead. A
// larger frame streams to the client as it arrives (a 100 MB GET is not
// held in memory), and a break inside it leaves the client's stream broken.
const partLimit = 16 << 10

// replyWriter is where a backend reply frame goes. Normally that is the
// client: a frame up to partLimit once complete, a larger one as it
// arrives, counting what was written (a backend failure after part of a
// reply went out leaves the client's stream broken). With holdErrors set, an
// error frame is kept in held instead, so that the session can retry the
// command rather than pass the error on. With discarding set, frames are
// dropped: they answer commands that will be sent again.
type replyWriter struct {
	client    *bufio.Writer
	n         int64  // bytes of this frame written to the client
	err       error  // the client's write error
	part      []byte // the frame so far, while within partLimit
	streaming bool   // the frame outgrew partLimit: written as it arrives

	holdErrors bool
	holding    bool
	held       []byte
	discarding bool

	first bool
}

// frame prepares for the next frame.
func (w *replyWriter) frame() {
	w.n, w.first, w.holding, w.streaming = 0, true, false, false
	w.part = w.part[:0]
}

// end passes on a complete frame that was kept whole.
func (w *replyWriter) end() error {
	if len(w.part) == 0 || w.holding || w.discarding {
		return nil
	}
	_, err := w.pass(w.part)
	w.part = w.part[:0]
	return err
}

// pass writes to the client.
func (w *replyWriter) pass(p []byte) (int, error) {
	n, err := w.client.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

func (w *replyWriter) Write(p []byte) (int, error) {
	if w.first && len(p) > 0 {
		w.first = false
		if w.holdErrors && p[0] == '-' {
			w.holding = true
			w.held = w.held[:0]
		}
	}
	switch {
	case w.holding:
		w.held = append(w.held, p...)
		return len(p), nil
	case w.discarding:
		return len(p), nil
	}
	if !w.streaming {
		if len(w.part)+len(p) <= partLimit {
			w.part = append(w.part, p...)
			return len(p), nil
		}
		w.streaming = true
		if _, err := w.pass(w.part); err != nil {
			return 0, err
		}
		w.part = w.part[:0]
	}
	return w.pass(p)
}
