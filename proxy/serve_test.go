package proxy

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRawReadWaitsWithoutEmptyRead checks the reader inside one raw read
// (session.serveRaw): after a read that drained the socket it asks to wait
// without reading again, even when the client has sent more meanwhile, and
// the wait then ends for what the client sent; after a read that filled its
// buffer it asks for a new raw read instead of waiting.
func TestRawReadWaitsWithoutEmptyRead(t *testing.T) {
	cc, sc := tcpPair(t)
	rd := newClientReader(sc, newBufPool(), RequestLimits{})
	if rd.fd == nil {
		t.Fatal("a TCP connection is not read inside raw reads")
	}
	write := func(s string) {
		t.Helper()
		if _, err := cc.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	rd.idleWait = true // as session.serveRaw sets it for a client between commands
	write("PING\r\n")
	calls := 0
	var got []string
	var failed error
	err := rd.fd.Read(func(fd uintptr) bool {
		calls++
		rd.sysfd, rd.mayRead = fd, true
		for {
			cmds, err := rd.next(16)
			switch {
			case errors.Is(err, errWaitClient):
				if calls == 1 {
					// The socket was drained: no read is made, so the
					// ECHO sent now is not seen until the wait ends.
					write("ECHO a\r\n")
					time.Sleep(20 * time.Millisecond)
				}
				return false
			case err != nil:
				failed = err
				return true
			}
			for _, c := range cmds {
				got = append(got, string(c.Args[0]))
			}
			if len(got) == 2 {
				return true
			}
		}
	})
	if err != nil || failed != nil {
		t.Fatal(err, failed)
	}
	if calls != 2 || strings.Join(got, " ") != "PING ECHO" {
		t.Fatalf("calls %d, commands %q; want 2 calls, PING then ECHO", calls, got)
	}

	// More than the buffer holds, at once: the first read fills it.
	const n = 2 * readBufSize / len("PING\r\n")
	write(strings.Repeat("PING\r\n", n))
	time.Sleep(20 * time.Millisecond)
	count, again := 0, 0
	for count < n {
		err := rd.fd.Read(func(fd uintptr) bool {
			rd.sysfd, rd.mayRead = fd, true
			for {
				cmds, err := rd.next(16)
				switch {
				case errors.Is(err, errReadAgain):
					again++
					return true
				case errors.Is(err, errWaitClient):
					return count == n
				case err != nil:
					failed = err
					return true
				}
				count += len(cmds)
			}
		})
		if err != nil || failed != nil {
			t.Fatal(err, failed)
		}
	}
	if count != n || again == 0 {
		t.Fatalf("%d of %d commands, %d new raw reads; want all, after at least one", count, n, again)
	}

	// Part of a request, then the client's FIN: a short read, but with a
	// request pending the reader reads again rather than wait (the FIN
	// makes no further readiness), and sees the end.
	write("*1\r\n$4\r\nPI")
	cc.(*net.TCPConn).CloseWrite()
	time.Sleep(20 * time.Millisecond)
	sc.SetReadDeadline(time.Now().Add(2 * time.Second)) // a wait here would be for nothing
	var last error
	for range 3 {
		err := rd.fd.Read(func(fd uintptr) bool {
			rd.sysfd, rd.mayRead = fd, true
			_, last = rd.next(16)
			return !errors.Is(last, errWaitClient)
		})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(last, errReadAgain) {
			break
		}
	}
	if !errors.Is(last, io.EOF) {
		t.Fatalf("after a partial request and the client's FIN: %v, want EOF", last)
	}
}

// TestHalfClosedClientIsClosed checks that a client that half-closes its
// connection is closed by the proxy: after a partial request at once, after
// a whole one (answered first) once its wait for a next command ends.
func TestHalfClosedClientIsClosed(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), nil)
	for _, tc := range []struct{ name, send, want string }{
		{"after a command", "PING\r\n", "+PONG\r\n"},
		{"inside a command", "*2\r\n$3\r\nGET\r\n$1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRedis(t, paddr)
			c.send(tc.send)
			c.nc.(*net.TCPConn).CloseWrite()
			start := time.Now()
			if tc.want != "" {
				if got := c.reply(); got != tc.want {
					t.Fatalf("reply = %q, want %q", got, tc.want)
				}
			}
			if got := c.reply(); got != "EOF" {
				t.Fatalf("after the half-close: %q, want EOF", got)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("closed after %v", d)
			}
		})
	}
}

// TestDrainEndsBlockedClient checks that a drain past its timeout closes a
// client blocked in a command. Its session holds the socket's read lock
// while the command runs, and closing the connection outright would wait for
// the command forever (hangUp).
func TestDrainEndsBlockedClient(t *testing.T) {
	r := startRedis(t)
	srv, err := NewServer(Options{Name: "drain", Source: newFakeSource(r), DrainTimeout: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serve(t, srv)
	c := dialRedis(t, addr)
	c.send(string(appendCommand(nil, "BLPOP", "never", "0")))
	p := dialRedis(t, r)
	waitFor(t, func() bool { return strings.Contains(p.do("INFO", "clients"), "blocked_clients:1") })
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- stop() }()
	if got := c.reply(); got != "EOF" {
		t.Fatalf("blocked client got %q, want EOF", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("drain took %v", d)
	}
}
