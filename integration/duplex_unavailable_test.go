package integration

// Issue 10, item 1: a session that turns full duplex (SUBSCRIBE,
// PSUBSCRIBE, SSUBSCRIBE, MONITOR, CLIENT TRACKING ON) at a moment when no
// backend connection can be had must get a Redis-style error reply and
// stay connected, and nobody else may notice. The proxy used to answer the
// error and then forward the rest of the batch on a nil duplex: the nil
// pointer dereference ended the process, and with it every client of every
// group (here: the whole test binary).
//
// Each cause of failure gets a proxy.Server of its own in this process, in
// front of the shared password-protected stack's master, while a client of
// the shared stack's proxy writes and reads throughout. Once every command
// has been refused, the cause is repaired (the source names the master,
// or the right backend password is configured) and every client connection
// must work again, in step: its next replies are its own.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/proxy"
)

// switchSource is a MasterSource whose master the test sets.
type switchSource struct {
	mu      sync.Mutex
	addr    string
	changed chan struct{}
}

func newSwitchSource(addr string) *switchSource {
	return &switchSource{addr: addr, changed: make(chan struct{})}
}

// Master implements proxy.MasterSource.
func (s *switchSource) Master() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr, s.changed
}

// Suspect implements proxy.MasterSource; the test decides the master.
func (s *switchSource) Suspect(string) {}

func (s *switchSource) set(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addr = addr
	close(s.changed)
	s.changed = make(chan struct{})
}

// refusedAddr returns a loopback address nothing listens on: connections
// to it are refused, as to a master killed before the sentinels noticed.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// localServer is a proxy.Server serving in this process.
type localServer struct {
	srv    *proxy.Server
	addr   string
	served chan error // Serve's result
}

// startLocalServer serves opts on 127.0.0.1:0 until t ends.
func startLocalServer(t *testing.T, opts proxy.Options) *localServer {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	srv, err := proxy.NewServer(opts, log.Named("proxy"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &localServer{srv: srv, addr: ln.Addr().String(), served: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ls.served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ls.served:
		case <-time.After(15 * time.Second):
			t.Errorf("the proxy server did not stop within 15s")
		}
	})
	return ls
}

// checkServing fails t if Serve returned, and checks that a new connection
// gets a reply (any reply) to PING.
func (ls *localServer) checkServing(t *testing.T) {
	t.Helper()
	select {
	case err := <-ls.served:
		t.Fatalf("the proxy server stopped serving: %v", err)
	default:
	}
	c := dialRESP(t, ls.addr)
	if r, err := c.do("PING"); err != nil || r == "" {
		t.Fatalf("PING on a new connection: %q, %v", r, err)
	}
	c.nc.Close()
}

// bystander is a client of another proxy in this process that keeps
// writing and reading back while the test runs.
type bystander struct {
	cancel context.CancelFunc
	done   chan struct{}
	ops    int
	errs   []string
}

