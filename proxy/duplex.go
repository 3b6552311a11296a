package proxy

import (
	"bufio"
	"errors"
	"net"
	"sync"

	"go.uber.org/zap"
)

// duplex streams a pinned connection in both directions at once. Pub/Sub,
// MONITOR and client-side caching make the server send frames that answer
// no command: the session goroutine forwards the client's commands while a
// copier goroutine (duplex_copy.go) streams every frame from the server to
// the client.
//
// Replies are still matched to commands. Every command forwarded is an
// entry of a FIFO until its reply has been streamed: in RESP3 a reply is any
// frame but a push (>) or an attribute (|); a RESP2 connection that is
// subscribed answers only PING, QUIT, RESET and the (un)subscribe commands,
// and messages are told from replies by their first element; (un)subscribe
// commands are answered by one confirmation per channel. That matching is
// what lets the proxy
//   - answer commands itself (refusals, proxy-terminated AUTH) in their turn;
//   - record SELECT, AUTH, HELLO and CLIENT SETNAME only when they succeeded,
//     and replay them when the session moves to another master;
//   - know, when the connection is lost, which commands it did not answer;
//   - end full duplex at an exact frame boundary: when the client has left
//     every subscription (or sent RESET, or turned tracking off) the
//     session goes back to request/response and gives the connection back.
//
// When the server connection is lost (the master changed, or Sentinel killed
// pub/sub clients while reconfiguring), a session that only subscribed is
// subscribed again on the current master to the channels the lost connection
// had confirmed (those confirmations are not passed on), and the commands the
// lost connection did not answer are sent again in order: (un)subscribe
// commands, and commands that are safe to repeat (reads, PING, SELECT, AUTH,
// HELLO); the others are answered "may have run". Commands that arrive while
// it moves wait, and go to the new connection after those. MONITOR, CLIENT
// TRACKING and open transactions cannot be moved (what the server kept is
// gone): those clients are disconnected, as after a server restart; so is
// a client that already received part of a frame (frames up to stageLimit
// are passed on only once complete).
//
// QUIT is answered +OK by the proxy in its turn, as on the ordinary path;
// the client is closed after it.
//
// Locks: d.mu before s.wmu, never the other way round. The copier holds
// s.wmu for the whole of a frame it passes on (from its first byte to its
// last), never while it takes d.mu.
type duplex struct {
	s       *session
	q       *outQueue     // between the client writer and the client, with an output limit; nil without
	authed  bool          // proxy-terminated auth passed when full duplex began
	done    chan struct{} // closed when the copier exits
	stopc   chan struct{} // closed by stop: a move in progress gives up
	src     *sourceBox    // the source the connection follows (a shard channel's slot in a cluster); under mu once the copier runs
	verdict chan *hints   // a command that might have ended full duplex did not: what the connection has (nil: not known)

	mu       sync.Mutex
	cond     *sync.Cond // a move or a write of the session ended
	b        *backend
	fifo     []*entry
	moving   bool // the copier is replacing the connection: the session waits
	writing  bool // the session is writing to b without holding mu
	quit     bool // stop was called
	over     bool // the copier ended; the client is being closed
	handover bool // the copier stopped at the end of full duplex and left b to the session

	link link // the copier's; the session reads it once the copier exited

	// The session goroutine's own.
	hint    hints
	inMulti bool
	batch   []*entry
	bufs    net.Buffers
}

// link is the state of the server connection as its replies showed it.
type link struct {
	st connState
	sessionState
	subs     [3]map[string]struct{} // confirmed channels, patterns, shard channels
	monitor  bool
	tracking bool
	unsure   bool // state or subscriptions changed inside a transaction: not known
	reset    bool // RESET ran: the session forgets its own state too
}

// hints is what the session goroutine expects of the connection from the
// commands it sent, before any reply: where a batch may end full duplex.
// Redis can refuse a command they counted (ACL, -LOADING): the verdicts
// (duplex_send.go's add) bring them back to the connection's state.
type hints struct {
	subs              [3]map[string]struct{}
	monitor, tracking bool
}

// duplexOp is what the reply to a command changes on the connection.
type duplexOp uint8

const (
	opNone duplexOp = iota
	opSub           // (P|S)(UN)SUBSCRIBE
	opSelect
	opAuth
	opHello
	opSetName
	opSticky // CLIENT ID, NO-EVICT, CACHING
	opMonitor
	opTrackOn
	opTrackOff
	opReset
	opMulti
	opTxEnd // EXEC, DISCARD
	opWatch
	opUnwatch
)

// entry is a command on the duplex connection, or the proxy's own answer to
// one, kept in the client's order until it is answered.
type entry struct {
	raw     []byte // the command; nil when it cannot be sent again
	owned   bool   // raw is a copy (else the client reader's, valid during the write)
	info    cmdInfo
	op      duplexOp
	args    []string // arguments of SELECT, AUTH, HELLO, CLIENT SETNAME
	local   string   // the proxy's answer (a whole frame); "" for a forwarded command
	again   bool     // safe to send again after its reply was lost
	sent    bool     // (part of it) written to the current connection
	swallow bool     // the proxy's own command: its replies go nowhere
	end     bool     // the session waits after it: it may end full duplex
	quit    bool     // QUIT, answered +OK in its turn; then the client is closed

	set   int      // (un)subscribe: the set it changes (0-2), else -1
	unsub bool     // (P|S)UNSUBSCRIBE
	all   bool     // (P|S)UNSUBSCRIBE without arguments: until the set is empty
	chans []string // channels whose confirmation is still due
}

