package proxy

import (
	"bytes"
	"context"
	"errors"
	"strconv"
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
	if s.tx == txLost {
		if kind == kindReset {
			s.tx = txNone
			return false
		}
		return true
	}
	switch kind {
	case kindExec:
		return true // decided in answerLostTx, once MULTI's reply is known
	case kindDiscard, kindUnwatch, kindReset:
		s.watchLost = false
	}
	return false
}

// answerLostTx answers a command intercepted by interceptTx.
func (s *session) answerLostTx(cmd Command, kind cmdKind) error {
	if s.tx == txLost {
		switch kind {
		case kindExec:
			s.tx = txNone
			s.writeError(errExecTx)
		case kindDiscard:
			s.tx = txNone
			s.writeRaw([]byte("+OK\r\n"))
		default:
			s.writeError(errTxLost)
		}
		return nil
	}
	// A WATCH was lost. The keys may have changed unseen, so EXEC fails
	// the way it does when a watched key was touched: a null reply, after
	// which clients retry their optimistic transaction.
	s.watchLost = false
	if s.tx != txMulti || s.pinned == nil {
		return s.forward([]Command{cmd}, []cmdInfo{{kind: kind}})
	}
	b := s.pinned
	if _, err := b.nc.Write([]byte(discardCmd)); err != nil {
		s.lost(b)
	} else if _, err := b.fr.Next(nil); err != nil {
		s.lost(b)
	} else {
		s.endTx()
		s.release(b)
	}
	s.endTx()
	s.writeRaw([]byte(nullReply(s.state.proto)))
	return nil
}

// nullReply is a null EXEC's reply in protocol proto.
func nullReply(proto int) string {
	if proto == 3 {
		return "_\r\n"
	}
	return "*-1\r\n"
}

