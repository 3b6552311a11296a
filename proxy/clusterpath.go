package proxy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// A cluster group's sessions: each command goes to the master of its keys'
// slot. Consecutive commands for one master go together, in one write, as
// a run; a command whose keys span slots is split (MGET, MSET, DEL, UNLINK,
// EXISTS, TOUCH) or refused with -CROSSSLOT; the keyspace-wide commands go
// to every master and their replies are merged. A transaction stays in the
// slot of its first key.

const (
	errSelectCluster = "ERR SELECT is not allowed in cluster mode"
	errNoTable       = "MASTERDOWN sentinel-proxy has not read the cluster's command table yet; it did not run (sentinel-proxy)"
	errMergeFailed   = "ERR sentinel-proxy could not merge the replies of the cluster's nodes (sentinel-proxy)"
	errNoMasters     = "MASTERDOWN no master of the cluster is known; it did not run (sentinel-proxy)"
	multiCmd         = "*1\r\n$5\r\nMULTI\r\n"
	emptyExec        = "*0\r\n"
	queuedReply      = "+QUEUED\r\n"
)

// send forwards a run of commands: to the master of a Sentinel group, or
// by slot to the masters of a cluster.
func (s *session) send(cmds []Command, infos []cmdInfo) error {
	if s.srv.cl == nil {
		return s.forward(cmds, infos)
	}
	return s.clusterForward(cmds, infos, 0)
}

// clusterTable returns the command table, waiting for the first fetch up
// to the batch's hold deadline; nil if it has not come.
func (s *session) clusterTable() cluster.Table {
	c := s.srv.cl
	if t := c.table.Load(); t != nil {
		return *t
	}
	t := time.NewTimer(time.Until(s.holdDeadline()))
	defer t.Stop()
	select {
	case <-c.ready:
		return *c.table.Load()
	case <-t.C:
		return nil
	}
}

