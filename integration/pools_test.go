package integration

// Tomcat-style clients (issue 4, item 2). Tomcat's Redis session managers
// (Redisson's RedissonSessionManager; jcoleman's tomcat-redis-session-manager
// on a Jedis pool) keep a pool of long-lived connections that AUTH and SELECT
// once, when they are opened, PING a connection when it is borrowed
// (testOnBorrow), and (Redisson) keep one long-lived pub/sub connection. Java
// does not run here, so real clients that can be configured the same way
// stand in: go-redis v9 in this process, redis-py 4.3.4
// (testdata/pools/redis_py_pool.py) and Debian's node-redis 4.5.1 on
// generic-pool (testdata/pools/node_redis_pool.js). None of them retries a
// command: the proxy alone must hide the failover.
//
// After the failover each client, in its own non-zero db, is asserted to:
//   - borrow every pooled connection at once, and on each, on the first try:
//     PING (on borrow), GET the key it wrote before the failover, SET a new
//     key, which is then read in that db directly on the new master (and is
//     not in db 0);
//   - have opened no connection since its setup (each open is an AUTH and a
//     SELECT): the client's own count, plus PoolStats for go-redis;
//   - keep its listener's connection: no error, no second subscription,
//     messages received once each and in publish order. With T0 the failover
//     (or kill), T1 the moment the test sees a new connection through the
//     proxy reach the new master once every sentinel names it (the proxy
//     itself may switch earlier), and T2 the moment the listener received a
//     marker published after T1: every message published and answered before T0 arrived; every
//     message published after T1 whose PUBLISH counted a receiver arrived;
//     every PUBLISH sent after T2 counted exactly one receiver and arrived.
//     So only messages published between T0 and T2 may be lost, and after T1
//     only those whose PUBLISH counted no receiver; they are logged.
//
// Goroutines: the publisher and the go-redis listener run until stopped
// (bounded by paced's count and poolMaxRun), the external clients' stdout
// readers until the process exits; all are joined before the test ends and
// none calls t.Fatal. External clients run under exec.CommandContext and are
// killed by PID at the deadline.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

const (
	poolSize     = 4
	poolPubEvery = 20 * time.Millisecond
	poolMaxRun   = 2 * time.Minute
	poolTimeout  = 20 * time.Second // client read timeouts: above the proxy's 10 s hold
	nodeBin      = "/usr/bin/node"
	nodeModules  = "/usr/share/nodejs"
)

// poolListener is what one client's pub/sub listener received.
type poolListener struct {
	mu      sync.Mutex
	order   []int // numeric payloads in order of receipt
	got     map[int]int
	markers map[string]time.Time
}

func newPoolListener() *poolListener {
	return &poolListener{got: map[int]int{}, markers: map[string]time.Time{}}
}

func (l *poolListener) record(payload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, err := strconv.Atoi(payload); err == nil {
		l.order = append(l.order, n)
		l.got[n]++
	} else {
		l.markers[payload] = time.Now()
	}
}

// poolCheck is a client's report of the borrow check after the failover.
type poolCheck struct {
	Borrowed int      `json:"borrowed"`
	Failures []string `json:"failures"`
}

// poolSummary is a client's report when it ends.
type poolSummary struct {
	Setup          int      `json:"setup"`  // connections opened during setup
	Opened         int      `json:"opened"` // connections opened in all
	ListenerErrors []string `json:"listener_errors"`
	Other          []string `json:"other"` // pub/sub frames that are not messages
	Note           string   `json:"note"`
}

// poolClient is one Tomcat-style client under test, set up and listening.
type poolClient struct {
	name, prefix, channel string
	db                    int
	lis                   *poolListener
	check                 func() poolCheck
	finish                func() poolSummary
}

