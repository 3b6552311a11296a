package integration

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
)

// The binary with proxy-terminated authentication in front of
// password-protected data nodes: clients authenticate to the proxy, their
// traffic uses the backend credentials, and both survive a reload.
func TestOperateProxyAuth(t *testing.T) {
	st := sharedStack(t, true)
	topo := st.Topo
	listen := freeAddr(t)
	p := startConfigProxy(t, topo, fmt.Sprintf("sentinels: %s\npassword: front-door\nbackend_password: %q\ngroups:\n  - {master_name: %s, listen: %q}\n",
		yamlList(topo.SentinelAddrs()), testPassword, topo.MasterName(), listen))

	c := dialRaw(t, listen)
	if got := c.do(t, "GET auth:k"); got != "-NOAUTH Authentication required." {
		t.Fatalf("GET before AUTH = %q", got)
	}
	// The data nodes' own password is not the proxy's.
	if got := c.do(t, fmt.Sprintf("AUTH %q", testPassword)); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH with the backend password = %q, want WRONGPASS", got)
	}
	if got := c.do(t, "AUTH front-door"); got != "+OK" {
		t.Fatalf("AUTH = %q", got)
	}
	if got := c.do(t, "SET auth:k v"); got != "+OK" {
		t.Fatalf("SET = %q", got)
	}
	ctx := testContext(t, 10*time.Second)
	if v, err := st.Direct(topo.Master(), 0).Get(ctx, "auth:k").Result(); err != nil || v != "v" {
		t.Fatalf("the write on the master: %q, %v", v, err)
	}
	if v := p.sample(t, `sentinel_proxy_client_connections_rejected_total{group="`+topo.MasterName()+`",reason="auth"}`); v != 1 {
		t.Errorf("auth failures metric = %v, want 1", v)
	}
	// A new proxy password applies to new AUTHs; the session keeps working.
	p.reload(t, fmt.Sprintf("sentinels: %s\npassword: new-door\nbackend_password: %q\ngroups:\n  - {master_name: %s, listen: %q}\n",
		yamlList(topo.SentinelAddrs()), testPassword, topo.MasterName(), listen), "ok")
	if got := c.do(t, "DEL auth:k"); got != ":1" {
		t.Fatalf("DEL on the authenticated session after the reload = %q", got)
	}
	c2 := dialRaw(t, listen)
	if got := c2.do(t, "AUTH front-door"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("old password after the reload = %q", got)
	}
	if got := c2.do(t, "AUTH new-door"); got != "+OK" {
		t.Fatalf("new password after the reload = %q", got)
	}
}

// The binary serving clients over TLS: a certificate replaced on disk is
// used for new connections after SIGHUP, while a connection made before
// keeps working.
func TestOperateTLSReload(t *testing.T) {
	topo := sharedStack(t, false).Topo
	dir := t.TempDir()
	ca := testpki.NewCA(t, "operate CA")
	ca.WriteKeyPair(t, dir, "server", testpki.ServerLeaf(1))
	listen := freeAddr(t)
	p := startConfigProxy(t, topo, fmt.Sprintf("sentinels: %s\ntls_cert_file: %q\ntls_key_file: %q\ngroups:\n  - {master_name: %s, listen: %q}\n",
		yamlList(topo.SentinelAddrs()), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), topo.MasterName(), listen))

	dialTLS := func() (*tls.Conn, *bufio.Reader) {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen, ca.ClientConfig())
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	do := func(c *tls.Conn, rd *bufio.Reader, cmd string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
			t.Fatal(err)
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimRight(line, "\r\n")
	}
	old, oldRd := dialTLS()
	if got := do(old, oldRd, "PING"); got != "+PONG" {
		t.Fatalf("PING over TLS = %q", got)
	}
	if serial := old.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); serial != 1 {
		t.Fatalf("serial %d, want 1", serial)
	}

	ca.WriteKeyPair(t, dir, "server", testpki.ServerLeaf(2))
	p.reload(t, mustRead(t, p.file), "ok")
	c, rd := dialTLS()
	if got := do(c, rd, "PING"); got != "+PONG" {
		t.Fatalf("PING over TLS after the reload = %q", got)
	}
	if serial := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); serial != 2 {
		t.Fatalf("new connection's certificate serial %d after SIGHUP, want 2", serial)
	}
	if got := do(old, oldRd, "PING"); got != "+PONG" {
		t.Fatalf("the connection made before the reload: PING = %q", got)
	}
	// A broken certificate file is rejected; the proxy keeps the last good one.
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.reload(t, mustRead(t, p.file), "error")
	c3, rd3 := dialTLS()
	if got := do(c3, rd3, "PING"); got != "+PONG" || c3.ConnectionState().PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Fatalf("after a broken certificate: PING %q, serial %d; want the last good one (2)", got,
			c3.ConnectionState().PeerCertificates[0].SerialNumber.Int64())
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
