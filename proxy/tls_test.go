package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and
// localhost, and PEM files of all of it in a temporary directory.
type testPKI struct {
	pool              *x509.CertPool
	server            tls.Certificate
	caFile            string
	certFile, keyFile string
	caCert            *x509.Certificate
	dir               string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxy test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.caCert, _ = x509.ParseCertificate(der)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.caCert)
	p.caFile = p.write(t, "ca.crt", "CERTIFICATE", der)

	skey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	sder, err := x509.CreateCertificate(rand.Reader, leaf, p.caCert, &skey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	p.certFile = p.write(t, "server.crt", "CERTIFICATE", sder)
	p.keyFile = p.write(t, "server.key", "EC PRIVATE KEY", kder)
	if p.server, err = tls.LoadX509KeyPair(p.certFile, p.keyFile); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startTLSRedis runs redis-server with a TLS port next to its plain one (the
// plain one is startRedis's readiness check) and returns the TLS address.
func startTLSRedis(t *testing.T, p *testPKI) string {
	t.Helper()
	port := freePort(t)
	startRedis(t, "--tls-port", strconv.Itoa(port), "--tls-cert-file", p.certFile,
		"--tls-key-file", p.keyFile, "--tls-ca-cert-file", p.caFile, "--tls-auth-clients", "optional")
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// TestTLSProxyBothSides serves a TLS client through the proxy to a
// TLS-only Redis port, with and without backend TLS and with a backend CA
// that does not match.
func TestTLSProxyBothSides(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	redisTLS := startTLSRedis(t, p)

	cases := []struct {
		name    string
		backend *tls.Config
		want    string // reply prefix to SET
		errText string // in the error reply
	}{
		{"backend tls", &tls.Config{RootCAs: p.pool}, "+OK", ""},
		{"backend tls by name", &tls.Config{RootCAs: p.pool, ServerName: "localhost"}, "+OK", ""},
		{"backend plain to a tls port", nil, "-", ""},
		{"backend wrong ca", &tls.Config{RootCAs: other.pool}, "-", "certificate signed by unknown authority"},
		{"backend wrong name", &tls.Config{RootCAs: p.pool, ServerName: "redis.example"}, "-", "not redis.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startProxy(t, newFakeSource(redisTLS), func(o *Options) {
				o.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}}
				o.BackendTLS = tc.backend
				o.HoldTimeout = 5 * time.Second
				o.DialTimeout = time.Second
			})
			nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: p.pool, ServerName: "localhost"})
			if err != nil {
				t.Fatalf("tls dial proxy: %v", err)
			}
			t.Cleanup(func() { nc.Close() })
			c := &redisConn{t: t, nc: nc, fr: NewFramer(nc, 0)}
			got := c.do("SET", "tls:"+tc.name, "v")
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("SET through the proxy: %q, want %q…", got, tc.want)
			}
			if !strings.Contains(got, tc.errText) {
				t.Fatalf("SET through the proxy: %q, want it to say %q", got, tc.errText)
			}
			if tc.want == "+OK" {
				if got := c.do("GET", "tls:"+tc.name); got != "$1\r\nv\r\n" {
					t.Fatalf("GET: %q", got)
				}
			}
			t.Logf("SET: %q", strings.TrimSpace(got))
		})
	}
}

// TestTLSPlainClientRefused checks that a client speaking plain RESP to
// the TLS listener is closed without an answer in RESP and the proxy keeps
// serving TLS clients.
func TestTLSPlainClientRefused(t *testing.T) {
	p := newTestPKI(t)
	redisTLS := startTLSRedis(t, p)
	_, addr := startProxy(t, newFakeSource(redisTLS), func(o *Options) {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}}
		o.BackendTLS = &tls.Config{RootCAs: p.pool}
	})
	plain := dialRedis(t, addr)
	plain.send("*1\r\n$4\r\nPING\r\n")
	plain.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 512)
	n, _ := plain.nc.Read(b)
	if strings.Contains(string(b[:n]), "PONG") {
		t.Fatalf("plain client answered %q by the tls listener", b[:n])
	}
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &redisConn{t: t, nc: nc, fr: NewFramer(nc, 0)}
	if got := c.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("tls PING after a plain client: %q", got)
	}
}

