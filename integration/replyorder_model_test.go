package integration

import (
	"fmt"
	"strings"
)

// The reply-order test's model of what each client may see. A client
// checks every reply against the state its session must have (db,
// protocol, name, authentication, transaction, subscriptions) and against
// what it wrote before (per-client counters and values), as the replies
// arrive, in order.
//
// "Did it run?" has three answers, from the reply alone:
//   - ran: a normal reply;
//   - notRun: an error that says the command did not run: -MASTERDOWN (no
//     master within the hold), -LOADING and -READONLY passed on after the
//     hold (the shim answers those without forwarding the command),
//     "could not send … it did not run", -NOAUTH (or Redis's "Protocol
//     error: unauthenticated bulk length") before AUTH;
//   - mayRun: "… may have run" (-ERR and -UNBLOCKED), for a command whose
//     connection was lost after it was written.
//
// A may-have-run write can take effect later than its answer only when
// the server was frozen (SIGSTOP, CLIENT PAUSE) with it unread in a
// socket; the fault injector never cuts connections in those windows, so
// the model takes the writes of one client to run in the order they were
// sent.

type roOutcome int

const (
	ran roOutcome = iota
	notRun
	mayRun
)

func (o roOutcome) String() string { return [...]string{"ran", "did not run", "may have run"}[o] }

// The proxy's own texts, from proxy/failover.go (errTxLost, errExecTx).
const (
	txLostText   = "the open transaction was discarded"
	execLostText = "EXECABORT Transaction discarded because the connection to the master was lost"
)

// errOutcome classifies an error reply that any command may get (README,
// "Failover"); ok is false for an error the README does not document.
func (c *roClient) errOutcome(text string) (roOutcome, bool) {
	switch {
	case strings.Contains(text, "may have run"):
		return mayRun, true
	case strings.HasPrefix(text, "MASTERDOWN "), strings.HasPrefix(text, "LOADING "),
		strings.HasPrefix(text, "READONLY "), strings.Contains(text, "it did not run"):
		return notRun, true
	case strings.HasPrefix(text, "NOAUTH") && !c.authed,
		strings.HasPrefix(text, "ERR Protocol error: unauthenticated") && !c.authed:
		// (Redis's answer to an argument over 16 KiB before AUTH, as
		// direct: it then closes its connection.)
		return notRun, true
	case c.proto == 2 && len(c.subs) > 0 && strings.Contains(text, "allowed in this context"):
		return notRun, true // a command the generator thought was outside subscribed mode
	case c.run.cluster && strings.HasPrefix(text, "UNBLOCKED force unblock"):
		// Redis's own answer to a command blocked on a master that is
		// demoted (it took nothing, and Redis closes the connection).
		// The proxy sends such a command again; should it pass the
		// error on, the client sees what it would see from Redis. Counted
		// so that a run shows how often.
		c.run.count("UNBLOCKED passed on")
		return notRun, true
	case c.run.cluster && strings.Contains(text, "a subscribed or tracking connection only takes keys of its own master's slots"):
		// README, cluster groups: a key of another master than the
		// subscribed connection's (the generator cannot tell which).
		return notRun, true
	}
	return notRun, false
}

// counter is one per-client INCR counter in one db.
type counter struct {
	last    int64 // value of the last acknowledged INCR (0 before any)
	acked   int64 // acknowledged increments
	may     int64 // increments answered "may have run", in all
	mayLast int64 // of those, the ones since the last acknowledged one
}

// ack checks the value an acknowledged INCR returned: above the last one,
// and by at most one more than the increments that may have run since.
func (k *counter) ack(v int64) error {
	if v <= k.last || v > k.last+1+k.mayLast {
		return fmt.Errorf("INCR returned %d after %d (with %d increments since that may have run): want %d..%d", v, k.last, k.mayLast, k.last+1, k.last+1+k.mayLast)
	}
	k.last, k.mayLast = v, 0
	k.acked++
	return nil
}

func (k *counter) maybe() { k.may++; k.mayLast++ }