// answerLost answers commands that were about to be sent on a connection
// that turned out lost together with the transaction it carried.
func (s *session) answerLost(cmds []Command, infos []cmdInfo) error {
	for i := range cmds {
		if !s.txBroken() {
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

// settleTx brings the transaction state up to date with commands answered
// "may have run" after their connection was lost (lost has already run):
// see sessionState.settle.
func (s *session) settleTx(infos []cmdInfo) {
	for _, in := range infos {
		s.settle(in.kind)
	}
}

// pendingReply is a command of a batch to send again, with the error the
// server gave it (if any), answered when the retry cannot be made.
type pendingReply struct {
	idx  int
	held string
	lost bool // written, and the reply lost with the connection: may have run
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

// safeToRepeat reports whether a command whose reply was lost with the
// connection can be sent again to the next master: it changed nothing
// there (a read) or repeating it changes nothing more (SELECT, AUTH,
// HELLO). Outside MULTI only.
func safeToRepeat(info cmdInfo) bool {
	switch info.kind {
	case kindSelect, kindAuth, kindHello:
		return true
	case kindPlain:
		return info.class == classRead
	}
	return false
}

// allSafe reports whether every command may be repeated (safeToRepeat).
func allSafe(infos []cmdInfo) bool {
	for _, in := range infos {
		if !safeToRepeat(in) {
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
func (s *session) resolve(oldAddr string, cmds []Command, infos []cmdInfo, failed int) error {
	pend := s.pending
	defer func() { s.pending = s.pending[:0] }()
	// The replies from here on are the retried commands' own: none is to
	// be dropped or held back, however the first attempt ended.
	s.rw.client, s.rw.discarding, s.rw.holding = s.out(), false, false
	start := 0 // the first pending command not answered yet
	for try := 1; ; try++ {
		var retry []Command
		needNew, safe := false, true
		for _, p := range pend[start:] {
			if p.idx < failed && !p.lost {
				retry = append(retry, cmds[p.idx])
				// Refused as not master: wait for another. Lost with the
				// connection (nothing held): the same address will do if
				// the sentinels still name it.
				needNew = needNew || p.held != "" && !strings.HasPrefix(p.held, "-LOADING")
				safe = safe && s.tx != txMulti && safeToRepeat(infos[p.idx])
			}
		}
		// A retry whose connection fails before anything of it could have
		// run, or before any reply when every command is safe to repeat
		// (the master died under the retry too, or it took an idle
		// connection to the dead master), is made again, a few times.
		again := try < retryTries
		var b *backend
		retryErr := errNoMaster
		if len(retry) > 0 {
			s.srv.m.retried.Add(float64(len(retry)))
			b, retryErr = s.retryBackend(oldAddr, needNew)
		}
		if b != nil {
			if n, err := s.write(b, retry); err != nil {
				s.failed(b)
				b, retryErr = nil, err
				switch {
				case n == 0 && again:
					continue
				case n > 0:
					failed = 0 // some may have run: none may be retried again
				}
			}
		}
		retried := false
	answer:
		for ; start < len(pend); start++ {
			p := pend[start]
			switch {
			case p.idx >= failed || p.lost:
				s.writeError(errMayHaveRun)
			case b == nil && p.held != "":
				s.out().WriteString(p.held)
			case b == nil:
				s.writeError(s.acquireErrorText(retryErr))
			default:
				s.rw.holdErrors = s.srv.cl != nil && s.tx != txMulti // redirects, as in replies
				if err := s.reply(b, cmds[p.idx], infos[p.idx]); err != nil {
					s.failed(b)
					b = nil
					if s.rw.err != nil || s.rw.n > 0 {
						return err
					}
					if safe && again {
						retried = true
						break answer // p and the rest are sent again
					}
					failed = p.idx
					s.writeError(errMayHaveRun)
				} else if s.rw.holding && !s.redirected(p.idx, s.rw.held, b.addr) {
					s.out().Write(s.rw.held)
				}
			}
		}
		if retried {
			continue
		}
		if b != nil {
			s.release(b)
		}
		s.rw.holding, s.rw.holdErrors = false, false // as replies leaves them
		return nil
	}
}

// retryTries is how many times resolve sends the same commands when the
// connection fails before they could have run.
const retryTries = 3

// retryBackend waits, up to the hold timeout, for a master to retry on and
// connects to it. When none could be had it returns the last reason (a
// credentials refusal at once: waiting would not fix it).
func (s *session) retryBackend(oldAddr string, needNew bool) (*backend, error) {
	// The batch's deadline: a batch whose runs are refused one after
	// another (a cluster's, say) waits one hold timeout in all, not one
	// per run.
	deadline := s.holdDeadline()
	lastErr := errNoMaster
	for {
		addr, changed := s.source().Master()
		if addr != "" && (addr != oldAddr || !needNew) {
			key := s.poolKey(addr)
			if b := s.pooled(key); b != nil {
				return b, nil
			}
			b, err := s.dial(addr, key, deadline)
			switch {
			case err == nil:
				return b, nil
			case errors.Is(err, errHandshake):
				return nil, err // waiting will not fix the credentials
			}
			lastErr = err
			if s.srv.cl != nil {
				s.srv.cl.router.RequestRefresh() // the slot map may be out of date
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, lastErr
		}
		t := time.NewTimer(min(wait, 100*time.Millisecond))
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// queuesState reports whether a command of kind changes connection state
// when it runs; inside MULTI it only runs at EXEC.
func queuesState(kind cmdKind) bool {
	return kind == kindAuth || kind == kindHello || kind == kindSelect || kind == kindPin
}

// queueState notes a state command queued in a transaction.
func (s *session) queueState(args [][]byte, kind cmdKind) {
	s.txState = true
	switch {
	case kind == kindPin && !(len(args) == 3 && strings.EqualFold(string(args[1]), "setname")):
		s.stick() // CLIENT ID, NO-EVICT, CACHING: keep the connection either way
	case kind == kindAuth && len(args) == 2:
		s.txUser, s.txPass = "default", string(args[1])
	case kind == kindAuth && len(args) == 3:
		s.txUser, s.txPass = string(args[1]), string(args[2])
	case kind == kindHello:
		for i := 2; i+2 < len(args); i++ {
			if strings.EqualFold(string(args[i]), "auth") {
				s.txUser, s.txPass = string(args[i+1]), string(args[i+2])
			}
		}
	}
}

// isNullReply reports whether f is a null (EXEC of a transaction a WATCH
// aborted).
func isNullReply(f Frame) bool {
	return f.Type == '_' || bytes.HasPrefix(f.Small, []byte("*-1\r\n"))
}

// resyncState asks the server, after an EXEC that ran state commands, what
// state the connection is in now (CLIENT INFO), and records it: what ran
// inside the transaction is only known from there.
func (s *session) resyncState(b *backend) error {
	s.resync = false
	if _, err := b.nc.Write([]byte("*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n")); err != nil {
		return err
	}
	var info bytes.Buffer
	for {
		f, err := b.fr.Next(&info)
		if err != nil {
			return err
		}
		if f.IsReply() {
			break
		}
		info.Reset()
	}
	fields := map[string]string{}
	for _, kv := range strings.Fields(info.String()) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			fields[k] = v
		}
	}
	if db, err := strconv.Atoi(fields["db"]); err == nil {
		s.state.db = db
	}
	if proto, err := strconv.Atoi(fields["resp"]); err == nil {
		s.state.proto = proto
	}
	if user := fields["user"]; user != s.state.user && user == s.txUser {
		s.state.user, s.state.pass = s.txUser, s.txPass
	}
	s.setName(fields["name"])
	s.keyAddr = ""
	return nil
}

// contextWithDeadline bounds one attempt by timeout and by the overall
// deadline, whichever comes first.
func contextWithDeadline(deadline time.Time, timeout time.Duration) (context.Context, context.CancelFunc) {
	if d := time.Now().Add(timeout); d.Before(deadline) {
		deadline = d
	}
	return context.WithDeadline(context.Background(), deadline)
}
