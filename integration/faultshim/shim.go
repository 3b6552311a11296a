// Package faultshim is a TCP relay for tests that sits between a Redis
// client (the proxy) and a Redis server and breaks the traffic on command:
// it cuts connections, at once or after a chosen number of bytes in either
// direction, and it answers commands with an error of its choice (-LOADING,
// -READONLY) instead of forwarding them, the way a server that is loading
// its dataset or was demoted answers every command from some point on.
//
// Goroutines: one accept loop per Shim, and two per relayed connection (one
// per direction). Every one of them ends when its connection or the Shim is
// closed. Close waits for all of them.
package faultshim

import (
	"errors"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Redis's own error replies, for Inject.
const (
	Loading  = "-LOADING Redis is loading the dataset in memory\r\n"
	Readonly = "-READONLY You can't write against a read only replica.\r\n"
)

// Direction says which way of a connection a cut applies to.
type Direction int

const (
	// ToServer is the client's requests, on their way to the server.
	ToServer Direction = iota
	// ToClient is the server's replies, on their way to the client.
	ToClient
)

// Stats counts what a Shim did.
type Stats struct {
	Accepted int64 // connections relayed
	Cuts     int64 // connections cut by Cut or CutAll
	Injected int64 // commands answered by the shim (not forwarded)
	Refusals int64 // connections on which refusing started
}

// Shim relays connections from its own listener to a target address.
type Shim struct {
	ln     net.Listener
	target string
	dialer net.Dialer

	mu     sync.Mutex
	conns  map[*conn]struct{}
	rng    *rand.Rand
	armed  string // reply of the next injection, "" when none is armed
	closed bool
	wg     sync.WaitGroup

	accepted, cuts, injected, refusals atomic.Int64
}

// New listens on 127.0.0.1:0 and relays every connection to target. seed
// makes the shim's random choices (which connection, which command, which
// byte) repeatable for the same traffic.
func New(target string, seed int64) (*Shim, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Shim{
		ln: ln, target: target, dialer: net.Dialer{Timeout: 2 * time.Second},
		conns: map[*conn]struct{}{}, rng: rand.New(rand.NewSource(seed)),
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the shim's listen address (host:port).
func (s *Shim) Addr() string { return s.ln.Addr().String() }

// Target is the address the shim relays to.
func (s *Shim) Target() string { return s.target }

// Stats returns what the shim did so far.
func (s *Shim) Stats() Stats {
	return Stats{Accepted: s.accepted.Load(), Cuts: s.cuts.Load(), Injected: s.injected.Load(), Refusals: s.refusals.Load()}
}

// Close stops accepting, cuts every connection and waits for the relay
// goroutines. Safe to call twice.
func (s *Shim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.abort(false)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// CutAll cuts every relayed connection at once (both sides reset, as when a
// server dies) and returns how many there were.
func (s *Shim) CutAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort(true)
	}
	s.cuts.Add(int64(len(s.conns)))
	return len(s.conns)
}

// Cut picks one relayed connection at random and cuts it after at most
// within more bytes in direction d (a random count in [0, within]): the
// bytes before that offset are delivered, the rest never are. Both sides
// are then closed, with a reset when rst is set. It reports whether there
// was a connection to cut.
func (s *Shim) Cut(d Direction, within int, rst bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		return false
	}
	pick := s.rng.Intn(len(s.conns))
	for c := range s.conns {
		if pick > 0 {
			pick--
			continue
		}
		at := int64(s.rng.Intn(within + 1))
		c.mu.Lock()
		if d == ToServer {
			c.cutUp = at
		} else {
			c.cutDown = at
		}
		c.cutRST = rst
		c.mu.Unlock()
		s.cuts.Add(1)
		return true
	}
	return false
}

// Inject arms one injection of reply (Loading or Readonly, or any whole
// RESP error line). The next chunk of requests that qualifies, on any
// connection, is refused from a random command of it on: the commands
// before it are forwarded and answered by the server, then the shim answers
// that command and every later one on that connection with reply, in their
// place, and forwards none of them, as a server answers every command once
// it loads or was demoted; only the connection-state commands a loading
// Redis accepts (AUTH, HELLO, SELECT, RESET, CLIENT, QUIT) still go through.
// A chunk qualifies when it is one read of whole requests, all plain
// commands (GET, SET, INCR, ECHO, EVAL, …), on a connection that never
// subscribed, never sent MONITOR or CLIENT TRACKING and is not inside MULTI.
// A later Inject replaces an injection not yet used.
func (s *Shim) Inject(reply string) {
	s.mu.Lock()
	s.armed = reply
	s.mu.Unlock()
}

// Disarm cancels an injection not yet used and reports whether there was
// one.
func (s *Shim) Disarm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.armed != ""
	s.armed = ""
	return was
}

// UpstreamAddrs returns the local addresses of the shim's connections to
// the target: the "addr" the server lists for them in CLIENT LIST.
func (s *Shim) UpstreamAddrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for c := range s.conns {
		out = append(out, c.up.LocalAddr().String())
	}
	return out
}

func (s *Shim) accept() {
	defer s.wg.Done()
	for {
		down, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		up, err := s.dialer.Dial("tcp", s.target)
		if err != nil {
			// The server is down: the client sees what it would see
			// connecting to it, a connection that ends at once.
			resetClose(down)
			continue
		}
		c := &conn{s: s, down: down, up: up, cutUp: -1, cutDown: -1}
		c.running.Store(2)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			resetClose(down)
			resetClose(up)
			return
		}
		s.conns[c] = struct{}{}
		s.accepted.Add(1)
		s.wg.Add(2)
		s.mu.Unlock()
		go c.requests()
		go c.replies()
	}
}

// takeInjection returns the armed reply and disarms it.
func (s *Shim) takeInjection() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.armed
	s.armed = ""
	return r
}

func (s *Shim) intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Intn(n)
}

func (s *Shim) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// resetClose closes nc with a TCP reset.
func resetClose(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}
