package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// op is one SET of a writer.
type op struct {
	writer, seq int
	sent, done  time.Time
	err         string // "" when acknowledged
}

// writers send SET <prefix>w<i>:<seq> <seq> through the proxy, each on its
// own single connection, paced, with no retries: every error counts. The
// first n are plain; the next pinned ones set a client name on every
// connection (go-redis sends it with HELLO and CLIENT SETNAME, as Lettuce,
// Redisson and redis-py with client_name do), which pins their session in
// sentinel-proxy to one backend connection.
type writers struct {
	addr   string
	prefix string
	every  time.Duration
	n      int
	pinned int

	mu  sync.Mutex
	ops []op
}

// Writer kinds, as reported.
const (
	kindPlain  = "plain"
	kindPinned = "pinned"
)

// kind returns the kind of writer i.
func (w *writers) kind(i int) string {
	if i >= w.n {
		return kindPinned
	}
	return kindPlain
}

func (w *writers) key(writer, seq int) string {
	return w.prefix + "w" + strconv.Itoa(writer) + ":" + strconv.Itoa(seq)
}

// writerOf returns the writer index in a key of ours, or -1.
func (w *writers) writerOf(key string) int {
	rest, ok := strings.CutPrefix(key, w.prefix+"w")
	if !ok {
		return -1
	}
	n, _, _ := strings.Cut(rest, ":")
	i, err := strconv.Atoi(n)
	if err != nil {
		return -1
	}
	return i
}

// run starts the writers; they stop when ctx ends, each after at most
// maxOps commands.
func (w *writers) run(ctx context.Context, wg *sync.WaitGroup, maxOps int) {
	all := w.n + w.pinned
	for i := range all {
		o := &redis.Options{
			Addr: w.addr, Protocol: 2, PoolSize: 1, MaxRetries: -1, DisableIdentity: true,
			DialTimeout: 2 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second,
		}
		if w.kind(i) == kindPinned {
			o.ClientName = "failoverload-pinned-" + strconv.Itoa(i)
		}
		c := redis.NewClient(o)
		wg.Add(1)
		go func() { // exits when ctx ends or after maxOps commands
			defer wg.Done()
			defer c.Close()
			// Spread the writers over the interval: one write every
			// every/all, not all at once.
			select {
			case <-ctx.Done():
				return
			case <-time.After(w.every * time.Duration(i) / time.Duration(all)):
			}
			tick := time.NewTicker(w.every)
			defer tick.Stop()
			for seq := 0; seq < maxOps; seq++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				o := op{writer: i, seq: seq, sent: time.Now()}
				// Not ctx: the end of the run must not fail a write in flight.
				err := c.Set(context.Background(), w.key(i, seq), seq, 0).Err()
				o.done = time.Now()
				if err != nil {
					o.err = err.Error()
				}
				w.mu.Lock()
				w.ops = append(w.ops, o)
				w.mu.Unlock()
			}
		}()
	}
}

func (w *writers) all() []op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]op(nil), w.ops...)
}

// writeLog writes every command as CSV: writer,kind,seq,sent_unix_ns,done_unix_ns,error.
func (w *writers) writeLog(out io.Writer) error {
	bw := bufio.NewWriter(out)
	fmt.Fprintln(bw, "writer,kind,seq,sent_unix_ns,done_unix_ns,error")
	for _, o := range w.all() {
		fmt.Fprintf(bw, "%d,%s,%d,%d,%d,%q\n", o.writer, w.kind(o.writer), o.seq, o.sent.UnixNano(), o.done.UnixNano(), o.err)
	}
	return bw.Flush()
}

// missingOn returns which of keys do not exist on the node c talks to.
func missingOn(ctx context.Context, c *redis.Client, keys []string) (map[string]bool, error) {
	missing := make(map[string]bool)
	for start := 0; start < len(keys); start += 1000 {
		batch := keys[start:min(start+1000, len(keys))]
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				p.Exists(ctx, k)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("exists: %w", err)
		}
		for i, cmd := range cmds {
			if cmd.(*redis.IntCmd).Val() == 0 {
				missing[batch[i]] = true
			}
		}
	}
	return missing, nil
}

// idleConn is a raw client connection that did SELECT 2 and one SET, then
// stays idle until the check after the failover. It never reconnects.
type idleConn struct {
	nc net.Conn
	br *bufio.Reader
}

func dialIdle(addr string) (*idleConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &idleConn{nc: nc, br: bufio.NewReader(nc)}, nil
}

// do sends one command and reads a one-line or bulk reply.
func (c *idleConn) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, b.String()); err != nil {
		return "", err
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") || line == "$-1" {
		return line, nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return "", fmt.Errorf("bad bulk length %q", line)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// openIdle opens n idle connections in db 2 with one key each.
func openIdle(addr, prefix string, n int) ([]*idleConn, error) {
	var conns []*idleConn
	for i := range n {
		c, err := dialIdle(addr)
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
		if r, err := c.do("SELECT", "2"); err != nil || r != "+OK" {
			return conns, fmt.Errorf("idle %d: SELECT 2 = %q, %v", i, r, err)
		}
		if r, err := c.do("SET", prefix+"idle:"+strconv.Itoa(i), "v"+strconv.Itoa(i)); err != nil || r != "+OK" {
			return conns, fmt.Errorf("idle %d: SET = %q, %v", i, r, err)
		}
	}
	return conns, nil
}

// checkIdle uses every idle connection again: GET of its key, SET of a new
// one, which must land in db 2 of the new master. It returns how many
// passed and the first failure.
func checkIdle(ctx context.Context, conns []*idleConn, prefix, newMaster string) (int, string) {
	d2 := plainClient(newMaster, 2, 2*time.Second)
	defer d2.Close()
	ok, first := 0, ""
	fail := func(s string) {
		if first == "" {
			first = s
		}
	}
	for i, c := range conns {
		if r, err := c.do("GET", prefix+"idle:"+strconv.Itoa(i)); err != nil || r != "v"+strconv.Itoa(i) {
			fail(fmt.Sprintf("GET %q %v", r, err))
			continue
		}
		key := prefix + "idle2:" + strconv.Itoa(i)
		if r, err := c.do("SET", key, "x"); err != nil || r != "+OK" {
			fail(fmt.Sprintf("SET %q %v", r, err))
			continue
		}
		if n, err := d2.Exists(ctx, key).Result(); err != nil || n != 1 {
			fail("key not in db 2 of the new master")
			continue
		}
		ok++
	}
	return ok, first
}
