package proxy

// The session's state beyond what a pool key carries (connState: user, db,
// protocol) is one value, sessionState: where its transaction stands and why
// it keeps one backend connection. Every change to it goes through the
// methods below, and the way a batch travels follows from it in one place
// (path). Full duplex's link keeps a sessionState of its own, of what its
// connection's replies showed, and hands it back when full duplex ends.

// txPhase is where the session's transaction stands.
type txPhase uint8

const (
	txNone  txPhase = iota
	txWatch         // WATCH ran on the pinned connection
	txMulti         // MULTI is open on the pinned connection (after a WATCH or not)
	txLost          // the connection of an open MULTI was lost: the proxy answers the rest of it until EXEC, DISCARD or RESET
)

// pinSet holds the reasons a session keeps one backend connection.
type pinSet uint8

const (
	pinTx     pinSet = 1 << iota // WATCH or MULTI (follows txPhase)
	pinName                      // CLIENT SETNAME or HELLO … SETNAME: replayed on a new connection
	pinClient                    // CLIENT ID, NO-EVICT or CACHING: until RESET or the connection's loss
)

// sessionState is the transaction and the pin reasons of a session (or of
// a full-duplex connection).
type sessionState struct {
	tx txPhase
	// watchLost: the connection of a WATCH was lost. The keys may have
	// changed unseen, so the next EXEC fails as when a watched key was
	// touched (a null reply); DISCARD, UNWATCH and RESET forget it. Never
	// set with txLost, whose EXEC or DISCARD ends every watch too.
	watchLost bool
	pins      pinSet // pinName and pinClient; pinTx is derived from tx
	name      string // the client name, replayed on a new connection
}

// pinReasons returns why the session needs one connection (none: it may
// take any connection in its pool key's state).
func (st *sessionState) pinReasons() pinSet {
	p := st.pins
	if st.tx == txWatch || st.tx == txMulti {
		p |= pinTx
	}
	return p
}

// needsPin reports whether the state lives on one connection.
func (st *sessionState) needsPin() bool { return st.pinReasons() != 0 }

// txBroken reports whether a connection loss broke the transaction: some
// of the next commands are answered by the proxy (interceptTx).
func (st *sessionState) txBroken() bool { return st.tx == txLost || st.watchLost }

// setName records the client name ("" clears it, as in Redis).
func (st *sessionState) setName(name string) {
	st.name = name
	if name != "" {
		st.pins |= pinName
	} else {
		st.pins &^= pinName
	}
}

// stick records CLIENT ID, NO-EVICT or CACHING: the connection is kept.
func (st *sessionState) stick() { st.pins |= pinClient }

// multi records a MULTI the server accepted.
func (st *sessionState) multi() { st.tx = txMulti }

// watch records a WATCH the server accepted (only outside MULTI).
func (st *sessionState) watch() {
	if st.tx == txNone {
		st.tx = txWatch
	}
}

// unwatch records UNWATCH: watches end, an open MULTI stays.
func (st *sessionState) unwatch() {
	if st.tx == txWatch {
		st.tx = txNone
	}
}

// txEnd records EXEC or DISCARD on the connection: MULTI and WATCH end.
func (st *sessionState) txEnd() {
	if st.tx != txLost {
		st.tx = txNone
	}
}

// reset records RESET: nothing is left of the transaction, the name or the
// pins.
func (st *sessionState) reset() { *st = sessionState{} }

// connLost records the loss of the connection that held the state: an open
// MULTI is lost with it, a WATCH leaves its next EXEC to fail, the client
// name stays (it is replayed) and the other pins go.
func (st *sessionState) connLost() {
	switch st.tx {
	case txMulti:
		st.tx, st.watchLost = txLost, false
	case txWatch:
		st.tx, st.watchLost = txNone, true
	}
	st.pins &^= pinClient
}

// settle brings the transaction up to date with a command answered "may
// have run" after its connection was lost (connLost has run). Whether it
// ran or not, the client's view is that an EXEC, DISCARD or RESET closed
// the transaction, and that a MULTI opened one, which the lost connection
// took with it: the rest of it is answered as lost.
func (st *sessionState) settle(kind cmdKind) {
	switch kind {
	case kindMulti:
		st.tx, st.watchLost = txLost, false
	case kindExec, kindDiscard, kindReset:
		st.tx, st.watchLost = txNone, false
	case kindWatch:
		st.watchLost = st.tx != txLost
	case kindUnwatch:
		st.watchLost = false
	}
}

// path is how a session's next batch travels.
type path uint8

const (
	pathShared path = iota // a shared connection (if its commands may share: mayShare)
	pathPool               // a pooled connection, for this batch only
	pathPinned             // the session's own connection (pinned, or pinned by this batch)
	pathDuplex             // the full-duplex connection
)

// path returns how the session's next batch travels, from its state alone.
func (s *session) path() path {
	switch {
	case s.duplex != nil:
		return pathDuplex
	case s.pinned != nil || s.needsPin():
		return pathPinned
	case s.srv.shared == nil || s.noShare || s.txBroken():
		// A broken transaction's commands are answered one by one
		// (answerLost), on connections of their own.
		return pathPool
	}
	return pathShared
}

// endTx forgets an open transaction and the state commands queued in it.
func (s *session) endTx() {
	s.txEnd()
	s.txState, s.txUser, s.txPass = false, "", ""
}
