package proxy

import (
	"errors"
	"io"
	"net"
	"time"

	"go.uber.org/zap"
)

// The session's loop: read a batch of requests, run it, answer it, again.
//
// On a TCP connection the loop runs inside one raw read of the socket
// (serveRaw) instead of one per batch. Go's poller forgets what it knew of
// the socket's readiness at the start of each read, so a read per batch
// must try the socket before it may wait for it: at -P 1 that try finds
// nothing (the client is still reading the last reply) and costs a system
// call per request. Inside one raw read the poller's readiness is kept: once
// a read has drained the socket (a short read), the loop waits for it
// straight away, and a client that sent more meanwhile has made it ready.
//
// A short read says that no more data was there, not that the client had
// not closed its side: a FIN that came with or right after the request is
// seen only by a further read, and no readiness is coming for it. The loop
// therefore waits without reading only while its client is idle (nothing
// buffered, not full duplex, no drain). Such a wait ends after parkAfter
// anyway (the server's sweep), and then a new read, or the parker, sees the
// FIN: a client that half-closes after its last command is closed within
// about 75 ms instead of at once. Any other wait follows a read that found
// nothing, as with net.Conn.

// readState is what the loop decided before a read: the session was idle
// (its wait may end in parking), or the server is draining and the wait for
// more of a pipeline is limited to drainQuiet.
type readState struct {
	idle  bool
	quiet bool
}

// verdict is what the loop does after a step.
type verdict uint8

const (
	goOn    verdict = iota // read the next batch
	stopped                // the session was parked or has ended
	ending                 // end the session (outside any raw read: see serveRaw)
)

// serve runs the session until the client leaves, the server drains, or the
// session is parked (it then runs again, on a new goroutine, when the client
// sends its next command).
func (s *session) serve() {
	defer s.recoverPanic()
	for {
		st, v := s.beforeRead()
		if v == goOn {
			if s.rd.fd != nil {
				v = s.serveRaw(st)
			} else {
				cmds, err := s.rd.next(s.srv.opts.MaxBatch)
				v = s.handle(st, cmds, err)
			}
		}
		switch v {
		case ending:
			s.end()
			return
		case stopped:
			return
		}
	}
}

// serveRaw runs the loop from a read in state st inside raw reads of the
// client socket (see the top of this file), until a step's verdict is not
// goOn or a wait for the client ends with an error (its verdict).
//
// Inside a raw read the session holds the socket's read lock, and closing
// the connection waits for it: the session never closes its client there
// (ending is acted on after it), and others hang up on it with hangUp.
func (s *session) serveRaw(st readState) verdict {
	s.rd.idleWait = st.idle
	v := goOn
	fresh := false // the batch before ended: decide st again
	for {
		err := s.rd.fd.Read(func(fd uintptr) bool {
			// Called first, and again each time the socket is ready: one
			// read each time (clientReader.fill), for which Go's poller
			// has checked the deadline and the connection's close.
			s.rd.sysfd, s.rd.mayRead = fd, true
			for {
				if fresh {
					if st, v = s.beforeRead(); v != goOn {
						return true
					}
					s.rd.idleWait = st.idle
					fresh = false
				}
				cmds, err := s.rd.next(s.srv.opts.MaxBatch)
				switch err {
				case errWaitClient:
					return false
				case errReadAgain:
					return true
				}
				fresh = true
				if v = s.handle(st, cmds, err); v != goOn {
					return true
				}
			}
		})
		s.rd.mayRead = false
		switch {
		case v != goOn:
			return v
		case err != nil:
			return s.handle(st, nil, err)
		}
		// errReadAgain: the socket may hold more (the last read filled
		// the buffer), or the client is not between commands and a FIN
		// behind a short read must be seen. A new raw read starts with a
		// read.
	}
}

// beforeRead prepares the wait for the client's next batch.
func (s *session) beforeRead() (readState, verdict) {
	var st readState
	draining := s.srv.draining.Load()
	if draining && !s.rd.buffered() {
		// Shutting down: answer what the client already sent (a
		// pipeline in flight, which may still be arriving), then close
		// once it has been quiet for drainQuiet.
		if s.duplex != nil {
			return st, ending
		}
		if hasInput(s.conn) {
			s.conn.SetReadDeadline(time.Time{})
		} else {
			s.conn.SetReadDeadline(time.Now().Add(drainQuiet))
			st.quiet = true
		}
	}
	st.idle = s.duplex == nil && !s.rd.buffered() && !draining
	if st.idle {
		s.idleSince.Store(time.Now().UnixNano())
	}
	return st, goOn
}

// handle runs what a read in state st gave: a batch, or the error that
// ended the read.
func (s *session) handle(st readState, cmds []Command, err error) verdict {
	if st.idle && s.idleSince.Swap(0) == idleSwept && err == nil {
		// The sweep ended the wait just as a command arrived. It sets its
		// deadline under the server's lock: once that is free the
		// deadline is set, and clearing it now keeps it from failing a
		// later read.
		s.srv.mu.Lock()
		//lint:ignore SA2001 the empty critical section waits for the sweep
		s.srv.mu.Unlock()
		s.conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		return s.readFailed(st, err)
	}
	if s.batchScratch == nil {
		s.batchScratch = scratchPool.Get().(*batchScratch)
	}
	s.busy.Store(true)
	s.started.Store(true)
	if s.srv.onBatch != nil {
		s.srv.onBatch(cmds)
	}
	if s.duplex != nil {
		err = s.duplex.forward(cmds)
	} else {
		err = s.exec(cmds)
	}
	if ferr := s.flush(); err == nil {
		err = ferr
	}
	s.lastActive.Store(time.Now().UnixNano())
	s.busy.Store(false)
	if err != nil {
		return ending
	}
	s.rd.idle()
	if cap(s.rw.part) > 1<<10 {
		// A large reply kept whole is not worth holding on to between
		// batches (sessions that never park, under TLS).
		s.rw.part = nil
	}
	return goOn
}

// readFailed handles a read of the client that ended in err.
func (s *session) readFailed(st readState, err error) verdict {
	if isTimeout(err) && !s.srv.draining.Load() {
		// Outside a drain only the server's sweep sets a read deadline:
		// it ends an idle wait (parkAfter passed) so that the session
		// parks. Should it land on a session that has meanwhile started
		// reading a request, that request is read on without a
		// deadline.
		s.conn.SetReadDeadline(time.Time{})
		if st.idle && !s.rd.buffered() && s.park() {
			return stopped
		}
		return goOn
	}
	if isTimeout(err) && !st.quiet && s.srv.draining.Load() && !s.killed.Load() {
		// The drain ended the wait for a next command: see whether the
		// client sent one meanwhile.
		s.conn.SetReadDeadline(time.Time{})
		return goOn
	}
	var perr *RequestError
	if errors.As(err, &perr) {
		reason := reasonProtocol
		if errors.Is(err, errQueryLimit) {
			reason = reasonRequestTooBig
		}
		s.srv.m.disconnects.WithLabelValues(reason).Inc()
		s.writeError("ERR " + perr.Error())
		s.flush()
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		s.srv.log.Debug("client read failed", zap.String("client", s.conn.RemoteAddr().String()), zap.Error(err))
	}
	return ending
}