// subNames are the (un)subscribe commands of each set.
var subNames = [3][2]string{{"SUBSCRIBE", "UNSUBSCRIBE"}, {"PSUBSCRIBE", "PUNSUBSCRIBE"}, {"SSUBSCRIBE", "SUNSUBSCRIBE"}}

const errNotSent = "ERR could not send the command to the master; it did not run (sentinel-proxy)"

var (
	// errHandover stops the copier at the end of full duplex.
	errHandover = errors.New("full duplex ended")
	// errQuitAnswered stops the copier once QUIT was answered.
	errQuitAnswered = errors.New("QUIT answered")
)

// startDuplex pins a connection, forwards cmd (the command that makes the
// connection full duplex) and starts the copier. When no connection can be
// had it answers the error and leaves s.duplex nil; s.duplex is nil too when
// cmd ended full duplex at once (UNSUBSCRIBE while not subscribed): either
// way the caller goes on with the ordinary path.
func (s *session) startDuplex(cmd Command) error {
	if s.w != nil {
		// Replies to the commands before cmd go out before the writer
		// is pointed at the output queue (Reset would drop them).
		if err := s.w.Flush(); err != nil {
			return err
		}
	}
	b, err := s.acquire()
	if err != nil {
		s.writeError(s.acquireErrorText(err))
		return nil
	}
	s.setPinned(nil) // the duplex owns it from now on
	s.srv.pinnedN.Add(1)
	s.streaming.Store(true)
	w := s.out() // the session keeps this writer until full duplex ends
	var q *outQueue
	if limit := s.srv.settings().OutputLimit; limit > 0 {
		q = newOutQueue(s.conn, limit, func() {
			s.srv.m.disconnects.WithLabelValues(reasonOutputLimit).Inc()
			s.srv.log.Info("client output limit reached: disconnecting a subscriber that does not read",
				zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()), zap.Int64("limit", limit))
			hangUp(s.conn)
		})
		w.Reset(q)
	}
	d := &duplex{s: s, q: q, authed: s.authed, b: b, inMulti: s.tx == txMulti,
		done: make(chan struct{}), stopc: make(chan struct{}), verdict: make(chan *hints, 1), src: s.route,
		link: link{st: s.state, sessionState: s.sessionState}}
	d.cond = sync.NewCond(&d.mu)
	for i := range d.link.subs {
		d.link.subs[i] = make(map[string]struct{})
		d.hint.subs[i] = make(map[string]struct{})
	}
	s.duplex = d
	go d.copy()
	return d.send([]Command{cmd}, []cmdInfo{classify(cmd.Args)})
}

// handOver ends full duplex once the copier stopped at the reply that ended
// it, with every reply before it streamed: the connection goes back to the
// session (pinned if its state needs it, else to the pool) and the rest of
// the batch runs on the ordinary path.
func (d *duplex) handOver(rest []Command) error {
	s := d.s
	s.wmu.Lock()
	err := s.w.Flush()
	s.wmu.Unlock()
	if d.q != nil {
		err = errors.Join(err, d.q.drain())
		s.w.Reset(s.conn)
	}
	s.duplex = nil
	s.streaming.Store(false)
	s.srv.pinnedN.Add(-1)
	l := &d.link
	s.state, s.keyAddr = l.st, ""
	s.sessionState = l.sessionState // full duplex never ends inside MULTI (mayEnd)
	if l.reset {
		s.txState, s.resync = false, false
		s.txUser, s.txPass = "", ""
		if s.deauthAfterReset {
			s.authed, s.deauthAfterReset = false, false
		}
	}
	if err != nil {
		s.srv.pool.discard(d.b)
		return err
	}
	s.release(d.b)
	s.srv.log.Debug("full duplex ended", zap.String("client", s.conn.RemoteAddr().String()), zap.Bool("reset", l.reset))
	if len(rest) == 0 {
		return nil // (exec's own loop goes on after startDuplex: it must not run again here)
	}
	return s.exec(rest)
}

// flush sends what the session goroutine wrote.
func (d *duplex) flush() error {
	d.s.wmu.Lock()
	defer d.s.wmu.Unlock()
	return d.s.w.Flush()
}

// stop ends the copier and waits for it. A move in progress gives up, and
// a connection it has made is not installed: stop closes whatever
// connection is current.
func (d *duplex) stop() {
	d.mu.Lock()
	d.quit = true
	b := d.b
	d.cond.Broadcast()
	d.mu.Unlock()
	close(d.stopc)
	b.close()
	<-d.done
	d.mu.Lock()
	b = d.b
	d.mu.Unlock()
	d.s.srv.pool.discard(b)
	d.s.srv.pinnedN.Add(-1)
	if d.q != nil {
		d.q.close()
		<-d.q.done
	}
}

// kindOf maps (un)subscribe command names (lower case) to the index of
// their set, or -1.
func kindOf(name string) int {
	switch name {
	case "subscribe", "unsubscribe":
		return 0
	case "psubscribe", "punsubscribe":
		return 1
	case "ssubscribe", "sunsubscribe":
		return 2
	}
	return -1
}

// frameWriter takes the writer's lock at the first byte of a frame; the
// copier releases it once the frame is complete. It remembers whether
// writing to the client failed.
type frameWriter struct {
	mu     *sync.Mutex
	w      *bufio.Writer
	locked bool
	failed bool
}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.lock()
	n, err := f.w.Write(p)
	if err != nil {
		f.failed = true
	}
	return n, err
}

func (f *frameWriter) lock() {
	if !f.locked {
		f.mu.Lock()
		f.locked = true
	}
}

func (f *frameWriter) unlock() {
	if f.locked {
		f.locked = false
		f.mu.Unlock()
	}
}
