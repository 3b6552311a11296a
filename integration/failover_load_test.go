package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The failover tests run this load through the proxy while they break the
// topology, then check what its clients saw. Every part is bounded in time
// (loadMaxRun) and count, runs on its own goroutine, never calls t.Fatal,
// and is joined by foLoad.stop.

const (
	loadWriters    = 4
	loadWriteEvery = 8 * time.Millisecond // 4 writers: ~500 writes/s
	loadReaders    = 2
	loadReadEvery  = 10 * time.Millisecond
	loadPubEvery   = 20 * time.Millisecond
	loadIdle       = 4
	loadIdleDB     = "2"
	loadMaxRun     = 2 * time.Minute
	// loadClientTimeout is longer than any hold of the proxy, so that a
	// client-side timeout never hides what the proxy answered.
	loadClientTimeout = 20 * time.Second
)

// opRecord is one command of a writer, reader or publisher.
type opRecord struct {
	seq        int
	sent, done time.Time
	err        string // "" when it succeeded
	n          int64  // PUBLISH: receivers
}

// opLog records the commands of one load client.
type opLog struct {
	name string
	mu   sync.Mutex
	ops  []opRecord
}

func (l *opLog) add(r opRecord) {
	l.mu.Lock()
	l.ops = append(l.ops, r)
	l.mu.Unlock()
}

// snapshot returns a copy of the records so far.
func (l *opLog) snapshot() []opRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]opRecord(nil), l.ops...)
}

// errors returns the failed commands.
func (l *opLog) errors() []opRecord {
	var out []opRecord
	for _, r := range l.snapshot() {
		if r.err != "" {
			out = append(out, r)
		}
	}
	return out
}

// foLoad is the client load of a failover test: writers of unique keys
// (plain, pinned and MULTI: failover_load_pinned_test.go), readers of a
// fixed key, a publisher and a subscriber on one raw connection, a BLPOP
// blocker on one raw connection, and idle connections that did SELECT 2.
type foLoad struct {
	addr   string
	prefix string
	newCli func(*redis.Options) *redis.Client

	cancel context.CancelFunc
	wg     sync.WaitGroup

	writers []*opLog // the plain writers first, then the pinned ones
	pinned  []*pinnedWriter
	readers []*opLog
	pub     *opLog
	wrong   sync.Map // reader name -> a wrong value it read

	sub   *foSubscriber
	block *foBlocker
	idle  []*respConn
	conns []*redis.Client
}

// startLoad prepares the fixed keys, the subscriber, the blocker and the
// idle connections through the proxy at addr, then starts the writers,
// readers and publisher. newCli makes a go-redis client to the proxy.
func startLoad(t *testing.T, addr, prefix string, newCli func(*redis.Options) *redis.Client) *foLoad {
	t.Helper()
	l := &foLoad{addr: addr, prefix: prefix, newCli: newCli}
	t.Cleanup(l.stop) // after a t.Fatal too; stop is idempotent
	setup := l.client(2)
	ctx := testContext(t, 20*time.Second)
	if err := setup.Set(ctx, prefix+"ro", "read-only-value", 0).Err(); err != nil {
		t.Fatalf("load setup: SET through the proxy: %v", err)
	}

	for i := range loadIdle {
		c := dialRESP(t, addr)
		if i%2 == 1 { // half of them speak RESP3: HELLO is replayed too
			if r := c.mustDo(t, "HELLO", "3"); !strings.HasPrefix(r, "%") {
				t.Fatalf("idle %d: HELLO 3 = %q", i, r)
			}
		}
		if r := c.mustDo(t, "SELECT", loadIdleDB); r != "+OK\r\n" {
			t.Fatalf("idle %d: SELECT = %q", i, r)
		}
		if r := c.mustDo(t, "SET", l.idleKey("a", i), "v"+strconv.Itoa(i)); r != "+OK\r\n" {
			t.Fatalf("idle %d: SET = %q", i, r)
		}
		l.idle = append(l.idle, c)
	}

	l.sub = startSubscriber(t, addr, prefix+"ch")
	l.block = startBlocker(t, addr, prefix+"bl")
	// The blocker works before the failover, and is blocked again.
	l.block.wake(t, setup, "before")

	runCtx, cancel := context.WithTimeout(context.Background(), loadMaxRun)
	l.cancel = cancel
	for i := range loadWriters {
		log := &opLog{name: "writer " + strconv.Itoa(i)}
		l.writers = append(l.writers, log)
		c := l.client(2 + i%2)
		l.wg.Add(1)
		go func() { // exits when runCtx ends
			defer l.wg.Done()
			l.runWriter(runCtx, c, i, log)
		}()
	}
	l.startPinnedWriters(runCtx)
	for i := range loadReaders {
		log := &opLog{name: "reader " + strconv.Itoa(i)}
		l.readers = append(l.readers, log)
		c := l.client(3 - i%2)
		l.wg.Add(1)
		go func() { // exits when runCtx ends
			defer l.wg.Done()
			l.runReader(runCtx, c, log)
		}()
	}
	l.pub = &opLog{name: "publisher"}
	pc := l.client(2)
	l.wg.Add(1)
	go func() { // exits when runCtx ends
		defer l.wg.Done()
		l.runPublisher(runCtx, pc)
	}()
	return l
}

