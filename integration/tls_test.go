package integration

// TLS on every side against Debian's redis-server / redis-sentinel (built
// with TLS): clients to the proxy, the proxy to the data nodes, the watcher
// to the sentinels and to the data nodes, and the sentinels to the data
// nodes. Every Redis process listens on a TLS port only (port 0) and
// requires client certificates, so nothing in the chain can fall back to
// plain TCP unnoticed. The topology package's nodes and readiness checks
// speak plain TCP, so this test starts its own processes.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// tlsTopo is a TLS-only master, replica and two sentinels.
type tlsTopo struct {
	clientTLS            *tls.Config // for direct clients: the CA and a client certificate
	master, replica      string      // TLS addresses
	sentinels            []string
	dir                  string
	logs                 map[string]string // name → log file
	masterName, redisBin string
}

// startTLSTopo starts the processes and waits until the sentinels know the
// replica and each other; clientTLS is what the checks connect with. Every
// process is killed by PID when t ends.
func startTLSTopo(t *testing.T, pki *testpki.Files, clientTLS *tls.Config) *tlsTopo {
	t.Helper()
	server, err1 := exec.LookPath("redis-server")
	sentinelBin, err2 := exec.LookPath("redis-sentinel")
	if err1 != nil || err2 != nil {
		t.Fatalf("redis-server and redis-sentinel are required (make deps): %v %v", err1, err2)
	}
	tp := newTLSProcs(t, clientTLS)
	tp.masterName, tp.redisBin = "tlsmaster", server
	mport, rport := freeLoopbackPort(t), freeLoopbackPort(t)
	tp.master, tp.replica = tlsJoin(mport), tlsJoin(rport)
	data := []string{`save ""`, "appendonly no", "repl-diskless-sync yes", "repl-diskless-sync-delay 0"}
	tp.start(t, "master", server, append(tlsOnlyConf(pki, mport), data...))
	tp.start(t, "replica", server, append(append(tlsOnlyConf(pki, rport), data...), fmt.Sprintf("replicaof 127.0.0.1 %d", mport)))
	tp.waitCmd(t, tp.replica, 15*time.Second, "replica link up", func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if s := infoField(info, "master_link_status"); s != "up" {
			return fmt.Errorf("master_link_status %q", s)
		}
		return nil
	})
	for i := range 2 {
		port := freeLoopbackPort(t)
		tp.sentinels = append(tp.sentinels, tlsJoin(port))
		tp.start(t, fmt.Sprintf("sentinel-%d", i+1), sentinelBin, append(tlsOnlyConf(pki, port),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1", tp.masterName, mport),
			"sentinel down-after-milliseconds "+tp.masterName+" 2000",
			"sentinel failover-timeout "+tp.masterName+" 3000"))
	}
	for _, s := range tp.sentinels {
		tp.waitCmd(t, s, 30*time.Second, "sentinel "+s+" knows the replica and the other sentinel", func(ctx context.Context, c *redis.Client) error {
			reps, err := c.Do(ctx, "SENTINEL", "REPLICAS", tp.masterName).Slice()
			if err != nil {
				return err
			}
			sents, err := c.Do(ctx, "SENTINEL", "SENTINELS", tp.masterName).Slice()
			if err != nil {
				return err
			}
			if len(reps) != 1 || len(sents) != 1 {
				return fmt.Errorf("%d replicas, %d other sentinels", len(reps), len(sents))
			}
			return nil
		})
	}
	return tp
}

// tlsOnlyConf is the config of a Redis process listening on port over TLS
// only, requiring client certificates from pki's CA.
func tlsOnlyConf(pki *testpki.Files, port int) []string {
	return []string{
		"port 0", // no plain TCP at all
		"tls-port " + strconv.Itoa(port),
		"bind 127.0.0.1", "protected-mode no", "daemonize no",
		"tls-cert-file " + pki.CertFile, "tls-key-file " + pki.KeyFile, "tls-ca-cert-file " + pki.CAFile,
		"tls-auth-clients yes", // clients need a certificate
		"tls-replication yes",  // replicas and sentinels reach the data nodes over TLS
	}
}

