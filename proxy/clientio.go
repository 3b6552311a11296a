package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// readBufSize is the size of the pooled buffer a client's requests are read
// into. A request that does not fit gets a buffer of its own, sized exactly.
const readBufSize = 4 << 10

// bufPool holds the read and write buffers of clients that are not idle. An
// idle client holds neither: that is what keeps thousands of idle PHP or
// Tomcat connections cheap.
type bufPool struct {
	read  sync.Pool // *[]byte of readBufSize
	write sync.Pool // *bufio.Writer
	lim   atomic.Pointer[RequestLimits]
}

func newBufPool() *bufPool {
	p := &bufPool{}
	p.read.New = func() any { b := make([]byte, readBufSize); return &b }
	p.write.New = func() any { return bufio.NewWriterSize(nil, readBufSize) }
	return p
}

// limits returns lim from memory shared by the readers that use the same
// limits: one pointer per idle client instead of a copy.
func (p *bufPool) limits(lim RequestLimits) *RequestLimits {
	if l := p.lim.Load(); l != nil && *l == lim {
		return l
	}
	l := &lim
	p.lim.Store(l)
	return l
}

// clientReader reads whole requests from a client connection.
//
// While the connection has nothing buffered it holds no buffer: it waits for
// the socket to become readable through syscall.RawConn and only then takes
// a buffer from the pool. Connections without a raw file descriptor (TLS)
// fall back to a plain Read into a pooled buffer.
type clientReader struct {
	conn  net.Conn
	raw   syscall.RawConn // nil when the connection has no descriptor
	pool  *bufPool
	lim   *RequestLimits // shared (bufPool.limits)
	buf   []byte         // pooled (len readBufSize) or a dedicated large buffer
	owned *[]byte        // the pool's handle for buf when pooled
	start int            // first unparsed byte
	end   int            // end of the data read
	cmds  []Command
	args  [][]byte // the arena the Args of cmds come from (parseRequest)

	out fastWriter // the session's replies go out through it (session.out)

	// A TCP connection's requests are read inside raw reads of its socket
	// (session.serveRaw): fd is its descriptor access then (else nil).
	// Within one, sysfd is the descriptor and mayRead allows the one read
	// of each readiness; drained records that the last read left no data
	// in the socket, and idleWait that the session waits for its client's
	// next command with nothing buffered: then the loop may wait without
	// reading again (see session.serveRaw for why both).
	fd       syscall.RawConn
	sysfd    uintptr
	mayRead  bool
	drained  bool
	idleWait bool
}

// What fill reports, inside a raw read, instead of reading: wait for the
// socket to be ready (it was drained, and the client is between commands),
// or start a new raw read, whose first step is a read (the last read filled
// the buffer, or a FIN behind a short read must not go unseen: see
// session.serveRaw).
var (
	errWaitClient = errors.New("wait for the client")
	errReadAgain  = errors.New("read the client again")
)

func newClientReader(conn net.Conn, pool *bufPool, lim RequestLimits) *clientReader {
	return newClientReaderLim(conn, pool, pool.limits(lim.withDefaults()))
}

// newClientReaderLim is newClientReader with limits already shared (a
// parked session's reader is dropped and built again on resume).
func newClientReaderLim(conn net.Conn, pool *bufPool, lim *RequestLimits) *clientReader {
	r := &clientReader{pool: pool, lim: lim}
	r.setConn(conn)
	return r
}

// setConn makes the reader read from conn. Nothing may be buffered.
func (r *clientReader) setConn(conn net.Conn) {
	r.conn, r.raw = conn, nil
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	r.out = makeFastWriter(conn, r.raw)
	r.fd = r.out.raw
}

// arenaKeep is the largest argument arena a reader keeps between batches
// (4 times the one a batch starts with).
const arenaKeep = 4 * arenaMaxArgs

// next returns the next batch: every complete request already received, at
// least one, at most max. The commands point into the reader's buffer and
// their Args into the reader's arena, and stay valid until the following
// call.
func (r *clientReader) next(max int) ([]Command, error) {
	r.cmds = r.cmds[:0]
	if cap(r.args) > arenaKeep {
		r.args = nil // a burst's arena is not kept
	}
	clear(r.args) // the last batch's arguments, which the buffer may outlive
	r.args = r.args[:0]
	for {
		need := 0
		for len(r.cmds) < max && r.start < r.end {
			cmd, n, more, err := parseRequest(r.buf[r.start:r.end], *r.lim, &r.args)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				need = more
				break
			}
			r.start += n
			if cmd.Args != nil { // *0 and empty lines are ignored, as Redis does
				r.cmds = append(r.cmds, cmd)
			}
		}
		if len(r.cmds) > 0 {
			return r.cmds, nil
		}
		if int64(need) > r.lim.MaxQuery || int64(r.end-r.start) >= r.lim.MaxQuery {
			return nil, errQueryLimit
		}
		if err := r.fill(need); err != nil {
			return nil, err
		}
	}
}

// buffered reports whether request bytes are waiting to be parsed.
func (r *clientReader) buffered() bool { return r.start < r.end }

