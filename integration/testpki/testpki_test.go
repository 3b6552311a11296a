package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"
)

// TestIssueVerifies checks each kind of leaf against its CA, another CA,
// the names it is for and the usages it has.
func TestIssueVerifies(t *testing.T) {
	ca, other := NewCA(t, "test ca"), NewCA(t, "other ca")
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	expired := ServerLeaf(5)
	expired.NotBefore, expired.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	cases := []struct {
		name  string
		root  *CA
		leaf  Leaf
		host  string // "" = no name check
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"server for 127.0.0.1", ca, ServerLeaf(2), "127.0.0.1", server, true},
		{"server for localhost", ca, ServerLeaf(2), "localhost", server, true},
		{"server for another name", ca, ServerLeaf(2), "redis.example", server, false},
		{"server against another ca", other, ServerLeaf(2), "127.0.0.1", server, false},
		{"server is not a client", ca, ServerLeaf(2), "", client, false},
		{"client has client auth", ca, ClientLeaf(3), "", client, true},
		{"client is not a server", ca, ClientLeaf(3), "", server, false},
		{"node as server", ca, NodeLeaf(4), "127.0.0.1", server, true},
		{"node as client", ca, NodeLeaf(4), "", client, true},
		{"expired", ca, expired, "127.0.0.1", server, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, _ := ca.Issue(t, tc.leaf)
			cert := parse(t, certPEM)
			if cert.SerialNumber.Int64() != tc.leaf.Serial {
				t.Fatalf("serial %v, want %d", cert.SerialNumber, tc.leaf.Serial)
			}
			_, err := cert.Verify(x509.VerifyOptions{Roots: tc.root.Pool(), DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
			if (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestFiles checks that the written files hold the CA and a key pair that
// crypto/tls loads and that a client trusting the CA file accepts.
func TestFiles(t *testing.T) {
	f := NewFiles(t, "files ca")
	b, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", f.CAFile)
	}
	leaf, err := x509.ParseCertificate(f.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts := x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Fatalf("node certificate (usage %v) against the CA file: %v", usage, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile); err != nil {
		t.Fatalf("load %s, %s: %v", f.CertFile, f.KeyFile, err)
	}
	if cfg := f.CA.ClientConfig(f.Cert); len(cfg.Certificates) != 1 || !cfg.RootCAs.Equal(pool) {
		t.Fatal("ClientConfig does not trust the CA and present the certificate")
	}
}

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
