package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"time"
)

// A reply-order client: one raw RESP connection to the proxy (a new one
// after QUIT or a documented disconnect), random pipelines (gen), and every
// reply checked in order as it arrives (check). It never calls t.Fatal; a
// broken invariant is recorded in the run with the client's recent traffic.

// roReplyTimeout bounds the wait for one reply: longer than the hold
// timeout plus a failover, so that a timeout means a reply went missing.
const roReplyTimeout = 45 * time.Second

type roClient struct {
	run *roRun
	id  int
	rng *rand.Rand
	log roLog
	nc  net.Conn
	br  *bufio.Reader
	pno int    // pipelines sent
	cur string // the command whose reply is awaited, for the log

	// The state the proxy must keep for this client's session.
	authed     bool
	proto      int
	db         int
	name       string
	subs       []string
	tx         txState
	watchTried bool
	queued     []*roCmd // commands of the open transaction

	counters  [roDBs][roCounters]counter
	values    [roDBs][roKeys]value
	big       [roDBs]value
	xvalues   [roKeys]value   // cluster groups: the keys of the second hash tag (db 0)
	published map[string]bool // message token → delivered
	// subEpoch counts the times the client's subscriptions all ended
	// (RESET, the last UNSUBSCRIBE); deliveredIn is the epoch in which a
	// message was delivered (cluster groups: see message).
	subEpoch    int
	deliveredIn map[string]int
	nextTok     int

	commands  int64
	outcomes  [3]int64
	failures  int
	stopped   bool // a reply did not match: the model cannot go on
	nameLost  bool // reported once
	tainted   bool // an invariant broke: later failures may follow from it
	anyDB     bool // a SELECT or RESET of this pipeline may have run
	reconnect int
}

// roMismatch is a reply that breaks an invariant: the client stops.
type roMismatch struct {
	what      string
	invariant string   // "" means "every reply answers its own command"
	unack     []*roCmd // the mismatched command and those after it
}

func (m *roMismatch) Error() string { return m.what }

// mismatch describes a reply that does not fit cmd.
func (c *roClient) mismatch(cmd *roCmd, v rval, why string) error {
	return &roMismatch{what: fmt.Sprintf("reply %s to %q: %s (session: db %d, RESP%d, name %q, authed %v, transaction %s, %d subscriptions)",
		v, shortArgs(cmd.args), why, c.db, c.proto, c.name, c.authed, c.tx, len(c.subs))}
}

func (c *roClient) connect() error {
	nc, err := net.DialTimeout("tcp", c.run.addr, 5*time.Second)
	if err != nil {
		return err
	}
	c.nc, c.br = nc, bufio.NewReaderSize(nc, 64<<10)
	c.authed, c.proto, c.db, c.name, c.subs = false, 2, 0, "", nil
	c.tx, c.watchTried, c.queued = txNone, false, nil
	c.published, c.deliveredIn = map[string]bool{}, map[string]int{}
	c.log.add("connected from %s", nc.LocalAddr())
	return nil
}

// loop runs pipelines until the run's deadline or a broken invariant.
func (c *roClient) loop() {
	defer func() {
		if c.nc != nil {
			c.nc.Close()
		}
	}()
	for !c.stopped && time.Now().Before(c.run.deadline) {
		if c.nc == nil {
			if err := c.connect(); err != nil {
				c.run.fail(c, "the proxy accepts connections", err.Error())
				return
			}
		}
		cmds := c.gen()
		err := c.pipeline(cmds)
		var mm *roMismatch
		switch {
		case err == nil:
		case errors.As(err, &mm):
			// The client cannot tell what its session is in now: it
			// starts over on a new connection, the commands from the
			// mismatch on counted as "may have run", and reports what
			// breaks later as following this failure.
			inv := "every reply answers its own command"
			if mm.invariant != "" {
				inv = mm.invariant
			}
			c.run.fail(c, inv, err.Error())
			c.settleUnanswered(mm.unack)
			c.tainted = true
			c.nc.Close()
			c.nc = nil
			c.failures++
			c.stopped = c.failures >= 5
		default:
			c.disconnected(err)
		}
		if d := c.rng.Intn(20); d > 0 {
			time.Sleep(time.Duration(d) * time.Millisecond)
		}
	}
}

// checkName compares the name the server connection has with the one the
// client set. A lost name breaks no other check: it is reported once per
// client, and the client goes on with the name the server has.
func (c *roClient) checkName(cmd *roCmd, v rval, got string) {
	if got == c.name {
		return
	}
	if !c.nameLost {
		c.nameLost = true
		c.run.fail(c, "the session keeps its client name (CLIENT SETNAME)",
			fmt.Sprintf("reply %s to %q: the server connection's name is %q, want %q", v, shortArgs(cmd.args), got, c.name))
	}
	c.name = got
}

