package proxy

import (
	"sync"
	"time"
)

// freshIdle is how long a pooled connection counts as just used: get
// hands it out without checking whether the server closed it.
const freshIdle = time.Millisecond

// pool keeps idle backend connections by the state they carry, and knows
// every backend connection of the server (idle, in a batch or pinned) so
// that all of those to an old master can be closed at once.
type pool struct {
	maxIdle int // idle connections kept per key

	mu      sync.Mutex
	idle    map[poolKey][]*backend
	all     map[*backend]struct{}
	current string          // the master connections may go back to; "" = any
	masters map[string]bool // a cluster's masters, when set: instead of current
	closed  bool
	dials   uint64
}

func newPool(maxIdle int) *pool {
	return &pool{
		maxIdle: maxIdle,
		idle:    make(map[poolKey][]*backend),
		all:     make(map[*backend]struct{}),
	}
}

// get takes an idle connection in state key, or returns nil. Connections the
// server closed while they sat in the pool (a Sentinel CLIENT KILL, a
// timeout, a restart) are dropped here rather than handed out, so a command
// is never written to a connection already known to be dead.
func (p *pool) get(key poolKey) *backend {
	for {
		p.mu.Lock()
		list := p.idle[key]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		b := list[len(list)-1]
		list[len(list)-1] = nil
		if len(list) == 1 {
			delete(p.idle, key)
		} else {
			p.idle[key] = list[:len(list)-1]
		}
		p.mu.Unlock()
		// A connection back from a batch moments ago is not worth a
		// syscall: the check is for connections the server closed while
		// they sat in the pool.
		if !b.dead.Load() && (time.Since(b.idleAt) < freshIdle || !peekClosed(b.nc, false)) {
			return b
		}
		p.discard(b)
	}
}

// add registers a new connection as in use.
func (p *pool) add(b *backend) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dials++
	if p.closed || !p.allowed(b.addr) {
		return false
	}
	p.all[b] = struct{}{}
	return true
}

// put gives a connection back after a batch. Connections that are dead, to
// a master that is no longer current, or beyond the idle limit are closed.
func (p *pool) put(b *backend) {
	p.mu.Lock()
	if b.dead.Load() || p.closed || !p.allowed(b.addr) || len(p.idle[b.key]) >= p.maxIdle {
		p.mu.Unlock()
		p.discard(b)
		return
	}
	b.idleAt = time.Now()
	p.idle[b.key] = append(p.idle[b.key], b)
	p.mu.Unlock()
}

// discard closes a connection and forgets it.
func (p *pool) discard(b *backend) {
	b.close()
	p.mu.Lock()
	delete(p.all, b)
	p.mu.Unlock()
}

// switchTo makes addr the current master and closes every connection to any
// other address, idle or in use. Sessions using one see an I/O error.
// It returns how many connections it closed.
func (p *pool) switchTo(addr string) int {
	p.mu.Lock()
	p.current = addr
	var stale []*backend
	for b := range p.all {
		if b.addr != addr {
			stale = append(stale, b)
			delete(p.all, b)
		}
	}
	for k := range p.idle {
		if k.addr != addr {
			delete(p.idle, k) // their connections are in stale
		}
	}
	p.mu.Unlock()
	for _, b := range stale {
		b.close()
	}
	return len(stale)
}

// allowed reports whether connections to addr may be used (p.mu held).
func (p *pool) allowed(addr string) bool {
	if p.masters != nil {
		return p.masters[addr]
	}
	return p.current == "" || addr == p.current
}

// keepMasters makes addrs a cluster's masters: idle connections to any
// other node are closed (connections in use are left to their sessions,
// and closed when they come back). It returns how many it closed.
func (p *pool) keepMasters(addrs []string) int {
	p.mu.Lock()
	p.masters = make(map[string]bool, len(addrs))
	for _, a := range addrs {
		p.masters[a] = true
	}
	var stale []*backend
	for k, list := range p.idle {
		if !p.masters[k.addr] {
			stale = append(stale, list...)
			delete(p.idle, k)
		}
	}
	for _, b := range stale {
		delete(p.all, b)
	}
	p.mu.Unlock()
	for _, b := range stale {
		b.close()
	}
	return len(stale)
}

// evict closes the idle connections to addr: one of them failed on its
// own (the server died, restarted or killed its clients), so the others
// most likely did too and must not be handed out.
func (p *pool) evict(addr string) {
	p.mu.Lock()
	var gone []*backend
	for k, list := range p.idle {
		if k.addr == addr {
			gone = append(gone, list...)
			delete(p.idle, k)
		}
	}
	for _, b := range gone {
		delete(p.all, b)
	}
	p.mu.Unlock()
	for _, b := range gone {
		b.close()
	}
}

// reap closes connections idle since before cutoff.
func (p *pool) reap(cutoff time.Time) {
	p.mu.Lock()
	var old []*backend
	for k, list := range p.idle {
		keep := list[:0]
		for _, b := range list {
			if b.idleAt.Before(cutoff) {
				old = append(old, b)
				delete(p.all, b)
			} else {
				keep = append(keep, b)
			}
		}
		for i := len(keep); i < len(list); i++ {
			list[i] = nil
		}
		if len(keep) == 0 {
			delete(p.idle, k)
		} else {
			p.idle[k] = keep
		}
	}
	p.mu.Unlock()
	for _, b := range old {
		b.close()
	}
}

// close closes every connection, idle or in use. Safe to call twice.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	all := p.all
	p.all = make(map[*backend]struct{})
	p.idle = make(map[poolKey][]*backend)
	p.mu.Unlock()
	for b := range all {
		b.close()
	}
}

// PoolStats counts backend connections.
type PoolStats struct {
	Open   int    // every backend connection: idle, in a batch or pinned
	Idle   int    // waiting in the pool
	Shared int    // shared by sessions (also in Open)
	Dials  uint64 // connections opened since start
}

func (p *pool) stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{Open: len(p.all), Dials: p.dials}
	for _, list := range p.idle {
		s.Idle += len(list)
	}
	return s
}