// startGoPool sets up the go-redis client: a pool of poolSize connections
// kept open (MinIdleConns, an hour of idle time), PING on every borrow
// (Client.Conn, which holds one pooled connection until Close), no retries,
// and a PubSub listener reading with Receive, which returns every error.
func startGoPool(t *testing.T, st *stack, prefix string, db int) *poolClient {
	t.Helper()
	var opened, dials atomic.Int64
	c := st.Client(&redis.Options{
		DB: db, Protocol: 2, MaxRetries: -1,
		PoolSize: poolSize, MinIdleConns: poolSize, MaxIdleConns: poolSize, ConnMaxIdleTime: time.Hour,
		DialTimeout: 5 * time.Second, ReadTimeout: poolTimeout, WriteTimeout: poolTimeout, PoolTimeout: 10 * time.Second,
		OnConnect: func(context.Context, *redis.Conn) error { opened.Add(1); return nil },
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { c.Close() })
	pc := &poolClient{name: "go-redis", prefix: prefix, channel: prefix + "ch", db: db, lis: newPoolListener()}
	ctx := testContext(t, 30*time.Second)

	borrowAll := func(step func(i int, cn *redis.Conn) error) []string {
		conns := make([]*redis.Conn, poolSize)
		var failures []string
		for i := range conns {
			conns[i] = c.Conn()
			defer conns[i].Close()
		}
		for i, cn := range conns { // all held at once: each has its own pooled connection
			if err := cn.Ping(ctx).Err(); err != nil {
				failures = append(failures, fmt.Sprintf("conn %d: PING on borrow: %v", i, err))
			} else if err := step(i, cn); err != nil {
				failures = append(failures, fmt.Sprintf("conn %d: %v", i, err))
			}
		}
		return failures
	}
	if f := borrowAll(func(i int, cn *redis.Conn) error {
		return cn.Set(ctx, prefix+"before:"+strconv.Itoa(i), "b"+strconv.Itoa(i), 0).Err()
	}); len(f) > 0 {
		t.Fatalf("go-redis setup: %q", f)
	}

	ps := c.Subscribe(ctx, pc.channel)
	if m, err := ps.Receive(ctx); err != nil {
		t.Fatalf("go-redis SUBSCRIBE: %v", err)
	} else if _, ok := m.(*redis.Subscription); !ok {
		t.Fatalf("go-redis SUBSCRIBE: first frame %T, want a subscription", m)
	}
	var sum poolSummary
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() { // ends when ps is closed, or after 100 errors
		defer close(done)
		for len(sum.ListenerErrors) < 100 {
			m, err := ps.Receive(context.Background())
			if stopping.Load() {
				return
			}
			switch m := m.(type) {
			case *redis.Message:
				pc.lis.record(m.Payload)
			case nil:
				sum.ListenerErrors = append(sum.ListenerErrors, err.Error())
				time.Sleep(50 * time.Millisecond)
			default:
				sum.Other = append(sum.Other, fmt.Sprintf("%T %v", m, m))
			}
		}
	}()
	stop := sync.OnceFunc(func() { stopping.Store(true); ps.Close(); <-done })
	t.Cleanup(stop) // before c.Close
	sum.Setup = int(opened.Load())
	stats0, dials0 := *c.PoolStats(), dials.Load()

	pc.check = func() poolCheck {
		f := borrowAll(func(i int, cn *redis.Conn) error {
			if v, err := cn.Get(ctx, prefix+"before:"+strconv.Itoa(i)).Result(); err != nil || v != "b"+strconv.Itoa(i) {
				return fmt.Errorf("GET before:%d = %q, %v", i, v, err)
			}
			return cn.Set(ctx, prefix+"after:"+strconv.Itoa(i), "a"+strconv.Itoa(i), 0).Err()
		})
		s := c.PoolStats()
		if s.TotalConns != stats0.TotalConns || s.Misses != stats0.Misses || s.StaleConns != stats0.StaleConns || s.Timeouts != 0 {
			f = append(f, fmt.Sprintf("pool stats moved: before the failover %+v, after the check %+v", stats0, *s))
		}
		if d := dials.Load(); d != dials0 {
			f = append(f, fmt.Sprintf("%d dials after setup", d-dials0))
		}
		return poolCheck{Borrowed: poolSize, Failures: f}
	}
	pc.finish = func() poolSummary {
		stop()
		s := c.PoolStats()
		sum.Opened = int(opened.Load())
		sum.Note = fmt.Sprintf("dials %d; pool: total %d, idle %d, hits %d, misses %d, stale %d",
			dials.Load(), s.TotalConns, s.IdleConns, s.Hits, s.Misses, s.StaleConns)
		return sum
	}
	return pc
}

// startExtPool runs a script of testdata/pools (its line protocol is in
// redis_py_pool.py) and waits until it is ready.
func startExtPool(t *testing.T, st *stack, name, prefix string, db int, argv ...string) *poolClient {
	t.Helper()
	pc := &poolClient{name: name, prefix: prefix, channel: prefix + "ch", db: db, lis: newPoolListener()}
	ctx, cancel := context.WithTimeout(context.Background(), poolMaxRun)
	argv = append(argv, st.Host(), st.Port(), st.Password, strconv.Itoa(db), prefix, pc.channel, strconv.Itoa(poolSize))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules)
	cmd.WaitDelay = 5 * time.Second
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	lines, done := make(chan string, 16), make(chan struct{})
	go func() { // ends at EOF: the process exited or was killed
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "msg "); ok {
				pc.lis.record(p)
			} else {
				select { // the protocol has a few lines: never block on more
				case lines <- sc.Text():
				default:
				}
			}
		}
	}()
	end := sync.OnceFunc(func() { // closes stdin, waits for the exit, kills at the deadline
		stdin.Close()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cancel()
			<-done
		}
		cmd.Wait()
		cancel()
	})
	t.Cleanup(end)
	expect := func(tag string, v any) error {
		select {
		case line, ok := <-lines:
			p, found := strings.CutPrefix(line, tag+" ")
			if !ok || !found {
				return fmt.Errorf("%s: got %q, want %q\nstderr:\n%s", name, line, tag, clip(stderr.String()))
			}
			return json.Unmarshal([]byte(p), v)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s: no %q line within 30 s\nstderr:\n%s", name, tag, clip(stderr.String()))
		}
	}
	var ready poolSummary
	if err := expect("ready", &ready); err != nil {
		t.Fatal(err)
	}
	pc.check = func() poolCheck {
		var c poolCheck
		if _, err := io.WriteString(stdin, "check\n"); err != nil {
			return poolCheck{Failures: []string{"send check: " + err.Error()}}
		}
		if err := expect("checked", &c); err != nil {
			c.Failures = append(c.Failures, err.Error())
		}
		return c
	}
	pc.finish = func() poolSummary {
		var s poolSummary
		_, err := io.WriteString(stdin, "quit\n")
		if err == nil {
			err = expect("summary", &s)
		}
		end()
		if err != nil {
			s.ListenerErrors = append(s.ListenerErrors, err.Error())
		}
		return s
	}
	return pc
}

