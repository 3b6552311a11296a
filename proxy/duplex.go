package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// duplex streams a pinned connection in both directions at once. Pub/Sub,
// MONITOR and client-side caching make the server send frames that answer
// no command, so replies can no longer be matched to commands: the session
// goroutine forwards the client's commands while a copier goroutine streams
// every frame from the server to the client.
//
// The client writer is shared: the copier takes s.wmu for the whole of a
// frame (from its first byte to its last), the session goroutine for each
// error reply it writes itself.
//
// When the server connection is lost (the master changed, or Sentinel
// killed pub/sub clients while reconfiguring), a session that only
// subscribed is subscribed again on the current master to the same
// channels, patterns and shard channels, and the confirmations are not
// passed on: the client does not notice. MONITOR and CLIENT TRACKING cannot
// be moved (what the server tracked is gone), so those clients are
// disconnected and reconnect as they would after a server restart.
//
// The copier exits when the client fails, when a lost connection cannot be
// replaced, or when stop closes the connection.
type duplex struct {
	s     *session
	state connState // the session's state when it went full duplex
	name  string
	done  chan struct{}
	quit  atomic.Bool

	mu       sync.Mutex // guards b and subs
	b        *backend
	subs     [3]map[string]struct{} // channels, patterns, shard channels
	movable  bool                   // false after MONITOR or CLIENT TRACKING
	quitSent bool                   // QUIT was forwarded: the end is expected

	q *outQueue // between the client writer and the client, with an output limit; nil without
}

// startDuplex pins a connection, forwards cmd (the command that makes the
// connection full duplex) and starts the copier.
func (s *session) startDuplex(cmd Command) error {
	b, err := s.acquire()
	if err != nil {
		s.writeError(s.acquireErrorText(err))
		return nil
	}
	s.setPinned(nil) // the duplex owns it from now on
	s.srv.pinnedN.Add(1)
	s.streaming.Store(true)
	w := s.out() // the session keeps this writer from now on
	var q *outQueue
	if limit := s.srv.settings().OutputLimit; limit > 0 {
		q = newOutQueue(s.conn, limit, func() {
			s.srv.m.disconnects.WithLabelValues(reasonOutputLimit).Inc()
			s.srv.log.Info("client output limit reached: disconnecting a subscriber that does not read",
				zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()), zap.Int64("limit", limit))
			s.conn.Close()
		})
		w.Reset(q)
	}
	d := &duplex{s: s, state: s.state, name: s.name, b: b, movable: true, done: make(chan struct{}), q: q}
	for i := range d.subs {
		d.subs[i] = make(map[string]struct{})
	}
	s.duplex = d
	go d.copy()
	return d.forward([]Command{cmd})
}

// forward writes cmds to the server, recording subscriptions. Commands the
// proxy refuses are answered at once.
func (d *duplex) forward(cmds []Command) error {
	s := d.s
	s.bufs = s.bufs[:0]
	d.mu.Lock()
	policy := s.srv.settings().Policy
	for i := range cmds {
		info := classify(cmds[i].Args)
		if r := policy.refusal(cmds[i].Args); r != "" {
			info = cmdInfo{kind: kindRefused, refusal: r}
		} else if info.kind == kindClientKill {
			info = cmdInfo{kind: kindRefused, refusal: errClientKill}
		}
		if info.kind == kindRefused {
			d.mu.Unlock()
			s.wmu.Lock()
			s.writeError(info.refusal)
			err := s.w.Flush()
			s.wmu.Unlock()
			if err != nil {
				return err
			}
			d.mu.Lock()
			continue
		}
		d.record(cmds[i].Args, info.kind)
		s.bufs = append(s.bufs, cmds[i].Raw)
	}
	b := d.b
	d.mu.Unlock()
	if len(s.bufs) == 0 {
		return nil
	}
	bufs := s.bufs
	if _, err := bufs.WriteTo(b.nc); err != nil {
		d.mu.Lock()
		moved := d.b != b || d.movable
		d.mu.Unlock()
		if moved {
			// The copier is moving the subscriptions, which already
			// include these commands.
			return nil
		}
		return errors.Join(errors.New("write to master"), err)
	}
	return nil
}

// record notes what a command does to the subscriptions. d.mu is held.
func (d *duplex) record(args [][]byte, kind cmdKind) {
	name := strings.ToLower(string(args[0]))
	switch {
	case kindOf(name) >= 0 && strings.HasSuffix(name, "unsubscribe"):
		set := d.subs[kindOf(name)]
		if len(args) == 1 {
			clear(set)
		}
		for _, a := range args[1:] {
			delete(set, string(a))
		}
	case kindOf(name) >= 0:
		for _, a := range args[1:] {
			d.subs[kindOf(name)][string(a)] = struct{}{}
		}
	case name == "monitor" || kind == kindDuplex:
		d.movable = false // MONITOR, CLIENT TRACKING ON
	case name == "reset":
		for i := range d.subs {
			clear(d.subs[i])
		}
		d.movable = true
	case name == "quit":
		d.quitSent = true
	}
}

// kindOf maps (un)subscribe command names to the index of their set in
// duplex.subs, or -1.
func kindOf(name string) int {
	switch strings.TrimPrefix(name, "un") {
	case "subscribe":
		return 0
	case "psubscribe":
		return 1
	case "ssubscribe":
		return 2
	}
	return -1
}

