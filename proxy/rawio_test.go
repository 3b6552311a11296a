package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A fastConn carries bytes both ways as the TCP connection does, small and
// larger than rawIOMax (and larger than the socket buffers: the writer
// waits for room on the poller), and reads io.EOF when the peer closes.
func TestFastConnCarriesBytes(t *testing.T) {
	a, b := tcpPair(t)
	fa, fb := newFastConn(a), newFastConn(b)
	if _, ok := fa.(*fastConn); !ok {
		t.Fatalf("newFastConn(%T) = %T, want *fastConn", a, fa)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (8<<20)/16) // 8 MiB
	for _, msg := range [][]byte{[]byte("*1\r\n$4\r\nPING\r\n"), big[:rawIOMax+1], big} {
		errc := make(chan error, 1)
		go func() {
			n, err := fa.Write(msg)
			if err == nil && n != len(msg) {
				err = io.ErrShortWrite
			}
			errc <- err
		}()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(fb, got); err != nil {
			t.Fatalf("reading %d bytes: %v", len(msg), err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("writing %d bytes: %v", len(msg), err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes came out different", len(msg))
		}
	}
	fa.Close()
	if n, err := fb.Read(make([]byte, 16)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, EOF", n, err)
	}
}

// Deadlines apply to a fastConn, and a closed one says net.ErrClosed.
func TestFastConnDeadlinesAndClose(t *testing.T) {
	a, _ := tcpPair(t)
	fa := newFastConn(a)
	fa.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := fa.Read(make([]byte, 16))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline = %v, want a deadline error", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline = %v, not a net.Error timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Read waited %v past a 50ms deadline", d)
	}

	// The peer never reads: the write fills the socket buffers, then
	// times out, having written part.
	// (The buffer is made first: under -race, zeroing 64 MiB alongside
	// other tests has taken longer than the deadline, and nothing was
	// written.)
	big := make([]byte, 64<<20)
	fa.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := fa.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == 64<<20 {
		t.Fatalf("Write to a peer that does not read = %d, %v; want part, then a deadline error", n, err)
	}

	fa.Close()
	if _, err := fa.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed conn = %v, want net.ErrClosed", err)
	}
	if _, err := fa.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn = %v, want net.ErrClosed", err)
	}
}

// A write to a peer that reset the connection fails with the system's
// error; the session's client writer falls back to conn.Write for
// connections that are not TCP.
func TestFastWriter(t *testing.T) {
	a, b := tcpPair(t)
	w := makeFastWriter(a, rawConnOf(a))
	if w.raw == nil {
		t.Fatal("fastWriter over TCP has no raw access")
	}
	if n, err := w.Write([]byte("+PONG\r\n")); n != 7 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "+PONG\r\n" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	b.(*net.TCPConn).SetLinger(0)
	b.Close() // a reset
	var err error
	for i := 0; i < 100 && err == nil; i++ { // the first write may still go out
		_, err = w.Write([]byte("+PONG\r\n"))
		time.Sleep(5 * time.Millisecond)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("Write to a reset peer = %v, want a write OpError", err)
	}

	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	w = makeFastWriter(p1, rawConnOf(p1))
	if w.raw != nil {
		t.Fatal("fastWriter over a pipe uses raw access")
	}
	go io.Copy(io.Discard, p2)
	if n, err := w.Write([]byte("+OK\r\n")); n != 5 || err != nil {
		t.Fatalf("Write over a pipe = %d, %v", n, err)
	}
}
