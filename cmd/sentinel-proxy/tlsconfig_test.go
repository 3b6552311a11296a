package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/config"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf describes a certificate to issue.
type leaf struct {
	serial   int64
	dns      []string
	ips      []net.IP
	usage    x509.ExtKeyUsage // ServerAuth when zero
	notAfter time.Time        // a day from now when zero
}

// serverLeaf is a server certificate for 127.0.0.1 and localhost.
func serverLeaf(serial int64) leaf {
	return leaf{serial: serial, dns: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}}
}

func clientLeaf(serial int64) leaf {
	return leaf{serial: serial, usage: x509.ExtKeyUsageClientAuth}
}

// issue returns the PEM certificate and key of l, signed by ca.
func (ca *testCA) issue(t *testing.T, l leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if l.usage == 0 {
		l.usage = x509.ExtKeyUsageServerAuth
	}
	if l.notAfter.IsZero() {
		l.notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(l.serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("leaf-%d", l.serial)},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     l.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{l.usage},
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writeFile writes b to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keyPair writes l's certificate and key under dir as name.crt/name.key.
func (ca *testCA) keyPair(t *testing.T, dir, name string, l leaf) (certFile, keyFile string) {
	c, k := ca.issue(t, l)
	return writeFile(t, dir, name+".crt", c), writeFile(t, dir, name+".key", k)
}

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
	ca, other := newTestCA(t, "test ca"), newTestCA(t, "other ca")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)

	cases := []struct {
		name       string
		signer     *testCA
		leaf       leaf
		serverName string // configured; "" = the dialled host
		host       string // dialled host
		ok         bool
	}{
		{"ip san", ca, serverLeaf(2), "", "127.0.0.1", true},
		{"dns san", ca, serverLeaf(3), "", "localhost", true},
		{"configured name", ca, serverLeaf(4), "localhost", "127.0.0.1", true},
		{"wrong ca", other, serverLeaf(5), "", "127.0.0.1", false},
		{"wrong configured name", ca, serverLeaf(6), "redis.example", "127.0.0.1", false},
		{"ip not in sans", ca, leaf{serial: 7, dns: []string{"localhost"}, ips: []net.IP{net.IPv4(10, 0, 0, 1)}}, "", "127.0.0.1", false},
		{"client-only usage", ca, leaf{serial: 8, ips: []net.IP{net.IPv4(127, 0, 0, 1)}, usage: x509.ExtKeyUsageClientAuth}, "", "127.0.0.1", false},
		{"expired", ca, leaf{serial: 9, ips: []net.IP{net.IPv4(127, 0, 0, 1)}, notAfter: time.Now().Add(-time.Hour)}, "", "127.0.0.1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert, key := tc.signer.issue(t, tc.leaf)
			kp, err := tls.X509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			addr := tlsEcho(t, &tls.Config{Certificates: []tls.Certificate{kp}})

			cfg := config.Default()
			cfg.BackendTLS, cfg.BackendTLSCAFile, cfg.BackendTLSServerName = true, caFile, tc.serverName
			set, err := newTLSSet(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, _, gotErr := dialAs(set.Backend, addr, tc.host)

			// What crypto/tls says by itself.
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca.pem)
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
	ca := newTestCA(t, "test ca")
	cert, key := ca.issue(t, serverLeaf(2))
	kp, _ := tls.X509KeyPair(cert, key)
	addr := tlsEcho(t, &tls.Config{Certificates: []tls.Certificate{kp}})
	cfg := config.Default()
	cfg.SentinelTLS, cfg.SentinelTLSCAFile = true, writeFile(t, dir, "ca.pem", ca.pem)
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
	ca := newTestCA(t, "test ca")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	certFile, keyFile := ca.keyPair(t, dir, "server", serverLeaf(10))
	ccert, ckey := ca.issue(t, clientLeaf(11))
	clientKP, _ := tls.X509KeyPair(ccert, ckey)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)

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
	ca1, ca2 := newTestCA(t, "ca one"), newTestCA(t, "ca two")
	both := append(append([]byte{}, ca1.pem...), ca2.pem...)
	certFile, keyFile := ca1.keyPair(t, dir, "listener", serverLeaf(100))
	backendCA := writeFile(t, dir, "backend-ca.pem", ca1.pem)
	bCert, bKey := ca1.keyPair(t, dir, "backend-client", clientLeaf(300))

	cfg := config.Default()
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.BackendTLS, cfg.BackendTLSCAFile, cfg.BackendTLSCertFile, cfg.BackendTLSKeyFile = true, backendCA, bCert, bKey
	set, err := newTLSSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lisAddr := tlsEcho(t, set.Listener)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(both)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost"}

	// A data node with a certificate from ca2, requiring client
	// certificates from either CA.
	nodeCert, nodeKey := ca2.issue(t, serverLeaf(400))
	nodeKP, _ := tls.X509KeyPair(nodeCert, nodeKey)
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

	ca1.keyPair(t, dir, "listener", serverLeaf(101))
	ca2.keyPair(t, dir, "backend-client", clientLeaf(301))
	writeFile(t, dir, "backend-ca.pem", ca2.pem)
	if err := set.Reload(cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	check("after reload", "101", true, "301")

	// Broken files: every side keeps what it had.
	ca1.keyPair(t, dir, "listener", serverLeaf(102))
	writeFile(t, dir, "backend-ca.pem", []byte("not a certificate\n"))
	if err := set.Reload(cfg); err == nil {
		t.Fatal("reload with a broken CA file succeeded")
	}
	check("after broken reload", "101", true, "301")

	writeFile(t, dir, "listener.key", []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----\n"))
	writeFile(t, dir, "backend-ca.pem", ca2.pem)
	if err := set.Reload(cfg); err == nil {
		t.Fatal("reload with a broken key file succeeded")
	}
	check("after broken key", "101", true, "301")

	// A change that needs a restart is refused, nothing swapped.
	ca1.keyPair(t, dir, "listener", serverLeaf(103))
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
