package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
)

// tlsEcho serves TLS with cfg on 127.0.0.1:0 until the test ends: each
// connection is answered one line with the serial of the client's
// certificate ("none" without one), then closed.
func tlsEcho(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				who := "none"
				if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
					who = pc[0].SerialNumber.String()
				}
				fmt.Fprintf(tc, "%s\n", who)
			}()
		}
	}()
	return ln.Addr().String()
}

// dialAs dials addr as the proxy's and the watcher's dialers do: a clone
// with ServerName defaulting to host, and the name handed to
// VerifyConnection. It returns the server's certificate serial and what the
// server answered (the client certificate's serial).
func dialAs(cfg *tls.Config, addr, host string) (serverSerial, answer string, err error) {
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName = host
	}
	if verify := c.VerifyConnection; verify != nil {
		name := c.ServerName
		c.VerifyConnection = func(cs tls.ConnectionState) error { cs.ServerName = name; return verify(cs) }
	}
	return dialRaw(c, addr)
}

// dialRaw dials addr with cfg as it is.
func dialRaw(cfg *tls.Config, addr string) (serverSerial, answer string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	tc := nc.(*tls.Conn)
	serverSerial = tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	// Under TLS 1.3 a refused client certificate shows on the first read.
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return serverSerial, "", err
	}
	return serverSerial, strings.TrimSpace(line), nil
}

// TestTLSClientVerifiesLikeDefault checks that the reloadable client
// configuration accepts and rejects exactly the servers crypto/tls's own
// verification does: wrong CA, wrong name, wrong usage, expired.
func TestTLSClientVerifiesLikeDefault(t *testing.T) {
	dir := t.TempDir()
	ca, other := testpki.NewCA(t, "test ca"), testpki.NewCA(t, "other ca")
	caFile := ca.WriteCert(t, dir, "ca")
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}

	cases := []struct {
		name       string
		signer     *testpki.CA
		leaf       testpki.Leaf
		serverName string // configured; "" = the dialled host
		host       string // dialled host
		ok         bool
	}{
		{"ip san", ca, testpki.ServerLeaf(2), "", "127.0.0.1", true},
		{"dns san", ca, testpki.ServerLeaf(3), "", "localhost", true},
		{"configured name", ca, testpki.ServerLeaf(4), "localhost", "127.0.0.1", true},
		{"wrong ca", other, testpki.ServerLeaf(5), "", "127.0.0.1", false},
		{"wrong configured name", ca, testpki.ServerLeaf(6), "redis.example", "127.0.0.1", false},
		{"ip not in sans", ca, testpki.Leaf{Serial: 7, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(10, 0, 0, 1)}}, "", "127.0.0.1", false},
		{"client-only usage", ca, testpki.Leaf{Serial: 8, IPs: loopback, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, "", "127.0.0.1", false},
		{"expired", ca, testpki.Leaf{Serial: 9, IPs: loopback, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, "", "127.0.0.1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kp := tc.signer.KeyPair(t, tc.leaf)
			addr := tlsEcho(t, &tls.Config{Certificates: []tls.Certificate{kp}})

			cfg := config.Default()
			cfg.BackendTLS, cfg.BackendTLSCAFile, cfg.BackendTLSServerName = true, caFile, tc.serverName
			set, err := newTLSSet(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, _, gotErr := dialAs(set.Backend, addr, tc.host)

			// What crypto/tls says by itself.
			pool := ca.Pool()
			name := tc.serverName
			if name == "" {
				name = tc.host
			}
			_, _, stdErr := dialRaw(&tls.Config{RootCAs: pool, ServerName: name}, addr)

			if (gotErr == nil) != tc.ok || (stdErr == nil) != tc.ok {
				t.Fatalf("reloadable config: %v, crypto/tls default: %v; want ok=%v", gotErr, stdErr, tc.ok)
			}
			var cve *tls.CertificateVerificationError
			if !tc.ok && !errors.As(gotErr, &cve) {
				t.Fatalf("error %v is not a tls.CertificateVerificationError", gotErr)
			}
		})
	}
}

// TestTLSClientNoNameFailsClosed checks that a dialer that does not pass
// the dialled IP still never gets an unverified name accepted.
func TestTLSClientNoNameFailsClosed(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test ca")
	kp := ca.KeyPair(t, testpki.ServerLeaf(2))
	addr := tlsEcho(t, &tls.Config{Certificates: []tls.Certificate{kp}})
	cfg := config.Default()
	cfg.SentinelTLS, cfg.SentinelTLSCAFile = true, ca.WriteCert(t, dir, "ca")
	set, err := newTLSSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := set.Sentinel.Clone()
	c.ServerName = "127.0.0.1" // not sent as SNI: ConnectionState.ServerName stays ""
	if _, _, err := dialRaw(set.Sentinel, addr); err == nil || !strings.Contains(err.Error(), "no server name") {
		t.Fatalf("dial without any server name: %v, want a no-server-name error", err)
	}
	if _, _, err := dialRaw(c, addr); err == nil {
		t.Fatal("dial with an IP ServerName the verifier cannot see succeeded")
	}
}

