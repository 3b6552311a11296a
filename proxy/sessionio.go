package proxy

import (
	"bufio"
	"strings"
	"time"
)

// The session's client side while a batch runs: its output buffer, the
// proxy's own error replies, and the watch on a client blocked in a
// command.

// watchClient starts watching the client while a blocking command waits, so
// that a client that hangs up releases its backend connection. It returns a
// function that stops the watch.
func (s *session) watchClient(b *backend) func() {
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		// Inside a raw read (serveRaw) the session holds the socket's
		// read lock: the TCP state tells a hang-up then.
		if s.rd.fd == nil && !s.rd.buffered() && peekClosed(s.conn, true) {
			b.close()
			return
		}
		// The client pipelined more after the blocking command (or the
		// wait was stopped): readability says nothing now, the TCP state
		// still tells a hang-up.
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if peerClosed(s.conn) {
					b.close()
					return
				}
			}
		}
	}()
	return func() {
		close(stop)
		s.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		s.conn.SetReadDeadline(time.Time{})
	}
}

// out returns the client writer, taking a buffer from the pool if needed.
func (s *session) out() *bufio.Writer {
	if s.w == nil {
		s.w = s.srv.bufs.write.Get().(*bufio.Writer)
		if s.rd != nil {
			s.w.Reset(&s.rd.out)
		} else {
			s.w.Reset(s.conn) // detached by the parker
		}
	}
	return s.w
}

func (s *session) writeRaw(p []byte) {
	s.out().Write(p)
}

// writeError writes an error reply of the proxy's own; msg starts with its
// code ("ERR …").
func (s *session) writeError(msg string) {
	if strings.HasPrefix(msg, "NOPERM") {
		s.srv.m.cmdDenied.Inc()
	} else {
		s.srv.m.cmdProxyErr.Inc()
	}
	w := s.out()
	w.WriteByte('-')
	w.WriteString(msg)
	w.WriteString("\r\n")
}

// flush sends what the session wrote and, unless the session is full duplex,
// gives the buffer back.
func (s *session) flush() error {
	if s.duplex != nil {
		return s.duplex.flush()
	}
	if s.w == nil {
		return nil
	}
	err := s.w.Flush()
	s.releaseWriter()
	return err
}

func (s *session) releaseWriter() {
	if s.w != nil && s.duplex == nil {
		s.w.Reset(nil)
		s.srv.bufs.write.Put(s.w)
		s.w = nil
	}
}
