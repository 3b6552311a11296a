package proxy

import (
	"bufio"
	"errors"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
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

	state connState

	*batchScratch // nil while parked

	sessionState // transaction, client name, pin reasons (sessionstate.go)

	pinned   *backend    // dedicated connection while the state needs one
	duplex   *duplex     // set once the session streams (pub/sub, MONITOR, tracking)
	shared   *sharedConn // the shared connection last used; dropped when idle
	shareIdx int         // which of a state's shared connections the session uses

	txUser   string // credentials of an AUTH queued in MULTI
	txPass   string
	clientID int64 // CLIENT ID's answer on the pinned connection

	idleSince atomic.Int64 // when the session began waiting for its client (UnixNano); 0 while busy, idleSwept once the sweep ended the wait

	// For the timeouts in Server.sweepIdle, read from its goroutine.
	born       int64        // when the client connected (UnixNano)
	lastActive atomic.Int64 // end of the last batch (UnixNano)
	started    atomic.Bool  // a first complete command arrived
	busy       atomic.Bool  // a batch is running
	streaming  atomic.Bool  // full duplex: never idle
	killed     atomic.Bool
	parkable   bool // the connection can be parked (has a descriptor; not TLS)

	// The flags last, together: a parked session's struct is what an idle
	// client costs, and padding between them would add to it.
	txState          bool // a state command (SELECT, AUTH, HELLO, …) is queued in MULTI
	resync           bool // state commands ran inside EXEC: ask the server
	noShare          bool // its replies were large: it does not share any more (shareMaxReply)
	authed           bool // proxy-terminated auth passed
	deauthAfterReset bool // RESET forwarded: authenticate again after it
	txRefused        bool // a command of the open MULTI was refused
	ended            bool // end ran: the server has forgotten the session

	*clusterTx // a cluster group's sessions only (nil for a Sentinel group)
}

// clusterTx is where a cluster session's transaction stands beyond
// sessionState: MULTI is held (answered, not yet sent) until the first
// command shows its slot; txSlot is the slot of its keys (-1 none yet);
// txCross marks a MULTI with a command refused as -CROSSSLOT: its EXEC
// aborts.
type clusterTx struct {
	heldMulti bool
	heldCmds  []byte // commands without keys queued with the held MULTI
	heldN     int
	txSlot    int
	txCross   bool
	// multiRefused marks a run whose held MULTI Redis refused (-NOAUTH,
	// say): the connection holds no transaction (answerRefusedTx, runOn).
	multiRefused bool
}

// batchScratch is what a session uses only while it runs batches; a parked
// session gives it back (scratchPool), so that it does not count per idle
// client.
type batchScratch struct {
	key        poolKey // pool key of state on keyAddr, cached
	keyAddr    string
	batchStart time.Time
	holdUntil  time.Time // end of the batch's wait for a master; zero until it first waits

	infos   []cmdInfo
	bufs    net.Buffers
	rw      replyWriter
	pending []pendingReply

	route    *sourceBox     // a cluster run's master (nil: the group's source)
	prefix   []byte         // commands of the proxy's own sent before the run (ASKING, MULTI)
	prefixN  int            // how many replies prefix has (0: one)
	deferred *deferral      // replies held back after a cluster redirect
	plans    []cluster.Plan // the plans byMaster made of a pipeline's first commands
	addrs    []string       // byMaster's masters of those commands
	slotSrc  slotMaster     // the source of the current cluster run (slotRoute)
	slotBox  sourceBox
	// gathering: byMaster is taking the replies of runs it wrote ahead on
	// shared connections; nothing else may go on one meanwhile.
	gathering bool
}

var scratchPool = sync.Pool{New: func() any { return new(batchScratch) }}

func newSession(srv *Server, nc net.Conn) *session {
	s := &session{srv: srv, conn: nc, state: cleanState, born: time.Now().UnixNano(), shareIdx: int(srv.accepted.Load())}
	if srv.cl != nil {
		s.clusterTx = &clusterTx{txSlot: -1}
	}
	_, s.parkable = nc.(syscall.Conn)
	s.lastActive.Store(s.born)
	s.rd = newClientReader(nc, srv.bufs, srv.settings().Limits)
	return s
}

