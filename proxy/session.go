package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// session serves one client connection. Its goroutine reads the client's
// requests, forwards each batch on a backend connection it holds only for
// that batch (or keeps, when pinned) and streams the replies back.
type session struct {
	srv  *Server
	conn net.Conn
	rd   *clientReader

	w   *bufio.Writer // client output; from the pool while a batch runs
	wmu sync.Mutex    // guards w once the session is full duplex

	state   connState
	key     poolKey // pool key of state on keyAddr, cached
	keyAddr string
	name    string // set by CLIENT SETNAME / HELLO SETNAME; pins

	multi     bool // MULTI open
	watching  bool // WATCH active
	sticky    bool // CLIENT ID, NO-EVICT, CACHING: pinned until RESET
	txLost    bool // the pinned connection of an open MULTI was lost
	watchGone bool // the pinned connection of a WATCH was lost
	txState   bool // a state command (SELECT, AUTH, HELLO, …) is queued in MULTI
	txUser    string
	txPass    string // credentials of a queued AUTH
	resync    bool   // state commands ran inside EXEC: ask the server

	pinned *backend // dedicated connection while the state needs one
	duplex *duplex  // set once the session streams (pub/sub, MONITOR, tracking)

	idleSince atomic.Int64 // when the session began waiting for its client (UnixNano); 0 while busy

	infos   []cmdInfo
	bufs    net.Buffers
	rw      replyWriter
	pending []pendingReply
}

func newSession(srv *Server, nc net.Conn) *session {
	s := &session{srv: srv, conn: nc, state: cleanState}
	s.rd = newClientReader(nc, srv.bufs, srv.opts.Limits)
	return s
}

// errQuit ends a session after QUIT was answered.
var errQuit = errors.New("quit")

// parkAfter is how long a session waits for its client's next command on
// its own goroutine before it hands the connection to the parker. The
// server's sweep (Server.sweepIdle) ends such waits with a read deadline in
// the past, so the hot path sets no deadline of its own.
const parkAfter = 50 * time.Millisecond

// serve runs the session until the client leaves, the server drains, or the
// session is parked (it then runs again, on a new goroutine, when the client
// sends its next command).
func (s *session) serve() {
	for {
		if s.srv.draining.Load() && !s.rd.buffered() {
			s.end()
			return
		}
		idle := s.duplex == nil && !s.rd.buffered()
		if idle {
			s.idleSince.Store(time.Now().UnixNano())
		}
		cmds, err := s.rd.next(s.srv.opts.MaxBatch)
		if idle {
			s.idleSince.Store(0)
		}
		if err != nil {
			if idle && isTimeout(err) && !s.srv.draining.Load() {
				// The server's sweep ended the wait (parkAfter passed).
				s.conn.SetReadDeadline(time.Time{})
				if !s.rd.buffered() && s.park() {
					return
				}
				continue // a request started arriving: read it without a deadline
			}
			var perr *RequestError
			if errors.As(err, &perr) {
				s.writeError("ERR " + perr.Error())
				s.flush()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				s.srv.log.Debug("client read failed", zap.String("client", s.conn.RemoteAddr().String()), zap.Error(err))
			}
			s.end()
			return
		}
		if s.duplex != nil {
			err = s.duplex.forward(cmds)
		} else {
			err = s.exec(cmds)
		}
		if ferr := s.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			s.end()
			return
		}
		s.rd.idle()
	}
}

// park hands the idle session to the parker, dropping what an idle session
// need not keep. It reports whether the parker took it.
func (s *session) park() bool {
	s.rd.cmds, s.infos, s.bufs, s.pending = nil, nil, nil, nil
	s.rw.held = nil
	return s.srv.parker.park(s)
}

// stopReading makes the session end once its current batch is answered: a
// read deadline in the past fails the next read, while a batch already read
// still runs to completion. Safe from any goroutine.
func (s *session) stopReading() { s.conn.SetReadDeadline(time.Unix(1, 0)) }

// end closes the session and tells the server it is gone.
func (s *session) end() {
	s.close()
	s.srv.sessionEnded(s)
}

// close releases everything the session holds.
func (s *session) close() {
	if s.duplex != nil {
		s.duplex.stop()
		s.duplex = nil
	}
	if s.pinned != nil {
		s.srv.pool.discard(s.pinned)
		s.pinned = nil
	}
	s.conn.Close()
	s.rd.release()
	s.releaseWriter()
}