// TestTLSListener checks the listener: certificate, minimum version and
// mutual TLS.
func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test ca")
	caFile := ca.WriteCert(t, dir, "ca")
	certFile, keyFile := ca.WriteKeyPair(t, dir, "server", testpki.ServerLeaf(10))
	clientKP := ca.KeyPair(t, testpki.ClientLeaf(11))
	pool := ca.Pool()

	cases := []struct {
		name     string
		minVer   string
		clientCA bool
		client   *tls.Config
		answer   string // "" = must fail
	}{
		{"tls 1.3 client", "1.2", false, &tls.Config{RootCAs: pool, ServerName: "localhost"}, "none"},
		{"tls 1.2 client", "1.2", false, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12}, "none"},
		{"tls 1.2 client under min 1.3", "1.3", false, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12}, ""},
		{"mutual without certificate", "1.2", true, &tls.Config{RootCAs: pool, ServerName: "localhost"}, ""},
		{"mutual with certificate", "1.2", true, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{clientKP}}, "11"},
		{"mutual with certificate, tls 1.2", "1.2", true, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{clientKP}, MaxVersion: tls.VersionTLS12}, "11"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSMinVersion = certFile, keyFile, tc.minVer
			if tc.clientCA {
				cfg.TLSClientCAFile = caFile
			}
			set, err := newTLSSet(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if set.Backend != nil || set.Sentinel != nil {
				t.Fatal("backend or sentinel tls on without backend_tls/sentinel_tls")
			}
			addr := tlsEcho(t, set.Listener)
			serial, answer, err := dialRaw(tc.client, addr)
			if tc.answer == "" {
				if err == nil {
					t.Fatalf("connection served (answer %q), want refused", answer)
				}
				return
			}
			if err != nil || serial != "10" || answer != tc.answer {
				t.Fatalf("got server serial %q answer %q err %v; want 10, %q", serial, answer, err, tc.answer)
			}
		})
	}
}

// TestTLSReload checks that Reload makes new connections use new files on
// every side, and that a broken file leaves the old material in use.
func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := testpki.NewCA(t, "ca one"), testpki.NewCA(t, "ca two")
	certFile, keyFile := ca1.WriteKeyPair(t, dir, "listener", testpki.ServerLeaf(100))
	backendCA := ca1.WriteCert(t, dir, "backend-ca")
	bCert, bKey := ca1.WriteKeyPair(t, dir, "backend-client", testpki.ClientLeaf(300))

	cfg := config.Default()
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.BackendTLS, cfg.BackendTLSCAFile, cfg.BackendTLSCertFile, cfg.BackendTLSKeyFile = true, backendCA, bCert, bKey
	set, err := newTLSSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lisAddr := tlsEcho(t, set.Listener)
	pool := ca1.Pool() // both CAs
	pool.AddCert(ca2.Cert)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost"}

	// A data node with a certificate from ca2, requiring client
	// certificates from either CA.
	nodeKP := ca2.KeyPair(t, testpki.ServerLeaf(400))
	nodeAddr := tlsEcho(t, &tls.Config{Certificates: []tls.Certificate{nodeKP}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})

	check := func(step, wantListener string, wantNodeOK bool, wantClient string) {
		t.Helper()
		if serial, _, err := dialRaw(client, lisAddr); err != nil || serial != wantListener {
			t.Fatalf("%s: listener serves serial %q (err %v), want %s", step, serial, err, wantListener)
		}
		_, answer, err := dialAs(set.Backend, nodeAddr, "127.0.0.1")
		if (err == nil) != wantNodeOK || (err == nil && answer != wantClient) {
			t.Fatalf("%s: node dial answer %q err %v; want ok=%v client serial %s", step, answer, err, wantNodeOK, wantClient)
		}
	}
	check("initial", "100", false, "") // the node's ca2 is not trusted yet

	ca1.WriteKeyPair(t, dir, "listener", testpki.ServerLeaf(101))
	ca2.WriteKeyPair(t, dir, "backend-client", testpki.ClientLeaf(301))
	ca2.WriteCert(t, dir, "backend-ca")
	if err := set.Reload(cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	check("after reload", "101", true, "301")

	// Broken files: every side keeps what it had.
	ca1.WriteKeyPair(t, dir, "listener", testpki.ServerLeaf(102))
	testpki.WriteFile(t, dir, "backend-ca.crt", []byte("not a certificate\n"))
	if err := set.Reload(cfg); err == nil {
		t.Fatal("reload with a broken CA file succeeded")
	}
	check("after broken reload", "101", true, "301")

	testpki.WriteFile(t, dir, "listener.key", []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----\n"))
	ca2.WriteCert(t, dir, "backend-ca")
	if err := set.Reload(cfg); err == nil {
		t.Fatal("reload with a broken key file succeeded")
	}
	check("after broken key", "101", true, "301")

	// A change that needs a restart is refused, nothing swapped.
	ca1.WriteKeyPair(t, dir, "listener", testpki.ServerLeaf(103))
	for _, change := range []func(*config.Config){
		func(c *config.Config) { c.SentinelTLS = true },
		func(c *config.Config) { c.BackendTLSServerName = "localhost" },
		func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = "", "" },
	} {
		c := cfg
		change(&c)
		if err := set.Reload(c); err == nil || !strings.Contains(err.Error(), "restart") {
			t.Fatalf("reload with a structural change: %v, want a needs-a-restart error", err)
		}
	}
	check("after refused reloads", "101", true, "301")
	if err := set.Reload(cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	check("after last reload", "103", true, "301")
}

// TestTLSSetOff checks that nothing is built when TLS is off.
func TestTLSSetOff(t *testing.T) {
	set, err := newTLSSet(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	if set.Listener != nil || set.Backend != nil || set.Sentinel != nil {
		t.Fatalf("tls configs built with tls off: %+v", set)
	}
	if err := set.Reload(config.Default()); err != nil {
		t.Fatalf("reload with tls off: %v", err)
	}
}
