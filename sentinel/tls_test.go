package sentinel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
)

// tlsConf is the TLS part of a redis-server or redis-sentinel config: TLS
// port only, clients must present a certificate, replication (and so
// Sentinel's links to the data nodes) over TLS.
func tlsConf(f *testpki.Files, port int) string {
	return fmt.Sprintf("tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\ntls-replication yes\n",
		port, f.CertFile, f.KeyFile, f.CAFile)
}

// TestTLSWatcherFindsMaster runs a TLS-only master and sentinel (their
// plain ports are 0) and checks that the watcher finds and verifies the
// master over TLS, and that a data-node CA that does not match keeps the
// master unverified.
func TestTLSWatcherFindsMaster(t *testing.T) {
	bin, err1 := exec.LookPath("redis-server")
	sentinelBin, err2 := exec.LookPath("redis-sentinel")
	if err1 != nil || err2 != nil {
		t.Skipf("redis-server and redis-sentinel not installed: %v %v", err1, err2)
	}
	f := testpki.NewFiles(t, "sentinel test ca")
	dir := t.TempDir()
	mport, sport := freePort(t), freePort(t)
	master := net.JoinHostPort("127.0.0.1", strconv.Itoa(mport))
	sent := net.JoinHostPort("127.0.0.1", strconv.Itoa(sport))
	startProc(t, bin, dir, "master", 0, tlsConf(f, mport)+"save \"\"\n")
	startProc(t, sentinelBin, dir, "sentinel", 0, tlsConf(f, sport)+
		fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 1\nsentinel down-after-milliseconds mymaster 2000\n", mport))
	good := f.CA.ClientConfig(f.Cert)
	waitFor(t, 10*time.Second, "tls sentinel up", func(ctx context.Context) error {
		c := redis.NewSentinelClient(&redis.Options{Addr: sent, TLSConfig: good, DisableIdentity: true, MaxRetries: -1})
		defer c.Close()
		_, err := c.GetMasterAddrByName(ctx, "mymaster").Result()
		return err
	})

	other := testpki.NewCA(t, "sentinel test ca") // same name, another key
	cases := []struct {
		name    string
		dataTLS *tls.Config
		want    string
	}{
		{"data nodes verified", good, master},
		{"data node ca does not match", &tls.Config{RootCAs: other.Pool(), Certificates: []tls.Certificate{f.Cert}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := fastOpts(sent)
			opts.TLS, opts.DataTLS = good, tc.dataTLS
			w, err := New(opts, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			if tc.want != "" {
				waitMaster(t, w, tc.want, 10*time.Second)
				return
			}
			// The sentinels answer over TLS, but no ROLE check passes.
			eventually(t, 10*time.Second, "sentinel answered over tls", func() bool {
				for _, s := range w.Status().Sentinels {
					if s.Subscribed {
						return true
					}
				}
				return false
			})
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				if addr, _ := w.Master(); addr != "" {
					t.Fatalf("master %s verified with a data-node CA that does not match", addr)
				}
				time.Sleep(50 * time.Millisecond) // observing that nothing happens, bounded
			}
		})
	}
}

// TestTLSDialerServerName checks the dialer's server name: the dialled host
// by default (an IP included, handed to VerifyConnection), the configured
// one otherwise, and the shared configuration left untouched.
func TestTLSDialerServerName(t *testing.T) {
	f := testpki.NewFiles(t, "sentinel test ca")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{f.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cases := []struct {
		name       string
		serverName string
		want       string
	}{
		{"dialled ip", "", "127.0.0.1"},
		{"configured", "localhost", "localhost"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen string
			cfg := &tls.Config{RootCAs: f.CA.Pool(), ServerName: tc.serverName,
				VerifyConnection: func(cs tls.ConnectionState) error { seen = cs.ServerName; return nil }}
			dial := tlsDialer(cfg, time.Second)
			c, err := dial(context.Background(), "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if seen != tc.want || cfg.ServerName != tc.serverName {
				t.Fatalf("VerifyConnection saw %q (want %q); shared ServerName now %q", seen, tc.want, cfg.ServerName)
			}
		})
	}
	if tlsDialer(nil, time.Second) != nil {
		t.Fatal("tlsDialer(nil) is not nil: plain connections would not use go-redis's dialer")
	}
}