// kill closes an idle client for reason (idle or handshake timeout). The
// session notices (EOF) on its goroutine, or when the parker resumes it.
func (s *session) kill(reason string) {
	if !s.killed.CompareAndSwap(false, true) {
		return
	}
	s.srv.m.disconnects.WithLabelValues(reason).Inc()
	if tc, ok := s.conn.(*net.TCPConn); ok {
		tc.CloseRead()
		return
	}
	s.conn.Close()
}

// setPinned records whether the session holds a pinned connection.
func (s *session) setPinned(b *backend) {
	switch {
	case s.pinned == nil && b != nil:
		s.srv.pinnedN.Add(1)
	case s.pinned != nil && b == nil:
		s.srv.pinnedN.Add(-1)
		s.clientID = 0
	}
	s.pinned = b
}

// errQuit ends a session after QUIT was answered.
var errQuit = errors.New("quit")

// parkAfter is how long a session waits for its client's next command on
// its own goroutine before it hands the connection to the parker. The
// server's sweep (Server.sweepIdle) ends such waits with a read deadline in
// the past, so the hot path sets no deadline of its own.
const parkAfter = 50 * time.Millisecond

// idleSwept marks, in session.idleSince, a wait the sweep has ended.
const idleSwept = -1

// drainQuiet is how long a draining session waits for more of a pipeline
// before it closes.
const drainQuiet = 100 * time.Millisecond

// park hands the idle session to the parker, dropping what an idle session
// need not keep. It reports whether the parker took it.
func (s *session) park() bool {
	s.rd.cmds, s.rd.args, s.shared = nil, nil, nil
	if sc := s.batchScratch; sc != nil {
		s.batchScratch = nil
		*sc = batchScratch{}
		scratchPool.Put(sc)
	}
	return s.srv.parker.park(s)
}

// stopReading makes the session end once its current batch is answered: a
// read deadline in the past fails the next read, while a batch already read
// still runs to completion. Safe from any goroutine.
func (s *session) stopReading() { s.conn.SetReadDeadline(time.Unix(1, 0)) }

// end closes the session and tells the server it is gone.
func (s *session) end() {
	if s.ended {
		return
	}
	s.ended = true
	s.close()
	s.srv.sessionEnded(s)
}

// recoverPanic confines a panic to the session that raised it: the stack is
// logged once, the panic counted, and only this client is closed. Everyone
// else goes on being served.
func (s *session) recoverPanic() {
	r := recover()
	if r == nil {
		return
	}
	s.srv.m.panics.Inc()
	s.srv.m.disconnects.WithLabelValues(reasonPanic).Inc()
	s.srv.log.Error("session panicked; closing its client",
		zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()),
		zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
	if s.ended {
		return
	}
	// What the session held may be half updated: close the client first,
	// so that nothing more is written to it, then let go of the rest.
	s.conn.Close()
	s.ended = true
	defer s.srv.sessionEnded(s)
	defer func() {
		if recover() != nil {
			s.srv.log.Error("closing a panicked session panicked too", zap.String("group", s.srv.opts.Name))
		}
	}()
	s.close()
}

// close releases everything the session holds.
func (s *session) close() {
	if s.duplex != nil {
		s.duplex.stop()
		s.duplex = nil
	}
	if s.pinned != nil {
		s.srv.pool.discard(s.pinned)
		s.setPinned(nil)
	}
	s.conn.Close()
	s.rd.release()
	s.releaseWriter()
}

