package proxy

import (
	"errors"
	"maps"
	"runtime/debug"

	"go.uber.org/zap"
)

// The copier: it streams the server's frames to the client, matches replies
// to the FIFO of commands, records what they changed, and stops at the
// frame that ends full duplex.

var (
	// errResubscribe ends a session whose new master refused its
	// subscriptions.
	errResubscribe = errors.New("the new master refused the resubscription")
	// errMoveAgain: the new master is not ready (-LOADING, -MASTERDOWN):
	// the session moves again shortly.
	errMoveAgain = errors.New("the new master is not ready")
)

// maxMovesAgain bounds the moves in a row to a master that is not ready.
const maxMovesAgain = 50

// copy streams frames from the server to the client until the client
// fails, the connection is lost and cannot be replaced, stop closes it, or
// full duplex ends (the connection then stays open for the session).
func (d *duplex) copy() {
	s := d.s
	defer close(d.done)
	fw := frameWriter{mu: &s.wmu, w: s.w}
	k := &sink{d: d, fw: &fw}
	d.mu.Lock()
	b := d.b
	d.mu.Unlock()
	defer func() {
		// As for the session goroutine (recoverPanic): only this client
		// is closed. Where the copier holds d.mu and could panic, a
		// deferred Unlock releases it; the frame's s.wmu is released here.
		if r := recover(); r != nil {
			fw.unlock()
			s.srv.m.panics.Inc()
			s.srv.m.disconnects.WithLabelValues(reasonPanic).Inc()
			s.srv.log.Error("full-duplex copier panicked; closing its client",
				zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			d.end(b)
		}
	}()
	again := 0 // moves in a row to a master that was not ready
	for {
		k.reset()
		k.from = b.addr
		f, err := b.fr.Next(k)
		if err == nil {
			err = k.finish()
		}
		fw.unlock() // before d.mu: see the lock order on duplex
		lost := err != nil && !fw.failed
		if err == nil {
			err = d.frame(b, k, f)
		}
		if err == nil && b.fr.Buffered() == 0 {
			s.wmu.Lock()
			if err = s.w.Flush(); err != nil {
				fw.failed = true
			}
			s.wmu.Unlock()
		}
		switch {
		case err == nil:
			if k.role == roleReply || k.role == roleConfirm {
				again = 0
			}
			continue
		case errors.Is(err, errHandover):
			return
		case errors.Is(err, errQuitAnswered):
			d.quitEnd(b)
			return
		case errors.Is(err, errMoveAgain) && again < maxMovesAgain:
			again++
			lost = true
		case errors.Is(err, errResubscribe), errors.Is(err, errMoveAgain):
			s.srv.log.Info("closing a subscriber: the new master refused its subscriptions",
				zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()))
		}
		// A frame cut in the middle leaves the client's stream broken.
		if !lost || k.wrote || d.stopping() {
			d.end(b)
			return
		}
		next, err := d.move(b, err)
		if next != nil {
			b = next
		}
		switch {
		case errors.Is(err, errHandover):
			return
		case errors.Is(err, errQuitAnswered):
			d.quitEnd(b)
			return
		case next == nil || err != nil:
			d.end(b)
			return
		}
	}
}

// stopping reports whether the end of the connection is expected.
func (d *duplex) stopping() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.quit
}

// quitEnd closes both sides once what was written to the client, QUIT's
// +OK last, has been sent.
func (d *duplex) quitEnd(b *backend) {
	d.flushOut()
	d.end(b)
}

// flushOut sends what was written to the client, through the output queue
// if there is one, which it closes.
func (d *duplex) flushOut() {
	d.s.wmu.Lock()
	d.s.w.Flush()
	d.s.wmu.Unlock()
	if d.q != nil {
		d.q.drain()
	}
}

// end closes both sides.
func (d *duplex) end(b *backend) {
	d.mu.Lock()
	d.over, d.moving = true, false
	d.cond.Broadcast()
	d.mu.Unlock()
	d.s.srv.pool.discard(b)
	if d.q != nil {
		d.q.close()
	}
	hangUp(d.s.conn)
}

// frameRole is what a frame from the server is to the FIFO.
type frameRole uint8

const (
	rolePush    frameRole = iota // a message, invalidation or MONITOR line: answers no command
	roleReply                    // answers the command at the head of the FIFO
	roleConfirm                  // confirms one channel of an (un)subscribe
	roleAttr                     // a RESP3 attribute: it belongs to the reply after it
)

