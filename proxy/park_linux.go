//go:build linux

package proxy

import (
	"context"
	"errors"
	"sync"
	"syscall"
)

// parker holds idle sessions without a goroutine each. A session idle for
// parkAfter hands its connection to the parker and its goroutine exits; one
// epoll loop watches every parked connection and starts a goroutine again
// when a client sends its next command (or hangs up). Thousands of idle
// PHP-FPM or Tomcat pool connections then cost a few hundred bytes of
// session state each instead of a goroutine stack.
type parker struct {
	epfd int

	mu     sync.Mutex
	next   uint64
	parked map[uint64]parkedSession
	closed bool
}

type parkedSession struct {
	s  *session
	fd int
}

func newParker() (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &parker{epfd: fd, parked: make(map[uint64]parkedSession)}, nil
}

// park registers s. On true, the parker owns s until it resumes it with
// resume (in a new goroutine) or closes it; on false the caller keeps it.
func (p *parker) park(s *session) bool {
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.next++
	id := p.next
	var cerr error
	var fd int
	err = raw.Control(func(u uintptr) {
		fd = int(u)
		ev := syscall.EpollEvent{
			Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
			Fd:     int32(uint32(id)),
			Pad:    int32(uint32(id >> 32)),
		}
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	})
	if err != nil || cerr != nil {
		return false
	}
	p.parked[id] = parkedSession{s: s, fd: fd}
	return true
}

// run waits for parked connections to become readable and resumes their
// sessions, until ctx is done.
func (p *parker) run(ctx context.Context, resume func(*session)) {
	events := make([]syscall.EpollEvent, 128)
	for ctx.Err() == nil {
		n, err := syscall.EpollWait(p.epfd, events, 200)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			ps, ok := p.parked[id]
			if ok {
				delete(p.parked, id)
				syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, ps.fd, nil)
			}
			p.mu.Unlock()
			if ok {
				go resume(ps.s)
			}
		}
	}
}

// close stops parking and returns the sessions still parked; the caller
// ends them.
func (p *parker) close() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var out []*session
	for id, ps := range p.parked {
		out = append(out, ps.s)
		delete(p.parked, id)
	}
	syscall.Close(p.epfd)
	return out
}

// count reports how many sessions are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
