package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDefaultPolicyRefuses(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Policy = nil })
	c := dialRedis(t, paddr)
	for _, cmd := range [][]string{
		{"CONFIG", "SET", "maxmemory", "1"}, {"config", "rewrite"}, {"SHUTDOWN"}, {"DEBUG", "SLEEP", "0"},
		{"REPLICAOF", "NO", "ONE"}, {"SLAVEOF", "127.0.0.1", "1"}, {"FAILOVER"}, {"MONITOR"},
		{"CLUSTER", "INFO"}, {"MODULE", "LIST"}, {"ACL", "SETUSER", "x"}, {"ACL", "DELUSER", "x"},
		{"CLIENT", "PAUSE", "100"},
	} {
		got := c.do(cmd...)
		if !strings.HasPrefix(got, "-NOPERM ") || !strings.Contains(got, "'"+strings.ToLower(cmd[0])) {
			t.Errorf("%v = %q, want a NOPERM refusal", cmd, got)
		}
	}
	// Reads of the configuration and ACL are fine.
	if got := c.do("CONFIG", "GET", "maxmemory"); !strings.HasPrefix(got, "*2\r\n") {
		t.Errorf("CONFIG GET = %q", got)
	}
	if got := c.do("ACL", "WHOAMI"); got != "$7\r\ndefault\r\n" {
		t.Errorf("ACL WHOAMI = %q", got)
	}
	// The server's maxmemory did not change.
	if got := dialRedis(t, r).do("CONFIG", "GET", "maxmemory"); !strings.Contains(got, "$1\r\n0\r\n") {
		t.Errorf("maxmemory on the server = %q, want 0", got)
	}
}

func TestPolicyAllowAndDenyLists(t *testing.T) {
	r := startRedis(t)
	allow, err := NewPolicy("g", "allow", []string{"get", "set", "config|get"}, []string{"set"})
	if err != nil {
		t.Fatal(err)
	}
	_, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Policy = allow })
	c := dialRedis(t, paddr)
	tests := []struct {
		cmd  []string
		want string // reply prefix
	}{
		{[]string{"GET", "k"}, "$-1"},
		{[]string{"PING"}, "+PONG"}, // connection basics stay
		{[]string{"SET", "k", "v"}, "-NOPERM the 'set' command"},
		{[]string{"DEL", "k"}, "-NOPERM the 'del' command"},
		{[]string{"CONFIG", "GET", "port"}, "*2"},
		{[]string{"CONFIG", "SET", "port", "1"}, "-NOPERM the 'config' command"},
	}
	for _, tt := range tests {
		if got := c.do(tt.cmd...); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%v = %q, want prefix %q", tt.cmd, got, tt.want)
		}
	}
}

func TestRefusedCommandAbortsTransaction(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Policy = nil })
	c := dialRedis(t, paddr)
	c.send("MULTI\r\nSET tx 1\r\nCONFIG SET maxmemory 1\r\nEXEC\r\nEXISTS tx\r\n")
	want := []string{"+OK", "+QUEUED", "-NOPERM", "-EXECABORT", ":0"}
	for i, w := range want {
		if got := c.reply(); !strings.HasPrefix(got, w) {
			t.Fatalf("reply %d = %q, want prefix %q", i, got, w)
		}
	}
	// The connection is usable afterwards, outside any transaction.
	if got := c.do("SET", "tx", "2"); got != "+OK\r\n" {
		t.Fatalf("SET after EXECABORT = %q", got)
	}
}

func TestClientKillOnlyOwnConnection(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	victim := dialRedis(t, r)
	victimID := strings.TrimSuffix(strings.TrimPrefix(victim.do("CLIENT", "ID"), ":"), "\r\n")
	c := dialRedis(t, paddr)
	for _, cmd := range [][]string{
		{"CLIENT", "KILL", "ID", victimID},
		{"CLIENT", "KILL", "TYPE", "normal"},
		{"CLIENT", "KILL", "127.0.0.1:1"},
		{"CLIENT", "KILL", "ID", "1", "SKIPME", "no"},
	} {
		if got := c.do(cmd...); !strings.HasPrefix(got, "-NOPERM CLIENT KILL") {
			t.Errorf("%v = %q, want NOPERM", cmd, got)
		}
	}
	if got := victim.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("the direct client was killed: PING = %q", got)
	}
	// Its own connection, by the id CLIENT ID gave: allowed.
	own := strings.TrimSuffix(strings.TrimPrefix(c.do("CLIENT", "ID"), ":"), "\r\n")
	if got := c.do("CLIENT", "KILL", "ID", own); got != ":1\r\n" {
		t.Fatalf("CLIENT KILL ID own = %q, want :1", got)
	}
}

