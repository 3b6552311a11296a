package proxy

import (
	"bytes"
	"net"
	"strings"
)

// The session goroutine's side of full duplex: it vets and classifies the
// client's commands, queues them in the FIFO, writes them to the server,
// and waits after a command that may end full duplex.

// forward sends a batch the client sent while full duplex.
func (d *duplex) forward(cmds []Command) error { return d.send(cmds, nil) }

// send forwards cmds in order. infos are their classifications when exec
// vetted them already; with nil, send vets each command itself. After a
// command that may end full duplex it waits for the copier's verdict; if
// full duplex ended, the rest of the batch runs on the ordinary path.
func (d *duplex) send(cmds []Command, infos []cmdInfo) error {
	s := d.s
	st := s.srv.settings()
	for i := 0; i < len(cmds); {
		d.batch = d.batch[:0]
		end := false
		for ; i < len(cmds) && !end; i++ {
			// (QUIT ends the batch too: what follows it does not run.)
			var info cmdInfo
			if infos != nil {
				info = infos[i]
				trackMulti(info.kind, &d.inMulti)
			} else {
				info = classify(cmds[i].Args)
				s.vet(&cmds[i], &info, st, &d.inMulti)
			}
			end = d.add(cmds[i], info)
		}
		quit := d.batch[len(d.batch)-1].quit
		err := d.submit()
		clear(d.batch)
		switch {
		case err != nil:
			return err
		case quit:
			<-d.done // the copier answers QUIT in its turn, then ends
			return errQuit
		case !end:
			continue
		}
		select {
		case h := <-d.verdict:
			if h != nil {
				d.hint = *h
			}
		case <-d.done:
			if d.handover {
				return d.handOver(cmds[i:])
			}
			return net.ErrClosed // the copier ended: so does the session
		}
	}
	return nil
}

// trackMulti follows MULTI through a batch vetted by exec, as vet does.
func trackMulti(kind cmdKind, inMulti *bool) {
	switch kind {
	case kindMulti:
		*inMulti = true
	case kindExec, kindDiscard, kindReset, kindAbortTx:
		*inMulti = false
	}
}

// add appends the entries of one vetted command to the batch and updates the
// hints. It reports whether the command may end full duplex.
func (d *duplex) add(cmd Command, info cmdInfo) bool {
	if d.s.srv.cl != nil && (info.kind == kindPlain || info.kind == kindBlocking || isSSubscribe(cmd.Args)) {
		if r := d.clusterRefusal(cmd.Args); r != "" {
			info = cmdInfo{kind: kindRefused, refusal: r}
		}
	}
	switch info.kind {
	case kindRefused:
		d.batch = append(d.batch, d.localError(info.refusal))
		return false
	case kindLocalOK:
		d.s.srv.m.cmdOK.Inc()
		d.batch = append(d.batch, &entry{local: okReply, set: -1})
		return false
	case kindQuit:
		// Answered by the proxy in its turn, as on the ordinary path.
		d.batch = append(d.batch, &entry{local: okReply, quit: true, set: -1})
		return true
	case kindAbortTx:
		// A command of the transaction was refused: DISCARD it on the
		// server, and answer EXEC as Redis would.
		d.batch = append(d.batch, &entry{raw: []byte(discardCmd), owned: true, op: opTxEnd, swallow: true, set: -1},
			d.localError(errExecAbort))
		return false
	}
	e := &entry{raw: cmd.Raw, info: info, op: opOf(cmd.Args, info), set: -1}
	if !d.hint.monitor && !d.hint.tracking {
		// A subscriber may move: keep what it may have to send again.
		e.raw, e.owned = bytes.Clone(cmd.Raw), true
	}
	e.again = safeToRepeat(info) || info.kind == kindReset || isPingOrEcho(cmd.Args)
	switch e.op {
	case opSelect, opAuth, opHello, opSetName:
		e.args = make([]string, len(cmd.Args))
		for i, a := range cmd.Args {
			e.args[i] = string(a)
		}
	case opSub:
		name := strings.ToLower(string(cmd.Args[0]))
		e.set, e.unsub = kindOf(name), strings.HasSuffix(name, "unsubscribe")
		e.all = e.unsub && len(cmd.Args) == 1
		for _, a := range cmd.Args[1:] {
			e.chans = append(e.chans, string(a))
		}
	}
	d.batch = append(d.batch, e)
	if d.inMulti {
		return false // queued: it changes nothing before EXEC
	}
	h := &d.hint
	// The session waits for the copier's verdict after a command that
	// starts from nothing (the one that began full duplex, say) and after
	// one that can only take something away: they may end full duplex,
	// also when Redis refused a command that the hints counted (ACL,
	// -LOADING). The verdict then mends the hints.
	wait := !h.monitor && !h.tracking && len(h.subs[0])+len(h.subs[1])+len(h.subs[2]) == 0 ||
		e.unsub || e.op == opTrackOff
	switch e.op {
	case opSub:
		set := h.subs[e.set]
		if e.all {
			clear(set)
		}
		for _, ch := range e.chans {
			if e.unsub {
				delete(set, ch)
			} else {
				set[ch] = struct{}{}
			}
		}
	case opMonitor:
		h.monitor = true
	case opTrackOn:
		h.tracking = true
	case opTrackOff:
		h.tracking = false
	case opReset:
		h.monitor, h.tracking = false, false
		for i := range h.subs {
			clear(h.subs[i])
		}
	default:
		return false
	}
	e.end = wait || e.op == opReset ||
		!h.monitor && !h.tracking && len(h.subs[0])+len(h.subs[1])+len(h.subs[2]) == 0
	return e.end
}