// exec runs one batch. It splits it where the proxy must answer a command
// itself or where the connection turns full duplex, and forwards each run
// of commands in one write.
func (s *session) exec(cmds []Command) error {
	if s.pinned != nil && (s.pinned.dead.Load() || peekClosed(s.pinned.nc, false)) {
		s.lost(s.pinned) // decide before classifying: a lost MULTI changes what runs
	}
	s.infos = s.infos[:0]
	for i := range cmds {
		s.infos = append(s.infos, classify(cmds[i].Args))
	}
	start := 0
	for i := 0; i < len(cmds); i++ {
		info := s.infos[i]
		local := info.kind == kindQuit || info.kind == kindRefused || (s.txLost || s.watchGone) && s.interceptTx(info.kind)
		if !local && info.kind != kindDuplex {
			continue
		}
		if i > start {
			if err := s.forward(cmds[start:i], s.infos[start:i]); err != nil {
				return err
			}
		}
		start = i + 1
		switch {
		case info.kind == kindDuplex:
			if err := s.startDuplex(cmds[i]); err != nil {
				return err
			}
			// The rest of the batch is streamed as well.
			return s.duplex.forward(cmds[i+1:])
		case info.kind == kindQuit:
			s.writeRaw([]byte("+OK\r\n"))
			s.flush()
			return errQuit
		case info.kind == kindRefused:
			s.writeError(info.refusal)
		default:
			if err := s.answerLostTx(cmds[i], info.kind); err != nil {
				return err
			}
		}
	}
	if start < len(cmds) {
		return s.forward(cmds[start:], s.infos[start:])
	}
	return nil
}

// forward sends commands in one write and streams their replies back.
// Errors that concern only these commands are answered to the client with
// error replies; a returned error ends the session.
func (s *session) forward(cmds []Command, infos []cmdInfo) error {
	b, fresh, err := s.acquire()
	if err != nil {
		for range cmds {
			s.writeError(s.acquireErrorText(err))
		}
		return nil
	}
	// WAIT waits for the writes of the connection it runs on, up to that
	// connection's last command. A pooled connection may have last run a
	// command before this client's writes: a PING first brings it up to
	// date. (Pinned connections carried the client's writes themselves.)
	send := cmds
	hidden := infos[0].wait && s.pinned == nil && !s.needsPin()
	if hidden {
		send = append([]Command{{Raw: []byte(pingCmd)}}, cmds...)
	}
	n, err := s.write(b, send)
	if err != nil && n == 0 && !fresh {
		// Nothing reached the server: the pooled or pinned connection was
		// closed under us (the master changed). Safe to send again, unless
		// the connection carried a transaction these commands belong to.
		s.lost(b)
		if s.txLost || s.watchGone {
			return s.answerLost(cmds, infos)
		}
		if b, _, err = s.acquire(); err != nil {
			for range cmds {
				s.writeError(s.acquireErrorText(err))
			}
			return nil
		}
		n, err = s.write(b, send)
	}
	if err != nil {
		s.failed(b)
		if n == 0 {
			for range cmds {
				s.writeError("ERR could not send the command to the master; it did not run (sentinel-proxy)")
			}
			return nil
		}
		for i := range cmds {
			s.writeError(mayHaveRun(infos[i]))
		}
		return nil
	}
	if hidden {
		if err := s.skipReply(b); err != nil {
			s.failed(b)
			for i := range cmds {
				s.writeError(mayHaveRun(infos[i]))
			}
			return nil
		}
	}
	return s.replies(b, cmds, infos)
}

const pingCmd = "*1\r\n$4\r\nPING\r\n"