func TestProxyAuth(t *testing.T) {
	const backendPass = "backend pw"
	r := startRedis(t, "--requirepass", backendPass)
	sum := sha256.Sum256([]byte("app secret"))
	auth, err := NewAuth([]User{
		{Name: "default", Password: "front"},
		{Name: "app", PasswordSHA256: hex.EncodeToString(sum[:])},
	}, "", backendPass)
	if err != nil {
		t.Fatal(err)
	}
	srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Auth = auth })

	c := dialRedis(t, paddr)
	if got := c.do("GET", "k"); got != "-NOAUTH Authentication required.\r\n" {
		t.Fatalf("GET before AUTH = %q", got)
	}
	if got := c.do("HELLO", "3"); !strings.HasPrefix(got, "-NOAUTH HELLO must be called") {
		t.Fatalf("HELLO before AUTH = %q", got)
	}
	if got := c.do("AUTH", "wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH wrong = %q", got)
	}
	if got := c.do("AUTH", backendPass); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH with the backend's password = %q, want WRONGPASS (clients use the proxy's)", got)
	}
	// A pipeline: the GET after a good AUTH runs with the backend credentials.
	c.send("*2\r\n$4\r\nAUTH\r\n$5\r\nfront\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$3\r\nACL\r\n")
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("AUTH front = %q", got)
	}
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("SET after AUTH = %q", got)
	}
	c.reply() // ACL with no subcommand: Redis's own error
	// HELLO 3 AUTH with a hashed ACL-style user.
	h := dialRedis(t, paddr)
	if got := h.do("HELLO", "3", "AUTH", "app", "app secret", "SETNAME", "x"); !strings.HasPrefix(got, "%") {
		t.Fatalf("HELLO 3 AUTH app = %q, want a RESP3 map", got)
	}
	if got := h.do("GET", "k"); got != "$1\r\nv\r\n" {
		t.Fatalf("GET as app = %q", got)
	}
	if got := dialRedis(t, paddr).do("HELLO", "3", "AUTH", "app", "nope"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("HELLO AUTH wrong = %q", got)
	}
	// RESET forgets the authentication, as on Redis with a password.
	if got := h.do("RESET"); got != "+RESET\r\n" {
		t.Fatalf("RESET = %q", got)
	}
	if got := h.do("GET", "k"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("GET after RESET = %q", got)
	}
	if got := testutil.ToFloat64(srv.m.rejectedAuth); got != 3 {
		t.Errorf("auth failures counted = %v, want 3", got)
	}
}

func TestAuthFailuresSlowed(t *testing.T) {
	l := newAuthLimiter()
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}
	now := time.Unix(1000, 0)
	var delays []time.Duration
	for range 8 {
		delays = append(delays, l.failed(addr, now))
	}
	for i := range authFreeFails {
		if delays[i] != 0 {
			t.Errorf("failure %d delayed %v, want none", i+1, delays[i])
		}
	}
	for i := authFreeFails + 1; i < len(delays); i++ {
		if delays[i] <= delays[i-1] && delays[i] != maxAuthDelay {
			t.Errorf("delays do not grow: %v", delays)
		}
	}
	other := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 1}
	if d := l.failed(other, now); d != 0 {
		t.Errorf("another address delayed %v", d)
	}
	if d := l.failed(addr, now.Add(2*authWindow)); d != 0 {
		t.Errorf("after the window: delayed %v, want none", d)
	}
}

func TestMaxClients(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.MaxClients = 2 })
	a, b := dialRedis(t, paddr), dialRedis(t, paddr)
	a.do("PING")
	b.do("PING")
	c := dialRedis(t, paddr)
	if got := c.reply(); got != "-ERR max number of clients reached\r\n" {
		t.Fatalf("third client got %q", got)
	}
	if got := testutil.ToFloat64(srv.m.rejectedMax); got != 1 {
		t.Errorf("rejected maxclients = %v, want 1", got)
	}
	if got := a.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("first client after the refusal: %q", got)
	}
}