// clusterForward sends cmds, in order, to the masters of their slots.
// depth counts the redirects that led here.
func (s *session) clusterForward(cmds []Command, infos []cmdInfo, depth int) error {
	t := s.clusterTable()
	if t == nil {
		for range cmds {
			s.writeError(errNoTable)
		}
		return nil
	}
	if depth == 0 && s.tx == txNone && !s.heldMulti {
		s.txSlot, s.txCross = -1, false
	}
	router := s.srv.cl.router
	s.plans = s.plans[:0]
	if len(cmds) > 2 {
		if done, err := s.byMaster(t, cmds, infos, depth); done {
			return err
		}
	}
	// The plans byMaster made; the session's slice is left to the calls
	// this one makes (redirects, splits), and given back at the end.
	plans := s.plans
	s.plans = nil
	defer func() { s.plans = plans[:0] }()
	start, runSlot, runAddr := 0, -1, ""
	flush := func(end int) error {
		var err error
		if end > start {
			err = s.runOn(s.slotRoute(runSlot), nil, cmds[start:end], infos[start:end], depth)
		}
		start, runSlot, runAddr = end, -1, ""
		return err
	}
	// What the batch does to the transaction, as planned so far: a WATCH
	// or MULTI ahead in the batch has not run yet when a later command is
	// planned.
	txOpen := s.tx == txWatch || s.tx == txMulti || s.heldMulti
	inMulti := s.tx == txMulti || s.heldMulti
	for i := range cmds {
		args, kind := cmds[i].Args, infos[i].kind
		if s.txBroken() && s.interceptTx(kind) {
			// A run before this one lost the connection of the
			// transaction or of its WATCH: answered as a Sentinel
			// group's session answers it in its next batch.
			if err := flush(i); err != nil {
				return err
			}
			start = i + 1
			if err := s.answerLostClusterTx(cmds[i], kind); err != nil {
				return err
			}
			if endsTx(kind) {
				txOpen, inMulti, s.txSlot = false, false, -1
			}
			continue
		}
		if kind == kindReset {
			// Whatever a held MULTI was waiting for, RESET ends it.
			if err := flush(i); err != nil {
				return err
			}
			s.dropHeld()
		}
		local := "" // an answer of the proxy's own
		heldErr := ""
		var p cluster.Plan
		fan := false
		switch {
		case kind == kindMulti && !txOpen && s.pinned == nil:
			local = "multi"
		case kind == kindMulti && s.heldMulti && start == i:
			local, heldErr = "held error", errNestedMulti
		case kind == kindExec && s.txCross:
			local = "abort"
		case kind == kindDiscard && s.heldMulti && start == i,
			kind == kindExec && s.heldMulti && start == i && s.heldN == 0:
			local = "empty"
		case !txOpen && isFanOut(args):
			fan = true
		default:
			if i < len(plans) {
				p = plans[i] // byMaster planned it already
			} else {
				p = t.Split(args, nil)
			}
			if p.Kind == cluster.Unresolved {
				// Unknown to the table (an unknown command, say): any
				// master answers it, and a -MOVED is followed.
				p = cluster.Plan{Kind: cluster.Single, Slot: -1}
			}
			if s.heldMulti && start == i && p.Kind == cluster.Single && p.Slot < 0 {
				switch queue, msg := heldVerdict(t, args, kind); {
				case queue:
					local = "queue"
				case msg != "":
					local, heldErr = "held error", msg
				}
			}
		}
		switch kind {
		case kindWatch:
			txOpen = true
		case kindMulti:
			txOpen, inMulti = true, true
		case kindExec, kindDiscard, kindReset:
			txOpen, inMulti = false, false
		case kindUnwatch:
			if !inMulti {
				txOpen = false
			}
		}
		if local == "" && !fan && p.Kind == cluster.Single && p.Slot >= 0 && txOpen {
			switch {
			case s.txSlot < 0:
				s.txSlot = p.Slot
			case s.txSlot != p.Slot:
				p = cluster.Plan{Kind: cluster.Refuse, Reply: []byte("-" + cluster.CrossSlotError + "\r\n")}
				if inMulti {
					s.txCross = true
				}
			}
		}
		if local == "" && !fan && p.Kind == cluster.Scatter && txOpen {
			p = cluster.Plan{Kind: cluster.Refuse, Reply: []byte("-" + cluster.CrossSlotError + "\r\n")}
		}
		if local == "" && !fan && p.Kind == cluster.Single {
			if kind == kindWatch {
				// A WATCH is a run of its own: the transaction after it
				// goes where the WATCH ran, after a redirect too. In a
				// run with what follows it, a -MOVED WATCH would be sent
				// again after its MULTI and EXEC had run on the old node.
				if err := flush(i); err != nil {
					return err
				}
			}
			if p.Slot >= 0 {
				addr, ok := router.Lookup(p.Slot)
				if runSlot >= 0 && (!ok || addr != runAddr) {
					if err := flush(i); err != nil {
						return err
					}
				}
				if runSlot < 0 {
					runSlot, runAddr = p.Slot, addr
				}
			}
			if !txOpen && (kind == kindExec || kind == kindDiscard || kind == kindUnwatch) {
				s.txSlot = -1 // for the commands after it; its run keeps its slot
			}
			if kind == kindWatch {
				if err := flush(i + 1); err != nil {
					return err
				}
			}
			continue
		}
		if err := flush(i); err != nil {
			return err
		}
		start = i + 1
		var err error
		switch {
		case local == "multi":
			s.multi()
			s.heldMulti, s.txSlot = true, -1
			s.writeRaw([]byte(okReply))
		case local == "queue":
			// A command without keys inside a held MULTI: queued with
			// it, until a key shows which master the transaction is for.
			s.heldCmds = append(s.heldCmds, cmds[i].Raw...)
			s.heldN++
			s.writeRaw([]byte(queuedReply))
		case local == "held error":
			// What Redis answers at once inside MULTI; all but a nested
			// MULTI make the EXEC fail.
			s.writeError(heldErr)
			if heldErr != errNestedMulti {
				s.txCross = true
			}
		case local == "abort":
			s.dropHeld()
			s.abortTx()
		case local == "empty":
			s.dropHeld()
			s.endTx()
			if kind == kindExec {
				s.writeRaw([]byte(emptyExec))
			} else {
				s.writeRaw([]byte(okReply))
			}
		case fan:
			err = s.fanOut(cmds[i], infos[i], depth)
		case p.Kind == cluster.Refuse:
			s.srv.m.cmdProxyErr.Inc()
			s.writeRaw(p.Reply)
		case p.Kind == cluster.Scatter:
			sp := p // escapes: a copy, so that p itself stays on the stack
			err = s.scatter(&sp, depth)
		}
		if err != nil {
			return err
		}
	}
	return flush(len(cmds))
}

// answerLostClusterTx is answerLostTx, for a MULTI the proxy still holds
// too: nothing of it reached Redis, and its EXEC after a lost WATCH fails.
func (s *session) answerLostClusterTx(cmd Command, kind cmdKind) error {
	if !s.heldMulti || kind != kindExec {
		return s.answerLostTx(cmd, kind)
	}
	s.dropHeld()
	s.watchLost = false
	s.endTx()
	s.writeRaw([]byte(nullReply(s.state.proto)))
	return nil
}

// answerRefusedTx answers the EXEC or DISCARD of a run whose held MULTI
// Redis refused: Redis answers it "without MULTI", but the client was told
// +OK for the MULTI, and saw the errors of the commands after it, so its
// EXEC fails as after any error while queuing, and DISCARD succeeds.
func (s *session) answerRefusedTx(b *backend, kind cmdKind) error {
	// Nothing of this reply is held: replies reads rw's frame state
	// after each command (CI, seed 1796385588149005044: a -LOADING left
	// held by an earlier retry was passed on again here).
	s.rw.frame()
	if _, err := s.skipReply(b); err != nil {
		return err
	}
	s.multiRefused = false
	s.dropHeld()
	s.endTx()
	s.srv.m.countReply(cmdInfo{kind: kind}, kind == kindExec, time.Since(s.batchStart).Seconds())
	if kind == kindExec {
		s.writeError(errExecAbort)
	} else {
		s.writeRaw([]byte(okReply))
	}
	return nil
}

