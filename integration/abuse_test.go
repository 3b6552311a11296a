package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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

// The abuse tests attack the real sentinel-proxy binary from the network
// side, in front of the shared topology, while a well-behaved go-redis
// client runs SET/GET through the same proxy and must see no error. Each
// scenario starts its own proxy process (its own limit flags, its own
// memory figures: VmRSS/VmHWM from /proc and the Go heap from /metrics).

// Memory bounds asserted (growth over the proxy's figures once ready).
// The largest legitimate holding in these scenarios is 8 MB of real bulk
// data (a request's buffer is at most twice what arrived): any
// preallocation from a header (512 MB, 2 GB, a million arguments) is far
// above them.
const (
	abuseHeapBound   = 96 << 20  // Go heap in use, any scenario but (e)
	abuseRSSBound    = 128 << 20 // VmHWM growth, any scenario but (e)
	silentConnsBound = 150 << 20 // VmHWM with 10,000 silent clients open
	// millionHeapBound bounds the heap growth while 200 clients each sent
	// only "*1000000\r\n" and then a few short arguments: 320 KB each.
	millionHeapBound = 64 << 20
)

// goodClient runs SET/GET through the proxy until stopped (at most 120 s or
// a million rounds), pacing itself at about one round per millisecond.
type goodClient struct {
	cancel context.CancelFunc
	done   chan struct{}
	rounds int
	maxLat time.Duration
	errs   []error
	nErrs  int
}