// poolPublisher publishes its tick number to every client's channel, every
// poolPubEvery, through the proxy.
type poolPublisher struct {
	c      *redis.Client
	logs   []*opLog // one per client, in order
	cancel context.CancelFunc
	done   chan struct{}
}

func startPoolPublisher(t *testing.T, st *stack, clients []*poolClient) *poolPublisher {
	p := &poolPublisher{done: make(chan struct{}),
		c: st.Client(&redis.Options{Protocol: 2, PoolSize: 1, MaxRetries: -1, ReadTimeout: poolTimeout, WriteTimeout: poolTimeout})}
	for _, c := range clients {
		p.logs = append(p.logs, &opLog{name: c.name})
	}
	ctx, cancel := context.WithTimeout(context.Background(), poolMaxRun)
	p.cancel = cancel
	go func() { // ends with ctx
		defer close(p.done)
		paced(ctx, 0, poolPubEvery, func(seq int) {
			for i, c := range clients {
				r := opRecord{seq: seq, sent: time.Now()}
				n, err := p.c.Publish(context.Background(), c.channel, seq).Result()
				r.done, r.n = time.Now(), n
				if err != nil {
					r.err = err.Error()
				}
				p.logs[i].add(r)
			}
		})
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the publisher and waits for it. Safe to call twice.
func (p *poolPublisher) stop() {
	p.cancel()
	<-p.done
	p.c.Close()
}

// waitListening publishes markers on c's channel until c's listener gets
// one, and returns when it did.
func waitListening(t *testing.T, st *stack, c *poolClient) time.Time {
	t.Helper()
	pc := st.Client(&redis.Options{Protocol: 2, PoolSize: 1, MaxRetries: -1, ReadTimeout: poolTimeout})
	defer pc.Close()
	ctx := testContext(t, 20*time.Second)
	var at time.Time
	waitFor(t, 15*time.Second, c.name+"'s listener to receive a marker", func() bool {
		m := "marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		if pc.Publish(ctx, c.channel, m).Err() != nil {
			return false
		}
		for range 20 {
			c.lis.mu.Lock()
			at = c.lis.markers[m]
			c.lis.mu.Unlock()
			if !at.IsZero() {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	})
	return at
}

// waitReplicated waits until every replica has c's keys before:0..n-1.
func waitReplicated(t *testing.T, st *stack, master *topology.Node, c *poolClient) {
	t.Helper()
	ctx := testContext(t, 15*time.Second)
	for _, n := range st.Topo.Nodes() {
		if n == master {
			continue
		}
		d := st.Direct(n, c.db)
		waitFor(t, 10*time.Second, n.Name+" to have "+c.name+"'s keys", func() bool {
			for i := range poolSize {
				if d.Get(ctx, c.prefix+"before:"+strconv.Itoa(i)).Val() != "b"+strconv.Itoa(i) {
					return false
				}
			}
			return true
		})
		d.Close()
	}
}

// poolEvent breaks the master (a SENTINEL FAILOVER or a kill -9), and
// returns T0, the new master and T1 (see the top of the file).
type poolEvent func(t *testing.T, st *stack, ctx context.Context) time.Time

func sentinelFailover(t *testing.T, st *stack, ctx context.Context) time.Time {
	t.Helper()
	t0 := time.Now()
	if err := st.Topo.Failover(ctx); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	return t0
}

func killMaster(t *testing.T, st *stack, _ context.Context) time.Time {
	t.Helper()
	t0 := time.Now()
	if err := st.Topo.Master().Kill(); err != nil {
		t.Fatalf("kill -9 the master: %v", err)
	}
	return t0
}

// runPools sets up every client on a password-protected stack, breaks the
// master with event, and checks what each client sees afterwards.
func runPools(t *testing.T, event poolEvent, start ...func(*testing.T, *stack) *poolClient) {
	began := time.Now()
	st := startStack(t, stackOptions{Password: testPassword})
	old := st.Topo.Master()
	var clients []*poolClient
	for _, s := range start {
		if c := s(t, st); c != nil {
			clients = append(clients, c)
		}
	}
	pub := startPoolPublisher(t, st, clients)
	for _, c := range clients {
		waitListening(t, st, c)
		waitReplicated(t, st, old, c)
		// Half a second of messages before the event.
		waitFor(t, 10*time.Second, c.name+"'s listener to receive 25 messages", func() bool {
			c.lis.mu.Lock()
			defer c.lis.mu.Unlock()
			return len(c.lis.order) >= 25
		})
	}
	t.Logf("stack and %d clients ready in %v", len(clients), time.Since(began).Round(time.Millisecond))

	ctx := testContext(t, 60*time.Second)
	t0 := event(t, st, ctx)
	addr, err := st.Topo.WaitForNewMaster(ctx, old.Addr)
	if err != nil {
		t.Fatalf("new master: %v", err)
	}
	newMaster := st.Topo.NodeByAddr(addr)
	if err := st.waitRoutesTo(ctx, newMaster); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	t.Logf("the proxy routes to %s %v after the event", newMaster.Name, t1.Sub(t0).Round(time.Millisecond))
	t2 := make([]time.Time, len(clients))
	for i, c := range clients {
		t2[i] = waitListening(t, st, c)
	}
	checks := make([]poolCheck, len(clients))
	for i, c := range clients {
		checks[i] = c.check()
	}
	// Publish some more after the last check, then stop and let the last
	// messages arrive.
	end := time.Now().Add(500 * time.Millisecond)
	waitFor(t, 5*time.Second, "more messages after the check", func() bool { return time.Now().After(end) })
	pub.stop()
	for i, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			checkPoolClient(t, st, newMaster, c, checks[i])
			checkPoolListener(t, c, pub.logs[i], t0, t1, t2[i])
			s := c.finish()
			if s.Opened != s.Setup {
				t.Errorf("%d connections opened after setup (AUTH, SELECT again): %d at setup, %d in all", s.Opened-s.Setup, s.Setup, s.Opened)
			}
			if len(s.ListenerErrors) > 0 || len(s.Other) > 0 {
				t.Errorf("the listener saw errors %q and frames that are not messages %q", s.ListenerErrors, s.Other)
			}
			t.Logf("%s: connections opened %d (at setup %d); %s", c.name, s.Opened, s.Setup, s.Note)
		})
	}
}

