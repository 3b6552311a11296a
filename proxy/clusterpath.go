package proxy

import (
	"bytes"
	"fmt"
	"strconv"
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
	errNoTable       = "CLUSTERDOWN sentinel-proxy has not read the cluster's command table yet (sentinel-proxy)"
	errMergeFailed   = "ERR sentinel-proxy could not merge the replies of the cluster's nodes (sentinel-proxy)"
	errNoMasters     = "CLUSTERDOWN no master of the cluster is known (sentinel-proxy)"
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
		case !txOpen && fanOut(args):
			fan = true
		default:
			p = t.Split(args, nil)
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
			err = s.scatter(&p, depth)
		}
		if err != nil {
			return err
		}
	}
	return flush(len(cmds))
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
	if prefix == nil && s.heldMulti {
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
	if s.tx != txMulti || s.pinned != nil {
		s.heldMulti, s.heldCmds, s.heldN = false, nil, 0
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

// scatter runs the sub-commands of a command split by slot and answers
// the merge of their replies.
func (s *session) scatter(p *cluster.Plan, depth int) error {
	cmds := make([]Command, len(p.Subs))
	infos := make([]cmdInfo, len(p.Subs))
	for k, sub := range p.Subs {
		cmds[k] = Command{Raw: sub.Cmd, Args: sub.Args}
		infos[k] = classify(sub.Args)
	}
	out, err := s.capture(func() error { return s.clusterForward(cmds, infos, depth) })
	if err != nil {
		return err
	}
	replies := splitFrames(out, len(cmds))
	if replies == nil {
		s.writeError(errMergeFailed)
		return nil
	}
	merged, err := p.Merge(replies)
	if err != nil {
		s.writeError(errMergeFailed)
		return nil
	}
	s.writeRaw(merged)
	return nil
}

// splitFrames cuts out into n reply frames; nil if it does not hold n.
func splitFrames(out []byte, n int) [][]byte {
	frames := make([][]byte, 0, n)
	for len(out) > 0 {
		l, err := cluster.FrameLen(out)
		if err != nil {
			return nil
		}
		frames = append(frames, out[:l])
		out = out[l:]
	}
	if len(frames) != n {
		return nil
	}
	return frames
}

// fanOut reports whether args is a keyspace-wide command the proxy sends
// to every master (or, SCAN, to the master its cursor names).
func fanOut(args [][]byte) bool {
	var buf [16]byte
	name := lower(buf[:0], args[0])
	switch string(name) {
	case "keys", "dbsize", "flushall", "flushdb", "randomkey":
		return true
	case "scan":
		return len(args) >= 2
	case "info":
		return len(args) == 2 && bytes.EqualFold(args[1], []byte("keyspace"))
	case "script":
		return len(args) >= 2 && (bytes.EqualFold(args[1], []byte("load")) || bytes.EqualFold(args[1], []byte("flush")))
	}
	return false
}

// fanOut runs a keyspace-wide command on the masters and answers the
// merge of their replies.
func (s *session) fanOut(cmd Command, info cmdInfo, depth int) error {
	masters := *s.srv.cl.masters.Load()
	if len(masters) == 0 {
		s.writeError(errNoMasters)
		return nil
	}
	var buf [16]byte
	name := string(lower(buf[:0], cmd.Args[0]))
	on := func(addr string, c Command) ([]byte, error) {
		src := &sourceBox{MasterSource: &fixedNode{r: s.srv.cl.router, addr: addr}}
		return s.capture(func() error { return s.runOn(src, nil, []Command{c}, []cmdInfo{info}, depth) })
	}
	if name == "scan" {
		shard, node, err := cluster.DecodeCursor(cmd.Args[1], len(masters))
		if err != nil {
			s.writeError("ERR invalid cursor")
			return nil
		}
		args := append([][]byte{cmd.Args[0], strconv.AppendUint(nil, node, 10)}, cmd.Args[2:]...)
		reply, err := on(masters[shard], Command{Raw: appendArgs(nil, args), Args: args})
		if err != nil {
			return err
		}
		if out, merr := cluster.ScanReply(shard, len(masters), reply); merr == nil {
			s.writeRaw(out)
		} else {
			s.writeError(errMergeFailed)
		}
		return nil
	}
	replies := make([][]byte, len(masters))
	for k, addr := range masters {
		reply, err := on(addr, cmd)
		if err != nil {
			return err
		}
		replies[k] = reply
	}
	var out []byte
	var err error
	switch name {
	case "keys":
		out, err = cluster.MergeKeys(replies)
	case "dbsize":
		out, err = cluster.MergeDBSize(replies)
	case "flushall", "flushdb":
		out, err = cluster.MergeFlush(replies)
	case "randomkey":
		out, err = cluster.MergeRandomKey(replies, max(s.state.proto, 2))
	case "info":
		out, err = cluster.MergeInfoKeyspace(replies)
	default: // SCRIPT LOAD, SCRIPT FLUSH: the same answer from every master
		out = replies[0]
		for _, r := range replies {
			if len(r) > 0 && r[0] == '-' {
				out = r
				break
			}
		}
	}
	if err != nil || out == nil {
		s.writeError(errMergeFailed)
		return nil
	}
	s.writeRaw(out)
	return nil
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

const errDuplexOtherMaster = "ERR in a cluster group, a subscribed or tracking connection only takes keys of its own master's slots; use another connection for this key (sentinel-proxy)"

// clusterRefusal returns the error for a command sent on a cluster
// session's full-duplex connection that it cannot carry: one whose keys
// are served by another master than the connection's, or span slots.
// "" when the connection can carry it.
func (d *duplex) clusterRefusal(args [][]byte) string {
	c := d.s.srv.cl
	t := c.table.Load()
	if t == nil {
		return ""
	}
	p := (*t).Split(args, nil)
	switch {
	case p.Kind == cluster.Scatter || p.Kind == cluster.Refuse:
		return cluster.CrossSlotError
	case p.Kind != cluster.Single || p.Slot < 0:
		return ""
	}
	src := d.src
	if src == nil {
		src = d.s.srv.source()
	}
	own, _ := src.Master()
	if addr, ok := c.router.Lookup(p.Slot); ok && addr != own {
		return errDuplexOtherMaster
	}
	return ""
}
