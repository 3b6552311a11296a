package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/testpki"
)

// fakeNode is a loopback server speaking just enough RESP2 to stand for a
// node of Redis before 7: CLUSTER SHARDS is unknown, CLUSTER SLOTS and
// COMMAND answer canned replies, everything else is an unknown command.
type fakeNode struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []string // commands received, upper case
}

func startFakeNode(t *testing.T, replies map[string]string) *fakeNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return serveFakeNode(t, ln, replies)
}

// serveFakeNode serves replies on ln until the test ends.
func serveFakeNode(t *testing.T, ln net.Listener, replies map[string]string) *fakeNode {
	f := &fakeNode{ln: ln}
	f.wg.Add(1)
	go func() { // ends when the listener is closed
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() { // ends when the client closes
				defer f.wg.Done()
				defer c.Close()
				f.serve(c, replies)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeNode) serve(c net.Conn, replies map[string]string) {
	r := bufio.NewReader(c)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.Join(args, " "))
		f.mu.Lock()
		f.seen = append(f.seen, cmd)
		f.mu.Unlock()
		reply, ok := replies[cmd]
		if !ok {
			reply = "-ERR unknown command '" + args[0] + "'\r\n"
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || line[0] != '*' {
		return nil, io.ErrUnexpectedEOF
	}
	args := make([]string, n)
	for i := range args {
		if line, err = r.ReadString('\n'); err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(line[1:]))
		if err != nil {
			return nil, err
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		args[i] = string(b[:size])
	}
	return args, nil
}

// TestFetchFallsBackToSlots checks that a node without CLUSTER SHARDS is
// asked CLUSTER SLOTS, and that FetchCommands parses its COMMAND reply.
func TestFetchFallsBackToSlots(t *testing.T) {
	f := startFakeNode(t, map[string]string{
		"CLUSTER SHARDS": "-ERR unknown subcommand 'shards'. Try CLUSTER HELP.\r\n",
		"CLUSTER SLOTS":  "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$0\r\n\r\n:7000\r\n$1\r\na\r\n",
		"COMMAND":        "*1\r\n*6\r\n$3\r\nget\r\n:2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := f.ln.Addr().String()
	m, src, err := Fetch(ctx, []string{addr}, FetchOptions{})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if src.Command != "CLUSTER SLOTS" || src.Addr != addr {
		t.Errorf("source = %+v, want CLUSTER SLOTS from %s", src, addr)
	}
	// The empty endpoint means "the host you asked".
	if got, ok := m.Lookup(42); !ok || got != "127.0.0.1:7000" {
		t.Errorf("Lookup(42) = %q, %v; want 127.0.0.1:7000", got, ok)
	}
	table, err := FetchCommands(ctx, []string{addr}, FetchOptions{})
	if err != nil {
		t.Fatalf("FetchCommands: %v", err)
	}
	if keys, ok := table.Keys(fields("GET k")); !ok || len(keys) != 1 || string(keys[0]) != "k" {
		t.Errorf("Keys(GET k) = %q, %v", keys, ok)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.Contains(strings.Join(f.seen, ","), "CLUSTER SHARDS,CLUSTER SLOTS") {
		t.Errorf("the node saw %q, want CLUSTER SHARDS then CLUSTER SLOTS", f.seen)
	}
}

// TestFetchErrors checks that Fetch fails with every seed's reason when no
// seed gives a map, and at once without seeds.
func TestFetchErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := Fetch(ctx, nil, FetchOptions{}); err == nil || !strings.Contains(err.Error(), "no seed") {
		t.Errorf("Fetch without seeds: %v", err)
	}
	// A standalone server refuses both commands.
	f := startFakeNode(t, map[string]string{
		"CLUSTER SHARDS": "-ERR This instance has cluster support disabled\r\n",
		"CLUSTER SLOTS":  "-ERR This instance has cluster support disabled\r\n",
	})
	// A closed port refuses the connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	_, _, err = Fetch(ctx, []string{f.ln.Addr().String(), closed}, FetchOptions{DialTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "cluster support disabled") || !strings.Contains(err.Error(), closed) {
		t.Errorf("Fetch = %v, want both seeds' errors", err)
	}
}

// TestFetchTLS checks Fetch and FetchCommands over TLS with a configuration
// that verifies the server in VerifyConnection, as cmd/sentinel-proxy's
// reloadable one does: it gets the dialled IP as the name to check (a
// name crypto/tls leaves empty for an IP). The node lists only a tls-port,
// as a node with port 0 does.
func TestFetchTLS(t *testing.T) {
	pki := testpki.NewFiles(t, "cluster fetch ca")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Cert}})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := serveFakeNode(t, ln, map[string]string{
		"CLUSTER SHARDS": "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n" +
			"*8\r\n$2\r\nid\r\n$1\r\na\r\n$8\r\ntls-port\r\n:7001\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
		"COMMAND": "*1\r\n*6\r\n$3\r\nget\r\n:2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n",
	})
	var names []string
	var mu sync.Mutex
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified below, as cmd/sentinel-proxy does
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			names = append(names, cs.ServerName)
			mu.Unlock()
			if cs.ServerName == "" {
				return errors.New("no server name to verify the certificate against")
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pki.CA.Pool(), DNSName: cs.ServerName})
			return err
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := f.ln.Addr().String()
	m, _, err := Fetch(ctx, []string{addr}, FetchOptions{TLSConfig: cfg})
	if err != nil {
		t.Fatalf("Fetch over TLS: %v", err)
	}
	if got, ok := m.Lookup(42); !ok || got != "127.0.0.1:7001" {
		t.Errorf("Lookup(42) = %q, %v; want the tls-port, 127.0.0.1:7001", got, ok)
	}
	if _, err := FetchCommands(ctx, []string{addr}, FetchOptions{TLSConfig: cfg}); err != nil {
		t.Fatalf("FetchCommands over TLS: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(names) != 2 || names[0] != "127.0.0.1" || names[1] != "127.0.0.1" || cfg.ServerName != "" {
		t.Errorf("VerifyConnection saw %q, want 127.0.0.1 twice; shared ServerName now %q", names, cfg.ServerName)
	}
	if TLSDialer(nil, time.Second) != nil {
		t.Error("TLSDialer(nil) is not nil: plain connections would not use go-redis's dialer")
	}
}
