package testpki

import (
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
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority, valid from an hour ago for a day.
type CA struct {
	Cert    *x509.Certificate // the self-signed CA certificate
	CertPEM []byte            // Cert, PEM encoded
	key     *ecdsa.PrivateKey
}

// NewCA makes a CA named commonName with a new P-256 key.
func NewCA(t testing.TB, commonName string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create ca certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse ca certificate: %v", err)
	}
	return &CA{Cert: cert, CertPEM: encode("CERTIFICATE", der), key: key}
}

// Leaf describes a certificate for CA.Issue. Only Serial is required.
type Leaf struct {
	Serial     int64
	CommonName string // "leaf-<serial>" when empty
	DNSNames   []string
	IPs        []net.IP
	Usage      []x509.ExtKeyUsage // ServerAuth only when nil
	NotBefore  time.Time          // an hour ago when zero
	NotAfter   time.Time          // a day from now when zero
}

// ServerLeaf is a server certificate for 127.0.0.1 and localhost.
func ServerLeaf(serial int64) Leaf {
	return Leaf{Serial: serial, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
}

// ClientLeaf is a client certificate: client-auth usage only, no names.
func ClientLeaf(serial int64) Leaf {
	return Leaf{Serial: serial, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

// NodeLeaf is ServerLeaf with client-auth usage as well, as a Redis node
// needs: it serves with the certificate and presents it to other nodes.
func NodeLeaf(serial int64) Leaf {
	l := ServerLeaf(serial)
	l.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return l
}

// Issue signs a certificate for l with a new P-256 key and returns both
// PEM encoded (the key as "EC PRIVATE KEY", which redis-server reads).
func (ca *CA) Issue(t testing.TB, l Leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	if l.CommonName == "" {
		l.CommonName = fmt.Sprintf("leaf-%d", l.Serial)
	}
	if l.Usage == nil {
		l.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(24 * time.Hour)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(l.Serial),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  l.Usage,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("issue certificate %d: %v", l.Serial, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return encode("CERTIFICATE", der), encode("EC PRIVATE KEY", kder)
}

// KeyPair issues l and returns it ready for a tls.Config.
func (ca *CA) KeyPair(t testing.TB, l Leaf) tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(ca.Issue(t, l))
	if err != nil {
		t.Fatalf("load key pair %d: %v", l.Serial, err)
	}
	return kp
}

// WriteKeyPair issues l and writes it as dir/name.crt and dir/name.key,
// replacing files already there.
func (ca *CA) WriteKeyPair(t testing.TB, dir, name string, l Leaf) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.Issue(t, l)
	return WriteFile(t, dir, name+".crt", c), WriteFile(t, dir, name+".key", k)
}

// WriteCert writes the CA's certificate as dir/name.crt and returns the path.
func (ca *CA) WriteCert(t testing.TB, dir, name string) string {
	t.Helper()
	return WriteFile(t, dir, name+".crt", ca.CertPEM)
}

// Pool is a new pool holding only the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ClientConfig trusts only the CA and presents certs (none when empty).
func (ca *CA) ClientConfig(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}
}

// Files is a new CA and one NodeLeaf certificate (serial 2), as PEM files
// in a temporary directory — what a TLS redis-server or redis-sentinel is
// configured with — and the certificate loaded from them.
type Files struct {
	CA                        *CA
	CAFile, CertFile, KeyFile string
	Cert                      tls.Certificate
}

// NewFiles makes Files with a CA named commonName.
func NewFiles(t testing.TB, commonName string) *Files {
	t.Helper()
	dir := t.TempDir()
	f := &Files{CA: NewCA(t, commonName)}
	f.CAFile = f.CA.WriteCert(t, dir, "ca")
	f.CertFile, f.KeyFile = f.CA.WriteKeyPair(t, dir, "node", NodeLeaf(2))
	var err error
	if f.Cert, err = tls.LoadX509KeyPair(f.CertFile, f.KeyFile); err != nil {
		t.Fatalf("load node key pair: %v", err)
	}
	return f
}

// WriteFile writes b to dir/name (mode 0600) and returns the path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func encode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
