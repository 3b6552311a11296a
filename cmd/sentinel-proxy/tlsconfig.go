package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/sentinel-proxy/sentinel-proxy/config"
)

// tlsSet holds the TLS configurations of the three sides (client listener,
// data nodes, sentinels), built from the files the config names. The
// configurations handed out never change; what they use (certificates, CA
// pools) sits behind atomic pointers that Reload swaps, so a SIGHUP changes
// what new connections see without restarting anything. Connections already
// established keep the material they were set up with.
type tlsSet struct {
	// Listener serves clients; nil when tls_cert_file is not set.
	Listener *tls.Config
	// Backend dials the data nodes; nil when backend_tls is off.
	Backend *tls.Config
	// Sentinel dials the sentinels; nil when sentinel_tls is off.
	Sentinel *tls.Config

	listener atomic.Pointer[tls.Config] // the snapshot GetConfigForClient returns
	backend  *clientFiles
	sentinel *clientFiles
}

// newTLSSet reads every certificate, key and CA file c names and builds the
// configurations.
func newTLSSet(c config.Config) (*tlsSet, error) {
	s := &tlsSet{}
	lis, be, se, err := loadTLS(c)
	if err != nil {
		return nil, err
	}
	if lis != nil {
		s.listener.Store(lis)
		s.Listener = &tls.Config{
			MinVersion: lis.MinVersion,
			// Every handshake takes the current snapshot. GetCertificate
			// is never reached (the snapshot has the certificate) but
			// makes the base config valid on its own.
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.listener.Load(), nil },
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return &s.listener.Load().Certificates[0], nil
			},
		}
	}
	if be != nil {
		s.backend = newClientFiles(be)
		s.Backend = s.backend.config()
	}
	if se != nil {
		s.sentinel = newClientFiles(se)
		s.Sentinel = s.sentinel.config()
	}
	return s, nil
}

// Reload re-reads the files c names and swaps them in, all sides at once.
// On any error (an unreadable or broken file, a key that does not match its
// certificate, or a change that needs a restart: turning a side on or off,
// another server name) nothing changes and the old material stays in use.
func (s *tlsSet) Reload(c config.Config) error {
	lis, be, se, err := loadTLS(c)
	if err != nil {
		return err
	}
	var errs []error
	if (lis != nil) != (s.Listener != nil) {
		errs = append(errs, errors.New("reload tls: turning the listener's tls on or off needs a restart"))
	}
	for _, side := range []struct {
		name string
		old  *clientFiles
		new  *tls.Config
	}{{"backend", s.backend, be}, {"sentinel", s.sentinel, se}} {
		switch {
		case (side.new != nil) != (side.old != nil):
			errs = append(errs, fmt.Errorf("reload tls: turning %s tls on or off needs a restart", side.name))
		case side.old != nil && side.new.ServerName != side.old.serverName:
			errs = append(errs, fmt.Errorf("reload tls: changing the %s tls server name needs a restart", side.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if lis != nil {
		s.listener.Store(lis)
	}
	if be != nil {
		s.backend.cur.Store(be)
	}
	if se != nil {
		s.sentinel.cur.Store(se)
	}
	return nil
}

// loadTLS builds the snapshots of all three sides from c's files.
func loadTLS(c config.Config) (lis, backend, sentinel *tls.Config, err error) {
	lis, lerr := listenerTLS(c)
	backend, berr := clientTLS(c.BackendTLS, c.BackendTLSCAFile, c.BackendTLSServerName, c.BackendTLSCertFile, c.BackendTLSKeyFile)
	if berr != nil {
		berr = fmt.Errorf("backend tls: %w", berr)
	}
	sentinel, serr := clientTLS(c.SentinelTLS, c.SentinelTLSCAFile, c.SentinelTLSServerName, c.SentinelTLSCertFile, c.SentinelTLSKeyFile)
	if serr != nil {
		serr = fmt.Errorf("sentinel tls: %w", serr)
	}
	if err := errors.Join(lerr, berr, serr); err != nil {
		return nil, nil, nil, err
	}
	return lis, backend, sentinel, nil
}

// listenerTLS builds the client listener's configuration from c's files as
// they are now: nil when no certificate is configured; with a client CA,
// clients must present a certificate that chains to it (mutual TLS).
func listenerTLS(c config.Config) (*tls.Config, error) {
	if c.TLSCertFile == "" && c.TLSKeyFile == "" {
		return nil, nil
	}
	minVersion, err := tlsVersion(c.TLSMinVersion)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("listener tls certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   minVersion,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if c.TLSClientCAFile != "" {
		pool, err := loadPool(c.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("listener tls client ca: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// tlsVersion parses tls_min_version; "" means 1.2.
func tlsVersion(v string) (uint16, error) {
	switch v {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls min version %q is not 1.2 or 1.3", v)
}

// clientTLS builds a plain client configuration from the files as they are
// now: nil when on is false. RootCAs nil means the system roots; ServerName
// "" means the dialled host. It is the snapshot clientFiles verifies with.
func clientTLS(on bool, caFile, serverName, certFile, keyFile string) (*tls.Config, error) {
	if !on {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadPool reads a PEM CA bundle.
func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

// clientFiles makes a client configuration reloadable. A client has no hook
// to swap its whole configuration per connection, so the configuration it
// hands out turns Go's built-in server verification off
// (InsecureSkipVerify) and does the very same verification itself in
// VerifyConnection, against the current CA pool; the client certificate
// comes from GetClientCertificate.
//
// The name verified is ConnectionState.ServerName, which Go fills with the
// configuration's ServerName except when that is an IP address (it is then
// not sent as SNI, and left ""). A dialer that clones the configuration and
// sets ServerName to the dialled host must therefore also wrap
// VerifyConnection to put that name into ConnectionState.ServerName (as the
// proxy's and the watcher's dialers do). With no name at all, verification
// fails: a certificate is never accepted without a name check.
type clientFiles struct {
	serverName string // configured; fixed for the process's life
	cur        atomic.Pointer[tls.Config]
}

func newClientFiles(snap *tls.Config) *clientFiles {
	f := &clientFiles{serverName: snap.ServerName}
	f.cur.Store(snap)
	return f
}

// config returns the configuration to dial with.
func (f *clientFiles) config() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		ServerName:           f.serverName,
		InsecureSkipVerify:   true, // verified in VerifyConnection, never skipped
		VerifyConnection:     f.verify,
		GetClientCertificate: f.clientCertificate,
	}
}

// verify checks the server's chain against the current CA pool (or the
// system roots) and its name, as crypto/tls does when InsecureSkipVerify is
// false.
func (f *clientFiles) verify(cs tls.ConnectionState) error {
	snap := f.cur.Load()
	name := cs.ServerName
	if name == "" {
		name = snap.ServerName
	}
	if name == "" {
		return errors.New("tls: no server name to verify the certificate against")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: server sent no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         snap.RootCAs,
		DNSName:       name,
		Intermediates: x509.NewCertPool(),
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

// clientCertificate returns the current client certificate, or none (an
// empty certificate, which crypto/tls sends as "no certificate").
func (f *clientFiles) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if snap := f.cur.Load(); len(snap.Certificates) > 0 {
		return &snap.Certificates[0], nil
	}
	return &tls.Certificate{}, nil
}
