//go:build linux

package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// parker holds idle sessions without a goroutine each. A session idle for
// parkAfter hands its connection to the parker and its goroutine exits; one
// epoll loop watches every parked connection and starts a goroutine again
// when a client sends its next command (or hangs up).
//
// A TCP or Unix connection parked for deepParkAfter leaves Go's network
// poller as well: the parker keeps only a duplicate of its descriptor (in a
// parkedConn) and closes the net.Conn, so that its netFD, addresses and
// runtime poll descriptor (about 700 bytes together) and the session's
// clientReader go back to Go while the client is idle; resuming builds them
// again from the descriptor (about fifteen system calls). Thousands of idle
// PHP-FPM or Tomcat pool connections then cost little more than their
// session state, while a client that pauses between commands for less than
// deepParkAfter (a busy one among many, say) keeps its connection and
// resumes at the cost of a goroutine.
//
// At most maxShallow sessions are parked with their connection: beyond
// that, a session parking leaves Go's poller at once. The runtime never
// frees a poll descriptor (512 bytes each, reused for later connections),
// so without the bound a burst of clients that go idle together (a pool
// filling up) would leave one for each of them, plus the heap its netFD and
// reader held at the peak, for the life of the process.
type parker struct {
	epfd int
	// ep is epfd in Go's own poller: the loop waits on it there, never in
	// a blocking epoll_wait, which would keep the goroutine's P (the only
	// one, under the default procs) for up to two of sysmon's ticks (10 ms
	// each under load) each time it enters the call while other goroutines
	// wait to run (see wait).
	ep *os.File
	rc syscall.RawConn

	mu      sync.Mutex
	slots   []*session // parked sessions by descriptor (the epoll event's data)
	n       int        // parked sessions
	shallow int        // of which still with their net.Conn (not detached)
	closed  bool

	detached atomic.Uint64 // connections taken out of Go's poller, ever
}

// deepParkAfter is how long a session stays parked with its connection
// before the parker takes it out of Go's poller (deepen).
const deepParkAfter = time.Second

// A burst of clients that connect and go idle together leaves the heap at
// its peak: their goroutines' stacks, netFDs and readers, freed once they
// are parked, stay resident because an idle proxy allocates nothing, so no
// GC lowers the heap goal that the scavenger works to, for minutes. Once at
// least releaseAfter sessions have left Go's poller and a deepen pass finds
// no more, the parker hands that memory back (debug.FreeOSMemory: one GC
// and a scavenge), at most once per releaseEvery.
const (
	releaseAfter = maxShallow
	releaseEvery = 30 * time.Second
)

// maxShallow bounds the sessions parked with their connection. Busy
// clients that pause between commands (parked for tens of milliseconds
// each, a fraction of them at any moment) stay well under it.
const maxShallow = 1024

func newParker() (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// A nonblocking descriptor goes into Go's poller (an epoll descriptor
	// is readable while it has events ready).
	ep := os.NewFile(uintptr(fd), "parker")
	rc, err := ep.SyscallConn()
	if err == nil {
		// Deadlines work only on a descriptor in the poller: this fails
		// (os.ErrNoDeadline) if Go could not register it.
		err = ep.SetReadDeadline(time.Time{})
	}
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &parker{epfd: fd, ep: ep, rc: rc}, nil
}

// park registers s. On true, the parker owns s until it resumes it with
// resume (in a new goroutine) or closes it; on false the caller keeps it,
// with a working connection.
func (p *parker) park(s *session) bool {
	p.mu.Lock()
	closed, full := p.closed, p.shallow >= maxShallow
	p.mu.Unlock()
	if closed {
		return false
	}
	fd := -1
	if full && detachable(s.conn) {
		fd = p.detach(s)
	}
	detached := fd >= 0
	if !detached {
		fd = p.descriptor(s)
	}
	if fd < 0 {
		return false
	}
	p.mu.Lock()
	ok := p.register(fd, s)
	p.mu.Unlock()
	if !ok && detached {
		p.attach(s) // the caller goes on reading: it needs its connection
	}
	return ok
}

// detachable reports whether conn can leave Go's poller (detach): TCP and
// Unix connections, not TLS (its buffers may hold data) nor a parkedConn.
func detachable(conn net.Conn) bool {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// register watches fd for s until it becomes readable (or hangs up), once;
// p.mu is held. It reports whether the parker took s.
func (p *parker) register(fd int, s *session) bool {
	if p.closed {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd)}
	if syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) != nil {
		return false
	}
	if fd >= len(p.slots) {
		p.slots = append(p.slots, make([]*session, fd+1-len(p.slots))...)
		p.slots = p.slots[:cap(p.slots)]
	}
	p.slots[fd] = s
	p.n++
	if _, deep := s.conn.(*parkedConn); !deep {
		p.shallow++
	}
	return true
}

