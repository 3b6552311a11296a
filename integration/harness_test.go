package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
)

// testPassword is the requirepass of the password-protected stacks. It has
// characters that need quoting in URLs and shells, on purpose.
const testPassword = "s3cret pw&x=1"

// stackOptions choose what startStack starts.
type stackOptions struct {
	// Password is every data node's requirepass; "" means none.
	Password string
	// HoldTimeout is the proxy's hold timeout; zero means 10s.
	HoldTimeout time.Duration
	// WrapSource, if set, wraps the watcher before the proxy uses it (the
	// reply-order test routes the proxy through fault-injecting relays).
	WrapSource func(proxy.MasterSource) proxy.MasterSource
}

// stack is a topology with the watcher and the proxy in front of it.
type stack struct {
	Topo     *topology.Topology
	Source   *watcherSource
	Server   *proxy.Server
	Addr     string // the proxy's listen address, host:port
	Password string

	cancel context.CancelFunc
	done   chan error // Serve's and Run's results, two values
	stop   sync.Once
	stopE  error
}

// startStack starts a stack owned by t and stops it when t ends.
func startStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))
	st, err := newStack(opts, log)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop stack: %v", err)
		}
	})
	return st
}

// newStack starts a topology, a watcher and a proxy on 127.0.0.1:0, and
// waits until the proxy routes to the topology's master. On error
// everything started is stopped.
func newStack(opts stackOptions, log *zap.Logger) (*stack, error) {
	if opts.HoldTimeout == 0 {
		opts.HoldTimeout = 10 * time.Second
	}
	startCtx, cancelStart := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancelStart()
	topo, err := topology.Start(startCtx, topology.Options{Password: opts.Password, Logger: log.Named("topology")})
	if err != nil {
		return nil, err
	}
	src, err := newWatcherSource(topo, opts.Password, log)
	if err != nil {
		return nil, errors.Join(err, topo.Stop())
	}
	// The differential and MONITOR tests need DEBUG PROTOCOL and MONITOR,
	// which the default policy refuses.
	policy, err := proxy.NewPolicy("mymaster", "deny", []string{"debug|protocol", "monitor"}, nil)
	if err != nil {
		topo.Stop()
		return nil, err
	}
	srv, err := proxy.NewServer(proxy.Options{
		Policy:      policy,
		Name:        topo.MasterName(),
		Source:      wrapSource(opts.WrapSource, src),
		HoldTimeout: opts.HoldTimeout,
		// Shared backend connections, as the binary's default;
		// SENTINEL_PROXY_TEST_SHARED_CONNECTIONS=0 runs the tests (make
		// soak, say) without them.
		SharedConns: sharedConnsFromEnv(),
		// Tests end with clients still connected (subscribers, MONITOR):
		// do not wait the default 10 s for them.
		DrainTimeout: time.Second,
	}, log.Named("proxy"))
	if err != nil {
		return nil, errors.Join(err, topo.Stop())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Join(err, topo.Stop())
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &stack{
		Topo: topo, Source: src, Server: srv, Addr: ln.Addr().String(), Password: opts.Password,
		cancel: cancel, done: make(chan error, 2),
	}
	go func() { st.done <- src.Run(ctx) }()
	go func() { st.done <- srv.Serve(ctx, ln) }()
	if err := st.waitRoutesTo(startCtx, topo.Master()); err != nil {
		return nil, errors.Join(err, st.Stop())
	}
	return st, nil
}

// wrapSource applies wrap to src when set.
func wrapSource(wrap func(proxy.MasterSource) proxy.MasterSource, src proxy.MasterSource) proxy.MasterSource {
	if wrap == nil {
		return src
	}
	return wrap(src)
}

// Stop stops the proxy and the watcher, waits for both, then stops the
// topology. Safe to call twice.
func (st *stack) Stop() error {
	st.stop.Do(func() {
		st.cancel()
		var errs []error
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for range 2 {
			select {
			case err := <-st.done:
				errs = append(errs, err)
			case <-timeout.C:
				errs = append(errs, errors.New("proxy or watcher did not stop within 30s"))
			}
		}
		errs = append(errs, st.Topo.Stop())
		st.stopE = errors.Join(errs...)
	})
	return st.stopE
}

// waitRoutesTo polls until a new connection through the proxy reaches n:
// the run_id in INFO server through the proxy equals n's own.
func (st *stack) waitRoutesTo(ctx context.Context, n *topology.Node) error {
	want, err := runID(ctx, n.Client())
	if err != nil {
		return fmt.Errorf("run_id of %s: %w", n.Name, err)
	}
	c := st.Client(&redis.Options{MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	var last error
	for {
		got, err := runID(ctx, c)
		if err == nil && got == want {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("proxy reaches run_id %s, want %s (%s)", got, want, n.Name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy does not route to %s: %w", n.Name, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runID returns the run_id from INFO server.
func runID(ctx context.Context, c *redis.Client) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	if id := infoField(info, "run_id"); id != "" {
		return id, nil
	}
	return "", errors.New("INFO server has no run_id")
}

// infoField returns the value of key in an INFO reply, or "".
func infoField(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), key+":"); ok {
			return v
		}
	}
	return ""
}

// Client returns a go-redis client to the proxy with the stack's password.
// o may set anything else; Addr and Password are filled in when empty. The
// caller closes it. Identity and maintenance notifications stay at go-redis's
// defaults: that is what users run.
func (st *stack) Client(o *redis.Options) *redis.Client {
	opt := *o
	if opt.Addr == "" {
		opt.Addr = st.Addr
	}
	if opt.Password == "" {
		opt.Password = st.Password
	}
	return redis.NewClient(&opt)
}

// Direct returns a go-redis client straight to node n in db, RESP2, no
// retries: the observer tests compare the proxy with. The caller closes it.
func (st *stack) Direct(n *topology.Node, db int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: n.Addr, Password: st.Password, DB: db, Protocol: 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1,
		ReadTimeout:              10 * time.Second,
	})
}

// Host and Port split the proxy's address.
func (st *stack) Host() string { h, _, _ := net.SplitHostPort(st.Addr); return h }

// Port is the proxy's port.
func (st *stack) Port() string { _, p, _ := net.SplitHostPort(st.Addr); return p }

// sharedStacks are started on first use and stopped by TestMain. They are
// test-binary state on purpose: starting a topology costs seconds, and the
// read-mostly tests do not need one each.
type sharedStacks struct {
	mu     sync.Mutex
	stacks map[string]*stack
	errs   map[string]error
	log    *zap.Logger
	buf    *syncBuffer
}

var shared = sharedStacks{stacks: map[string]*stack{}, errs: map[string]error{}}

// sharedStack returns the shared stack with or without a password. A stack
// that failed to start fails every test that asks for it.
func sharedStack(t testing.TB, withPassword bool) *stack {
	t.Helper()
	name, pw := "plain", ""
	if withPassword {
		name, pw = "password", testPassword
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if st := shared.stacks[name]; st != nil {
		return st
	}
	if err := shared.errs[name]; err != nil {
		t.Fatalf("shared stack %s: %v", name, err)
	}
	began := time.Now()
	st, err := newStack(stackOptions{Password: pw}, shared.log.Named(name))
	if err != nil {
		shared.errs[name] = err
		t.Fatalf("shared stack %s: %v", name, err)
	}
	t.Logf("shared stack %s started in %v: proxy %s, master %s", name, time.Since(began).Round(time.Millisecond), st.Addr, st.Topo.Master().Addr)
	shared.stacks[name] = st
	return st
}

// stopAll stops every shared stack.
func (s *sharedStacks) stopAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, st := range s.stacks {
		if err := st.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop shared stack %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// syncBuffer keeps the tail of the shared stacks' logs for a failed run.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const logTail = 64 << 10

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*logTail {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-logTail:]...)
	}
	return len(p), nil
}