func startGood(t *testing.T, addr string) *goodClient {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	if err := c.Set(ctx, keyPrefix(t)+"good", "x", 0).Err(); err != nil { // connected before the attack
		cancel()
		c.Close()
		t.Fatalf("good client: %v", err)
	}
	g := &goodClient{cancel: cancel, done: make(chan struct{})}
	t.Cleanup(func() { cancel(); <-g.done }) // if the test ends before stop
	go func() {
		defer close(g.done)
		defer c.Close()
		for i := 0; i < 1_000_000 && ctx.Err() == nil; i++ {
			k, v := keyPrefix(t)+"good", strconv.Itoa(i)
			began := time.Now()
			err := c.Set(ctx, k, v, 0).Err()
			if err == nil {
				var got string
				if got, err = c.Get(ctx, k).Result(); err == nil && got != v {
					err = fmt.Errorf("GET %s = %q, want %q", k, got, v)
				}
			}
			if ctx.Err() != nil {
				return
			}
			g.maxLat = max(g.maxLat, time.Since(began))
			g.rounds++
			if err != nil {
				g.nErrs++
				if len(g.errs) < 5 {
					g.errs = append(g.errs, fmt.Errorf("round %d at %s: %w", i, time.Now().Format("15:04:05.000"), err))
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return g
}

// stop ends the loop and asserts it saw no error.
func (g *goodClient) stop(t *testing.T) {
	t.Helper()
	g.cancel()
	<-g.done
	t.Logf("good client: %d SET/GET rounds, %d errors, slowest round %v", g.rounds, g.nErrs, g.maxLat.Round(time.Millisecond))
	if g.nErrs > 0 {
		t.Errorf("good client saw %d errors, first: %v", g.nErrs, g.errs)
	}
	if g.rounds == 0 {
		t.Errorf("good client made no round")
	}
}

// outcome is how the proxy treated one hostile connection.
type outcome struct {
	reply  string // what it answered, up to 4 KiB
	closed bool   // EOF or reset
	err    error  // a timeout or another error
}

// readOutcome reads what the proxy answers until it closes or d passes.
func readOutcome(c net.Conn, d time.Duration) outcome {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var buf bytes.Buffer
	b := make([]byte, 4096)
	for {
		n, err := c.Read(b)
		if buf.Len() < 4096 {
			buf.Write(b[:min(n, 4096-buf.Len())])
		}
		if err != nil {
			o := outcome{reply: buf.String()}
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				o.closed = true
			} else {
				o.err = err
			}
			return o
		}
	}
}

// attack runs n hostile connections on workers goroutines; each gets its
// index and returns its outcome, summarised by class (the first index of
// each class is in firsts).
func attack(t *testing.T, n, workers int, one func(i int) outcome) (classes map[string]int, firsts map[string]int) {
	t.Helper()
	var mu sync.Mutex
	classes, firsts = map[string]int{}, map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				o := one(i)
				class := "closed without reply"
				switch {
				case o.err != nil:
					class = "not closed: " + o.err.Error()
					if ne, ok := o.err.(net.Error); ok && ne.Timeout() {
						class = "not closed in time"
					}
				case strings.HasPrefix(o.reply, "-ERR Protocol error"):
					class = "protocol error"
				case strings.HasPrefix(o.reply, "-"):
					class = "other error reply"
				case o.reply != "":
					class = "reply"
				}
				mu.Lock()
				classes[class]++
				if f, ok := firsts[class]; !ok || i < f {
					firsts[class] = i
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return classes, firsts
}

// waitClients polls until the proxy counts at most n clients.
func (p *proxyProc) waitClients(t *testing.T, n float64, d time.Duration) {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("the proxy to count at most %v clients", n), func() bool {
		return p.metric(t, "sentinel_proxy_client_connections") <= n
	})
}

// send dials the proxy, writes b, half-closes and reads the outcome.
func send(addr string, b []byte, halfClose bool, d time.Duration) outcome {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return outcome{err: fmt.Errorf("dial: %w", err)}
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(d))
	if _, err := c.Write(b); err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		return outcome{err: fmt.Errorf("write: %w", err)}
	}
	if halfClose {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	return readOutcome(c, d)
}

// garbage returns n hostile bytes of one of several shapes.
func garbage(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+16)
	switch rng.IntN(4) {
	case 0: // raw bytes
		for len(b) < n {
			b = append(b, byte(rng.IntN(256)))
		}
	case 1: // printable: inline commands with quotes and escapes
		const chars = "abcdefgh \"'\\x09\r\n"
		for len(b) < n {
			b = append(b, chars[rng.IntN(len(chars))])
		}
	default: // RESP-looking tokens
		toks := []string{"*", "$", ":", "+", "-", "\r\n", "\r", "\n", "-1", "0", "1", "3", "99999999999",
			"2147483648", "PING", "GET", "k", "\x00", "?", ";", "*1\r\n", "$3\r\nGET\r\n"}
		for len(b) < n {
			b = append(b, toks[rng.IntN(len(toks))]...)
		}
	}
	return b
}

func TestAbuse(t *testing.T) {
	topo := sharedStack(t, false).Topo
	proxyBinary(t, topo)

	t.Run("garbage", func(t *testing.T) {
		p := startProxy(t, topo)
		base := p.mem(t)
		stopPeak := p.peakWatch(t)
		good := startGood(t, p.addr)
		sizes := []int{1, 2, 5, 16, 100, 1000, 4096, 65536, 300000}
		input := func(i int) []byte {
			rng := rand.New(rand.NewPCG(1, uint64(i)))
			return garbage(rng, sizes[rng.IntN(len(sizes))])
		}
		classes, firsts := attack(t, 400, 8, func(i int) outcome {
			return send(p.addr, input(i), true, 5*time.Second)
		})
		good.stop(t)
		p.checkAlive(t)
		t.Logf("400 garbage connections (seeded PCG(1, i)): %v", classes)
		for c, n := range classes {
			if strings.HasPrefix(c, "not closed") {
				in := input(firsts[c])
				t.Errorf("%d half-closed garbage connections were not closed by the proxy (%s), e.g. input %d (%d bytes): %q",
					n, c, firsts[c], len(in), clip(string(in[:min(len(in), 300)])))
			}
		}
		checkMem(t, p, base, stopPeak())
		p.waitClients(t, 0, 10*time.Second)
	})

	t.Run("truncated", func(t *testing.T) {
		p := startProxy(t, topo)
		base := p.mem(t)
		stopPeak := p.peakWatch(t)
		good := startGood(t, p.addr)
		k := keyPrefix(t)
		masterBefore := connectedClients(t, topo)
		backendBefore := p.metric(t, "sentinel_proxy_backend_connections")
		cmds := []struct{ done, cut string }{
			{"", resp("SET", k+"a", "hello")},
			{"", "SET " + k + "b \"quoted value\"\r\n"},
			{"", resp("MGET", k+"a", k+"b", k+"c")},
			{resp("SUBSCRIBE", k+"ch"), resp("PING")},
			{resp("MULTI"), resp("SET", k+"m", "1")},
			{resp("BLPOP", k+"list", "0"), resp("PING")}, // blocks for ever
		}
		var jobs [][]byte
		for _, c := range cmds {
			if c.done != "" {
				jobs = append(jobs, []byte(c.done)) // complete, then gone
			}
			for off := 1; off < len(c.cut); off++ {
				jobs = append(jobs, []byte(c.done+c.cut[:off]))
			}
		}
		classes, _ := attack(t, len(jobs), 8, func(i int) outcome {
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				return outcome{err: err}
			}
			_, err = c.Write(jobs[i])
			c.Close() // cut: never read the reply
			return outcome{err: err, closed: true}
		})
		t.Logf("%d truncated frames: %v", len(jobs), classes)
		deadline := time.Now().Add(5 * time.Second)
		clients := p.metric(t, "sentinel_proxy_client_connections")
		for ; clients > 1 && time.Now().Before(deadline); clients = p.metric(t, "sentinel_proxy_client_connections") {
			time.Sleep(20 * time.Millisecond)
		}
		if clients > 1 { // the good client
			t.Errorf("the proxy still counts %v clients 5 s after the %d truncated ones left (want 1: the good client)", clients, len(jobs))
		}
		good.stop(t)
		p.checkAlive(t)
		// Backend connections must come back: a client that left during
		// BLPOP k 0 must not pin a Redis connection for ever.
		var masterAfter int
		deadline = time.Now().Add(5 * time.Second)
		for masterAfter = connectedClients(t, topo); masterAfter > masterBefore+4 && time.Now().Before(deadline); masterAfter = connectedClients(t, topo) {
			time.Sleep(50 * time.Millisecond)
		}
		backendAfter := p.metric(t, "sentinel_proxy_backend_connections")
		t.Logf("backend connections (metric) %v -> %v; master connected_clients %d -> %d", backendBefore, backendAfter, masterBefore, masterAfter)
		if backendAfter > backendBefore+4 {
			t.Errorf("backend connections grew from %v to %v after %d truncated clients left", backendBefore, backendAfter, len(jobs))
		}
		if masterAfter > masterBefore+4 {
			cl, _ := topo.Master().Client().ClientList(context.Background()).Result()
			t.Errorf("master connected_clients still %d, was %d before %d truncated clients came and left; CLIENT LIST:\n%s",
				masterAfter, masterBefore, len(jobs), cl)
		}
		checkMem(t, p, base, stopPeak())
	})

	t.Run("huge bulk", func(t *testing.T) {
		hugeBulk(t, topo)
	})
	t.Run("million-element multibulk", func(t *testing.T) {
		millionMultibulk(t, topo)
	})
	t.Run("10000 silent connections", func(t *testing.T) {
		silentConns(t, topo)
	})
	t.Run("subscriber that stops reading", func(t *testing.T) {
		slowSubscriber(t, topo)
	})
	t.Run("max clients", func(t *testing.T) {
		maxClients(t, topo)
	})
}

