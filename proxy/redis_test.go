package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// startRedis runs a throwaway redis-server on a free loopback port and
// returns its address; the process is killed by PID when the test ends.
func startRedis(t testing.TB, extra ...string) string {
	t.Helper()
	return startRedisWith(t, func() []string { return extra })
}

// startRedisWith is startRedis with arguments made afresh for each attempt
// (a port they name may be taken). A free port can be taken by someone else
// between its probe and redis-server's bind; the server then exits, and it
// is started again on other ports.
func startRedisWith(t testing.TB, extra func() []string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required: %v", err)
	}
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		cmdArgs := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", t.TempDir(), "--logfile", ""}, extra()...)
		cmd := exec.Command(bin, cmdArgs...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := awaitListening(addr, exited); err == nil {
			return addr
		} else if attempt == 3 {
			t.Fatalf("redis-server did not listen on %s: %v", addr, err)
		}
	}
}

// awaitListening polls addr until it accepts, the process exits or 10 s pass.
func awaitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("redis-server exited (a port taken?)")
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness with a deadline
	}
}

// redisConn is a raw connection whose replies are read with a Framer.
type redisConn struct {
	t  *testing.T
	nc net.Conn
	fr *Framer
}

func dialRedis(t *testing.T, addr string) *redisConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &redisConn{t: t, nc: nc, fr: NewFramer(nc, 0)}
}

func (c *redisConn) send(b string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(b)); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one frame and returns its bytes, or "EOF".
func (c *redisConn) reply() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	var buf bytes.Buffer
	_, err := c.fr.Next(&buf)
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return buf.String()
}

// do sends args as one command and returns the reply's bytes.
func (c *redisConn) do(args ...string) string {
	c.t.Helper()
	c.send(string(appendCommand(nil, args...)))
	return c.reply()
}

// doIn runs args on the server at addr, directly, in database db.
func doIn(t *testing.T, addr, db string, args ...string) string {
	t.Helper()
	c := dialRedis(t, addr)
	if got := c.do("SELECT", db); got != "+OK\r\n" {
		t.Fatalf("SELECT %s = %q", db, got)
	}
	return c.do(args...)
}

// serveRequests reads the requests on c and calls handle with each, in
// order, until handle returns false or c fails.
func serveRequests(c net.Conn, handle func(cmd Command) bool) {
	var buf []byte
	tmp := make([]byte, 64<<10)
	for {
		k, err := c.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:k]...)
		for {
			cmd, used, _, err := ParseRequest(buf, RequestLimits{})
			if err != nil || used == 0 {
				break
			}
			buf = buf[used:]
			if !handle(cmd) {
				return
			}
		}
	}
}

// fakeMaster listens on loopback until the test ends and runs serve for
// each connection it accepts (n counts them from 0), closing the
// connection after. It returns the address.
func fakeMaster(t *testing.T, serve func(n int, c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(n int) {
				defer c.Close()
				serve(n, c)
			}(n)
		}
	}()
	return ln.Addr().String()
}