func startBystander(st *stack, key string) *bystander {
	ctx, cancel := context.WithCancel(context.Background())
	b := &bystander{cancel: cancel, done: make(chan struct{})}
	c := st.Client(&redis.Options{PoolSize: 1, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	go func() { // exits when stopped, or after 3000 rounds (~60 s)
		defer close(b.done)
		defer c.Close()
		for i := 0; i < 3000 && ctx.Err() == nil; i++ {
			v := "v" + time.Now().Format("150405.000000")
			err := c.Set(context.Background(), key, v, 0).Err()
			if err == nil {
				var got string
				if got, err = c.Get(context.Background(), key).Result(); err == nil && got != v {
					b.errs = append(b.errs, "GET "+got+", want "+v)
				}
			}
			b.ops++
			if err != nil {
				b.errs = append(b.errs, err.Error())
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return b
}

// stop ends the bystander and fails t if it saw an error.
func (b *bystander) stop(t *testing.T) {
	t.Helper()
	b.cancel()
	<-b.done
	if len(b.errs) > 0 {
		t.Errorf("a client of another proxy got %d errors in %d rounds of SET/GET: %q", len(b.errs), b.ops, b.errs[:min(len(b.errs), 5)])
	}
	if b.ops == 0 {
		t.Errorf("the other proxy's client made no round at all")
	}
}

// duplexCmd is a command that turns a session full duplex, with what must
// be sent before it.
type duplexCmd struct {
	name  string
	setup [][]string
	args  []string
}

var duplexCmds = []duplexCmd{
	{name: "SUBSCRIBE", args: []string{"SUBSCRIBE", "ch"}},
	{name: "PSUBSCRIBE", args: []string{"PSUBSCRIBE", "ch*"}},
	{name: "SSUBSCRIBE", args: []string{"SSUBSCRIBE", "ch"}},
	{name: "MONITOR", args: []string{"MONITOR"}},
	// Tracking needs RESP3 (or REDIRECT); HELLO 3 itself may be refused
	// for want of a backend, the proxy decides on CLIENT TRACKING ON alone.
	{name: "CLIENT_TRACKING_ON", setup: [][]string{{"HELLO", "3"}}, args: []string{"CLIENT", "TRACKING", "ON"}},
}

// wrongBackendPassword is the wrong backend password: distinctive, so that a
// reply that leaks it is found.
const wrongBackendPassword = "wrong-backend-pw-7f3a"

func TestDuplexUnavailable(t *testing.T) {
	st := sharedStack(t, true)
	master, _ := st.Source.Master()
	if master == "" {
		t.Fatal("the shared stack has no master")
	}
	policy, err := proxy.NewPolicy("unavailable", "deny", []string{"monitor"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	goodAuth, err := proxy.NewAuth([]proxy.User{{Name: "default", Password: "p"}}, "", testPassword)
	if err != nil {
		t.Fatal(err)
	}
	badAuth, err := proxy.NewAuth([]proxy.User{{Name: "default", Password: "p"}}, "", wrongBackendPassword)
	if err != nil {
		t.Fatal(err)
	}
	hold := 300 * time.Millisecond
	for _, cause := range []struct {
		name string
		src  *switchSource
		auth *proxy.Auth
		// repair makes the backend available again.
		repair func(ls *localServer, src *switchSource)
	}{
		{
			// Proxy-terminated auth with a backend password Redis refuses.
			name: "backend_refuses_password", src: newSwitchSource(master), auth: badAuth,
			repair: func(ls *localServer, _ *switchSource) {
				ls.srv.Update(proxy.Settings{HoldTimeout: hold, Policy: policy, Auth: goodAuth})
			},
		},
		{
			// No master known (a failover in progress), for longer than
			// the hold timeout.
			name: "no_master", src: newSwitchSource(""), auth: goodAuth,
			repair: func(_ *localServer, src *switchSource) { src.set(master) },
		},
		{
			// The master is known but refuses connections: killed with
			// kill -9, before the sentinels noticed.
			name: "master_refuses_connections", src: newSwitchSource(refusedAddr(t)), auth: goodAuth,
			repair: func(_ *localServer, src *switchSource) { src.set(master) },
		},
	} {
		t.Run(cause.name, func(t *testing.T) {
			ls := startLocalServer(t, proxy.Options{
				Name: "unavailable", Source: cause.src, HoldTimeout: hold, Policy: policy, Auth: cause.auth,
				DrainTimeout: -1,
			})
			by := startBystander(st, keyPrefix(t)+"bystander")
			type kept struct {
				name string
				c    *respConn
			}
			var conns []kept
			for _, cmd := range duplexCmds {
				for _, pipelined := range []bool{false, true} {
					name := cmd.name
					if pipelined {
						name += "+PING"
					}
					c := dialRESP(t, ls.addr)
					conns = append(conns, kept{name, c})
					t.Run(name, func(t *testing.T) {
						refusedDuplex(t, c, cmd, pipelined)
						ls.checkServing(t)
					})
				}
			}
			ls.checkServing(t)
			by.stop(t)

			// With the backend back, every connection is still there and
			// in step: PING, then ECHO of a token of its own.
			cause.repair(ls, cause.src)
			for _, k := range conns {
				for _, args := range [][]string{{"PING"}, {"ECHO", "tok-" + k.name}} {
					want := "+PONG\r\n"
					if args[0] == "ECHO" {
						want = "$" + strconv.Itoa(len(args[1])) + "\r\n" + args[1] + "\r\n"
					}
					r, err := k.c.do(args...)
					if err != nil || r != want {
						t.Errorf("%s: once the backend is back, %s = %q, %v; want %q", k.name, args[0], r, err, want)
						break
					}
				}
			}
			// And the command itself now works on a new connection.
			c := dialRESP(t, ls.addr)
			if r := c.mustDo(t, "AUTH", "p"); r != "+OK\r\n" {
				t.Fatalf("AUTH = %q", r)
			}
			if r := c.mustDo(t, "SUBSCRIBE", "ch"); !strings.HasPrefix(r, "*3\r\n$9\r\nsubscribe\r\n") {
				t.Errorf("SUBSCRIBE once the backend is back = %q", r)
			}
		})
	}
}

// refusedDuplex sends cmd (with PING after it in the same write when
// pipelined) on c while no backend connection can be had, and checks the
// replies: an error for cmd, one reply for PING, nothing more, and the
// connection still open.
func refusedDuplex(t *testing.T, c *respConn, cmd duplexCmd, pipelined bool) {
	t.Helper()
	if r := c.mustDo(t, "AUTH", "p"); r != "+OK\r\n" {
		t.Fatalf("AUTH (answered by the proxy) = %q", r)
	}
	for _, s := range cmd.setup {
		if _, err := c.do(s...); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
	}
	req := encode(cmd.args...)
	if pipelined {
		req = append(req, encode("PING")...)
	}
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(req); err != nil {
		t.Fatalf("write %q: %v", req, err)
	}
	f, err := c.read(10 * time.Second)
	switch {
	case err != nil:
		t.Fatalf("%s without a backend: no reply (%v): the proxy closed the connection or died", cmd.name, err)
	case !strings.HasPrefix(f, "-"):
		t.Fatalf("%s without a backend = %q, want an error reply", cmd.name, f)
	case strings.Contains(f, wrongBackendPassword) || strings.Contains(f, testPassword):
		t.Errorf("the error reply shows a password: %q", f)
	}
	t.Logf("%s: %q", cmd.name, strings.TrimSpace(f))
	if pipelined {
		f, err := c.read(10 * time.Second)
		if err != nil || f != "+PONG\r\n" && !strings.HasPrefix(f, "-") {
			t.Fatalf("PING pipelined after %s = %q, %v; want +PONG or an error reply", cmd.name, f, err)
		}
	}
	// The client is still connected and in step: one reply per PING.
	r, err := c.do("PING")
	if err != nil || r != "+PONG\r\n" && !strings.HasPrefix(r, "-") {
		t.Fatalf("PING after %s = %q, %v; want +PONG or an error reply on the same connection", cmd.name, r, err)
	}
	// An observation window, not a synchronisation: no extra reply comes.
	if f, err := c.read(150 * time.Millisecond); err == nil {
		t.Fatalf("an extra frame after the replies to %s: %q", cmd.name, f)
	} else if !isTimeout(err) {
		t.Fatalf("the connection failed after %s: %v", cmd.name, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
