package proxy

import (
	"io"
	"net"
	"syscall"
)

// Reads and writes on TCP sockets bypass the Go scheduler's system call
// bookkeeping (rawio_linux.go): the sockets are non-blocking, so a read or
// write never waits, and telling the scheduler that one might lets its
// monitor hand the proxy's only thread of Go code (see procs) to another OS
// thread in the middle of a short write, then wake the first one back up.
// Measured with one thread and 50 clients at -P 1: the proxy's voluntary
// context switches went from about 10,600 to 2,900 a second, and its CPU
// per request from 20.6 to 17.3 µs (README, Benchmarks). Readiness is still
// Go's: a call that finds nothing to read or no room to write parks the
// goroutine on the poller as net.Conn does, and deadlines apply.

// rawIOMax is the largest read or write done without the scheduler's
// bookkeeping: copying more takes long enough that the thread had better be
// free to run other goroutines meanwhile.
const rawIOMax = 64 << 10

// fastWriter writes to a connection: with raw system calls when it is a
// TCP connection, else through its own Write (TLS, Unix sockets, tests).
// Its callback for RawConn.Write is made at the first write and reads what
// to write from the writer, so that a write does not allocate: a fastWriter
// must not be copied once used, nor written by two goroutines at once (the
// session's bufio.Writer in front of it is not either).
type fastWriter struct {
	conn net.Conn
	raw  syscall.RawConn // nil: use conn.Write
	fn   func(fd uintptr) bool
	p    []byte // what fn writes, done bytes of it so far
	done int
	werr syscall.Errno
}

// makeFastWriter returns a writer to conn; raw is conn's descriptor
// access (nil if none), used when conn is a TCP connection.
func makeFastWriter(conn net.Conn, raw syscall.RawConn) fastWriter {
	if _, ok := conn.(*net.TCPConn); !ok {
		raw = nil
	}
	return fastWriter{conn: conn, raw: raw}
}

func (w *fastWriter) Write(p []byte) (int, error) {
	if w.raw == nil {
		return w.conn.Write(p)
	}
	if w.fn == nil {
		w.fn = w.writeSome
	}
	w.p, w.done, w.werr = p, 0, 0
	err := w.raw.Write(w.fn)
	done, werr := w.done, w.werr
	w.p = nil
	return writeResult(done, err, werr)
}

// writeSome is Write's RawConn.Write callback: rawConnWrite's, on w's fields.
func (w *fastWriter) writeSome(fd uintptr) bool {
	for w.done < len(w.p) {
		n, e := rawWrite(fd, w.p[w.done:])
		switch {
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			w.werr = e
			return true
		}
		w.done += n
	}
	return true
}

// rawConnWrite writes all of p to the socket of raw, waiting for room on
// Go's poller (and within the write deadline) when the socket is full.
func rawConnWrite(raw syscall.RawConn, p []byte) (int, error) {
	done := 0
	var werr syscall.Errno
	err := raw.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := rawWrite(fd, p[done:])
			switch {
			case e == syscall.EAGAIN:
				return false
			case e != 0:
				werr = e
				return true
			}
			done += n
		}
		return true
	})
	return writeResult(done, err, werr)
}

// writeResult is what a raw write returns: done bytes written, err from
// RawConn.Write, werr from the system call.
func writeResult(done int, err error, werr syscall.Errno) (int, error) {
	switch {
	case err != nil:
		return done, err
	case werr != 0:
		return done, &net.OpError{Op: "write", Net: "tcp", Err: werr}
	}
	return done, nil
}

// fastConn is a TCP connection whose Read and Write use raw system calls;
// everything else is the TCP connection's. Backend connections are dialed
// as fastConns (under TLS too).
type fastConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

// newFastConn returns c as a fastConn when it is a TCP connection, else c.
func newFastConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &fastConn{TCPConn: tc, raw: raw}
}

func (c *fastConn) Write(p []byte) (int, error) { return rawConnWrite(c.raw, p) }

func (c *fastConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var rerr syscall.Errno
	err := c.raw.Read(func(fd uintptr) bool {
		n, rerr = rawRead(fd, p)
		return rerr != syscall.EAGAIN
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: rerr}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