// resp encodes a command as a RESP multibulk.
func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// connectedClients is the master's INFO clients connected_clients.
func connectedClients(t *testing.T, topo *topology.Topology) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := topo.Master().Client().Info(ctx, "clients").Result()
	if err != nil {
		t.Fatalf("INFO clients on the master: %v", err)
	}
	n, _ := strconv.Atoi(infoField(info, "connected_clients"))
	return n
}

// checkMem logs the scenario's memory figures and asserts the default
// bounds: Go heap peak and VmHWM growth over the ready proxy.
func checkMem(t *testing.T, p *proxyProc, base mem, peakHeap int64) {
	t.Helper()
	now := p.mem(t)
	peakHeap = max(peakHeap, now.heap)
	t.Logf("memory: at start %v; at end %v; peak heap %.1f MB", base, now, mb(peakHeap))
	if peakHeap-base.heap > abuseHeapBound {
		t.Errorf("Go heap peaked at %.1f MB, %.1f MB over the start (bound %d MB)", mb(peakHeap), mb(peakHeap-base.heap), abuseHeapBound>>20)
	}
	if now.hwm-base.hwm > abuseRSSBound {
		t.Errorf("VmHWM grew %.1f MB (bound %d MB)", mb(now.hwm-base.hwm), abuseRSSBound>>20)
	}
}

