package proxy

import (
	"io"
	"net"
	"sync"
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
type fastWriter struct {
	conn net.Conn
	raw  syscall.RawConn // nil: use conn.Write
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
	return rawConnWrite(w.raw, p)
}

// rawWriteOp is one rawConnWrite: what to write, how far it got, and the
// callback for RawConn.Write, made once per op. Ops are pooled, so that a
// write allocates nothing and a connection keeps nothing for its writes
// between them (a closure per write was 1 % of the proxy's CPU at -P 16).
type rawWriteOp struct {
	p    []byte
	done int
	werr syscall.Errno
	fn   func(fd uintptr) bool
}

var rawWriteOps = sync.Pool{New: func() any {
	op := new(rawWriteOp)
	op.fn = op.writeSome
	return op
}}

// writeSome writes what is left of op.p to fd until it is all written, an
// error, or the socket is full (false: wait for the poller and call again).
func (op *rawWriteOp) writeSome(fd uintptr) bool {
	for op.done < len(op.p) {
		n, e := rawWrite(fd, op.p[op.done:])
		switch {
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			op.werr = e
			return true
		}
		op.done += n
	}
	return true
}

// rawConnWrite writes all of p to the socket of raw, waiting for room on
// Go's poller (and within the write deadline) when the socket is full.
func rawConnWrite(raw syscall.RawConn, p []byte) (int, error) {
	op := rawWriteOps.Get().(*rawWriteOp)
	op.p, op.done, op.werr = p, 0, 0
	err := raw.Write(op.fn)
	done, werr := op.done, op.werr
	op.p = nil
	rawWriteOps.Put(op)
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