func TestHandshakeAndIdleTimeouts(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) {
		o.HandshakeTimeout = 300 * time.Millisecond
		o.IdleTimeout = 900 * time.Millisecond
	})
	silent := dialRedis(t, paddr)
	talker := dialRedis(t, paddr)
	talker.do("PING")
	blocked := dialRedis(t, paddr)
	blocked.send("*3\r\n$5\r\nBLPOP\r\n$2\r\nbq\r\n$1\r\n3\r\n")
	start := time.Now()
	if got := silent.reply(); got != "EOF" {
		t.Fatalf("silent client got %q, want EOF", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("silent client closed after %v, want about 300ms", d)
	}
	if got := talker.reply(); got != "EOF" {
		t.Fatalf("idle client got %q, want EOF", got)
	}
	// The blocked client is not idle: it gets its timeout reply.
	if got := blocked.reply(); got != "*-1\r\n" {
		t.Fatalf("blocked client got %q, want the BLPOP timeout reply", got)
	}
	if got := testutil.ToFloat64(srv.m.disconnects.WithLabelValues(reasonHandshake)); got != 1 {
		t.Errorf("handshake disconnects = %v, want 1", got)
	}
	if got := testutil.ToFloat64(srv.m.disconnects.WithLabelValues(reasonIdle)); got < 1 {
		t.Errorf("idle disconnects = %v, want ≥ 1", got)
	}
}

func TestSlowSubscriberDisconnected(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.OutputLimit = 256 << 10 })
	sub := dialRedis(t, paddr)
	if tc, ok := sub.nc.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10) // keep the kernel from absorbing the flood
	}
	if got := sub.do("SUBSCRIBE", "flood"); !strings.HasPrefix(got, "*3") {
		t.Fatalf("SUBSCRIBE = %q", got)
	}
	pub := dialRedis(t, r)
	msg := strings.Repeat("x", 64<<10)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; testutil.ToFloat64(srv.m.disconnects.WithLabelValues(reasonOutputLimit)) == 0; i++ {
		if time.Now().After(deadline) || i > 2000 {
			t.Fatalf("subscriber not disconnected after %d messages of 64 KiB", i)
		}
		pub.do("PUBLISH", "flood", msg)
	}
	// The publisher's server still serves everyone; the proxy too.
	if got := dialRedis(t, paddr).do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING through the proxy = %q", got)
	}
}

func TestQueryBufferLimit(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), func(o *Options) {
		o.Limits = RequestLimits{MaxQuery: 1 << 20}
	})
	c := dialRedis(t, paddr)
	c.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n" + strings.Repeat("x", 1000))
	if got := c.reply(); !strings.Contains(got, "client-query-buffer-limit") {
		t.Fatalf("reply = %q", got)
	}
	if got := c.reply(); got != "EOF" {
		t.Fatalf("after the error: %q, want EOF", got)
	}
}

func TestMetricsCount(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Policy = nil })
	reg := prometheus.NewRegistry()
	for _, c := range srv.Collectors() {
		reg.MustRegister(c)
	}
	c := dialRedis(t, paddr)
	c.do("SET", "m", "1")
	c.do("GET", "m")
	c.do("INCR", "nope", "x") // Redis's error
	c.do("SHUTDOWN")          // denied
	if got := testutil.ToFloat64(srv.m.cmdOK); got != 2 {
		t.Errorf("ok = %v, want 2", got)
	}
	if got := testutil.ToFloat64(srv.m.cmdErrReply); got != 1 {
		t.Errorf("error_reply = %v, want 1", got)
	}
	if got := testutil.ToFloat64(srv.m.cmdDenied); got != 1 {
		t.Errorf("denied = %v, want 1", got)
	}
	n, err := testutil.GatherAndCount(reg, "sentinel_proxy_command_duration_seconds", "sentinel_proxy_backend_connections", "sentinel_proxy_client_connections")
	if err != nil || n == 0 {
		t.Fatalf("gather: %d series, %v", n, err)
	}
}

// dyingMaster is a source whose master reads one command on each
// connection, then drops it, and the sentinels name next instead.
func dyingMaster(t *testing.T, next string) *fakeSource {
	t.Helper()
	src := newFakeSource("")
	addr := dyingListener(t, src, next)
	src.mu.Lock()
	src.addr = addr
	src.mu.Unlock()
	return src
}

// A master that dies with commands in flight: reads and SELECT are answered
// by the next master; a write gets "may have run".
func TestInFlightReadsRetried(t *testing.T) {
	r := startRedis(t)
	direct := dialRedis(t, r)
	direct.do("SELECT", "5")
	direct.do("SET", "inflight", "here")
	_, paddr := startProxy(t, dyingMaster(t, r), nil)
	c := dialRedis(t, paddr)
	c.send("*2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n*2\r\n$3\r\nGET\r\n$8\r\ninflight\r\n")
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("SELECT in flight = %q", got)
	}
	if got := c.reply(); got != "$4\r\nhere\r\n" {
		t.Fatalf("GET in flight = %q, want the value from db 5 of the next master", got)
	}
	// The session is in db 5 on the new master too.
	if got := c.do("GET", "inflight"); got != "$4\r\nhere\r\n" {
		t.Fatalf("GET after = %q", got)
	}
}