type sinkMode uint8

const (
	undecided sinkMode = iota
	staging            // kept until complete, then passed on whole
	passing            // to the client as it arrives
	holding            // kept whole: a confirmation, decoded once complete
	dropping           // the reply to a command the proxy sent itself
)

// stageLimit is the largest frame the copier keeps until it is complete
// before it passes it on: a connection cut inside such a frame leaves the
// client's stream whole, and the session can move. Longer frames (and
// confirmations, which are always kept) stream through.
const stageLimit = 16 << 10

// sink receives one frame from the framer. It keeps the first bytes until
// they tell what the frame is, then passes the frame on, keeps it whole (a
// confirmation, which may be dropped: however long its channel name, it is
// read in full) or drops it.
type sink struct {
	d     *duplex
	fw    *frameWriter
	mode  sinkMode
	role  frameRole
	head  []byte // the frame so far, while undecided or staging
	held  []byte
	wrote bool   // bytes of this frame went to the client
	from  string // the node the frames come from
}

func (k *sink) reset() {
	k.mode, k.role, k.wrote = undecided, rolePush, false
	if cap(k.head) > 4*stageLimit {
		k.head = nil // a long channel name: do not keep its buffer
	}
	if cap(k.held) > 4*stageLimit {
		k.held = nil
	}
	k.head, k.held = k.head[:0], k.held[:0]
}

func (k *sink) Write(p []byte) (int, error) {
	switch k.mode {
	case passing:
		k.wrote = true
		return k.fw.Write(p)
	case holding:
		k.held = append(k.held, p...)
		return len(p), nil
	case dropping:
		return len(p), nil
	}
	k.head = append(k.head, p...)
	if k.mode == undecided {
		role, ok := k.d.classify(k.head, false)
		if !ok {
			return len(p), nil
		}
		k.decide(role)
	}
	if k.mode == staging && len(k.head) > stageLimit {
		if err := k.pass(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// finish completes the frame: it decides one that ended before its first
// bytes could tell, and passes a staged one on.
func (k *sink) finish() error {
	if k.mode == undecided {
		role, _ := k.d.classify(k.head, true)
		k.decide(role)
	}
	if k.mode == staging {
		if k.role == roleReply && k.d.s.srv.cl != nil {
			k.head = k.d.clusterReply(k.head, k.from)
		}
		return k.pass()
	}
	return nil
}

func (k *sink) decide(role frameRole) {
	k.role = role
	switch {
	case role == roleConfirm:
		k.mode = holding
		k.held, k.head = k.head, k.held[:0]
	case role == roleReply && k.d.headSwallowed():
		k.mode = dropping
	default:
		k.mode = staging
	}
}

// pass sends what is staged and streams the rest of the frame.
func (k *sink) pass() error {
	k.mode, k.wrote = passing, true
	_, err := k.fw.Write(k.head)
	return err
}

// classify tells from the first bytes of a frame what it is. ok is false
// while more bytes are needed (never when complete is set).
func (d *duplex) classify(h []byte, complete bool) (role frameRole, ok bool) {
	l := &d.link
	if len(h) == 0 {
		return roleReply, complete
	}
	switch h[0] {
	case '|':
		return roleAttr, true
	case '+':
		if !l.monitor {
			return roleReply, true
		}
		if len(h) < 2 {
			return roleReply, complete
		}
		// A MONITOR line: "+<unix time> [<db> <addr>] ...". No status
		// reply starts with a digit.
		if '0' <= h[1] && h[1] <= '9' {
			return rolePush, true
		}
		return roleReply, true
	case '>', '*':
	default:
		return roleReply, true
	}
	name, known := firstName(h)
	if !known && !complete {
		return roleReply, false
	}
	switch {
	case h[0] == '>' && isConfirmName(name):
		return roleConfirm, true
	case h[0] == '>':
		return rolePush, true
	case l.st.proto == 3:
		return roleReply, true
	}
	// RESP2: messages and confirmations are arrays too. A subscribed
	// connection answers nothing else with one that starts like them, and
	// an unsubscribed one receives no message.
	subscribed := l.unsure || len(l.subs[0])+len(l.subs[1])+len(l.subs[2]) > 0
	switch {
	case isMessageName(name) && subscribed:
		return rolePush, true
	case isConfirmName(name) && (subscribed || d.headIsSub()):
		return roleConfirm, true
	}
	return roleReply, true
}

func (d *duplex) headSwallowed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.fifo) > 0 && d.fifo[0].swallow
}

func (d *duplex) headIsSub() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.fifo) > 0 && d.fifo[0].set >= 0
}