func (b *syncBuffer) Sync() error { return nil }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > logTail {
		return string(b.buf[len(b.buf)-logTail:])
	}
	return string(b.buf)
}

func TestMain(m *testing.M) {
	shared.buf = &syncBuffer{}
	enc := zap.NewDevelopmentEncoderConfig()
	shared.log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), shared.buf, zapcore.InfoLevel))
	code := m.Run()
	if err := shared.stopAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if err := removeClusterBuild(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- tail of the shared stacks' logs:\n%s", shared.buf.String())
	}
	os.Exit(code)
}

// waitFor polls cond every 10 ms until it is true or d has passed, then
// fails the test with what.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keyPrefix returns a key prefix unique to the test, so tests sharing a
// stack never touch each other's keys.
func keyPrefix(t testing.TB) string {
	return "it:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name()) + ":"
}

// testContext returns a context bounded by d and cancelled when t ends.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sharedConnsFromEnv is proxy.Options.SharedConns for the tests' proxies:
// SENTINEL_PROXY_TEST_SHARED_CONNECTIONS, or 1 (the binary's default,
// shared_connections: 1) when unset; 0 turns sharing off.
func sharedConnsFromEnv() int {
	n, err := strconv.Atoi(os.Getenv("SENTINEL_PROXY_TEST_SHARED_CONNECTIONS"))
	if err != nil {
		return 1
	}
	return n
}
