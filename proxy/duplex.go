package proxy

import (
	"bufio"
	"errors"
	"sync"

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
// error reply it writes itself. The copier exits when the backend or the
// client fails, or when stop closes the backend.
type duplex struct {
	b    *backend
	done chan struct{}
}

// startDuplex pins a connection, forwards cmd (the command that makes the
// connection full duplex) and starts the copier.
func (s *session) startDuplex(cmd Command) error {
	b, _, err := s.acquire()
	if err != nil {
		s.writeError(s.acquireErrorText(err))
		return nil
	}
	s.pinned = b
	s.out() // the session keeps this writer from now on
	d := &duplex{b: b, done: make(chan struct{})}
	s.duplex = d
	go d.copy(s)
	return d.forward(s, []Command{cmd})
}

// copy streams frames from the server to the client until either fails.
func (d *duplex) copy(s *session) {
	defer close(d.done)
	fw := frameWriter{mu: &s.wmu, w: s.w}
	for {
		_, err := d.b.fr.Next(&fw)
		if err == nil && d.b.fr.Buffered() == 0 {
			fw.lock()
			err = s.w.Flush()
		}
		fw.unlock()
		if err != nil {
			if !d.b.dead.Load() {
				s.srv.log.Debug("full-duplex stream ended", zap.String("client", s.conn.RemoteAddr().String()), zap.Error(err))
			}
			// Either side failed: the other cannot go on alone.
			d.b.close()
			s.conn.Close()
			return
		}
	}
}

// forward writes cmds to the server. Commands the proxy refuses are answered
// at once.
func (d *duplex) forward(s *session, cmds []Command) error {
	s.bufs = s.bufs[:0]
	for i := range cmds {
		info := classify(cmds[i].Args)
		if info.kind == kindRefused {
			s.wmu.Lock()
			s.writeError(info.refusal)
			err := s.w.Flush()
			s.wmu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		s.bufs = append(s.bufs, cmds[i].Raw)
	}
	if len(s.bufs) == 0 {
		return nil
	}
	bufs := s.bufs
	if _, err := bufs.WriteTo(d.b.nc); err != nil {
		return errors.Join(errors.New("write to master"), err)
	}
	return nil
}

// flush sends what the session goroutine wrote before the copier started.
func (d *duplex) flush(s *session) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.w.Flush()
}

// stop ends the copier and waits for it.
func (d *duplex) stop() {
	d.b.close()
	<-d.done
}

// frameWriter takes the writer's lock at the first byte of a frame; the
// copier releases it once the frame is complete.
type frameWriter struct {
	mu     *sync.Mutex
	w      *bufio.Writer
	locked bool
}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.lock()
	return f.w.Write(p)
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
