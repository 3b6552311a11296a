package topology

import (
	"bytes"
	"io"
	"sync"
)

// lockedWriter serialises writes from several processes' output to one
// io.Writer (Options.Log).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each complete line with a prefix (the node name), so
// the interleaved output of several processes stays readable. os/exec calls
// Write from one goroutine per process; the buffer holds at most one partial
// line between calls.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := make([]byte, 0, len(p.prefix)+i+1)
		line = append(append(line, p.prefix...), p.buf[:i+1]...)
		p.buf = p.buf[i+1:]
		if _, err := p.w.Write(line); err != nil {
			return len(b), err
		}
	}
	// A process that never ends a line must not grow the buffer forever.
	if len(p.buf) > 64<<10 {
		line := append([]byte(p.prefix), p.buf...)
		p.buf = p.buf[:0]
		if _, err := p.w.Write(append(line, '\n')); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}
