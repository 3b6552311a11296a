package proxy

import (
	"bytes"
	"context"
	"strings"
	"time"
)

// Transactions cannot move to another connection: MULTI's queue and WATCH's
// watched keys live on the server connection that was lost. The session then
// answers the rest of that transaction itself, so that no command of it runs
// outside the transaction on the new master.

const (
	errTxLost  = "ERR the open transaction was discarded: the connection to the master was lost; send EXEC or DISCARD (sentinel-proxy)"
	errExecTx  = "EXECABORT Transaction discarded because the connection to the master was lost (sentinel-proxy)"
	discardCmd = "*1\r\n$7\r\nDISCARD\r\n"
)

// interceptTx reports whether a command of kind must be answered by
// answerLostTx because an earlier connection loss broke a transaction.
func (s *session) interceptTx(kind cmdKind) bool {
	if s.txLost {
		if kind == kindReset {
			s.txLost = false
			return false
		}
		return true
	}
	switch kind {
	case kindExec:
		return true // decided in answerLostTx, once MULTI's reply is known
	case kindDiscard, kindUnwatch, kindReset:
		s.watchGone = false
	}
	return false
}

// answerLostTx answers a command intercepted by interceptTx.
func (s *session) answerLostTx(cmd Command, kind cmdKind) error {
	if s.txLost {
		switch kind {
		case kindExec:
			s.txLost = false
			s.writeError(errExecTx)
		case kindDiscard:
			s.txLost = false
			s.writeRaw([]byte("+OK\r\n"))
		default:
			s.writeError(errTxLost)
		}
		return nil
	}
	// A WATCH was lost. The keys may have changed unseen, so EXEC fails
	// the way it does when a watched key was touched: a null reply, after
	// which clients retry their optimistic transaction.
	s.watchGone = false
	if !s.multi || s.pinned == nil {
		return s.forward([]Command{cmd}, []cmdInfo{{kind: kind}})
	}
	b := s.pinned
	if _, err := b.nc.Write([]byte(discardCmd)); err != nil {
		s.lost(b)
	} else if _, err := b.fr.Next(nil); err != nil {
		s.lost(b)
	} else {
		s.multi, s.watching = false, false
		s.release(b)
	}
	s.multi, s.watching = false, false
	if s.state.proto == 3 {
		s.writeRaw([]byte("_\r\n"))
	} else {
		s.writeRaw([]byte("*-1\r\n"))
	}
	return nil
}

// answerLost answers commands that were about to be sent on a connection
// that turned out lost together with the transaction it carried.
func (s *session) answerLost(cmds []Command, infos []cmdInfo) error {
	for i := range cmds {
		if !s.txLost && !s.watchGone {
			if err := s.forward(cmds[i:], infos[i:]); err != nil {
				return err
			}
			return nil
		}
		if !s.interceptTx(infos[i].kind) {
			if err := s.forward(cmds[i:i+1], infos[i:i+1]); err != nil {
				return err
			}
			continue
		}
		if err := s.answerLostTx(cmds[i], infos[i].kind); err != nil {
			return err
		}
	}
	return nil
}

// pendingReply is a command of a batch to send again, with the error the
// server gave it (if any), answered when the retry cannot be made.
type pendingReply struct {
	idx  int
	held string
}

// allRetryable reports whether a batch may be sent again from any command
// on: only when none of them changes the session's state, so that the
// commands before and after the retried one agree on it.
func allRetryable(infos []cmdInfo) bool {
	for _, in := range infos {
		if in.kind != kindPlain && in.kind != kindBlocking {
			return false
		}
	}
	return true
}

// isRetryable reports whether an error reply (a whole "-…\r\n" frame) says
// the command did not run because the node is not a writable master.
func isRetryable(frame []byte) bool {
	return bytes.HasPrefix(frame, []byte("-READONLY ")) ||
		bytes.HasPrefix(frame, []byte("-LOADING ")) ||
		bytes.HasPrefix(frame, []byte("-MASTERDOWN "))
}

// resolve sends the pending commands to the master the source names next
// (another one than oldAddr when the old one said it is a replica), bounded
// by the hold timeout, and writes their replies in order. Commands from
// index failed on, whose replies were lost with the connection, may have
// run: they get errMayHaveRun. A retry that cannot be made answers the
// original error.
func (s *session) resolve(oldAddr string, cmds []Command, failed int) error {
	pend := s.pending
	defer func() { s.pending = s.pending[:0] }()
	var retry []Command
	needNew := false
	for _, p := range pend {
		if p.idx < failed {
			retry = append(retry, cmds[p.idx])
			needNew = needNew || !strings.HasPrefix(p.held, "-LOADING")
		}
	}
	var b *backend
	if len(retry) > 0 {
		b = s.retryBackend(oldAddr, needNew)
	}
	if b != nil {
		if n, err := s.write(b, retry); err != nil {
			s.lost(b)
			b = nil
			if n > 0 {
				failed = 0 // some may have run: none may be retried again
			}
		}
	}
	out := s.out()
	for _, p := range pend {
		switch {
		case p.idx >= failed:
			s.writeError(errMayHaveRun)
		case b == nil && p.held != "":
			out.WriteString(p.held)
		case b == nil:
			s.writeError(s.acquireErrorText(errNoMaster))
		default:
			s.rw.client, s.rw.holdErrors = out, false
			if err := s.reply(b, cmds[p.idx], cmdInfo{kind: kindPlain}); err != nil {
				s.lost(b)
				b = nil
				if s.rw.err != nil || s.rw.n > 0 {
					return err
				}
				failed = p.idx
				s.writeError(errMayHaveRun)
			}
		}
	}
	if b != nil {
		s.release(b)
	}
	return nil
}

// retryBackend waits, up to the hold timeout, for a master to retry on and
// connects to it. It returns nil when none could be had.
func (s *session) retryBackend(oldAddr string, needNew bool) *backend {
	deadline := time.Now().Add(s.srv.opts.HoldTimeout)
	for {
		addr, changed := s.srv.opts.Source.Master()
		if addr != "" && (addr != oldAddr || !needNew) {
			key := s.poolKey(addr)
			if b := s.srv.pool.get(key); b != nil {
				return b
			}
			if b, err := s.dial(addr, key, deadline); err == nil {
				return b
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(min(wait, 100*time.Millisecond))
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// contextWithDeadline bounds one attempt by timeout and by the overall
// deadline, whichever comes first.
func contextWithDeadline(deadline time.Time, timeout time.Duration) (context.Context, context.CancelFunc) {
	if d := time.Now().Add(timeout); d.Before(deadline) {
		deadline = d
	}
	return context.WithDeadline(context.Background(), deadline)
}