// endsTx reports whether a command of kind ends a transaction (MULTI and
// WATCH both) for the client, whatever its reply.
func endsTx(kind cmdKind) bool {
	return kind == kindExec || kind == kindDiscard || kind == kindReset
}

// dropHeld forgets a held MULTI and what was queued with it.
func (s *session) dropHeld() {
	s.heldMulti, s.heldCmds, s.heldN, s.txCross, s.txSlot = false, nil, 0, false, -1
}

const errNestedMulti = "ERR MULTI calls can not be nested"

// heldVerdict says how a command without keys is answered inside a held
// MULTI: queued with it and answered +QUEUED (a plain command Redis knows,
// with a number of arguments it accepts), answered at once with msg, Redis's
// own error for an unknown command or a wrong number of arguments, or
// neither: sent at once, with the MULTI, to the first master.
func heldVerdict(t cluster.Table, args [][]byte, kind cmdKind) (queue bool, msg string) {
	if kind != kindPlain && kind != kindBlocking {
		return false, ""
	}
	c := t.Lookup(args)
	if c == nil {
		return false, unknownCommand(args)
	}
	if n := len(args); c.Arity > 0 && n != c.Arity || c.Arity < 0 && n < -c.Arity {
		return false, "ERR wrong number of arguments for '" + c.Name + "' command"
	}
	return true, ""
}

// unknownCommand is Redis's error for a command it does not know
// (processCommand in server.c).
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	for _, a := range args[1:] {
		if b.Len() >= 128 {
			break
		}
		fmt.Fprintf(&b, "'%s' ", a[:min(len(a), 128-b.Len())])
	}
	name := args[0][:min(len(args[0]), 128)]
	msg := fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", name, b.String())
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
}

// slotRoute returns the source of a run for slot (-1: no key).
func (s *session) slotRoute(slot int) *sourceBox {
	if slot < 0 {
		if s.txSlot >= 0 {
			slot = s.txSlot
		} else {
			return s.srv.source()
		}
	}
	// One per session, reused run after run: a run's source is not used
	// once the run is answered.
	sc := s.batchScratch
	sc.slotSrc = slotMaster{r: s.srv.cl.router, slot: slot}
	sc.slotBox = sourceBox{MasterSource: &sc.slotSrc}
	return &sc.slotBox
}

// runOn forwards a run of commands to the master src names (with prefix,
// a command of the proxy's own whose reply is dropped, first), then
// follows the redirects among its replies.
func (s *session) runOn(src *sourceBox, prefix []byte, cmds []Command, infos []cmdInfo, depth int) error {
	carried := prefix == nil && s.heldMulti
	if carried {
		// The held MULTI and the commands queued with it go first.
		prefix = append([]byte(multiCmd), s.heldCmds...)
		s.prefixN = 1 + s.heldN
	}
	if addr, _ := src.Master(); addr != "" {
		s.srv.cl.countFor(s.srv.m, addr).Add(float64(len(cmds)))
	}
	savedRoute, savedDefer := s.route, s.deferred
	s.route, s.prefix, s.deferred = src, prefix, nil
	err := s.forward(cmds, infos)
	d := s.deferred
	s.route, s.prefix, s.prefixN, s.deferred = savedRoute, nil, 0, savedDefer
	if s.multiRefused {
		// Redis refused the MULTI (-NOAUTH, say): the connection holds
		// no transaction, and what was sent with it was not queued.
		// The MULTI is held again, to go with the next command that
		// has keys, and its EXEC fails (the client saw the errors).
		s.multiRefused = false
		if b := s.pinned; b != nil {
			s.srv.pool.discard(b)
			s.setPinned(nil)
		}
		if s.tx == txMulti {
			s.heldMulti, s.heldCmds, s.heldN, s.txCross = true, nil, 0, true
		}
	}
	switch {
	case s.tx != txMulti || s.pinned != nil:
		s.heldMulti, s.heldCmds, s.heldN = false, nil, 0
	case carried && s.heldMulti:
		// Nothing of the run reached Redis: every command of it was
		// answered that it did not run (no master within the hold
		// timeout, say). An EXEC or DISCARD among them ended the
		// transaction for the client; else the MULTI stays held, and its
		// EXEC fails as after any error while queuing.
		if slices.ContainsFunc(infos, func(in cmdInfo) bool { return endsTx(in.kind) }) {
			s.dropHeld()
			s.endTx()
		} else {
			s.txCross = true
		}
	}
	if err != nil {
		if d != nil {
			d.w.Flush()
			s.w = d.real
		}
		return err
	}
	return s.followRedirects(d, cmds, infos, depth)
}

// routeDuplex sends a cluster session's SSUBSCRIBE to the master of its
// channels' slot; the connection follows that slot's master from then on.
// Other commands that start full duplex go to the first master.
func (s *session) routeDuplex(cmd Command) {
	t := s.clusterTable()
	if t == nil {
		return
	}
	if chans, ok := t.ShardChannels(cmd.Args); ok && len(chans) > 0 {
		s.route = &sourceBox{MasterSource: &slotMaster{r: s.srv.cl.router, slot: int(cluster.Slot(chans[0]))}}
	}
}