func TestInFlightWriteMayHaveRun(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, dyingMaster(t, r), nil)
	c := dialRedis(t, paddr)
	if got := c.do("SET", "k", "v"); !strings.Contains(got, "may have run") {
		t.Fatalf("SET in flight = %q, want may have run", got)
	}
	if got := dialRedis(t, r).do("EXISTS", "k"); got != ":0\r\n" {
		t.Fatalf("the write was sent again to the next master: EXISTS k = %q", got)
	}
}

// A line with no end grows the read buffer geometrically: the error comes
// at once, not after thousands of one-byte reallocations.
func TestEndlessInlineLineRefusedQuickly(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	start := time.Now()
	c.send(strings.Repeat("a", 300_000))
	if got := c.reply(); got != "-ERR Protocol error: too big inline request\r\n" {
		t.Fatalf("reply = %q", got)
	}
	if d := time.Since(start); d > 3*time.Second { // took seconds per 64 KiB before
		t.Errorf("refused after %v", d)
	}
}

// Draining answers a pipeline the client already sent, even when the
// session was parked (idle) as it arrived.
func TestDrainAnswersPipelineInFlight(t *testing.T) {
	r := startRedis(t)
	src := newFakeSource(r)
	srv, err := NewServer(Options{Name: "drain", Source: src, DrainTimeout: 10 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serve(t, srv)
	done := make(chan error, 1)
	c := dialRedis(t, addr)
	if got := c.do("PING"); got != "+PONG\r\n" {
		t.Fatal(got)
	}
	waitFor(t, func() bool { return srv.Stats().Parked == 1 })
	const n = 2000
	var batch strings.Builder
	for i := range n {
		fmt.Fprintf(&batch, "SET drain:%d %d\r\n", i, i)
	}
	go c.nc.Write([]byte(batch.String()))
	go func() { done <- stop() }()
	for i := range n {
		if got := c.reply(); got != "+OK\r\n" {
			t.Fatalf("reply %d = %q", i, got)
		}
	}
	if got := c.reply(); got != "EOF" {
		t.Fatalf("after the batch: %q, want EOF", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPolicyRefusalDoesNotAllocate(t *testing.T) {
	p, err := NewPolicy("g", "deny", []string{"config|get"}, []string{"flushall"})
	if err != nil {
		t.Fatal(err)
	}
	cmds := [][][]byte{
		{[]byte("SET"), []byte("k"), []byte("v")},
		{[]byte("config"), []byte("GET"), []byte("port")},
		{[]byte("CONFIG"), []byte("SET"), []byte("port"), []byte("1")},
	}
	want := []bool{false, false, true}
	for i, c := range cmds {
		if got := p.refusal(c) != ""; got != want[i] {
			t.Errorf("%q refused = %v, want %v", c, got, want[i])
		}
	}
	if n := testing.AllocsPerRun(100, func() { p.refusal(cmds[0]); p.refusal(cmds[1]) }); n != 0 {
		t.Errorf("refusal allocates %v times per run of allowed commands", n)
	}
}

// With proxy-terminated auth, a reload with new backend credentials (the
// data nodes' password rotated) applies to sessions that authenticated
// before it.
func TestProxyAuthBackendPasswordRotation(t *testing.T) {
	r := startRedis(t, "--requirepass", "old backend")
	auth, err := NewAuth([]User{{Name: "default", Password: "front"}}, "", "old backend")
	if err != nil {
		t.Fatal(err)
	}
	srv, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Auth = auth })
	c := dialRedis(t, paddr)
	if got := c.do("AUTH", "front"); got != "+OK\r\n" {
		t.Fatalf("AUTH = %q", got)
	}
	if got := c.do("SET", "rot", "1"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	// Rotate: the server's password changes, then the proxy's settings.
	admin := dialRedis(t, r)
	admin.do("AUTH", "old backend")
	if got := admin.do("CONFIG", "SET", "requirepass", "new backend"); got != "+OK\r\n" {
		t.Fatalf("CONFIG SET requirepass = %q", got)
	}
	admin.do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") // the proxy's pooled connections go
	auth2, err := NewAuth([]User{{Name: "default", Password: "front"}}, "", "new backend")
	if err != nil {
		t.Fatal(err)
	}
	st := *srv.settings()
	st.Auth = auth2
	srv.Update(st)
	if got := c.do("GET", "rot"); got != "$1\r\n1\r\n" {
		t.Fatalf("GET after the rotation = %q", got)
	}
}