// newTLSProcs is an empty tlsTopo: a directory for the processes start
// runs, whose logs' tails are logged if t fails.
func newTLSProcs(t *testing.T, clientTLS *tls.Config) *tlsTopo {
	tp := &tlsTopo{clientTLS: clientTLS, dir: t.TempDir(), logs: map[string]string{}}
	t.Cleanup(func() {
		if t.Failed() {
			for name, f := range tp.logs {
				b, _ := os.ReadFile(f)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("--- %s log (tail) ---\n%s", name, strings.Join(lines[max(0, len(lines)-20):], "\n"))
			}
		}
	})
	return tp
}

// start writes conf and runs bin on it in its own process group, killed
// (by PID) when the test ends, or by the kernel if the test binary dies.
// The channel it returns is closed when the process has exited.
func (tp *tlsTopo) start(t *testing.T, name, bin string, conf []string) <-chan struct{} {
	t.Helper()
	conf = append(conf, "dir "+tp.dir, `logfile ""`)
	path := filepath.Join(tp.dir, name+".conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(tp.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, path)
	cmd.Dir = tp.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	tp.logs[name] = logPath
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return exited
}

// bindFailed waits until the node name logs that it is ready, or exits, and
// reports whether it exited because a port of its was taken (another
// process can take a port between freeLoopbackPort and the node's bind).
func (tp *tlsTopo) bindFailed(t *testing.T, name string, exited <-chan struct{}) bool {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(tp.logs[name])
			return strings.Contains(string(b), "Address already in use")
		case <-time.After(20 * time.Millisecond):
		}
		if b, _ := os.ReadFile(tp.logs[name]); strings.Contains(string(b), "Ready to accept connections") {
			return false
		}
	}
	return false
}

// client is a go-redis client straight to a TLS node, with the client
// certificate, RESP2, no retries.
func (tp *tlsTopo) client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, TLSConfig: tp.clientTLS, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
	})
}

// waitCmd polls check on a client to addr until it passes or d is over.
func (tp *tlsTopo) waitCmd(t *testing.T, addr string, d time.Duration, what string, check func(context.Context, *redis.Client) error) {
	t.Helper()
	c := tp.client(addr)
	defer c.Close()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := check(ctx, c)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// runID is the run_id of the node at addr, asked directly over TLS.
func (tp *tlsTopo) runID(t *testing.T, addr string) string {
	t.Helper()
	c := tp.client(addr)
	defer c.Close()
	id, err := runID(testContext(t, 5*time.Second), c)
	if err != nil {
		t.Fatalf("run_id of %s: %v", addr, err)
	}
	return id
}

func tlsJoin(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// startTLSProxy serves a proxy.Server in front of src until the test ends
// and returns its address.
func startTLSProxy(t *testing.T, name string, src proxy.MasterSource, listener, backend *tls.Config, log *zap.Logger) string {
	t.Helper()
	srv, err := proxy.NewServer(proxy.Options{
		Name: name, Source: src, TLS: listener, BackendTLS: backend,
		HoldTimeout: 5 * time.Second, DrainTimeout: time.Second,
	}, log.Named("proxy"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy %s: Serve: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("proxy %s did not stop within 30s", name)
		}
	})
	return ln.Addr().String()
}

// tlsProxyClient is a go-redis client to a proxy; tlsCfg nil means plain.
func tlsProxyClient(addr string, tlsCfg *tls.Config) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, TLSConfig: tlsCfg, MaxRetries: -1, PoolSize: 2,
		DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second})
}