// checkPoolClient checks c's borrow check and its keys on the new master.
func checkPoolClient(t *testing.T, st *stack, newMaster *topology.Node, c *poolClient, check poolCheck) {
	t.Helper()
	if check.Borrowed != poolSize || len(check.Failures) > 0 {
		t.Errorf("borrowing %d of %d pooled connections after the failover failed: %q", check.Borrowed, poolSize, check.Failures)
	}
	ctx := testContext(t, 10*time.Second)
	in, zero := st.Direct(newMaster, c.db), st.Direct(newMaster, 0)
	defer in.Close()
	defer zero.Close()
	for i := range poolSize {
		for _, k := range []string{"before", "after"} {
			key, want := c.prefix+k+":"+strconv.Itoa(i), k[:1]+strconv.Itoa(i)
			if v, err := in.Get(ctx, key).Result(); err != nil || v != want {
				t.Errorf("db %d on the new master %s: GET %s = %q, %v; want %q", c.db, newMaster.Name, key, v, err, want)
			}
			if n := zero.Exists(ctx, key).Val(); n != 0 {
				t.Errorf("db 0 on the new master has %s", key)
			}
		}
	}
}

// checkPoolListener checks c's messages against what was published (see
// the top of the file for T0, T1, T2).
func checkPoolListener(t *testing.T, c *poolClient, log *opLog, t0, t1, t2 time.Time) {
	t.Helper()
	ops := log.snapshot()
	missing := func() (must, window []int) {
		c.lis.mu.Lock()
		defer c.lis.mu.Unlock()
		for _, r := range ops {
			switch received := c.lis.got[r.seq] > 0; {
			case received:
			case r.err == "" && r.n > 0 && (r.done.Before(t0) || r.sent.After(t1)):
				must = append(must, r.seq)
			default:
				window = append(window, r.seq)
			}
		}
		return must, window
	}
	waitFor(t, 5*time.Second, c.name+"'s listener to receive every message it must", func() bool {
		m, _ := missing()
		return len(m) == 0
	})
	_, window := missing()
	afterT2 := 0
	for _, r := range ops {
		switch {
		case r.done.Before(t0) && (r.err != "" || r.n != 1):
			t.Errorf("PUBLISH %d before the failover: %d receivers, %q; want 1", r.seq, r.n, r.err)
		case r.sent.After(t1) && r.err != "":
			t.Errorf("PUBLISH %d after the switch: %s", r.seq, r.err)
		case r.sent.After(t2) && r.n != 1:
			t.Errorf("PUBLISH %d after the listener moved: %d receivers, want 1", r.seq, r.n)
		}
		if r.sent.After(t2) {
			afterT2++
		}
	}
	c.lis.mu.Lock()
	defer c.lis.mu.Unlock()
	if afterT2 < 10 {
		t.Errorf("only %d messages were published after the listener moved; the check needs 10", afterT2)
	}
	if !slices.IsSorted(c.lis.order) || len(slices.Compact(slices.Clone(c.lis.order))) != len(c.lis.order) {
		t.Errorf("messages received out of order or twice: %v", c.lis.order)
	}
	t.Logf("%s listener: received %d of %d messages; lost in the switch window (T1-T0 %v, T2-T1 %v): %d %v",
		c.name, len(c.lis.got), len(ops), t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), len(window), window)
}