// check checks a value read back at the end.
func (k *counter) check(v int64) error {
	if v < k.last || v > k.last+k.mayLast || v < k.acked || v > k.acked+k.may {
		return fmt.Errorf("counter is %d: want %d..%d (last acknowledged INCR returned %d, %d since may have run; %d acknowledged and %d may have run in all)",
			v, k.last, k.last+k.mayLast, k.last, k.mayLast, k.acked, k.may)
	}
	return nil
}

// value is one per-client key written with SET: the last acknowledged
// value, and the values written since by SETs answered "may have run".
type value struct {
	has bool
	val string
	may []string
}

func (s *value) ack(v string) { s.has, s.val, s.may = true, v, nil }

func (s *value) maybe(v string) { s.may = append(s.may, v) }

// observe checks a value read (GET) and narrows the candidates: what was
// read is what the key holds now.
func (s *value) observe(got string, null bool) error {
	if null && !s.has || !null && s.has && got == s.val {
		s.may = nil
		return nil
	}
	if !null {
		for _, m := range s.may {
			if m == got {
				s.ack(got)
				return nil
			}
		}
	}
	want := "(nil)"
	if s.has {
		want = s.describe(s.val)
	}
	var mays []string
	for _, m := range s.may {
		mays = append(mays, s.describe(m))
	}
	if null {
		got = "(nil)"
	} else {
		got = s.describe(got)
	}
	return fmt.Errorf("read %s, want %s (last acknowledged SET) or one of %v (SETs since that may have run)", got, want, mays)
}

func (s *value) describe(v string) string {
	if len(v) > 40 {
		return fmt.Sprintf("%q…(%d bytes)", v[:24], len(v))
	}
	return fmt.Sprintf("%q", v)
}

// bigValue builds a large value that starts with its token.
func bigValue(tok string, size int) string {
	return tok + ":" + strings.Repeat("v", size)
}

// txState is where a client's MULTI stands, as its replies tell.
type txState int

const (
	txNone      txState = iota
	txOpen              // MULTI answered +OK
	txBroken            // a command of the open transaction was not queued
	txLost              // the proxy said the transaction was discarded
	txUncertain         // MULTI answered with an error: maybe no transaction
	txMaybeLost         // MULTI may have run: the proxy takes the transaction as lost
)

func (t txState) String() string {
	return [...]string{"none", "open", "broken (a command was not queued)", "lost (the proxy discarded it)", "uncertain (MULTI failed)", "maybe lost (MULTI may have run)"}[t]
}