// skipReply reads and drops the reply to a command the proxy sent itself.
func (s *session) skipReply(b *backend) error {
	for {
		f, err := b.fr.Next(nil)
		if err != nil || f.IsReply() {
			return err
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
	rw.holdErrors = !s.multi && allRetryable(infos)
	s.pending = s.pending[:0]
	for i := range cmds {
		err := s.reply(b, cmds[i], infos[i])
		switch {
		case err != nil && rw.err != nil:
			s.lost(b) // the client is gone
			return err
		case err != nil && rw.n > 0:
			s.lost(b) // part of a reply went out: the stream cannot be repaired
			return err
		case err != nil && rw.discarding:
			// Everything after the refusal went to a node that is not the
			// master: none of it wrote anything. Send it all again.
			s.failed(b)
			for j := i; j < len(cmds); j++ {
				s.pending = append(s.pending, pendingReply{idx: j})
			}
			return s.resolve(b.addr, cmds, len(cmds))
		case err != nil:
			s.failed(b)
			for j := i; j < len(cmds); j++ {
				s.writeError(mayHaveRun(infos[j]))
			}
			return nil
		case rw.holding && !rw.discarding && isRetryable(rw.held):
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
		s.release(b)
		return nil
	}
	rw.discarding = false
	s.lost(b) // it answered like a replica
	return s.resolve(b.addr, cmds, len(cmds))
}

const (
	errMayHaveRun    = "ERR connection to the master lost before the reply; the command may have run (sentinel-proxy)"
	errBlockedMayRun = "UNBLOCKED connection to the master lost while the command was blocked; it may have run (sentinel-proxy)"
)

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
	if info.kind == kindBlocking {
		if stop := s.watchClient(b); stop != nil {
			defer stop()
		}
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
		if err != nil {
			return err
		}
		if !f.IsReply() {
			continue
		}
		if f.IsError() {
			s.noteError(b, f.ErrorText())
			if info.kind == kindExec || info.kind == kindDiscard {
				s.multi, s.watching = false, false
				s.txState, s.txUser, s.txPass = false, "", ""
			}
			return nil
		}
		s.apply(cmd, info, f)
		return nil
	}
}

// noteError reacts to error replies that say the master moved.
func (s *session) noteError(b *backend, text string) {
	if strings.HasPrefix(text, "READONLY") || strings.HasPrefix(text, "MASTERDOWN") {
		s.srv.opts.Source.Suspect(b.addr)
	}
}

// apply records the effect of a command that succeeded (f is its reply).
func (s *session) apply(cmd Command, info cmdInfo, f Frame) {
	args := cmd.Args
	if s.multi && queuesState(info.kind) {
		s.queueState(args, info.kind) // +QUEUED: it runs at EXEC, or never
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
		s.state, s.keyAddr, s.name = cleanState, "", ""
		s.multi, s.watching, s.sticky = false, false, false
		s.txLost, s.watchGone = false, false
	case kindMulti:
		s.multi = true
	case kindExec:
		s.multi, s.watching = false, false
		if s.txState && !isNullReply(f) {
			s.resync = true // the queued state commands ran
		}
		s.txState, s.txUser, s.txPass = false, "", ""
	case kindDiscard:
		s.multi, s.watching = false, false
		s.txState, s.txUser, s.txPass = false, "", ""
	case kindWatch:
		s.watching = true
	case kindUnwatch:
		s.watching = false
	case kindPin:
		if len(args) == 3 && strings.EqualFold(string(args[1]), "setname") {
			s.name = string(args[2])
		} else {
			s.sticky = true
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
			s.name = string(args[i+1])
			i++
		}
	}
}

func (s *session) setAuth(user, pass string) {
	s.state.user, s.state.pass = user, pass
	s.keyAddr = ""
}

// needsPin reports whether the session's state lives on one connection.
func (s *session) needsPin() bool {
	return s.multi || s.watching || s.sticky || s.name != ""
}

// poolKey returns the pool key of the session's state on addr.
func (s *session) poolKey(addr string) poolKey {
	if s.keyAddr != addr {
		s.key = s.state.key(addr, s.srv.salt)
		s.keyAddr = addr
	}
	return s.key
}

// acquire returns the connection to use: the pinned one, an idle one in the
// session's state, or a new one. fresh is true for a new connection. While
// no master is known, or the master cannot be reached, it waits up to the
// hold timeout for the source to name one it can reach.
func (s *session) acquire() (b *backend, fresh bool, err error) {
	if s.pinned != nil {
		return s.pinned, false, nil
	}
	deadline := time.Now().Add(s.srv.opts.HoldTimeout)
	for {
		addr, err := s.srv.awaitMaster(deadline)
		if err != nil {
			return nil, false, err
		}
		key := s.poolKey(addr)
		if b := s.srv.pool.get(key); b != nil {
			return b, false, nil
		}
		b, err := s.dial(addr, key, deadline)
		if err == nil {
			return b, true, nil
		}
		if errors.Is(err, errHandshake) || time.Now().After(deadline) {
			return nil, false, err
		}
		// The master may be gone before the sentinels noticed: wait for
		// them to name another one, or retry the same one shortly.
		s.srv.log.Debug("dial failed, holding", zap.String("addr", addr), zap.Error(err))
		_, changed := s.srv.opts.Source.Master()
		t := time.NewTimer(min(100*time.Millisecond, time.Until(deadline)))
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (s *session) dial(addr string, key poolKey, deadline time.Time) (*backend, error) {
	ctx, cancel := contextWithDeadline(deadline, s.srv.opts.DialTimeout)
	defer cancel()
	b, err := dialBackend(ctx, &s.srv.dialer, addr, s.state, s.name, key)
	if err != nil {
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
	case errors.Is(err, errNoMaster):
		return "MASTERDOWN no master is known for '" + s.srv.opts.Name + "' (failover in progress?) (sentinel-proxy)"
	case errors.Is(err, errHandshake):
		return "ERR " + err.Error() + " (sentinel-proxy)"
	}
	return "MASTERDOWN cannot reach the master of '" + s.srv.opts.Name + "': " + err.Error() + " (sentinel-proxy)"
}

// release gives b back to the pool after a batch, or keeps it pinned.
func (s *session) release(b *backend) {
	if s.needsPin() {
		s.pinned = b
		return
	}
	s.pinned = nil
	b.key = s.poolKey(b.addr)
	s.srv.pool.put(b)
}

// failed drops a connection that failed under a command. Unless the proxy
// closed it itself (a switch), the server went away or cut its clients:
// the other idle connections to it go too, and the source re-checks it.
func (s *session) failed(b *backend) {
	if !b.dead.Load() {
		s.srv.pool.evict(b.addr)
		s.srv.opts.Source.Suspect(b.addr)
	}
	s.lost(b)
}

// lost drops a connection that failed. If it carried a transaction or a
// WATCH, later commands of that transaction are answered with errors
// instead of running outside it.
func (s *session) lost(b *backend) {
	s.srv.pool.discard(b)
	if s.pinned != b {
		return
	}
	s.pinned = nil
	if s.multi {
		s.txLost = true
	} else if s.watching {
		s.watchGone = true
	}
	s.txState, s.resync = false, false
	s.multi, s.watching, s.sticky = false, false, false
}

// watchClient starts watching the client while a blocking command waits, so
// that a client that hangs up releases its backend connection. It returns a
// function that stops the watch.
func (s *session) watchClient(b *backend) func() {
	if s.rd.buffered() {
		return nil // more commands are queued: the hang-up cannot be seen
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if peekClosed(s.conn, true) {
			b.close()
		}
	}()
	return func() {
		s.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		s.conn.SetReadDeadline(time.Time{})
	}
}

// out returns the client writer, taking a buffer from the pool if needed.
func (s *session) out() *bufio.Writer {
	if s.w == nil {
		s.w = s.srv.bufs.write.Get().(*bufio.Writer)
		s.w.Reset(s.conn)
	}
	return s.w
}

func (s *session) writeRaw(p []byte) {
	s.out().Write(p)
}

// writeError writes an error reply; msg starts with its code ("ERR …").
func (s *session) writeError(msg string) {
	w := s.out()
	w.WriteByte('-')
	w.WriteString(msg)
	w.WriteString("\r\n")
}

// flush sends what the session wrote and, unless the session is full duplex,
// gives the buffer back.
func (s *session) flush() error {
	if s.duplex != nil {
		return s.duplex.flush()
	}
	if s.w == nil {
		return nil
	}
	err := s.w.Flush()
	s.releaseWriter()
	return err
}

func (s *session) releaseWriter() {
	if s.w != nil && s.duplex == nil {
		s.w.Reset(nil)
		s.srv.bufs.write.Put(s.w)
		s.w = nil
	}
}

// replyWriter is where a backend reply frame goes. Normally that is the
// client, counting what was written (a backend failure after part of a
// reply went out leaves the client's stream broken). With holdErrors set, an
// error frame is kept in held instead, so that the session can retry the
// command rather than pass the error on. With discarding set, frames are
// dropped: they answer commands that will be sent again.
type replyWriter struct {
	client *bufio.Writer
	n      int64 // bytes of this frame written to the client
	err    error // the client's write error

	holdErrors bool
	holding    bool
	held       []byte
	discarding bool

	first bool
}

// frame prepares for the next frame.
func (w *replyWriter) frame() {
	w.n, w.first, w.holding = 0, true, false
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
	n, err := w.client.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