// localError is an entry the proxy answers with an error of its own.
func (d *duplex) localError(msg string) *entry {
	if strings.HasPrefix(msg, "NOPERM") {
		d.s.srv.m.cmdDenied.Inc()
	} else {
		d.s.srv.m.cmdProxyErr.Inc()
	}
	return &entry{local: "-" + msg + "\r\n", set: -1}
}

// opOf says what a command changes on the connection when it succeeds.
func opOf(args [][]byte, info cmdInfo) duplexOp {
	switch info.kind {
	case kindSelect:
		return opSelect
	case kindAuth:
		return opAuth
	case kindHello:
		return opHello
	case kindPin:
		if len(args) == 3 && bytes.EqualFold(args[1], []byte("setname")) {
			return opSetName
		}
		return opSticky
	case kindReset:
		return opReset
	case kindMulti:
		return opMulti
	case kindExec, kindDiscard:
		return opTxEnd
	case kindWatch:
		return opWatch
	case kindUnwatch:
		return opUnwatch
	case kindDuplex:
		switch {
		case bytes.EqualFold(args[0], []byte("monitor")):
			return opMonitor
		case bytes.EqualFold(args[0], []byte("client")):
			return opTrackOn
		}
		return opSub
	}
	if len(args) >= 3 && bytes.EqualFold(args[0], []byte("client")) &&
		bytes.EqualFold(args[1], []byte("tracking")) && bytes.EqualFold(args[2], []byte("off")) {
		return opTrackOff
	}
	return opNone
}

func isPingOrEcho(args [][]byte) bool {
	return len(args) > 0 && (bytes.EqualFold(args[0], []byte("ping")) || bytes.EqualFold(args[0], []byte("echo")))
}

// submit appends the batch to the FIFO and writes its commands to the
// connection in one write; while the copier moves the session, it waits.
// The proxy's own answers that nothing before them waits for are written at
// once. A failed write is the copier's to handle: it moves the session and
// sends again what did not go out.
func (d *duplex) submit() error {
	s := d.s
	d.mu.Lock()
	for d.moving && !d.over {
		d.cond.Wait()
	}
	if d.over {
		d.mu.Unlock()
		return net.ErrClosed
	}
	var now []*entry
	d.bufs = d.bufs[:0]
	for _, e := range d.batch {
		if e.local != "" && len(d.fifo) == 0 {
			now = append(now, e)
			continue
		}
		d.fifo = append(d.fifo, e)
		if e.local == "" {
			d.bufs = append(d.bufs, e.raw)
		}
	}
	b := d.b
	d.writing = len(d.bufs) > 0
	d.mu.Unlock()
	if len(now) > 0 {
		// Nothing is due before these: no reply can come between the
		// check above and this write.
		s.wmu.Lock()
		for _, e := range now {
			s.w.WriteString(e.local)
		}
		s.wmu.Unlock()
		if now[len(now)-1].quit {
			d.flushOut()
			return errQuit
		}
	}
	if len(d.bufs) == 0 {
		return nil
	}
	bufs := d.bufs // WriteTo consumes its receiver
	n, err := bufs.WriteTo(b.nc)
	d.mu.Lock()
	var off int64
	for _, e := range d.batch {
		if e.local != "" {
			continue
		}
		e.sent = off < n
		off += int64(len(e.raw))
		switch {
		case e.owned:
		case e.sent:
			e.raw = nil // the reader's buffer: it cannot be sent again
		default:
			e.raw, e.owned = bytes.Clone(e.raw), true
		}
	}
	d.writing = false
	d.cond.Broadcast()
	d.mu.Unlock()
	if err != nil {
		b.close() // makes sure the copier notices
	}
	return nil
}
