package sentinel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"
)

// tlsFiles is a throwaway CA and one certificate (server and client use)
// for 127.0.0.1 and localhost, as PEM files.
type tlsFiles struct {
	ca, cert, key string
	pool          *x509.CertPool
}

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sentinel test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	f := tlsFiles{ca: write("ca.crt", "CERTIFICATE", caDER), cert: write("redis.crt", "CERTIFICATE", der),
		key: write("redis.key", "EC PRIVATE KEY", kder), pool: x509.NewCertPool()}
	f.pool.AddCert(caCert)
	return f
}

// conf is the TLS part of a redis-server or redis-sentinel config: TLS
// port only, clients must present a certificate, replication (and so
// Sentinel's links to the data nodes) over TLS.
func (f tlsFiles) conf(port int) string {
	return fmt.Sprintf("tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\ntls-replication yes\n",
		port, f.cert, f.key, f.ca)
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
	f := newTLSFiles(t)
	dir := t.TempDir()
	mport, sport := freePort(t), freePort(t)
	master := net.JoinHostPort("127.0.0.1", strconv.Itoa(mport))
	sent := net.JoinHostPort("127.0.0.1", strconv.Itoa(sport))
	startProc(t, bin, dir, "master", 0, f.conf(mport)+"save \"\"\n")
	startProc(t, sentinelBin, dir, "sentinel", 0, f.conf(sport)+
		fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 1\nsentinel down-after-milliseconds mymaster 2000\n", mport))
	clientCert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	good := &tls.Config{RootCAs: f.pool, Certificates: []tls.Certificate{clientCert}}
	waitFor(t, 10*time.Second, "tls sentinel up", func(ctx context.Context) error {
		c := redis.NewSentinelClient(&redis.Options{Addr: sent, TLSConfig: good, DisableIdentity: true, MaxRetries: -1})
		defer c.Close()
		_, err := c.GetMasterAddrByName(ctx, "mymaster").Result()
		return err
	})

	other := newTLSFiles(t)
	cases := []struct {
		name    string
		dataTLS *tls.Config
		want    string
	}{
		{"data nodes verified", good, master},
		{"data node ca does not match", &tls.Config{RootCAs: other.pool, Certificates: []tls.Certificate{clientCert}}, ""},
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
	f := newTLSFiles(t)
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
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
			cfg := &tls.Config{RootCAs: f.pool, ServerName: tc.serverName,
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