// client makes one go-redis client to the proxy: one connection, no
// retries (every error is counted), timeouts above the proxy's hold.
func (l *foLoad) client(proto int) *redis.Client {
	c := l.newCli(&redis.Options{
		Protocol: proto, PoolSize: 1, MaxRetries: -1,
		ReadTimeout: loadClientTimeout, WriteTimeout: loadClientTimeout, DialTimeout: 5 * time.Second,
	})
	l.conns = append(l.conns, c)
	return c
}

func (l *foLoad) writerKey(w, seq int) string {
	return l.prefix + "w" + strconv.Itoa(w) + ":" + strconv.Itoa(seq)
}

func (l *foLoad) idleKey(phase string, i int) string {
	return l.prefix + "idle:" + phase + ":" + strconv.Itoa(i)
}

// paced runs op every interval, starting after phase, until ctx ends (at
// most loadMaxRun/interval times). A late tick is not made up for: the load
// stays bounded.
func paced(ctx context.Context, phase, interval time.Duration, op func(seq int)) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(phase):
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; seq < int(loadMaxRun/interval); seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		op(seq)
	}
}

func (l *foLoad) runWriter(ctx context.Context, c *redis.Client, w int, log *opLog) {
	// The writers take turns: one write every loadWriteEvery/loadWriters.
	paced(ctx, loadWriteEvery*time.Duration(w)/loadWriters, loadWriteEvery, func(seq int) {
		r := opRecord{seq: seq, sent: time.Now()}
		// Not ctx: stopping the load must not fail a command in flight.
		err := c.Set(context.Background(), l.writerKey(w, seq), seq, 0).Err()
		r.done = time.Now()
		if err != nil {
			r.err = err.Error()
		}
		log.add(r)
	})
}

func (l *foLoad) runReader(ctx context.Context, c *redis.Client, log *opLog) {
	paced(ctx, 0, loadReadEvery, func(seq int) {
		r := opRecord{seq: seq, sent: time.Now()}
		v, err := c.Get(context.Background(), l.prefix+"ro").Result()
		r.done = time.Now()
		switch {
		case err != nil:
			r.err = err.Error()
		case v != "read-only-value":
			l.wrong.Store(log.name, v)
		}
		log.add(r)
	})
}

func (l *foLoad) runPublisher(ctx context.Context, c *redis.Client) {
	paced(ctx, 0, loadPubEvery, func(seq int) {
		r := opRecord{seq: seq, sent: time.Now()}
		n, err := c.Publish(context.Background(), l.prefix+"ch", strconv.Itoa(seq)).Result()
		r.done, r.n = time.Now(), n
		if err != nil {
			r.err = err.Error()
		}
		l.pub.add(r)
	})
}

// stopClients ends the writers, readers and publisher and waits for them.
func (l *foLoad) stopClients() {
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
}