// copy streams frames from the server to the client until either fails.
func (d *duplex) copy() {
	s := d.s
	defer close(d.done)
	fw := frameWriter{mu: &s.wmu, w: s.w}
	swallow := 0 // subscription confirmations to drop after a move
	var scratch bytes.Buffer
	d.mu.Lock()
	b := d.b
	d.mu.Unlock()
	for {
		var err error
		if swallow > 0 {
			scratch.Reset()
			var f Frame
			if f, err = b.fr.Next(&scratch); err == nil {
				if isSubscribeConfirmation(f.Small) {
					swallow--
				} else {
					_, err = fw.Write(scratch.Bytes())
				}
			}
		} else {
			_, err = b.fr.Next(&fw)
		}
		if err == nil && b.fr.Buffered() == 0 {
			fw.lock()
			if err = s.w.Flush(); err != nil {
				fw.failed = true
			}
		}
		fw.unlock()
		if err == nil {
			continue
		}
		if d.quit.Load() || fw.failed {
			d.end(b)
			return
		}
		next, n := d.move(b, err)
		if next == nil {
			d.end(b)
			return
		}
		b, swallow = next, n
	}
}

// end closes both sides.
func (d *duplex) end(b *backend) {
	d.s.srv.pool.discard(b)
	if d.q != nil {
		d.q.close()
	}
	d.s.conn.Close()
}

// move replaces a lost server connection of a subscriber with a new one on
// the current master, subscribed to the same things. It returns the new
// connection and how many confirmations to drop, or nil when the session
// cannot or need not move.
func (d *duplex) move(old *backend, cause error) (*backend, int) {
	s := d.s
	d.mu.Lock()
	movable, quit := d.movable, d.quitSent
	n := len(d.subs[0]) + len(d.subs[1]) + len(d.subs[2])
	d.mu.Unlock()
	if !movable || quit || n == 0 {
		return nil, 0
	}
	s.srv.pool.discard(old)
	log := s.srv.log.With(zap.String("client", s.conn.RemoteAddr().String()))
	log.Debug("moving subscriber", zap.String("from", old.addr), zap.Error(cause))
	deadline := time.Now().Add(max(s.srv.settings().HoldTimeout, 10*time.Second))
	for !d.quit.Load() {
		if b := d.resubscribe(deadline); b != nil {
			return b, d.pendingConfirmations()
		}
		if time.Now().After(deadline) {
			log.Info("could not move subscriber to the new master; closing it")
			return nil, 0
		}
	}
	return nil, 0
}

// resubscribe connects to the current master and subscribes there. It
// returns nil when that failed; the caller retries until its deadline.
func (d *duplex) resubscribe(deadline time.Time) *backend {
	s := d.s
	addr, err := s.srv.awaitMaster(deadline)
	if err != nil {
		return nil
	}
	ctx, cancel := contextWithDeadline(deadline, s.srv.opts.DialTimeout)
	defer cancel()
	b, err := s.srv.dialBackend(ctx, addr, d.state, d.name, d.state.key(addr, s.srv.salt))
	if err != nil {
		pause(ctx, 100*time.Millisecond)
		return nil
	}
	if !s.srv.pool.add(b) {
		b.close()
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var req []byte
	for i, set := range d.subs {
		if len(set) == 0 {
			continue
		}
		args := []string{[...]string{"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"}[i]}
		for ch := range set {
			args = append(args, ch)
		}
		req = appendCommand(req, args...)
	}
	d.b = b
	if len(req) > 0 {
		if _, err := b.nc.Write(req); err != nil {
			s.srv.pool.discard(b)
			return nil
		}
	}
	return b
}

// pendingConfirmations is how many confirmations the subscriptions just
// sent will produce.
func (d *duplex) pendingConfirmations() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.subs[0]) + len(d.subs[1]) + len(d.subs[2])
}

// isSubscribeConfirmation reports whether a frame (RESP2 array or RESP3
// push) confirms a SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE.
func isSubscribeConfirmation(frame []byte) bool {
	i := bytes.Index(frame, []byte("\r\n"))
	if i < 0 || len(frame) == 0 || frame[0] != '*' && frame[0] != '>' {
		return false
	}
	rest := frame[i+2:]
	return bytes.HasPrefix(rest, []byte("$9\r\nsubscribe\r\n")) ||
		bytes.HasPrefix(rest, []byte("$10\r\npsubscribe\r\n")) ||
		bytes.HasPrefix(rest, []byte("$10\r\nssubscribe\r\n"))
}

// flush sends what the session goroutine wrote before the copier started.
func (d *duplex) flush() error {
	d.s.wmu.Lock()
	defer d.s.wmu.Unlock()
	return d.s.w.Flush()
}

// stop ends the copier and waits for it.
func (d *duplex) stop() {
	d.quit.Store(true)
	d.mu.Lock()
	b := d.b
	d.mu.Unlock()
	b.close()
	<-d.done
	d.s.srv.pool.discard(b)
	d.s.srv.pinnedN.Add(-1)
	if d.q != nil {
		d.q.close()
		<-d.q.done
	}
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

// pause waits for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
