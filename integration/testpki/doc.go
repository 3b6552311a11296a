// Package testpki issues throwaway certificates for tests: a fresh ECDSA CA
// per call, leaf certificates signed by it, and their PEM files in a test's
// temporary directory.
//
// It replaces the certificate generators the TLS tests of proxy, sentinel,
// integration and cmd/sentinel-proxy each used to carry. It is an ordinary
// package, not a _test one, so that tests in several packages can share it;
// it imports only the standard library and "testing", and nothing but tests
// should import it.
//
// What it owns: the keys and certificates it generates and the files it
// writes. Every failure ends the calling test with t.Fatal, so its functions
// must be called on the test's goroutine.
//
// Goroutine model: none is started. A CA is immutable once made; its
// methods only read it, so subtests may share one.
package testpki
