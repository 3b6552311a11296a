package proxy

import (
	"errors"
	"net"
	"sync"
)

// errOutputLimit ends a full-duplex client that left more than its output
// limit unread.
var errOutputLimit = errors.New("client output limit reached")

// outQueue decouples a full-duplex client from its server connection, as
// Redis's output buffer does: writes (messages from the server, the
// session's own replies) are queued without blocking and a goroutine sends
// them to the client. A client that leaves more than limit bytes unsent is
// cut off (Write fails with errOutputLimit), so the proxy keeps draining the
// server and its memory stays bounded by the limit.
type outQueue struct {
	conn  net.Conn
	limit int64

	mu      sync.Mutex
	cond    *sync.Cond
	queue   [][]byte
	queued  int64
	err     error // the client's write error, or errOutputLimit
	closed  bool
	done    chan struct{}
	onLimit func()
}

func newOutQueue(conn net.Conn, limit int64, onLimit func()) *outQueue {
	q := &outQueue{conn: conn, limit: limit, done: make(chan struct{}), onLimit: onLimit}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

// Write queues a copy of p.
func (q *outQueue) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return 0, q.err
	}
	if q.closed {
		return 0, net.ErrClosed
	}
	if q.queued+int64(len(p)) > q.limit {
		q.err = errOutputLimit
		q.queue, q.queued = nil, 0
		q.cond.Broadcast()
		if q.onLimit != nil {
			go q.onLimit()
		}
		return 0, q.err
	}
	q.queue = append(q.queue, append([]byte(nil), p...))
	q.queued += int64(len(p))
	q.cond.Signal()
	return len(p), nil
}

// run sends queued writes until the queue is closed or the client fails.
func (q *outQueue) run() {
	defer close(q.done)
	var bufs net.Buffers
	for {
		q.mu.Lock()
		for len(q.queue) == 0 && !q.closed && q.err == nil {
			q.cond.Wait()
		}
		if q.err != nil || len(q.queue) == 0 {
			q.mu.Unlock()
			return
		}
		// The queue keeps accepting while this write blocks; queued counts
		// both until the write returns.
		bufs = append(bufs[:0], q.queue...)
		n := q.queued
		clear(q.queue)
		q.queue = q.queue[:0]
		q.mu.Unlock()
		w := bufs // WriteTo consumes its receiver
		_, err := w.WriteTo(q.conn)
		q.mu.Lock()
		q.queued -= n
		clear(bufs)
		if err != nil && q.err == nil {
			q.err = err
		}
		q.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// close lets the writer send what is queued and stop.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// drain closes the queue and waits until what it held was sent. It returns
// the client's write error, if any.
func (q *outQueue) drain() error {
	q.close()
	<-q.done
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}