// exec runs one batch. It splits it where the proxy must answer a command
// itself or where the connection turns full duplex, and forwards each run
// of commands in one write.
func (s *session) exec(cmds []Command) error {
	s.holdUntil = time.Time{}
	if s.pinned != nil {
		s.checkPinned() // decide before classifying: a lost MULTI changes what runs
	}
	s.infos = s.infos[:0]
	st := s.srv.settings()
	if st.Auth != nil && s.authed && s.pinned == nil && s.duplex == nil {
		// Backend credentials changed by a reload apply from the next
		// command (the rotated password on the data nodes, say).
		if ns := st.Auth.backendState(s.state); ns != s.state {
			s.state, s.keyAddr = ns, ""
		}
	}
	inMulti := s.tx == txMulti
	var memo batchMemo
	for i := range cmds {
		info, ok := memo.get(cmds[i].Args)
		if !ok {
			info = classify(cmds[i].Args)
			s.vet(&cmds[i], &info, st, &inMulti)
			memo.put(cmds[i].Args, info, st.Policy)
		}
		s.infos = append(s.infos, info)
	}
	s.batchStart = time.Now()
	start := 0
	for i := 0; i < len(cmds); i++ {
		info := s.infos[i]
		local := info.kind == kindQuit || info.kind == kindRefused || info.kind == kindLocalOK || info.kind == kindAbortTx ||
			s.txBroken() && s.interceptTx(info.kind)
		if !local && info.kind != kindDuplex {
			continue
		}
		if i > start {
			if err := s.send(cmds[start:i], s.infos[start:i]); err != nil {
				return err
			}
		}
		start = i + 1
		switch {
		case info.kind == kindDuplex:
			if s.srv.cl != nil {
				s.routeDuplex(cmds[i])
			}
			err := s.startDuplex(cmds[i])
			s.route = nil
			if err != nil {
				return err
			}
			if s.duplex == nil {
				// No connection could be had (it answered an error), or
				// the command ended full duplex at once.
				continue
			}
			// The rest of the batch (vetted above) is streamed as well.
			return s.duplex.send(cmds[i+1:], s.infos[i+1:])
		case info.kind == kindQuit:
			s.writeRaw([]byte("+OK\r\n"))
			s.flush()
			return errQuit
		case info.kind == kindRefused:
			s.writeError(info.refusal)
		case info.kind == kindLocalOK:
			s.writeRaw([]byte(okReply))
			s.srv.m.cmdOK.Inc()
		case info.kind == kindAbortTx:
			s.abortTx()
		default:
			if err := s.answerLostTx(cmds[i], info.kind); err != nil {
				return err
			}
		}
	}
	if start < len(cmds) {
		return s.send(cmds[start:], s.infos[start:])
	}
	return nil
}

// forward sends commands in one write and streams their replies back.
// Errors that concern only these commands are answered to the client with
// error replies; a returned error ends the session.
func (s *session) forward(cmds []Command, infos []cmdInfo) error {
	if s.prefix == nil && s.mayShare(cmds, infos) {
		return s.forwardShared(cmds, infos)
	}
	b, err := s.acquire()
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
	prefix := s.prefix
	if prefix == nil && infos[0].wait && s.path() != pathPinned {
		prefix = []byte(pingCmd)
	}
	hidden := prefix != nil
	if hidden {
		send = append([]Command{{Raw: prefix}}, cmds...)
	}
	n, err := s.write(b, send)
	for try := 0; err != nil && n == 0 && try < 3; try++ {
		// Nothing reached the server: the connection was closed under us
		// (the master changed, or died and its other idle connections are
		// dead too: failed drops them all). Safe to send again, unless
		// the connection carried a transaction these commands belong to.
		s.failed(b)
		if s.txBroken() {
			// The prefix (a cluster's held MULTI, ASKING) went with
			// the connection: what answerLost sends on, after an
			// EXEC or DISCARD it answered, goes without it.
			s.prefix, s.prefixN = nil, 0
			return s.answerLost(cmds, infos)
		}
		if b, err = s.acquire(); err != nil {
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
		s.answerMayHaveRun(infos)
		return nil
	}
	for k := 0; hidden && k < max(s.prefixN, 1); k++ {
		refused, err := s.skipReply(b)
		if err != nil {
			s.failed(b)
			s.answerMayHaveRun(infos)
			return nil
		}
		if k == 0 && refused && s.prefixN > 0 {
			s.multiRefused = true // Redis refused a cluster's held MULTI (runOn)
		}
	}
	return s.replies(b, cmds, infos)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
