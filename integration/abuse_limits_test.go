package integration

// TestAbuse scenarios (e) to (g): many silent connections, a subscriber
// that stops reading, the client limit.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// silentConns: 10,000 connections that never send a byte, with
// --handshake-timeout 3s: memory bounded while open, all closed after the
// timeout (not before), the good client served throughout.
func silentConns(t *testing.T, topo *topology.Topology) {
	const n, timeout = 10000, 3 * time.Second
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raise RLIMIT_NOFILE to %d: %v", lim.Max, err)
		}
	}
	if lim.Cur < n+500 {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below %d", lim.Max, n+500)
	}
	p := startProxy(t, topo, "--handshake-timeout", timeout.String(), "--max-clients", "20000")
	base := p.mem(t)
	good := startGood(t, p.addr)
	conns := make([]net.Conn, n)
	dialed := make([]time.Time, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	began := time.Now()
	var next atomic.Int64
	var dialErrs atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				conns[i], dialed[i] = c, time.Now()
			}
		})
	}
	wg.Wait()
	dialTook := time.Since(began)
	// Close times of a sample: the first and the last dialled.
	sample := []int{0, 1, 2, 3, n - 4, n - 3, n - 2, n - 1}
	closedAfter := make([]time.Duration, len(sample))
	var sw sync.WaitGroup
	for j, i := range sample {
		if conns[i] == nil {
			continue
		}
		sw.Go(func() {
			if o := readOutcome(conns[i], timeout+10*time.Second); o.closed {
				closedAfter[j] = time.Since(dialed[i])
			}
		})
	}
	peakClients := 0.0
	var open mem
	for first := true; first || time.Since(began) < timeout && peakClients < n+1; first = false {
		peakClients = max(peakClients, p.metric(t, "sentinel_proxy_client_connections"))
		open = p.mem(t)
	}
	t.Logf("dialled %d silent connections in %v (%d dial errors); proxy counted up to %v clients; %v",
		n, dialTook.Round(time.Millisecond), dialErrs.Load(), peakClients, open)
	if dialErrs.Load() > 0 {
		t.Errorf("%d of %d dials failed", dialErrs.Load(), n)
	}
	p.waitClients(t, 1, timeout+15*time.Second)
	t.Logf("all silent clients closed %v after the first dial", time.Since(began).Round(time.Millisecond))
	sw.Wait()
	for j, d := range closedAfter {
		if d < timeout-100*time.Millisecond || d > timeout+10*time.Second {
			t.Errorf("silent connection %d closed %v after its dial, want about %v", sample[j], d, timeout)
		}
	}
	// Every connection sees the close.
	notClosed := atomic.Int64{}
	next.Store(0)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if conns[i] != nil && !readOutcome(conns[i], 2*time.Second).closed {
					notClosed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if notClosed.Load() > 0 {
		t.Errorf("%d silent connections were not closed", notClosed.Load())
	}
	good.stop(t)
	p.checkAlive(t)
	end := p.mem(t)
	t.Logf("memory: at start %v; with %d silent clients %v; at end %v (bound VmHWM < %d MB)", base, n, open, end, silentConnsBound>>20)
	if end.hwm > silentConnsBound {
		t.Errorf("VmHWM %.1f MB with %d silent clients, bound %d MB", mb(end.hwm), n, silentConnsBound>>20)
	}
}