// take stops watching fd and returns the session parked under it, or nil;
// p.mu is held.
func (p *parker) take(fd int) *session {
	if fd < 0 || fd >= len(p.slots) || p.slots[fd] == nil {
		return nil
	}
	s := p.slots[fd]
	p.slots[fd] = nil
	p.n--
	if _, deep := s.conn.(*parkedConn); !deep {
		p.shallow--
	}
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	return s
}

// descriptor returns the descriptor of s's connection, or -1 when it has
// none (TLS).
func (p *parker) descriptor(s *session) int {
	sc, ok := s.conn.(syscall.Conn) // not TLS: its buffers may hold data
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if raw.Control(func(u uintptr) { fd = int(u) }) != nil {
		return -1
	}
	return fd
}

// deepen takes the TCP and Unix connections parked since before cutoff out
// of Go's poller (detach). Each is taken out of the parker meanwhile, so
// that nothing resumes it half done, and put back under its new descriptor.
func (p *parker) deepen(cutoff int64, resume func(*session)) {
	var todo []*session
	p.mu.Lock()
	for fd, s := range p.slots {
		if s == nil || s.lastActive.Load() > cutoff || !detachable(s.conn) {
			continue // detached already, or cannot be
		}
		todo = append(todo, p.take(fd))
	}
	p.mu.Unlock()
	for _, s := range todo {
		fd := p.detach(s)
		p.mu.Lock()
		ok := fd >= 0 && p.register(fd, s)
		p.mu.Unlock()
		if ok {
			continue
		}
		// It cannot be parked again (the parker closed, or epoll refused
		// it): it runs again, as if its client had sent something.
		go func() {
			p.attach(s) // nothing to do when it kept its connection
			resume(s)
		}()
	}
}

// detach takes a parked (or parking) TCP or Unix connection out of Go's
// poller for the goroutine that owns s (deepen's, or the session's own in
// park): it swaps s.conn for a parkedConn holding a duplicate of the
// descriptor, closes the original and drops the session's reader, and
// returns the duplicate. On -1 (the descriptor could not be duplicated) s
// keeps its connection. Nothing may be buffered.
func (p *parker) detach(s *session) int {
	raw := rawConnOf(s.conn)
	if raw == nil {
		return -1
	}
	fd := -1
	var derr error
	if err := raw.Control(func(u uintptr) { fd, derr = dupCloexec(int(u)) }); err != nil || derr != nil {
		return -1
	}
	old := s.conn
	pc := &parkedConn{fd: fd, lim: s.rd.lim}
	s.rd.release()
	// The server's goroutines (sweepIdle, drain) read s.conn under s.srv.mu;
	// none reads s.rd.
	s.srv.mu.Lock()
	s.conn = pc
	s.srv.mu.Unlock()
	s.rd = nil
	old.Close() // the socket stays open through fd
	p.detached.Add(1)
	return fd
}

// attach gives a detached session a net.Conn again. Should that fail (out of
// descriptors), the client is closed: the session then ends at its next
// read.
func (p *parker) attach(s *session) {
	pc, ok := s.conn.(*parkedConn)
	if !ok {
		return
	}
	f := os.NewFile(uintptr(pc.fd), "")
	nc, err := net.FileConn(f) // a duplicate, back in Go's poller
	switch {
	case err != nil:
		s.srv.log.Warn("cannot resume a parked client; closing it", zap.String("group", s.srv.opts.Name), zap.Error(err))
		nc = &parkedConn{fd: -1}
	case nc.RemoteAddr() == nil:
		// The client reset the connection while parked: it has no peer
		// any more (and the log lines naming the client would panic on a
		// nil address). The session reads net.ErrClosed and ends.
		nc.Close()
		nc = &parkedConn{fd: -1}
	}
	s.srv.mu.Lock()
	s.conn = nc
	s.srv.mu.Unlock()
	s.rd = newClientReaderLim(nc, s.srv.bufs, pc.lim)
	// Only now, with nobody left to shut pc down (kill runs under
	// s.srv.mu), may its descriptor number be reused.
	f.Close()
}

// dupCloexec duplicates fd with close-on-exec set.
func dupCloexec(fd int) (int, error) {
	for {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
		switch errno {
		case 0:
			return int(r), nil
		case syscall.EINTR:
			continue
		default:
			return -1, errno
		}
	}
}