// frame accounts for a complete frame.
func (d *duplex) frame(b *backend, k *sink, f Frame) error {
	switch k.role {
	case roleReply:
		return d.reply(b, f)
	case roleConfirm:
		return d.confirm(b, k.held)
	}
	return nil
}

// reply completes the entry at the head of the FIFO with f.
func (d *duplex) reply(b *backend, f Frame) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.fifo) == 0 {
		return nil // answers nothing the proxy knows of: passed on as it came
	}
	e := d.fifo[0]
	failed := f.IsError()
	if e.swallow && e.set >= 0 && failed {
		if isRetryable(f.Small) {
			return errMoveAgain
		}
		return errResubscribe
	}
	d.apply(e, failed)
	return d.pop(b)
}

// confirm records a confirmation and passes it on, unless it confirms the
// proxy's own resubscription.
func (d *duplex) confirm(b *backend, frame []byte) error {
	set, unsub, ch, ok := parseConfirmation(frame)
	if !ok {
		return d.write(frame) // not one after all
	}
	l := &d.link
	switch {
	case !unsub:
		l.subs[set][string(ch)] = struct{}{}
	case ch != nil:
		delete(l.subs[set], string(ch))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var e *entry
	if len(d.fifo) > 0 && d.fifo[0].set == set && d.fifo[0].unsub == unsub && l.tx != txMulti {
		e = d.fifo[0]
	}
	if e == nil || !e.swallow {
		if err := d.write(frame); err != nil {
			return err
		}
	}
	if e == nil {
		return nil // unsolicited (a shard channel's slot moved): passed on
	}
	if len(e.chans) > 0 {
		e.chans = e.chans[1:]
	}
	if e.all && len(l.subs[set]) > 0 || !e.all && len(e.chans) > 0 {
		return nil
	}
	return d.pop(b)
}

// pop removes the answered head of the FIFO, then answers the proxy's own
// replies that waited behind it. d.mu is held.
func (d *duplex) pop(b *backend) error {
	if err := d.drop(b); err != nil {
		return err
	}
	return d.settle(b)
}

// settle answers the proxy's own replies at the head of the FIFO. d.mu is
// held.
func (d *duplex) settle(b *backend) error {
	for len(d.fifo) > 0 && d.fifo[0].local != "" {
		if err := d.write([]byte(d.fifo[0].local)); err != nil {
			return err
		}
		if d.fifo[0].quit {
			return errQuitAnswered
		}
		if err := d.drop(b); err != nil {
			return err
		}
	}
	return nil
}

// drop removes the head of the FIFO. When it may have ended full duplex,
// drop decides: errHandover, or a verdict for the waiting session.
func (d *duplex) drop(b *backend) error {
	e := d.fifo[0]
	d.fifo[0] = nil
	d.fifo = d.fifo[1:]
	if !e.end {
		return nil
	}
	if d.endable(b) {
		d.handover = true
		return errHandover
	}
	var h *hints // nil: not known (state changed inside a transaction)
	if !d.link.unsure {
		h = &hints{monitor: d.link.monitor, tracking: d.link.tracking}
		for i, set := range d.link.subs {
			h.subs[i] = maps.Clone(set)
		}
	}
	select {
	case <-d.verdict: // (a verdict nobody waited for: the session ended its wait)
	default:
	}
	d.verdict <- h
	return nil
}

// endable reports whether nothing keeps the connection full duplex: every
// command answered, no subscription, MONITOR, tracking or transaction, and
// nothing more from the server. d.mu is held.
func (d *duplex) endable(b *backend) bool {
	l := &d.link
	return len(d.fifo) == 0 && !l.monitor && !l.tracking && l.tx != txMulti && !l.unsure &&
		len(l.subs[0])+len(l.subs[1])+len(l.subs[2]) == 0 && b.fr.Buffered() == 0
}

// write passes a whole frame to the client.
func (d *duplex) write(frame []byte) error {
	d.s.wmu.Lock()
	defer d.s.wmu.Unlock()
	_, err := d.s.w.Write(frame)
	return err
}