// fill reads more data. need is the size the pending request is known to
// reach (0 when unknown).
func (r *clientReader) fill(need int) error {
	if r.fd != nil && !r.mayRead {
		if !r.drained || !r.idleWait || r.start != r.end {
			return errReadAgain
		}
		r.start, r.end = 0, 0
		r.release() // idle: wait for the socket without a buffer
		return errWaitClient
	}
	pending := r.end - r.start
	switch {
	case pending == 0:
		r.start, r.end = 0, 0
		if r.owned == nil {
			r.buf = nil // a dedicated buffer is dropped as soon as it is drained
		}
	case r.end < len(r.buf):
		// Room left: read into it.
	case need > len(r.buf) || pending == len(r.buf):
		// Full, and one request needs more than this buffer: give it a
		// buffer of its own, twice what actually arrived, never beyond
		// what the request says it needs. A client that announces a huge
		// bulk (or a million arguments) and sends little gets a small
		// buffer; a line with no end yet (need is only pending+1) doubles
		// it rather than growing by a byte; a 100 MB SET costs about its
		// size plus the copies of the doubling.
		size := max(2*pending, 2*readBufSize)
		if need > pending+1 { // a known size, not just "more"
			size = min(size, need)
		}
		big := make([]byte, size)
		copy(big, r.buf[r.start:r.end])
		r.release()
		r.buf, r.start, r.end = big, 0, pending
	default:
		// Full, but the request fits once the buffer is compacted.
		copy(r.buf, r.buf[r.start:r.end])
		r.start, r.end = 0, pending
	}
	if r.fd != nil {
		return r.fillRaw()
	}
	if r.raw == nil {
		r.acquire()
		n, err := r.conn.Read(r.buf[r.end:])
		r.end += n
		if n > 0 {
			return nil
		}
		return err
	}
	var n int
	var rerr syscall.Errno
	err := r.raw.Read(func(fd uintptr) bool {
		n, _, rerr = r.readOnce(fd)
		return rerr != syscall.EAGAIN
	})
	switch {
	case err != nil:
		return err
	case rerr != 0:
		return rerr
	case n <= 0:
		return io.EOF
	}
	r.end += n
	return nil
}

// fillRaw makes the one read of a readiness inside a raw read (see the
// fields fd to drained).
func (r *clientReader) fillRaw() error {
	r.mayRead = false
	n, room, e := r.readOnce(r.sysfd)
	switch {
	case e == syscall.EAGAIN:
		r.drained = true
		return errWaitClient
	case e != 0:
		return e
	case n == 0:
		return io.EOF
	}
	r.end += n
	r.drained = n < room
	return nil
}

// readOnce reads the socket fd once into the buffer, which had room bytes
// free. When the socket has nothing (EAGAIN), an empty buffer goes back to
// the pool: an idle client waits for its socket without one.
func (r *clientReader) readOnce(fd uintptr) (n, room int, e syscall.Errno) {
	r.acquire()
	room = len(r.buf) - r.end
	n, e = rawRead(fd, r.buf[r.end:])
	if e == syscall.EAGAIN && r.end == 0 {
		r.release()
	}
	return n, room, e
}

// acquire makes sure r.buf is usable.
func (r *clientReader) acquire() {
	if r.buf == nil {
		r.owned = r.pool.read.Get().(*[]byte)
		r.buf = *r.owned
	}
}

// release returns a pooled buffer. The caller must not need its contents.
func (r *clientReader) release() {
	if r.owned != nil {
		r.pool.read.Put(r.owned)
		r.owned = nil
	}
	r.buf = nil
}

// idle drops the buffer when everything in it has been handled, so that a
// client between requests holds no buffer.
func (r *clientReader) idle() {
	if r.start == r.end {
		r.start, r.end = 0, 0
		r.release()
	}
}

// hangUp closes a client connection from outside its session. A session
// holds its TCP socket's read lock while it runs a batch (session.serveRaw)
// and Close waits for that lock: the socket is shut down at once, so that
// the client and the session see the end now, and closed on a goroutine of
// its own.
func hangUp(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Close()
		return
	}
	if raw, err := tc.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	}
	go tc.Close()
}

// rawConnOf returns the descriptor access of conn (of the TCP connection
// under TLS: a TLS record waiting is data too), or nil when it has none.
func rawConnOf(conn net.Conn) syscall.RawConn {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// peekClosed reports whether the peer of conn has closed the connection (or
// it failed), without consuming anything. With wait false it answers at once
// and reports false when it cannot tell; pooled backend connections the
// server closed while idle are discarded that way. With wait true it blocks
// until the peer closes or sends data; a deadline set on conn from another
// goroutine ends the wait, reported as false. That is how a client hanging
// up during a blocking command releases its backend connection.
func peekClosed(conn net.Conn, wait bool) bool {
	raw := rawConnOf(conn)
	if raw == nil {
		return false
	}
	var closed bool
	var b [1]byte
	err := raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
			return !wait
		case err != nil, n == 0:
			closed = true
		}
		return true
	})
	if wait {
		return closed && err == nil
	}
	return closed || err != nil
}

// hasInput reports whether conn has bytes waiting to be read, without
// consuming them or blocking.
func hasInput(conn net.Conn) bool {
	n := 0
	if raw := rawConnOf(conn); raw != nil {
		var b [1]byte
		raw.Control(func(fd uintptr) {
			n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		})
	}
	return n > 0
}

// peerClosed reports whether the peer of conn has sent its FIN (or the
// connection is gone), even while unread data waits in front of it: the
// kernel's TCP state says so (CLOSE_WAIT).
func peerClosed(conn net.Conn) bool {
	closed := false
	if raw := rawConnOf(conn); raw != nil {
		raw.Control(func(fd uintptr) { closed = tcpPeerClosed(int(fd)) })
	}
	return closed
}