// slowSubscriber: a subscriber that never reads while a publisher floods
// its channel, with --pubsub-output-limit 1 MiB: it is disconnected well
// before Redis's own 32 MB pubsub limit would act, the proxy's memory stays
// bounded, and the publisher, a subscriber that reads and the good client
// keep working.
func slowSubscriber(t *testing.T, topo *topology.Topology) {
	const msgSize, batch, maxBatches = 16 << 10, 32, 128 // at most 64 MB
	p := startProxy(t, topo, "--pubsub-output-limit", "1048576")
	base := p.mem(t)
	stopPeak := p.peakWatch(t)
	good := startGood(t, p.addr)
	ctx := testContext(t, 60*time.Second)
	ch := keyPrefix(t) + "flood"

	// The slow subscriber: a 4 KB receive buffer, then it stops reading.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	slow, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte(resp("SUBSCRIBE", ch))); err != nil {
		t.Fatal(err)
	}
	var conf []byte
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	for b := make([]byte, 256); !bytes.HasSuffix(conf, []byte(":1\r\n")); {
		n, err := slow.Read(b)
		conf = append(conf, b[:n]...)
		if err != nil {
			t.Fatalf("SUBSCRIBE confirmation: %q, %v", conf, err)
		}
	}

	// The subscriber that reads.
	fc := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
	defer fc.Close()
	sub := fc.Subscribe(ctx, ch)
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("fast subscriber: %v", err)
	}
	var got atomic.Int64
	var fastErr error
	var closing atomic.Bool
	fastDone := make(chan struct{})
	go func() {
		defer close(fastDone)
		for {
			if _, err := sub.ReceiveMessage(ctx); err != nil {
				if !closing.Load() {
					fastErr = err
				}
				return
			}
			got.Add(1)
		}
	}()

	pc := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
	defer pc.Close()
	payload := strings.Repeat("p", msgSize)
	published, goneAt := int64(0), int64(-1)
	for range maxBatches {
		pipe := pc.Pipeline()
		for range batch {
			pipe.Publish(ctx, ch, payload)
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			t.Fatalf("publisher after %d messages: %v", published, err)
		}
		published += batch
		deadline := time.Now().Add(10 * time.Second)
		for got.Load() < published && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got.Load() < published {
			t.Fatalf("the reading subscriber got %d of %d messages (err %v)", got.Load(), published, fastErr)
		}
		if cmds[len(cmds)-1].(*redis.IntCmd).Val() < 2 {
			goneAt = published * msgSize
			break
		}
	}
	// Drain what the kernel holds for the slow subscriber: then the close.
	read, closed := 0, false
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	for b := make([]byte, 64<<10); ; {
		n, err := slow.Read(b)
		read += n
		if err != nil {
			closed = errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
			break
		}
	}
	t.Logf("published %d × %d B (%.1f MB); Redis saw the slow subscriber gone after %.1f MB; it read %.1f MB then closed=%v",
		published, msgSize, mb(published*msgSize), mb(goneAt), mb(int64(read)), closed)
	if !closed {
		t.Errorf("the subscriber that does not read was not disconnected after %.1f MB published", mb(published*msgSize))
	}
	if goneAt < 0 || goneAt >= 16<<20 {
		t.Errorf("the slow subscriber's backend subscription outlived 16 MB of publishes (at %.1f MB): the proxy did not enforce --pubsub-output-limit itself", mb(goneAt))
	}
	closing.Store(true)
	sub.Close()
	<-fastDone
	if fastErr != nil {
		t.Errorf("the reading subscriber was cut: %v", fastErr)
	}
	good.stop(t)
	p.checkAlive(t)
	checkMem(t, p, base, stopPeak())
}

// maxClients: with --max-clients 50, the 51st client (and every one after)
// gets Redis's error and a close; a freed slot is usable again.
func maxClients(t *testing.T, topo *topology.Topology) {
	const limit = 50
	p := startProxy(t, topo, "--max-clients", strconv.Itoa(limit))
	base := p.mem(t)
	good := startGood(t, p.addr) // client 1
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 1; i < limit; i++ {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(resp("PING"))); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 7)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "+PONG\r\n" {
			t.Fatalf("client %d of %d: %q, %v", i+1, limit, b, err)
		}
	}
	const want = "-ERR max number of clients reached\r\n"
	classes, _ := attack(t, 40, 8, func(i int) outcome {
		if i%2 == 0 {
			return send(p.addr, nil, false, 3*time.Second) // says nothing
		}
		return send(p.addr, []byte(resp("PING")), false, 3*time.Second)
	})
	o := send(p.addr, nil, false, 3*time.Second)
	t.Logf("client %d: %q closed=%v err=%v; 40 more: %v", limit+1, o.reply, o.closed, o.err, classes)
	if o.reply != want || !o.closed {
		t.Errorf("client %d got %q closed=%v err=%v, want %q and a close", limit+1, o.reply, o.closed, o.err, want)
	}
	if classes["other error reply"] != 40 {
		t.Errorf("the 40 clients over the limit: %v, want all %q", classes, want)
	}
	conns[0].Close()
	conns = conns[1:]
	p.waitClients(t, limit-1, 5*time.Second)
	c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	if err := c.Ping(testContext(t, 5*time.Second)).Err(); err != nil {
		t.Errorf("PING in a freed slot: %v", err)
	}
	good.stop(t)
	if p.dead() {
		t.Fatalf("proxy exited: %v", p.waitErr)
	}
	t.Logf("memory: at start %v; at end %v", base, p.mem(t))
}