// TestTLS runs the TLS topology with a real watcher and proxies in front
// of it, and checks every side: see the subtests.
func TestTLS(t *testing.T) {
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))
	// pki is every Redis process's (and the proxy listener's) CA and
	// certificate; client is a client-only certificate from the same CA,
	// wrongClient one from another CA.
	pki := testpki.NewFiles(t, "tls test ca")
	wrong := testpki.NewCA(t, "wrong ca")
	client, wrongClient := pki.CA.KeyPair(t, testpki.ClientLeaf(3)), wrong.KeyPair(t, testpki.ClientLeaf(3))
	clientTLS := pki.CA.ClientConfig(client)
	tp := startTLSTopo(t, pki, clientTLS)

	// The watcher talks TLS to the sentinels and (ROLE) to the data nodes.
	w, err := sentinel.New(sentinel.Options{
		MasterName: tp.masterName, Sentinels: tp.sentinels[:1],
		TLS: pki.CA.ClientConfig(client), DataTLS: pki.CA.ClientConfig(client),
		PollInterval: 200 * time.Millisecond,
	}, log.Named("watcher"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-wdone; err != nil {
			t.Errorf("watcher Run: %v", err)
		}
	})

	listener := &tls.Config{Certificates: []tls.Certificate{pki.Cert}, MinVersion: tls.VersionTLS12}
	mutual := &tls.Config{Certificates: []tls.Certificate{pki.Cert}, MinVersion: tls.VersionTLS12,
		ClientCAs: pki.CA.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	mainAddr := startTLSProxy(t, "main", w, listener, pki.CA.ClientConfig(client), log)
	withCert := &tls.Config{RootCAs: pki.CA.Pool(), Certificates: []tls.Certificate{client}}
	noCert := &tls.Config{RootCAs: pki.CA.Pool()}
	masterID := tp.runID(t, tp.master)

	t.Run("sentinel over tls", func(t *testing.T) {
		waitFor(t, 15*time.Second, "the watcher to verify the master over TLS", func() bool {
			addr, _ := w.Master()
			return addr == tp.master
		})
		// The second sentinel was discovered (SENTINEL SENTINELS) and is
		// reached over TLS too: its plain port is 0.
		waitFor(t, 15*time.Second, "both sentinels subscribed over TLS", func() bool {
			n := 0
			for _, s := range w.Status().Sentinels {
				if s.Subscribed {
					n++
				}
			}
			return n == 2
		})
	})

	t.Run("tls client through the proxy reaches the tls master", func(t *testing.T) {
		c := tlsProxyClient(mainAddr, noCert)
		defer c.Close()
		ctx := testContext(t, 20*time.Second)
		key := keyPrefix(t) + "k"
		if err := c.Set(ctx, key, "over tls", 0).Err(); err != nil {
			t.Fatalf("SET through the TLS proxy: %v", err)
		}
		if v, err := c.Get(ctx, key).Result(); err != nil || v != "over tls" {
			t.Fatalf("GET through the TLS proxy: %q, %v", v, err)
		}
		if id, err := runID(ctx, c); err != nil || id != masterID {
			t.Fatalf("proxy reaches run_id %q (%v), want the master's %s", id, err, masterID)
		}
		d := tp.client(tp.master)
		defer d.Close()
		if v, err := d.Get(ctx, key).Result(); err != nil || v != "over tls" {
			t.Fatalf("GET on the master directly: %q, %v", v, err)
		}
	})

	t.Run("plain client to the tls listener fails cleanly", func(t *testing.T) {
		c := tlsProxyClient(mainAddr, nil)
		defer c.Close()
		began := time.Now()
		err := c.Ping(testContext(t, 10*time.Second)).Err()
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("plain PING to the TLS listener: %v after %v, want a prompt error", err, time.Since(began))
		}
		t.Logf("plain client: %v (after %v)", err, time.Since(began).Round(time.Millisecond))
		ok := tlsProxyClient(mainAddr, noCert)
		defer ok.Close()
		if err := ok.Ping(testContext(t, 10*time.Second)).Err(); err != nil {
			t.Fatalf("TLS PING after a plain client: %v", err)
		}
	})

	t.Run("mutual tls", func(t *testing.T) {
		addr := startTLSProxy(t, "mutual", w, mutual, pki.CA.ClientConfig(client), log)
		cases := []struct {
			name    string
			cfg     *tls.Config
			errText string // "" = served
		}{
			{"client certificate", withCert, ""},
			{"no client certificate", noCert, "certificate required"},
			// TLS 1.2 has no certificate_required alert.
			{"no client certificate, tls 1.2", &tls.Config{RootCAs: pki.CA.Pool(), MaxVersion: tls.VersionTLS12}, "handshake failure"},
			// crypto/tls offers only a certificate from a CA the server
			// names, so the server sees none.
			{"certificate from another ca", &tls.Config{RootCAs: pki.CA.Pool(), Certificates: []tls.Certificate{wrongClient}}, "certificate required"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := tlsProxyClient(addr, tc.cfg)
				defer c.Close()
				ctx := testContext(t, 10*time.Second)
				err := c.Set(ctx, keyPrefix(t)+"k", "v", 0).Err()
				switch {
				case tc.errText == "" && err != nil:
					t.Fatalf("SET with a client certificate: %v", err)
				case tc.errText != "" && (err == nil || !strings.Contains(err.Error(), tc.errText)):
					t.Fatalf("SET: %v; want it refused with %q", err, tc.errText)
				}
			})
		}
	})

	t.Run("proxy verifies the backend", func(t *testing.T) {
		cases := []struct {
			name    string
			backend *tls.Config
			errText string // "" = must work
		}{
			{"right ca", pki.CA.ClientConfig(client), ""},
			{"right ca, by name", &tls.Config{RootCAs: pki.CA.Pool(), Certificates: []tls.Certificate{client}, ServerName: "localhost"}, ""},
			{"wrong ca", &tls.Config{RootCAs: wrong.Pool(), Certificates: []tls.Certificate{client}}, "certificate signed by unknown authority"},
			{"wrong name", &tls.Config{RootCAs: pki.CA.Pool(), Certificates: []tls.Certificate{client}, ServerName: "redis.example"}, "not redis.example"},
			{"no client certificate", &tls.Config{RootCAs: pki.CA.Pool()}, "-"},
			{"plain to a tls port", nil, "-"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				addr := startTLSProxy(t, "backend", w, listener, tc.backend, log)
				c := tlsProxyClient(addr, noCert)
				defer c.Close()
				ctx := testContext(t, 20*time.Second)
				err := c.Set(ctx, keyPrefix(t)+"k", "v", 0).Err()
				switch {
				case tc.errText == "" && err != nil:
					t.Fatalf("SET: %v", err)
				case tc.errText != "" && err == nil:
					t.Fatal("SET succeeded; want it refused")
				case tc.errText != "" && tc.errText != "-" && !strings.Contains(err.Error(), tc.errText):
					t.Fatalf("SET: %v; want it to say %q", err, tc.errText)
				}
				if err != nil {
					t.Logf("SET: %v", err)
				}
			})
		}
	})

	t.Run("sentinel failover over tls", func(t *testing.T) {
		c := tlsProxyClient(mainAddr, noCert)
		defer c.Close()
		ctx := testContext(t, 60*time.Second)
		key := keyPrefix(t) + "k"
		if err := c.Set(ctx, key, "before", 0).Err(); err != nil {
			t.Fatal(err)
		}
		s := tp.client(tp.sentinels[0])
		defer s.Close()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := s.Do(ctx, "SENTINEL", "FAILOVER", tp.masterName).Err()
			if err == nil {
				break
			}
			if time.Now().After(deadline) || !(strings.HasPrefix(err.Error(), "NOGOODSLAVE") || strings.HasPrefix(err.Error(), "INPROG")) {
				t.Fatalf("SENTINEL FAILOVER over TLS: %v", err)
			}
			time.Sleep(200 * time.Millisecond) // sentinel not ready to fail over yet; bounded by deadline
		}
		replicaID := tp.runID(t, tp.replica)
		waitFor(t, 30*time.Second, "the watcher to follow the failover", func() bool {
			addr, _ := w.Master()
			return addr == tp.replica
		})
		waitFor(t, 15*time.Second, "the proxy to route to the promoted replica over TLS", func() bool {
			id, err := runID(ctx, c)
			return err == nil && id == replicaID
		})
		if err := c.Set(ctx, key, "after", 0).Err(); err != nil {
			t.Fatalf("SET after the failover: %v", err)
		}
		if v, err := c.Get(ctx, key).Result(); err != nil || v != "after" {
			t.Fatalf("GET after the failover: %q, %v", v, err)
		}
	})
}