// hugeBulk: oversized bulk and multibulk headers get Redis's protocol error
// at once and a close; bulks of the allowed size are not preallocated.
func hugeBulk(t *testing.T, topo *topology.Topology) {
	p := startProxy(t, topo)
	base := p.mem(t)
	stopPeak := p.peakWatch(t)
	good := startGood(t, p.addr)
	const bulkErr, mbulkErr = "-ERR Protocol error: invalid bulk length", "-ERR Protocol error: invalid multibulk length"
	for _, tc := range []struct{ name, in, want string }{
		{"2 GB bulk", "*1\r\n$2147483648\r\n", bulkErr},
		{"512 MB + 1 bulk", "*1\r\n$536870913\r\n", bulkErr},
		{"2 GB third argument of SET", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2147483648\r\n", bulkErr},
		{"int64 max bulk", "*1\r\n$9223372036854775807\r\n", bulkErr},
		{"overflowing bulk", "*1\r\n$99999999999999999999\r\n", bulkErr},
		{"negative bulk", "*1\r\n$-5\r\n", bulkErr},
		{"2 G elements", "*2147483648\r\n", mbulkErr},
	} {
		began := time.Now()
		o := send(p.addr, []byte(tc.in), false, 3*time.Second)
		took := time.Since(began)
		t.Logf("%s: %q closed=%v err=%v after %v", tc.name, o.reply, o.closed, o.err, took.Round(time.Millisecond))
		if !strings.HasPrefix(o.reply, tc.want) || !o.closed || took > time.Second {
			t.Errorf("%s %q: got %q closed=%v err=%v after %v; want %q and a close at once", tc.name, tc.in, o.reply, o.closed, o.err, took, tc.want)
		}
	}
	// Bulks of exactly the allowed 512 MB, 1 MB of each sent: held open,
	// they must cost what was sent, not what was announced.
	var conns []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(append([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n"), make([]byte, 1<<20)...)); err != nil {
			t.Fatalf("write 1 MB of a 512 MB bulk: %v", err)
		}
	}
	waitFor(t, 5*time.Second, "9 clients", func() bool { return p.metric(t, "sentinel_proxy_client_connections") >= 9 })
	t.Logf("8 clients each 1 MB into a 512 MB bulk: %v", p.mem(t))
	for _, c := range conns {
		c.Close()
	}
	good.stop(t)
	p.checkAlive(t)
	checkMem(t, p, base, stopPeak())

	// A lowered limit: one byte over is refused, exactly the limit works.
	p2 := startProxy(t, topo, "--proto-max-bulk-len", "1048576")
	o := send(p2.addr, []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n"), false, 3*time.Second)
	if !strings.HasPrefix(o.reply, bulkErr) || !o.closed {
		t.Errorf("--proto-max-bulk-len 1048576, bulk of 1048577: got %q closed=%v err=%v", o.reply, o.closed, o.err)
	}
	c := redis.NewClient(&redis.Options{Addr: p2.addr, MaxRetries: -1})
	defer c.Close()
	ctx := testContext(t, 10*time.Second)
	v := strings.Repeat("v", 1<<20)
	if err := c.Set(ctx, keyPrefix(t)+"max", v, 0).Err(); err != nil {
		t.Errorf("SET of exactly --proto-max-bulk-len bytes: %v", err)
	} else if got, err := c.Get(ctx, keyPrefix(t)+"max").Result(); err != nil || got != v {
		t.Errorf("GET of the 1 MiB value: %d bytes, %v", len(got), err)
	}
}

// millionMultibulk: "*1000000" then nothing, then a few arguments slowly,
// on 200 connections: the proxy must not preallocate a million arguments
// (24 MB each) nor a buffer sized from the count (6 MB at least), and
// memory must stay bounded per byte actually sent.
func millionMultibulk(t *testing.T, topo *topology.Topology) {
	const n = 200
	p := startProxy(t, topo)
	base := p.mem(t)
	stopPeak := p.peakWatch(t)
	good := startGood(t, p.addr)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte("*1000000\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "all clients", func() bool { return p.metric(t, "sentinel_proxy_client_connections") >= n+1 })
	after := p.mem(t)
	t.Logf("%d clients after *1000000: %v (heap %+.1f MB, %.0f KB per client)", n, after, mb(after.heap-base.heap), float64(after.heap-base.heap)/1024/n)
	for step, arg := range []string{"$3\r\nSET\r\n", "$1\r\nk\r\n", "$1\r\nv\r\n", "$5\r\nhel"} {
		for _, c := range conns {
			if _, err := c.Write([]byte(arg)); err != nil {
				t.Fatalf("argument %d: %v", step, err)
			}
		}
		time.Sleep(200 * time.Millisecond) // the slow sender's pace, not synchronisation
	}
	slow := p.mem(t)
	t.Logf("%d clients 3.5 arguments into a million: %v (heap %+.1f MB)", n, slow, mb(slow.heap-base.heap))
	if open := p.metric(t, "sentinel_proxy_client_connections"); open < n+1 {
		t.Logf("note: the proxy closed %v of the slow multibulk clients", n+1-open)
	}
	peak := stopPeak()
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if grow := max(peak, after.heap, slow.heap) - base.heap; grow > millionHeapBound {
		t.Errorf("Go heap grew %.1f MB (%.0f KB per client that sent 10 bytes), bound %d MB", mb(grow), float64(grow)/1024/n, millionHeapBound>>20)
	}
	// Past the default multibulk limit: Redis's own text, or a close.
	o := send(p.addr, []byte("*1048577\r\n"), false, 3*time.Second)
	t.Logf("*1048577: %q closed=%v err=%v", o.reply, o.closed, o.err)
	good.stop(t)
	p.checkAlive(t)
	t.Logf("memory at end: %v", p.mem(t))
}
