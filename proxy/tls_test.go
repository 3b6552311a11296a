package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
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
func startTLSRedis(t *testing.T, p *testpki.Files) string {
	t.Helper()
	var port int
	startRedisWith(t, func() []string {
		port = freePort(t)
		return []string{"--tls-port", strconv.Itoa(port), "--tls-cert-file", p.CertFile,
			"--tls-key-file", p.KeyFile, "--tls-ca-cert-file", p.CAFile, "--tls-auth-clients", "optional"}
	})
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// TestTLSProxyBothSides serves a TLS client through the proxy to a
// TLS-only Redis port, with and without backend TLS and with a backend CA
// that does not match.
func TestTLSProxyBothSides(t *testing.T) {
	p := testpki.NewFiles(t, "proxy test ca")
	other := testpki.NewCA(t, "proxy test ca") // same name, another key
	redisTLS := startTLSRedis(t, p)

	cases := []struct {
		name    string
		backend *tls.Config
		want    string // reply prefix to SET
		errText string // in the error reply
	}{
		{"backend tls", &tls.Config{RootCAs: p.CA.Pool()}, "+OK", ""},
		{"backend tls by name", &tls.Config{RootCAs: p.CA.Pool(), ServerName: "localhost"}, "+OK", ""},
		{"backend plain to a tls port", nil, "-", ""},
		{"backend wrong ca", &tls.Config{RootCAs: other.Pool()}, "-", "certificate signed by unknown authority"},
		{"backend wrong name", &tls.Config{RootCAs: p.CA.Pool(), ServerName: "redis.example"}, "-", "not redis.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startProxy(t, newFakeSource(redisTLS), func(o *Options) {
				o.TLS = &tls.Config{Certificates: []tls.Certificate{p.Cert}}
				o.BackendTLS = tc.backend
				o.HoldTimeout = 5 * time.Second
				o.DialTimeout = time.Second
			})
			nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: p.CA.Pool(), ServerName: "localhost"})
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
	p := testpki.NewFiles(t, "proxy test ca")
	redisTLS := startTLSRedis(t, p)
	_, addr := startProxy(t, newFakeSource(redisTLS), func(o *Options) {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{p.Cert}}
		o.BackendTLS = &tls.Config{RootCAs: p.CA.Pool()}
	})
	plain := dialRedis(t, addr)
	plain.send("*1\r\n$4\r\nPING\r\n")
	plain.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 512)
	n, _ := plain.nc.Read(b)
	if strings.Contains(string(b[:n]), "PONG") {
		t.Fatalf("plain client answered %q by the tls listener", b[:n])
	}
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.CA.Pool(), ServerName: "127.0.0.1"})
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
	p := testpki.NewFiles(t, "proxy test ca")
	redisTLS := startTLSRedis(t, p)

	t.Run("replay over tls", func(t *testing.T) {
		srv := newTLSTestServer(t, &tls.Config{RootCAs: p.CA.Pool()}, time.Second)
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
		srv := newTLSTestServer(t, &tls.Config{RootCAs: p.CA.Pool()}, 300*time.Millisecond)
		began := time.Now()
		_, err = srv.dialBackend(context.Background(), ln.Addr().String(), cleanState, "", poolKey{})
		if err == nil || time.Since(began) > 3*time.Second {
			t.Fatalf("dial to a silent server: %v after %v, want an error within about 300ms", err, time.Since(began))
		}
	})

	t.Run("close resets the tcp connection", func(t *testing.T) {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.Cert}})
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
		srv := newTLSTestServer(t, &tls.Config{RootCAs: p.CA.Pool()}, time.Second)
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