// clientInfo returns the fields of a CLIENT INFO reply.
func clientInfo(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// helloProto returns the "proto" field of a HELLO reply (a map in RESP3,
// a flat array in RESP2).
func helloProto(v rval) string {
	for i := 0; i+1 < len(v.elems); i += 2 {
		if v.elems[i].str == "proto" {
			return v.elems[i+1].str
		}
	}
	return ""
}

// deepLuaReply reports whether v is the reply Redis gives to a Lua table
// that holds itself: one-element arrays nested thousands deep, ending in
// "-ERR reached lua stack limit".
func deepLuaReply(v rval) bool {
	depth := 0
	for v.typ == '*' && len(v.elems) == 1 {
		v = v.elems[0]
		depth++
	}
	return depth > 100 && v.isErr() && strings.Contains(v.str, "lua stack limit")
}

// isConfirmation reports whether v confirms a (un)subscription of kind
// ("subscribe", "unsubscribe"): ["subscribe", channel, count], as an array
// (RESP2) or a push (RESP3).
func isConfirmation(v rval, kind string) bool {
	return (v.typ == '*' || v.typ == '>') && len(v.elems) == 3 && v.elems[0].str == kind
}

// checkQueued checks the reply to a command sent while a transaction is
// open (or may be).
func (c *roClient) checkQueued(cmd *roCmd) error {
	v, err := c.reply()
	if err != nil {
		return err
	}
	lost := v.isErr() && strings.Contains(v.str, txLostText)
	o, documented := notRun, false
	if v.isErr() && !lost {
		o, documented = c.errOutcome(v.str)
		if !documented && c.run.cluster && isRedirect(v.str) {
			// README: inside MULTI a redirect is passed on, and the
			// transaction fails at EXEC.
			o, documented = notRun, true
			c.run.count("redirects inside MULTI (documented)")
		}
	}
	switch {
	case v.is("QUEUED") && c.tx != txLost:
		c.queued = append(c.queued, cmd)
	case lost && c.tx != txUncertain:
		c.tx = txLost
	case documented && c.tx != txLost:
		if c.tx == txOpen {
			c.tx = txBroken
		}
		if o == mayRun {
			c.queued = append(c.queued, cmd) // runs if EXEC does
		}
	case c.tx == txUncertain && !v.isErr():
		// MULTI failed, so this ran on its own, as it would on Redis.
		return c.direct(cmd, v)
	case c.tx == txOpen || c.tx == txBroken:
		return c.mismatch(cmd, v, "want +QUEUED or an error: a command of an open transaction must not run outside it")
	default:
		return c.mismatch(cmd, v, "want the proxy's 'transaction was discarded' error")
	}
	return nil
}

// checkExec checks EXEC's reply against the commands it queued.
func (c *roClient) checkExec(cmd *roCmd) error {
	v, err := c.reply()
	if err != nil {
		return err
	}
	tx, queued, watched := c.tx, c.queued, c.watchTried
	c.tx, c.queued, c.watchTried = txNone, nil, false
	switch {
	case v.isArray():
		if tx != txOpen && tx != txUncertain || len(v.elems) != len(queued) {
			return c.mismatch(cmd, v, fmt.Sprintf("EXEC ran %d results for %d queued commands (transaction state %d)", len(v.elems), len(queued), tx))
		}
		c.outcomes[ran]++
		for i, q := range queued {
			if v.elems[i].isErr() {
				return c.mismatch(q, v.elems[i], "an error inside EXEC")
			}
			if err := c.direct(q, v.elems[i]); err != nil {
				return err
			}
		}
		return nil
	case v.null:
		if !watched {
			return c.mismatch(cmd, v, "a null EXEC without WATCH")
		}
		c.outcomes[notRun]++
		return nil
	case !v.isErr():
		return c.mismatch(cmd, v, "want EXEC's array, nil or an error")
	case strings.HasPrefix(v.str, "EXECABORT"):
		c.outcomes[notRun]++
		return nil
	case strings.Contains(v.str, "EXEC without MULTI"):
		if tx != txUncertain {
			return c.mismatch(cmd, v, "the transaction was lost silently: want -EXECABORT (README, Failover)")
		}
		c.outcomes[notRun]++
		return nil
	}
	if c.run.cluster && isRedirect(v.str) {
		// Redis Cluster refuses EXEC itself with a redirect when the
		// slot moved or the cluster went down meanwhile, and discards
		// the transaction; inside MULTI the proxy passes redirects on.
		c.run.count("redirects inside MULTI (documented)")
		c.outcomes[notRun]++
		return nil
	}
	o, ok := c.errOutcome(v.str)
	if !ok {
		return c.mismatch(cmd, v, "an error the README does not document for EXEC")
	}
	c.outcomes[o]++
	if o == mayRun {
		for _, q := range queued {
			c.settle(q, mayRun)
		}
	}
	return nil
}

// checkSubscribe checks one confirmation per channel, or one error.
func (c *roClient) checkSubscribe(cmd *roCmd) error {
	for i, ch := range cmd.chans {
		v, err := c.reply()
		if err != nil {
			return err
		}
		if i == 0 && v.isErr() {
			o, ok := c.errOutcome(v.str)
			if !ok {
				return c.mismatch(cmd, v, "an error the README does not document for SUBSCRIBE")
			}
			c.outcomes[o]++
			return nil
		}
		want := len(c.subs)
		if !contains(c.subs, ch) {
			want++
		}
		if !isConfirmation(v, "subscribe") || v.elems[1].str != ch {
			return c.mismatch(cmd, v, fmt.Sprintf("want [subscribe %s %d]", ch, want))
		}
		if n, _ := v.elems[2].isInt(); n != int64(want) {
			return c.mismatch(cmd, v, fmt.Sprintf("want [subscribe %s %d]", ch, want))
		}
		if !contains(c.subs, ch) {
			c.subs = append(c.subs, ch)
		}
	}
	c.outcomes[ran]++
	return nil
}

// checkUnsubscribe checks the confirmations of UNSUBSCRIBE [channel]: one
// per channel left (in any order), or one with a nil channel when none.
func (c *roClient) checkUnsubscribe(cmd *roCmd) error {
	left := append([]string(nil), c.subs...)
	frames := max(1, len(left))
	if cmd.chans != nil {
		frames = 1
	}
	for i := range frames {
		v, err := c.reply()
		if err != nil {
			return err
		}
		if i == 0 && v.isErr() {
			o, ok := c.errOutcome(v.str)
			if !ok {
				return c.mismatch(cmd, v, "an error the README does not document for UNSUBSCRIBE")
			}
			c.outcomes[o]++
			return nil
		}
		if !isConfirmation(v, "unsubscribe") {
			return c.mismatch(cmd, v, "want an unsubscribe confirmation")
		}
		ch, null := v.elems[1].str, v.elems[1].null
		n, _ := v.elems[2].isInt()
		switch {
		case cmd.chans != nil && ch != cmd.chans[0]:
			return c.mismatch(cmd, v, "want the channel "+cmd.chans[0])
		case cmd.chans == nil && len(c.subs) == 0 && !null:
			return c.mismatch(cmd, v, "want a nil channel: none was subscribed")
		case cmd.chans == nil && len(c.subs) > 0 && !contains(left, ch):
			return c.mismatch(cmd, v, fmt.Sprintf("want one of %v", left))
		}
		if i := indexOf(left, ch); i >= 0 {
			left = append(left[:i], left[i+1:]...)
		}
		if n != int64(len(left)) {
			return c.mismatch(cmd, v, fmt.Sprintf("want %d subscriptions left", len(left)))
		}
	}
	if len(c.subs) > 0 && len(left) == 0 {
		c.subEpoch++
	}
	c.subs = left
	c.outcomes[ran]++
	return nil
}

func indexOf(list []string, s string) int {
	for i, e := range list {
		if e == s {
			return i
		}
	}
	return -1
}

// settle records the effect of a write whose reply said it did not run or
// may have run.
func (c *roClient) settle(cmd *roCmd, o roOutcome) {
	c.outcomes[o]++
	if o == mayRun {
		for db := range roDBs {
			if db == c.db || c.anyDB {
				c.maybe(cmd, db)
			}
		}
		// A SELECT or RESET that may have run changed nothing for the
		// session (the proxy keeps the db it knew), but the writes sent
		// after it on the lost connection may have run in the new db.
		c.anyDB = c.anyDB || cmd.kind == kSelect || cmd.kind == kReset
	}
	switch cmd.kind {
	case kRpush:
		cmd.out = o
	case kMsetFresh:
		cmd.out = mayRun // split: part of it may have run, whatever the error says
	case kMsetX:
		if o == notRun {
			c.maybe(cmd, c.db) // split: part of it may have run
		}
	}
}

// maybe records that a write may have run in db.
func (c *roClient) maybe(cmd *roCmd, db int) {
	switch cmd.kind {
	case kIncr, kEvalIncr:
		c.counters[db][cmd.idx].maybe()
	case kSet:
		c.values[db][cmd.idx].maybe(cmd.tok)
	case kSetBig:
		c.big[db].maybe(cmd.tok)
	case kMsetX:
		c.values[db][cmd.idx].maybe(cmd.tok)
		c.xvalues[cmd.idx2].maybe(cmd.tok2)
	}
}

// settleUnanswered records the commands of a pipeline left without a
// reply (the connection ended, or a reply did not fit) as "may have run".
// After an unanswered SELECT or RESET the db they ran in is unknown: they
// may have run in any. An unanswered EXEC may have run the commands it
// had queued.
func (c *roClient) settleUnanswered(cmds []*roCmd) {
	anyDB := false
	for _, cmd := range cmds {
		c.outcomes[mayRun]++
		switch cmd.kind {
		case kSelect, kReset:
			anyDB = true
		case kExec:
			for _, q := range c.queued {
				c.maybe(q, c.db)
			}
			c.queued = nil
		case kRpush, kMsetFresh:
			cmd.out = mayRun
		}
		for db := range roDBs {
			if db == c.db || anyDB || c.anyDB {
				c.maybe(cmd, db)
			}
		}
	}
}