// stop ends the whole load and waits for it. Safe to call twice.
func (l *foLoad) stop() {
	l.stopClients()
	if l.sub != nil {
		l.sub.stop()
	}
	if l.block != nil {
		l.block.stop()
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// acked returns every acknowledged write as key -> ack time.
func (l *foLoad) acked() map[string]time.Time {
	out := make(map[string]time.Time)
	for w, log := range l.writers {
		for _, r := range log.snapshot() {
			if r.err == "" {
				out[l.writerKey(w, r.seq)] = r.done
			}
		}
	}
	return out
}

// failedWrites returns every write answered with an error as key -> record.
func (l *foLoad) failedWrites() map[string]opRecord {
	out := make(map[string]opRecord)
	for w, log := range l.writers {
		for _, r := range log.errors() {
			out[l.writerKey(w, r.seq)] = r
		}
	}
	return out
}

// firstAckAfter returns the first acknowledgement of a write sent after at.
func (l *foLoad) firstAckAfter(at time.Time) (time.Time, bool) {
	var first time.Time
	for _, log := range l.writers {
		for _, r := range log.snapshot() {
			if r.err == "" && r.sent.After(at) && (first.IsZero() || r.done.Before(first)) {
				first = r.done
			}
		}
	}
	return first, !first.IsZero()
}

// longestWriteGap is the longest time any writer waited for one reply.
func (l *foLoad) longestWriteGap() time.Duration {
	var d time.Duration
	for _, log := range l.writers {
		for _, r := range log.snapshot() {
			d = max(d, r.done.Sub(r.sent))
		}
	}
	return d
}

// waitAcksAfter waits until every writer has an acknowledged write sent
// after at: the load runs on the current master.
func (l *foLoad) waitAcksAfter(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, 20*time.Second, "every writer acknowledged after "+at.Format("15:04:05.000"), func() bool {
		for _, log := range l.writers {
			ok := false
			for _, r := range log.snapshot() {
				ok = ok || r.err == "" && r.sent.After(at)
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// foSubscriber is a raw RESP2 connection subscribed to one channel through
// the proxy. It never reconnects: if the proxy closed it, dropped is set.
type foSubscriber struct {
	c       *respConn
	channel string
	done    chan struct{}

	mu       sync.Mutex
	got      map[int]time.Time // publisher seq or marker -> receipt
	markers  map[string]time.Time
	other    []string // frames that are not messages
	dropped  error
	stopping bool
}

func startSubscriber(t *testing.T, addr, channel string) *foSubscriber {
	t.Helper()
	s := &foSubscriber{c: dialRESP(t, addr), channel: channel, done: make(chan struct{}),
		got: make(map[int]time.Time), markers: make(map[string]time.Time)}
	if r := s.c.mustDo(t, "SUBSCRIBE", channel); !strings.Contains(r, "subscribe") {
		t.Fatalf("SUBSCRIBE = %q", r)
	}
	go s.run()
	return s
}

// run reads messages until the connection fails or stop closes it.
func (s *foSubscriber) run() {
	defer close(s.done)
	for {
		f, err := s.c.read(loadMaxRun)
		if err != nil {
			s.mu.Lock()
			if !s.stopping {
				s.dropped = err
			}
			s.mu.Unlock()
			return
		}
		payload := lastBulk(f)
		s.mu.Lock()
		switch n, err := strconv.Atoi(payload); {
		case !isMessage(f):
			s.other = append(s.other, f)
		case err == nil:
			s.got[n] = time.Now()
		default:
			s.markers[payload] = time.Now()
		}
		s.mu.Unlock()
	}
}

func (s *foSubscriber) stop() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.c.nc.Close()
	<-s.done
}

// isMessage reports whether a frame is a RESP2 or RESP3 pub/sub message.
func isMessage(f string) bool {
	return (strings.HasPrefix(f, "*3\r\n") || strings.HasPrefix(f, ">3\r\n")) &&
		strings.HasPrefix(f[4:], "$7\r\nmessage\r\n")
}

// lastBulk returns the last line of a frame: a message's payload.
func lastBulk(f string) string {
	lines := strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n")
	return lines[len(lines)-1]
}

// foBlocker keeps one BLPOP blocked through the proxy on one raw
// connection: after a value or an error reply it sends BLPOP again.
type foBlocker struct {
	c    *respConn
	key  string
	done chan struct{}

	mu       sync.Mutex
	values   map[string]time.Time
	errs     []string
	dropped  error
	stopping bool
}

func startBlocker(t *testing.T, addr, key string) *foBlocker {
	t.Helper()
	b := &foBlocker{c: dialRESP(t, addr), key: key, done: make(chan struct{}), values: make(map[string]time.Time)}
	go b.run()
	return b
}

// run sends BLPOP again after every reply, at most 1000 times; it exits
// when the connection fails or stop closes it.
func (b *foBlocker) run() {
	defer close(b.done)
	for range 1000 {
		err := b.c.send("BLPOP", b.key, "0")
		var f string
		if err == nil {
			f, err = b.c.read(loadMaxRun)
		}
		if err != nil {
			b.mu.Lock()
			if !b.stopping {
				b.dropped = err
			}
			b.mu.Unlock()
			return
		}
		b.mu.Lock()
		isErr := strings.HasPrefix(f, "-")
		if isErr {
			b.errs = append(b.errs, strings.TrimSpace(f))
		} else {
			b.values[lastBulk(f)] = time.Now()
		}
		b.mu.Unlock()
		if isErr {
			time.Sleep(50 * time.Millisecond) // bounds the loop if errors repeat
		}
	}
}

// wake pushes value through c and waits until the blocker got it.
func (b *foBlocker) wake(t *testing.T, c *redis.Client, value string) {
	t.Helper()
	ctx := testContext(t, 20*time.Second)
	if err := c.RPush(ctx, b.key, value).Err(); err != nil {
		t.Fatalf("RPUSH %s through the proxy: %v", value, err)
	}
	waitFor(t, 15*time.Second, "the BLPOP client to receive "+value, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, ok := b.values[value]
		return ok || b.dropped != nil
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped != nil {
		t.Fatalf("the BLPOP client's connection was closed: %v", b.dropped)
	}
}

func (b *foBlocker) stop() {
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
	b.c.nc.Close()
	<-b.done
}

// summary is a one-line account of the load, for the test log.
func (l *foLoad) summary() string {
	var sb strings.Builder
	total, errs := 0, 0
	for _, log := range append(append([]*opLog{}, l.writers...), append(l.readers, l.pub)...) {
		ops := log.snapshot()
		total += len(ops)
		for _, r := range ops {
			if r.err != "" {
				errs++
			}
		}
	}
	fmt.Fprintf(&sb, "%d commands, %d errors, longest write %v", total, errs, l.longestWriteGap().Round(time.Millisecond))
	return sb.String()
}
