package faultshim

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/proxy"
)

// One relayed connection: its two copy goroutines, the request parser that
// finds where each command ends, and the reply counter that puts injected
// answers in their place.

// injection is a run of refused commands, answered once the server's
// replies to the commands forwarded before them have all been relayed.
type injection struct {
	after int64 // replies relayed before these answers
	n     int
	reply string
}

// conn is one relayed connection: down is the client, up the server.
type conn struct {
	s        *Shim
	down, up net.Conn
	wmu      sync.Mutex // serialises writes to down (relayed replies, injected answers)

	mu         sync.Mutex
	sent       int64 // whole requests forwarded to the server
	relayed    int64 // reply frames relayed to the client
	pending    []injection
	refusing   string // once set, every further request is answered with it
	ineligible bool   // subscribed, MONITOR or tracking: replies are not countable
	inMulti    bool
	cutUp      int64 // bytes still to forward before the cut, or -1
	cutDown    int64
	cutRST     bool
	once       sync.Once
	running    atomic.Int32 // relay goroutines still running
}

// finish ends one relay goroutine; the last one forgets the connection.
func (c *conn) finish() {
	if c.running.Add(-1) == 0 {
		c.s.forget(c)
	}
	c.s.wg.Done()
}

// abort closes both sides; rst resets them instead of a clean close.
func (c *conn) abort(rst bool) {
	c.once.Do(func() {
		if rst {
			resetClose(c.up)
			resetClose(c.down)
			return
		}
		c.up.Close()
		c.down.Close()
	})
}

// eligible lists the commands that may be refused: plain commands whose
// reply is one frame and that change no connection state.
var eligible = map[string]bool{
	"get": true, "set": true, "incr": true, "incrby": true, "decr": true, "echo": true, "ping": true,
	"exists": true, "del": true, "strlen": true, "append": true, "rpush": true, "lpush": true,
	"llen": true, "eval": true, "evalsha": true, "publish": true, "type": true, "getrange": true,
}

// okWhileLoading lists the commands Redis 7 runs while it loads its dataset
// (their "loading" flag) and that leave the reply count alone. A connection
// that is refusing still forwards them. MULTI, EXEC, WATCH and the
// (un)subscribe commands are refused instead (Redis would accept them): the
// shim cannot make EXEC fail for commands it refused inside MULTI, nor
// count replies once pushes flow; for the client the outcome is the same,
// nothing ran.
var okWhileLoading = map[string]bool{
	"auth": true, "hello": true, "select": true, "reset": true, "quit": true, "client": true,
	"info": true, "role": true,
}

// request is one whole request of a chunk.
type request struct {
	start, end int
	name       string
	arg1       string
}

// requests forwards the client's requests to the server, parsing them to
// know where each ends and what it is.
func (c *conn) requests() {
	defer c.finish()
	rd := make([]byte, 32<<10)
	var buf []byte // bytes of requests not yet complete (already forwarded unless refusing)
	need := 1
	broken := false // unparseable input: relay blindly from now on
	for {
		n, err := c.down.Read(rd)
		if n > 0 {
			data := rd[:n]
			if broken {
				if !c.forward(data, 0) {
					return
				}
				continue
			}
			aligned := len(buf) == 0
			buf = append(buf, data...)
			var reqs []request
			off := 0
			for off < len(buf) && len(buf) >= need {
				cmd, m, nd, perr := proxy.ParseRequest(buf[off:], proxy.RequestLimits{})
				if perr != nil {
					broken = true
					break
				}
				if m == 0 {
					need = off + nd
					break
				}
				r := request{start: off, end: off + m}
				if len(cmd.Args) > 0 {
					r.name = strings.ToLower(string(cmd.Args[0]))
				}
				if len(cmd.Args) > 1 {
					r.arg1 = strings.ToLower(string(cmd.Args[1]))
				}
				reqs = append(reqs, r)
				off += m
				need = 1
			}
			if broken {
				c.mu.Lock()
				c.ineligible = true
				refusing := c.refusing != ""
				c.mu.Unlock()
				if refusing {
					c.abort(false) // cannot tell requests apart any more: end it
					return
				}
				if !c.forward(data, 0) {
					return
				}
				buf = nil
				continue
			}
			if !c.handle(buf, data, reqs, aligned && off == len(buf)) {
				return // forward aborted the connection
			}
			buf = append(buf[:0], buf[off:]...)
			need = max(1, need-off)
		}
		if err != nil {
			if tc, ok := c.up.(*net.TCPConn); ok && errors.Is(err, io.EOF) {
				// The client closed its side: let the server see the
				// same, and let the replies still due reach the client.
				tc.CloseWrite()
				return
			}
			c.abort(false)
			return
		}
	}
}