// Client starters for runPools; keys and channels are prefixed by test and
// client, each client in its own db.
func goPool(t *testing.T, st *stack) *poolClient {
	return startGoPool(t, st, keyPrefix(t)+"go:", 3)
}

func pyPool(t *testing.T, st *stack) *poolClient {
	return startExtPool(t, st, "redis-py", keyPrefix(t)+"py:", 4, python, "testdata/pools/redis_py_pool.py")
}

func nodePool(t *testing.T, st *stack) *poolClient {
	for _, f := range []string{nodeBin, nodeModules + "/redis/package.json", nodeModules + "/generic-pool/package.json"} {
		if _, err := os.Stat(f); err != nil {
			t.Run("node-redis", func(t *testing.T) {
				t.Skipf("%v: install Debian's nodejs, node-redis and node-generic-pool", err)
			})
			return nil
		}
	}
	return startExtPool(t, st, "node-redis", keyPrefix(t)+"node:", 5, nodeBin, "testdata/pools/node_redis_pool.js")
}

// TestPoolsSentinelFailover: go-redis, redis-py and node-redis pools and
// listeners across a SENTINEL FAILOVER.
func TestPoolsSentinelFailover(t *testing.T) {
	t.Parallel()
	runPools(t, sentinelFailover, goPool, pyPool, nodePool)
}

// TestPoolsKill9: go-redis and redis-py pools and listeners across a kill
// -9 of the master.
func TestPoolsKill9(t *testing.T) {
	t.Parallel()
	runPools(t, killMaster, goPool, pyPool)
}