// TestTLSDialBackend checks dialBackend's TLS path directly: the state
// replay over TLS, the server name handed to VerifyConnection for an IP,
// the handshake deadline, and the reset on close.
func TestTLSDialBackend(t *testing.T) {
	p := newTestPKI(t)
	redisTLS := startTLSRedis(t, p)

	t.Run("replay over tls", func(t *testing.T) {
		srv := newTLSTestServer(t, &tls.Config{RootCAs: p.pool}, time.Second)
		b, err := srv.dialBackend(context.Background(), redisTLS, connState{db: 3, proto: 2}, "tls-test", poolKey{})
		if err != nil {
			t.Fatal(err)
		}
		defer b.close()
		if _, ok := b.nc.(*tls.Conn); !ok {
			t.Fatalf("backend conn is %T, want *tls.Conn", b.nc)
		}
		b.nc.Write(appendCommand(nil, "CLIENT", "INFO"))
		var buf strings.Builder
		b.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		frame := make([]byte, 4096)
		n, err := b.nc.Read(frame)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(frame[:n])
		if s := buf.String(); !strings.Contains(s, " db=3 ") || !strings.Contains(s, " name=tls-test ") {
			t.Fatalf("CLIENT INFO over the tls backend: %q, want db=3 name=tls-test", s)
		}
	})

	t.Run("verify callback sees the dialled ip", func(t *testing.T) {
		var seen string
		cfg := &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			seen = cs.ServerName
			return nil
		}}
		srv := newTLSTestServer(t, cfg, time.Second)
		b, err := srv.dialBackend(context.Background(), redisTLS, cleanState, "", poolKey{})
		if err != nil {
			t.Fatal(err)
		}
		b.close()
		if seen != "127.0.0.1" {
			t.Fatalf("VerifyConnection saw server name %q, want 127.0.0.1", seen)
		}
		if cfg.ServerName != "" {
			t.Fatalf("dialBackend changed the shared config: ServerName %q", cfg.ServerName)
		}
	})

	t.Run("handshake bounded by the dial timeout", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan struct{})
		defer close(done)
		go func() { // accepts and never answers
			if c, err := ln.Accept(); err == nil {
				<-done
				c.Close()
			}
		}()
		srv := newTLSTestServer(t, &tls.Config{RootCAs: p.pool}, 300*time.Millisecond)
		began := time.Now()
		_, err = srv.dialBackend(context.Background(), ln.Addr().String(), cleanState, "", poolKey{})
		if err == nil || time.Since(began) > 3*time.Second {
			t.Fatalf("dial to a silent server: %v after %v, want an error within about 300ms", err, time.Since(began))
		}
	})

	t.Run("close resets the tcp connection", func(t *testing.T) {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.server}})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		readErr := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				readErr <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1)) // handshake, then wait for the close
			readErr <- err
		}()
		srv := newTLSTestServer(t, &tls.Config{RootCAs: p.pool}, time.Second)
		b, err := srv.dialBackend(context.Background(), ln.Addr().String(), cleanState, "", poolKey{})
		if err != nil {
			t.Fatal(err)
		}
		b.close()
		b.close() // twice is fine
		if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("server side read after close: %v, want connection reset", err)
		}
	})
}

// newTLSTestServer builds a Server (not serving) with backend TLS cfg.
func newTLSTestServer(t *testing.T, cfg *tls.Config, dialTimeout time.Duration) *Server {
	t.Helper()
	srv, err := NewServer(Options{Name: "tls", Source: newFakeSource(""), BackendTLS: cfg, DialTimeout: dialTimeout}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.parker.close() })
	return srv
}