// handle forwards or refuses the requests completed by one read. buf holds
// them (from its start), data is what the read returned, whole says the
// read was exactly whole requests. It reports false once the connection is
// done.
func (c *conn) handle(buf, data []byte, reqs []request, whole bool) bool {
	c.mu.Lock()
	if reply := c.refusing; reply != "" {
		c.mu.Unlock()
		// Refused from now on, but for what a loading Redis accepts
		// too (connection state: AUTH, HELLO, SELECT, RESET, CLIENT …).
		for _, r := range reqs {
			if okWhileLoading[r.name] && !(r.name == "client" && r.arg1 == "tracking") {
				c.mu.Lock()
				c.track(r)
				c.mu.Unlock()
				if !c.forward(buf[r.start:r.end], 1) {
					return false
				}
				continue
			}
			c.mu.Lock()
			c.refuse(1, reply)
			c.mu.Unlock()
		}
		return true
	}
	qualifies := whole && len(reqs) > 0 && !c.ineligible && !c.inMulti
	for _, r := range reqs {
		qualifies = qualifies && eligible[r.name]
	}
	c.mu.Unlock()
	reply := ""
	if qualifies {
		reply = c.s.takeInjection()
	}
	if reply == "" {
		c.mu.Lock()
		for _, r := range reqs {
			c.track(r)
		}
		c.mu.Unlock()
		return c.forward(data, int64(len(reqs)))
	}
	k := c.s.intn(len(reqs))
	if !c.forward(buf[:reqs[k].start], int64(k)) {
		return false
	}
	c.s.refusals.Add(1)
	c.mu.Lock()
	c.refusing = reply
	c.refuse(len(reqs)-k, reply)
	c.mu.Unlock()
	return true
}

// track notes what a forwarded request does to the connection. c.mu is held.
func (c *conn) track(r request) {
	switch r.name {
	case "subscribe", "psubscribe", "ssubscribe", "monitor":
		c.ineligible = true
	case "client":
		if r.arg1 == "tracking" {
			c.ineligible = true
		}
	case "multi":
		c.inMulti = true
	case "exec", "discard", "reset":
		c.inMulti = false
	}
}

// refuse queues n answers of reply after the replies to everything
// forwarded so far. c.mu is held.
func (c *conn) refuse(n int, reply string) {
	if n == 0 {
		return
	}
	c.s.injected.Add(int64(n))
	if l := len(c.pending); l > 0 && c.pending[l-1].after == c.sent {
		c.pending[l-1].n += n
	} else {
		c.pending = append(c.pending, injection{after: c.sent, n: n, reply: reply})
	}
	c.deliver()
}

// deliver writes the queued answers whose turn has come. c.mu is held.
func (c *conn) deliver() {
	for len(c.pending) > 0 && c.pending[0].after == c.relayed {
		in := c.pending[0]
		c.pending = c.pending[1:]
		c.wmu.Lock()
		c.down.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(c.down, strings.Repeat(in.reply, in.n))
		c.wmu.Unlock()
		if err != nil {
			c.abort(false)
			return
		}
	}
}

// forward writes p to the server, honouring an armed cut, and counts n
// more whole requests forwarded. It reports false once the connection is
// done.
func (c *conn) forward(p []byte, n int64) bool {
	c.mu.Lock()
	cut, rst := c.cutUp, c.cutRST
	if cut >= 0 && int64(len(p)) > cut {
		p = p[:cut]
	} else {
		cut = -1
		if c.cutUp >= 0 {
			c.cutUp -= int64(len(p))
		}
	}
	c.sent += n
	c.mu.Unlock()
	if len(p) > 0 {
		c.up.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.up.Write(p); err != nil {
			c.abort(false)
			return false
		}
	}
	if cut >= 0 {
		c.abort(rst)
		return false
	}
	return true
}

// replies relays the server's replies to the client frame by frame,
// counting replies so that injected answers go in their place.
func (c *conn) replies() {
	defer c.finish()
	defer c.abort(false)
	fr := proxy.NewFramer(c.up, 32<<10)
	fr.MaxDepth = 1 << 16 // whatever Redis sends (deep Lua replies) is relayed
	fr.CaptureLimit = -1
	w := &cutWriter{c: c}
	for {
		f, err := fr.Next(w)
		if err != nil {
			return
		}
		if !f.IsReply() {
			continue
		}
		c.mu.Lock()
		c.relayed++
		c.deliver()
		c.mu.Unlock()
	}
}

// cutWriter writes relayed reply bytes to the client, honouring an armed
// cut.
type cutWriter struct{ c *conn }

func (w *cutWriter) Write(p []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	cut, rst := c.cutDown, c.cutRST
	if cut >= 0 && int64(len(p)) > cut {
		p = p[:cut]
	} else {
		cut = -1
		if c.cutDown >= 0 {
			c.cutDown -= int64(len(p))
		}
	}
	c.mu.Unlock()
	c.wmu.Lock()
	c.down.SetWriteDeadline(time.Now().Add(30 * time.Second))
	n, err := c.down.Write(p)
	c.wmu.Unlock()
	if err != nil {
		return n, err
	}
	if cut >= 0 {
		c.abort(rst)
		return n, errors.New("faultshim: cut")
	}
	return n, nil
}