// run waits for parked connections to become readable and resumes their
// sessions, until ctx is done; every quarter of a second it deepens those
// parked for deepParkAfter.
func (p *parker) run(ctx context.Context, resume func(*session)) {
	events := make([]syscall.EpollEvent, 128)
	lastDeepen := time.Now()
	var rel releaser
	for ctx.Err() == nil {
		if now := time.Now(); now.Sub(lastDeepen) >= deepParkAfter/4 {
			lastDeepen = now
			p.deepen(now.Add(-deepParkAfter).UnixNano(), resume)
			rel.check(p.detached.Load(), now)
		}
		n, err := p.wait(events, 200*time.Millisecond)
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			s := p.take(int(ev.Fd))
			p.mu.Unlock()
			if s != nil {
				go func() {
					p.attach(s)
					resume(s)
				}()
			}
		}
	}
}

// wait waits up to timeout for parked connections to become readable and
// returns how many events it put in events. It polls epfd without blocking
// and otherwise parks the goroutine in Go's poller until epfd is readable:
// a blocking epoll_wait would leave the goroutine's P in a system call, and
// goroutines made runnable meanwhile (by the network poller, say) would
// wait for sysmon to take the P back (it does on its second look, 10-20 ms
// under load), every client with them. Errors other than the timeout mean
// the parker is closed.
func (p *parker) wait(events []syscall.EpollEvent, timeout time.Duration) (int, error) {
	if err := p.ep.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	var n int
	var werr error
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			n, werr = syscall.EpollWait(int(fd), events, 0)
			if werr != syscall.EINTR {
				return n > 0 || werr != nil
			}
		}
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, nil
	case err != nil:
		return 0, err
	case werr != nil:
		return 0, werr // epfd is gone
	}
	return n, nil
}

// releaser decides when the parker hands freed memory back to the OS (see
// releaseAfter). It belongs to the parker's loop.
type releaser struct {
	seen    uint64    // detached at the previous check
	done    uint64    // detached at the last release
	last    time.Time // of the last release
	running atomic.Bool
}

// check is called after each deepen pass with the parker's detached count.
func (r *releaser) check(detached uint64, now time.Time) {
	quiet := detached == r.seen
	r.seen = detached
	if !quiet || detached-r.done < releaseAfter || now.Sub(r.last) < releaseEvery || !r.running.CompareAndSwap(false, true) {
		return
	}
	r.done, r.last = detached, now
	go func() { // exits when the release is done; never two at once
		defer r.running.Store(false)
		debug.FreeOSMemory()
	}()
}

// close stops parking and returns the sessions still parked, with their
// connections back; the caller ends them.
func (p *parker) close() []*session {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var out []*session
	for fd, s := range p.slots {
		if s != nil {
			out = append(out, s)
			p.slots[fd] = nil
		}
	}
	p.slots, p.n, p.shallow = nil, 0, 0
	p.ep.Close() // ends wait; the descriptor closes once wait has left it
	p.mu.Unlock()
	for _, s := range out {
		p.attach(s)
	}
	return out
}

// count reports how many sessions are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// parkedConn stands for a parked client connection: a bare descriptor,
// outside Go's poller, that only the parker reads (through epoll). The
// session gets a real net.Conn back before it runs again; until then the
// server's goroutines may only end it (kill, drain).
type parkedConn struct {
	fd  int            // -1: closed (the client could not be resumed)
	lim *RequestLimits // the limits of the session's reader, built again on resume
}

var parkedAddr = &net.TCPAddr{}

func (c *parkedConn) Read([]byte) (int, error)  { return 0, net.ErrClosed }
func (c *parkedConn) Write([]byte) (int, error) { return 0, net.ErrClosed }

// Close shuts the connection down for reading: the parker sees it at once
// and resumes the session, which reads EOF and ends. The descriptor itself
// is closed only once it has left epoll (a descriptor closed while
// registered would leave its session parked for ever).
func (c *parkedConn) Close() error {
	if c.fd >= 0 {
		syscall.Shutdown(c.fd, syscall.SHUT_RD)
	}
	return nil
}

func (c *parkedConn) LocalAddr() net.Addr              { return parkedAddr }
func (c *parkedConn) RemoteAddr() net.Addr             { return parkedAddr }
func (c *parkedConn) SetDeadline(time.Time) error      { return nil }
func (c *parkedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *parkedConn) SetWriteDeadline(time.Time) error { return nil }
