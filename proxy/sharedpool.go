package proxy

import (
	"sync"
	"time"
)

// sharedPool keeps the shared connections: a few per pool key (master and
// connection state), each dialled by the first session that needs it.
type sharedPool struct {
	per   int   // connections per pool key
	conns *pool // every backend connection, shared ones too

	mu   sync.Mutex
	sets map[poolKey][]*sharedSlot
}

// sharedSlot is one place for a shared connection.
type sharedSlot struct {
	c       *sharedConn
	dialing chan struct{} // closed when the dial in progress ends; nil when none
}

func newSharedPool(per int, conns *pool) *sharedPool {
	return &sharedPool{per: per, conns: conns, sets: make(map[poolKey][]*sharedSlot)}
}

// get returns the usable shared connection of slot idx for key, dialling
// one (dial) when there is none. Sessions that need the slot while it is
// being dialled wait for that dial, until deadline.
func (p *sharedPool) get(key poolKey, idx int, deadline time.Time, dial func() (*backend, error)) (*sharedConn, error) {
	for {
		p.mu.Lock()
		set := p.sets[key]
		if set == nil {
			set = make([]*sharedSlot, p.per)
			for i := range set {
				set[i] = &sharedSlot{}
			}
			p.sets[key] = set
		}
		slot := set[idx%len(set)]
		if c := slot.c; c != nil && c.usable() {
			p.mu.Unlock()
			return c, nil
		}
		if ch := slot.dialing; ch != nil {
			p.mu.Unlock()
			t := time.NewTimer(time.Until(deadline))
			select {
			case <-ch:
				t.Stop()
				continue
			case <-t.C:
				return nil, errNoMaster
			}
		}
		ch := make(chan struct{})
		slot.dialing = ch
		p.mu.Unlock()

		b, err := dial()
		var c *sharedConn
		if err == nil {
			c = newSharedConn(b, p.conns)
		}
		p.mu.Lock()
		slot.dialing = nil
		if c != nil {
			slot.c = c
		}
		p.mu.Unlock()
		close(ch)
		return c, err
	}
}

// reap closes the shared connections that carried nothing since cutoff,
// and forgets the dead ones.
func (p *sharedPool) reap(cutoff, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, set := range p.sets {
		live := 0
		for _, slot := range set {
			if c := slot.c; c != nil && c.usable() && c.idleSince(cutoff, now) {
				c.b.close()
			}
			if c := slot.c; c != nil && !c.usable() {
				slot.c = nil
			}
			if slot.c != nil || slot.dialing != nil {
				live++
			}
		}
		if live == 0 {
			delete(p.sets, key)
		}
	}
}

// count returns how many shared connections are open.
func (p *sharedPool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, set := range p.sets {
		for _, slot := range set {
			if slot.c != nil && slot.c.usable() {
				n++
			}
		}
	}
	return n
}
