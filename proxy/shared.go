package proxy

import (
	"bytes"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Shared backend connections carry the plain commands of many sessions at
// once (as twemproxy, predixy and Codis do): Redis reads many commands per
// read and answers them in one write, and no load makes the proxy dial a
// connection per request.
//
// A session hands a whole batch (a shareReq) to one shared connection and
// waits for it. Whoever submits while nobody is writing becomes the writer
// and writes everything queued, its own batch and those queued meanwhile, in
// one write, until the queue is empty (flat combining: no writer goroutine,
// no hand-off on the hot path). One reader goroutine per connection matches
// reply frames to the batches in the order they were written and copies them
// into each batch's own buffer: a client that does not read its replies never
// stalls the others. A batch whose replies outgrow shareMaxReply is streamed
// instead, through a small bounded buffer at its client's pace (shareReq.
// stream): its connection then takes no new batches, and its client must keep
// reading (shareStallTimeout). When a connection fails, each batch is settled
// on its own, with how many of its bytes were written.

// shareReq is one batch of one session on a shared connection. It belongs to
// the session, except between submit and done, when the connection's writer
// and reader use it.
type shareReq struct {
	bufs [][]byte // the requests, runs of adjacent requests merged
	ends []int64  // end of each command in the batch's bytes
	size int64    // bytes in all

	// Filled by the reader: the replies, whole, with any push or attribute
	// frames before each.
	out    []byte
	starts []int // where each reply frame starts in out
	stops  []int // where each reply ends in out
	types  []byte
	n      int // replies come (written by the reader until done, or stream's close)

	// Streaming: once out passed shareMaxReply with no reply in it to
	// retry, the reader signals done with stream set, leaves out, starts,
	// stops and types to the session (streamAt replies whole in out, then
	// the start of the next), and passes everything after through stream,
	// closing it when the batch is answered or the connection failed.
	stream   chan streamMsg
	streamAt int
	noStream bool // out passed shareMaxReply, but with a reply to retry: kept whole
	total    int  // bytes of replies so far (the reader's)

	// Set when done is signalled.
	err      error // the connection failed before every reply came
	sent     int64 // bytes of the batch written when it failed
	external bool  // the failure was not the proxy's doing (a switch, the reaper)

	off  int64 // position of the batch in its connection's byte stream
	done chan struct{}
}

func newShareReq() any { return &shareReq{done: make(chan struct{}, 1)} }

// load fills r with the commands of a batch.
func (r *shareReq) load(cmds []Command) {
	r.bufs, r.ends, r.size = r.bufs[:0], r.ends[:0], 0
	r.out, r.starts, r.stops, r.types = r.out[:0], r.starts[:0], r.stops[:0], r.types[:0]
	r.err, r.sent, r.external = nil, 0, false
	r.n, r.stream, r.streamAt, r.noStream, r.total = 0, nil, 0, false, 0
	for i := range cmds {
		raw := cmds[i].Raw
		r.size += int64(len(raw))
		r.ends = append(r.ends, r.size)
		if n := len(r.bufs); n > 0 && adjacent(r.bufs[n-1], raw) {
			r.bufs[n-1] = r.bufs[n-1][:len(r.bufs[n-1])+len(raw)]
			continue
		}
		r.bufs = append(r.bufs, raw)
	}
}

// replies is how many replies have come.
func (r *shareReq) replies() int { return r.n }

// streamMsg is what the reader passes on of a streamed batch: bytes of
// replies, or the end of one reply (its type, and where its frame starts and
// ends in the batch's reply bytes, after any push or attribute frames).
type streamMsg struct {
	p           []byte
	end         bool
	typ         byte
	start, stop int
}

// streamChunks bounds what a streamed batch holds between the reader and its
// session: that many chunks of the framer's reads.
const streamChunks = 8

// streamable reports whether none of the replies whole in out is one to
// retry (a batch holding one is kept whole, as the retry needs).
func (r *shareReq) streamable() bool {
	for i, t := range r.types {
		if t == '-' && isRetryable(r.out[r.starts[i]:r.stops[i]]) {
			return false
		}
	}
	return true
}

// release drops what r should not keep in the pool.
func (r *shareReq) release() {
	clear(r.bufs)
	if cap(r.out) > 64<<10 {
		r.out = nil
	}
}

// errUnexpectedReply: a reply came with no batch waiting for it.
var errUnexpectedReply = errors.New("reply with no request in flight")

// sharedConn is one backend connection shared by many sessions.
type sharedConn struct {
	b    *backend
	pool *pool // knows b, so that a switch closes it; forgets it when c ends

	// retired: a batch on c is streamed at its client's pace, so new
	// batches go to another connection; c closes once it carried the rest.
	retired atomic.Bool

	mu       sync.Mutex
	queue    []*shareReq // submitted, not yet being written
	spare    []*shareReq // the other queue, swapped in while the writer writes
	inflight reqQueue    // being written or written, oldest first; the reader's
	writing  bool        // a submitter is writing
	reading  bool        // the reader runs
	failed   bool
	external bool // the server or the network failed it, not the proxy
	err      error
	enq      int64     // bytes queued so far: the stream offset of the next batch
	sent     int64     // bytes written so far
	idleMark int64     // enq when the reaper last saw it change
	idleAt   time.Time // when that was
	out      []byte    // the queued batches' bytes, copied: a session's own buffer is its again once it is answered
	outSpare []byte    // the other buffer, swapped in while the writer writes

	// The reader's own.
	cur   *shareReq // the batch the frame being read answers
	fresh bool      // no byte of the frame being read seen yet
	start int       // where the frame being read starts, in a streamed batch
}

func newSharedConn(b *backend, p *pool) *sharedConn {
	c := &sharedConn{b: b, pool: p, reading: true, idleAt: time.Now()}
	go c.read()
	return c
}

// usable reports whether new batches may go to c.
func (c *sharedConn) usable() bool { return !c.b.dead.Load() && !c.retired.Load() }

// submit queues r and, unless another submitter is writing, writes the
// queue. It returns false when c had failed already: nothing of r was
// written, and done will not be signalled.
func (c *sharedConn) submit(r *shareReq) bool {
	c.mu.Lock()
	if c.failed {
		c.mu.Unlock()
		return false
	}
	r.off = c.enq
	c.enq += r.size
	c.queue = append(c.queue, r)
	for _, b := range r.bufs {
		c.out = append(c.out, b...)
	}
	if c.writing {
		c.mu.Unlock()
		return true
	}
	c.writing = true
	// Let the sessions that are ready to run queue their batches first:
	// they then go out in this write.
	c.mu.Unlock()
	runtime.Gosched()
	c.mu.Lock()
	for len(c.queue) > 0 && !c.failed {
		batch := c.queue
		c.queue = c.spare[:0]
		for _, q := range batch {
			c.inflight.push(q) // before writing: a reply may come before Write returns
		}
		buf := c.out
		c.out = c.outSpare[:0]
		c.mu.Unlock()
		n, err := c.b.nc.Write(buf)
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		if cap(buf) <= 4*shareMaxBytes {
			c.outSpare = buf[:0]
		} else {
			c.outSpare = nil // a burst's buffer is not kept
		}
		c.sent += int64(n)
		if err != nil {
			c.fail(err)
		}
	}
	c.writing = false
	c.settle()
	c.mu.Unlock()
	return true
}

// fail marks c failed and closes its connection; c.mu is held. The batches
// are settled once neither the writer nor the reader uses them any more.
func (c *sharedConn) fail(err error) {
	if c.failed {
		return
	}
	c.failed, c.err = true, err
	c.external = !c.b.dead.Load()
	c.b.close()
}

// settle signals every batch of a failed connection, once nothing uses
// them: each learns how much of it was written. c.mu is held.
func (c *sharedConn) settle() {
	if !c.failed || c.writing || c.reading {
		return
	}
	for r := c.inflight.pop(); r != nil; r = c.inflight.pop() {
		r.err, r.sent, r.external = c.err, min(max(c.sent-r.off, 0), r.size), c.external
		r.signal()
	}
	for i, r := range c.queue {
		r.err, r.sent, r.external = c.err, 0, c.external
		r.done <- struct{}{}
		c.queue[i] = nil
	}
	c.queue = c.queue[:0]
}

// read matches reply frames to batches until the connection fails.
func (c *sharedConn) read() {
	for {
		c.fresh = true
		f, err := c.b.fr.Next(c)
		if err != nil {
			c.mu.Lock()
			c.reading = false
			c.fail(err)
			c.settle()
			c.mu.Unlock()
			c.pool.discard(c.b)
			return
		}
		if !f.IsReply() {
			continue // part of the next reply's bytes
		}
		r := c.cur
		r.n++
		if r.stream != nil {
			r.stream <- streamMsg{end: true, typ: f.Type, start: c.start, stop: r.total}
		} else {
			r.stops = append(r.stops, len(r.out))
			r.types = append(r.types, f.Type)
		}
		if r.n < len(r.ends) {
			continue
		}
		c.mu.Lock()
		c.inflight.pop() // r
		if c.retired.Load() && c.inflight.len() == 0 && len(c.queue) == 0 {
			c.fail(errRetired) // the reader's next read ends it
		}
		c.mu.Unlock()
		c.cur = nil
		r.signal()
	}
}

// errRetired ends a retired shared connection once it carried its batches.
var errRetired = errors.New("shared connection retired")

// signal tells r's session that r is answered, or its connection failed.
func (r *shareReq) signal() {
	if r.stream != nil {
		close(r.stream) // done was signalled when streaming began
		return
	}
	r.done <- struct{}{}
}

// Write receives the bytes of reply frames from the framer (read).
func (c *sharedConn) Write(p []byte) (int, error) {
	if c.cur == nil {
		c.mu.Lock()
		c.cur = c.inflight.front()
		c.mu.Unlock()
		if c.cur == nil {
			return 0, errUnexpectedReply
		}
	}
	r := c.cur
	if r.stream != nil {
		if c.fresh {
			c.fresh = false
			c.start = r.total
		}
		r.total += len(p)
		r.stream <- streamMsg{p: bytes.Clone(p)} // waits while the session's client catches up
		return len(p), nil
	}
	if c.fresh {
		c.fresh = false
		if len(r.starts) == len(r.stops) {
			r.starts = append(r.starts, len(r.out))
		} else {
			r.starts[len(r.starts)-1] = len(r.out) // after a push or attribute frame
		}
	}
	r.out = append(r.out, p...)
	r.total = len(r.out)
	if r.total > shareMaxReply && !r.noStream {
		if !r.streamable() {
			r.noStream = true
			return len(p), nil
		}
		// Hand the batch to its session from here on, and send new
		// batches elsewhere: they would wait behind this client.
		r.stream = make(chan streamMsg, streamChunks)
		r.streamAt = len(r.stops)
		c.start = r.starts[len(r.starts)-1]
		c.retired.Store(true)
		r.done <- struct{}{}
	}
	return len(p), nil
}

// idleSince reports whether c has carried nothing since before cutoff.
func (c *sharedConn) idleSince(cutoff, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.enq != c.idleMark || c.inflight.len() > 0 || len(c.queue) > 0 {
		c.idleMark, c.idleAt = c.enq, now
		return false
	}
	return c.idleAt.Before(cutoff)
}

// reqQueue is a FIFO of batches.
type reqQueue struct {
	items []*shareReq
	head  int
}

func (q *reqQueue) push(r *shareReq) {
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 64 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, r)
}

func (q *reqQueue) front() *shareReq {
	if q.head == len(q.items) {
		return nil
	}
	return q.items[q.head]
}

func (q *reqQueue) pop() *shareReq {
	r := q.front()
	if r != nil {
		q.items[q.head] = nil
		q.head++
	}
	return r
}

func (q *reqQueue) len() int { return len(q.items) - q.head }