// roConnErr is a connection that ended (or went silent) before every reply
// of a pipeline arrived.
type roConnErr struct {
	err   error
	cmd   *roCmd
	quit  bool // after QUIT: expected
	unack []*roCmd
}

func (e *roConnErr) Error() string { return e.err.Error() }

// disconnected records a connection that ended and starts over on a new
// one. Commands left without a reply may have run.
func (c *roClient) disconnected(err error) {
	var ce *roConnErr
	if !errors.As(err, &ce) {
		c.run.fail(c, "the client can write its pipeline", err.Error())
		c.stopped = true
		return
	}
	c.settleUnanswered(ce.unack)
	c.nc.Close()
	c.nc = nil
	c.reconnect++
	switch {
	case ce.quit:
		return
	case (ce.cmd.kind == kGetBig || ce.cmd.kind == kEvalDeep) && errors.Is(ce.err, errPartial):
		// A large reply (a big value, Lua's 32 KB nested reply) is
		// streamed through (README, "What is supported"): a backend
		// lost in the middle of it cannot be repaired, and the client
		// is disconnected.
		c.log.add("disconnected inside a large reply (documented): %v", ce.err)
		c.run.count("documented disconnects")
		return
	case isTimeoutErr(ce.err):
		c.run.fail(c, "every command gets a reply", fmt.Sprintf("no reply to %q within %v (goroutines of the process: %s)", shortArgs(ce.cmd.args), roReplyTimeout, dumpGoroutines(c.run.seed)))
	case errors.Is(ce.err, errPartial):
		c.run.fail(c, "the proxy keeps the client connection open", fmt.Sprintf("connection ended inside the reply to %q (%v): the proxy passed part of a small reply on, then closed the client", shortArgs(ce.cmd.args), ce.err))
	default:
		c.run.fail(c, "the proxy keeps the client connection open", fmt.Sprintf("connection ended waiting for the reply to %q: %v", shortArgs(ce.cmd.args), ce.err))
	}
	c.failures++
	c.stopped = c.failures >= 5
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// pipeline sends cmds in one write and checks every reply in order.
func (c *roClient) pipeline(cmds []*roCmd) error {
	c.pno++
	c.anyDB = false
	var buf []byte
	for _, cmd := range cmds {
		buf = append(buf, encode(cmd.args...)...)
		c.log.add("p%d → %s", c.pno, shortArgs(cmd.args))
		if cmd.kind == kPublish {
			c.published[cmd.tok] = false // its message may arrive from now on
		}
	}
	c.nc.SetWriteDeadline(time.Now().Add(roReplyTimeout))
	if _, err := c.nc.Write(buf); err != nil {
		return &roConnErr{err: fmt.Errorf("write: %w", err), cmd: cmds[0], unack: cmds}
	}
	for i, cmd := range cmds {
		c.commands++
		c.cur = shortArgs(cmd.args)
		if err := c.check(cmd); err != nil {
			var ce *roConnErr
			var mm *roMismatch
			switch {
			case errors.As(err, &ce):
				ce.cmd, ce.unack = cmd, cmds[i:]
				if cmd.kind == kQuit && ce.quit {
					ce.unack = nil
				}
			case errors.As(err, &mm):
				mm.unack = cmds[i:]
			}
			return err
		}
	}
	return nil
}

// reply reads the next reply frame, taking pub/sub messages out of the way.
func (c *roClient) reply() (rval, error) {
	for {
		c.nc.SetReadDeadline(time.Now().Add(roReplyTimeout))
		v, err := readVal(c.br)
		if err != nil {
			return v, &roConnErr{err: err}
		}
		c.log.add("p%d ← %s   [%s]", c.pno, v, c.cur)
		if msg, err := c.message(v); err != nil || !msg {
			return v, err
		}
	}
}

// message handles a frame that is a pub/sub message (or another push that
// answers no command) and reports whether it was one.
func (c *roClient) message(v rval) (bool, error) {
	if v.typ != '>' && (v.typ != '*' || len(c.subs) == 0) || len(v.elems) < 3 {
		return false, nil
	}
	kind := v.elems[0].str
	if kind != "message" {
		// Other pushes answer a (UN)SUBSCRIBE; RESP2 arrays are replies.
		return false, nil
	}
	tok := v.elems[len(v.elems)-1].str
	delivered, ok := c.published[tok]
	switch {
	case !ok:
		return true, &roMismatch{what: fmt.Sprintf("message %s that this client never published", v)}
	case delivered && c.run.cluster && c.deliveredIn[tok] != c.subEpoch:
		// README, cluster groups: Redis Cluster carries a PUBLISH to the
		// other nodes over its bus. A client that subscribes again, on
		// another node (its master changed meanwhile), may get a message
		// published just before once more, as when it subscribes on
		// another node directly.
		c.run.count("messages delivered again to a new subscription (documented)")
		return true, nil
	case delivered:
		return true, &roMismatch{what: fmt.Sprintf("message %s delivered twice", v)}
	}
	c.published[tok], c.deliveredIn[tok] = true, c.subEpoch
	return true, nil
}

// check reads and checks the reply (or replies) to cmd.
func (c *roClient) check(cmd *roCmd) error {
	if cmd.kind == kWatch {
		// Whatever its reply, a WATCH may leave the next EXEC null. Set
		// here, in the order of the replies: an EXEC earlier in the
		// same pipeline clears it (soak, seed 1796387053630158413).
		c.watchTried = true
	}
	switch {
	case inTx(cmd.kind) && c.tx != txNone:
		return c.checkQueued(cmd)
	case cmd.kind == kSubscribe:
		return c.checkSubscribe(cmd)
	case cmd.kind == kUnsubscribe:
		return c.checkUnsubscribe(cmd)
	case cmd.kind == kExec:
		return c.checkExec(cmd)
	}
	v, err := c.reply()
	if err != nil {
		return err
	}
	if cmd.kind == kQuit {
		if !v.is("OK") {
			return c.mismatch(cmd, v, "QUIT is answered +OK")
		}
		c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if extra, err := readVal(c.br); err == nil {
			return c.mismatch(cmd, extra, "nothing may follow QUIT's +OK")
		} else if !errors.Is(err, io.EOF) {
			return &roConnErr{err: fmt.Errorf("after QUIT: %w", err)}
		}
		return &roConnErr{err: io.EOF, quit: true}
	}
	if !v.isErr() {
		c.outcomes[ran]++
		return c.direct(cmd, v)
	}
	switch {
	case cmd.kind == kAuthWrong && strings.HasPrefix(v.str, "WRONGPASS"):
		return nil
	case cmd.kind == kEvalDeep && deepLuaReply(v):
		return nil
	}
	if cmd.kind == kDiscard && c.tx == txUncertain && strings.Contains(v.str, "DISCARD without MULTI") {
		c.tx, c.queued, c.watchTried = txNone, nil, false // MULTI had failed: Redis's own answer
		return nil
	}
	if c.tx != txNone && c.tx != txUncertain && strings.Contains(v.str, txLostText) {
		// Inside a lost transaction every command (AUTH, HELLO, SELECT,
		// … too: Redis would have queued them) is answered so; it did
		// not run. Such an answer may be the first news of the loss
		// (an AUTH of the next pipeline, after a NOAUTH inside the
		// transaction, say: CI, seed 1796383814157076853); a wrong one
		// shows at the EXEC, which then must fail.
		c.tx = txLost
		c.outcomes[notRun]++
		return nil
	}
	if c.run.cluster {
		if done, err := c.clusterError(cmd, v); done {
			return err
		}
	}
	o, ok := c.errOutcome(v.str)
	if !ok {
		return c.mismatch(cmd, v, "an error the README does not document")
	}
	c.settle(cmd, o)
	switch {
	case cmd.kind == kMulti && o == mayRun:
		// The connection was lost with the MULTI: the proxy takes the
		// transaction as opened and lost (README, Failover). Commands
		// sent with it share its fate ("may have run"); later ones are
		// answered 'transaction was discarded' until EXEC, DISCARD or
		// RESET.
		c.tx, c.queued = txMaybeLost, nil
	case cmd.kind == kMulti:
		c.tx, c.queued = txUncertain, nil
	case cmd.kind == kDiscard:
		c.tx, c.queued, c.watchTried = txNone, nil, false
	}
	return nil
}

// direct checks the reply of a command that ran (outside a transaction, or
// as an element of EXEC's reply).
func (c *roClient) direct(cmd *roCmd, v rval) error {
	want := func(ok bool, why string) error {
		if ok {
			return nil
		}
		return c.mismatch(cmd, v, why)
	}
	switch cmd.kind {
	case kEcho, kEvalEcho:
		return want(v.isBulk() && v.str == cmd.tok, "want the token "+cmd.tok)
	case kPing:
		if c.proto == 2 && len(c.subs) > 0 {
			return want(v.isArray() && len(v.elems) == 2 && v.elems[0].str == "pong", `want ["pong", ""] (RESP2, subscribed)`)
		}
		return want(v.is("PONG"), "want +PONG")
	case kIncr, kEvalIncr:
		n, ok := v.isInt()
		if !ok {
			return c.mismatch(cmd, v, "want an integer")
		}
		if err := c.counters[c.db][cmd.idx].ack(n); err != nil {
			return c.mismatch(cmd, v, fmt.Sprintf("db %d: %v", c.db, err))
		}
		return nil
	case kSet:
		c.values[c.db][cmd.idx].ack(cmd.tok)
		return want(v.is("OK"), "want +OK")
	case kSetBig:
		c.big[c.db].ack(cmd.tok)
		return want(v.is("OK"), "want +OK")
	case kGet, kGetBig:
		st := &c.big[c.db]
		if cmd.kind == kGet {
			st = &c.values[c.db][cmd.idx]
		}
		if !v.null && !v.isBulk() {
			return c.mismatch(cmd, v, "want a bulk string or nil")
		}
		if err := st.observe(v.str, v.null); err != nil {
			return c.mismatch(cmd, v, fmt.Sprintf("db %d: %v", c.db, err))
		}
		return nil
	case kSelect:
		if c.run.cluster && cmd.idx != 0 {
			return c.mismatch(cmd, v, "want -"+selectClusterText+": a cluster group serves db 0 only")
		}
		c.db = cmd.idx
		return want(v.is("OK"), "want +OK")
	case kAuth:
		c.authed = true
		return want(v.is("OK"), "want +OK")
	case kAuthWrong:
		return c.mismatch(cmd, v, "want -WRONGPASS")
	case kHello:
		typ := byte('*')
		if cmd.idx == 3 {
			typ = '%'
		}
		if v.typ != typ || helloProto(v) != fmt.Sprint(cmd.idx) {
			return c.mismatch(cmd, v, fmt.Sprintf("want a RESP%d HELLO reply", cmd.idx))
		}
		c.proto = cmd.idx
		c.authed = c.authed || cmd.tok == "auth"
		return nil
	case kSetName:
		if !c.run.cluster { // a cluster group answers it and keeps no name
			c.name = cmd.tok
		}
		return want(v.is("OK"), "want +OK")
	case kGetName:
		if !v.null && !v.isBulk() {
			return c.mismatch(cmd, v, "want a bulk string or nil")
		}
		c.checkName(cmd, v, v.str)
		return nil
	case kClientInfo:
		f := clientInfo(v.str)
		ok := v.isBulk() && f["db"] == fmt.Sprint(c.db) && f["resp"] == fmt.Sprint(c.proto)
		if !ok {
			return c.mismatch(cmd, v, fmt.Sprintf("got db=%s name=%s resp=%s, want db=%d name=%s resp=%d (the session's state on its server connection)",
				f["db"], f["name"], f["resp"], c.db, c.name, c.proto))
		}
		if !c.run.cluster {
			c.checkName(cmd, v, f["name"])
		}
		return nil
	case kBlpopEmpty:
		return want(v.null, "want nil after the timeout")
	case kRpush:
		cmd.out = ran
		n, ok := v.isInt()
		return want(ok && n >= 1, "want the list length")
	case kBlpopList:
		if v.null {
			return want(cmd.push.out != ran, "want the element RPUSH added")
		}
		ok := v.isArray() && len(v.elems) == 2 && v.elems[1].str == cmd.tok && cmd.push.out != notRun
		return want(ok, "want [list, "+cmd.tok+"]")
	case kEvalDeep:
		return want(deepLuaReply(v), "want Redis's nested reply ending in 'reached lua stack limit'")
	case kMulti:
		c.tx, c.queued = txOpen, nil
		return want(v.is("OK"), "want +OK")
	case kWatch:
		return want(v.is("OK"), "want +OK")
	case kDiscard:
		c.tx, c.queued, c.watchTried = txNone, nil, false
		return want(v.is("OK"), "want +OK")
	case kReset:
		if len(c.subs) > 0 {
			c.subEpoch++
		}
		c.authed, c.proto, c.db, c.name, c.subs = false, 2, 0, "", nil
		c.tx, c.queued, c.watchTried = txNone, nil, false
		return want(v.is("RESET"), "want +RESET")
	case kPublish:
		// Only this client subscribes to its channels, on the connection
		// it publishes on: the message comes before the reply, or never.
		n, ok := v.isInt()
		subscribed := contains(c.subs, cmd.args[1])
		switch {
		case !ok:
			return c.mismatch(cmd, v, "want an integer")
		case c.run.cluster && subscribed:
			// The subscription may be on another node than the one
			// PUBLISH ran on (the first master changed since):
			// Redis counts that node's subscribers only, and the
			// message comes over the cluster bus, later.
			return want(n == 0 || n == 1, "want 0 or 1")
		case subscribed && n != 1:
			return c.mismatch(cmd, v, "want 1: this client is subscribed to the channel")
		case !subscribed && n != 0:
			return c.mismatch(cmd, v, "want 0: this client is not subscribed to the channel")
		case subscribed && !c.published[cmd.tok]:
			return c.mismatch(cmd, v, "the message should have arrived before the reply (same connection)")
		}
		return nil
	}
	if c.run.cluster {
		return c.directCluster(cmd, v)
	}
	return c.mismatch(cmd, v, "unexpected reply")
}
