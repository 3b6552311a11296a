package sentinel

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeServer is a tiny RESP server on a loopback port: enough of the
// protocol for go-redis's handshake (HELLO, AUTH, CLIENT), queries and
// PSUBSCRIBE. The handler runs on the connection's goroutine.
type fakeServer struct {
	t    *testing.T
	addr string

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*fakeConn]bool
	handler func(c *fakeConn, args []string)
	wg      sync.WaitGroup
}

// fakeConn is one client connection of a fake server.
type fakeConn struct {
	net.Conn
	mu         sync.Mutex // guards everything below (handler vs. publish)
	bw         *bufio.Writer
	authed     bool
	resp3      bool
	subscribed int
}

func newFakeServer(t *testing.T, listenAddr string, h func(c *fakeConn, args []string)) *fakeServer {
	t.Helper()
	s := &fakeServer{t: t, conns: make(map[*fakeConn]bool), handler: h}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		t.Fatalf("listen %s: %v", listenAddr, err)
	}
	s.ln, s.addr = ln, ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *fakeServer) serve(ln net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := &fakeConn{Conn: nc, bw: bufio.NewWriter(nc)}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handle(c)
			}()
		}
	}()
}

func (s *fakeServer) handle(c *fakeConn) {
	defer func() {
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	for {
		args, err := readCommand(br)
		if err != nil {
			return
		}
		if len(args) == 0 {
			continue
		}
		c.mu.Lock() // the handler runs under the connection's lock
		s.handler(c, args)
		err = c.bw.Flush()
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// stop closes the listener and every connection (a sentinel going down).
func (s *fakeServer) stop() {
	s.mu.Lock()
	if s.ln != nil {
		_ = s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// restart listens again on the same address.
func (s *fakeServer) restart() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("relisten %s: %v", s.addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.serve(ln)
}

// openConns counts client connections.
func (s *fakeServer) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// each runs f on every connection (under its write lock) and flushes.
func (s *fakeServer) each(f func(c *fakeConn)) {
	s.mu.Lock()
	conns := make([]*fakeConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		f(c)
		_ = c.bw.Flush()
		c.mu.Unlock()
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), nil // inline
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, n)
	for range n {
		h, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l, err := strconv.Atoi(strings.TrimRight(h, "\r\n")[1:])
		if err != nil {
			return nil, err
		}
		buf := make([]byte, l+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:l]))
	}
	return args, nil
}

// reply writes one reply; callers hold c.mu (handlers always do).
func (c *fakeConn) reply(v any) { c.write(v) }

type (
	respStatus string
	respErr    string
	respNull   struct{} // null array (RESP2 *-1, RESP3 _)
	respMap    []string // flat key, value list: RESP3 map or RESP2 array
	respPush   []any    // RESP3 push, RESP2 array
	respInt    int64    // integer
	respArr    []any    // array
	respStrs   []string // array of bulk strings
)

func (c *fakeConn) write(v any) {
	w := c.bw
	switch v := v.(type) {
	case respStatus:
		fmt.Fprintf(w, "+%s\r\n", string(v))
	case respErr:
		fmt.Fprintf(w, "-%s\r\n", string(v))
	case respNull:
		if c.resp3 {
			fmt.Fprint(w, "_\r\n")
		} else {
			fmt.Fprint(w, "*-1\r\n")
		}
	case respInt:
		fmt.Fprintf(w, ":%d\r\n", int64(v))
	case string:
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(v), v)
	case respStrs:
		fmt.Fprintf(w, "*%d\r\n", len(v))
		for _, s := range v {
			c.write(s)
		}
	case respArr:
		fmt.Fprintf(w, "*%d\r\n", len(v))
		for _, x := range v {
			c.write(x)
		}
	case respPush:
		if c.resp3 {
			fmt.Fprintf(w, ">%d\r\n", len(v))
		} else {
			fmt.Fprintf(w, "*%d\r\n", len(v))
		}
		for _, x := range v {
			c.write(x)
		}
	case respMap:
		if c.resp3 {
			fmt.Fprintf(w, "%%%d\r\n", len(v)/2)
		} else {
			fmt.Fprintf(w, "*%d\r\n", len(v))
		}
		for _, s := range v {
			c.write(s)
		}
	default:
		panic(fmt.Sprintf("fake: cannot write %T", v))
	}
}

// auth handles AUTH and HELLO for a server requiring user/pass (pass ""
// means no auth). It reports whether the command was handled.
func (c *fakeConn) auth(args []string, user, pass string, resp3 bool, hello respMap) bool {
	switch strings.ToUpper(args[0]) {
	case "AUTH":
		u, p := "default", ""
		switch len(args) {
		case 2:
			p = args[1]
		case 3:
			u, p = args[1], args[2]
		}
		if pass != "" && (u != orDefault(user) || p != pass) {
			c.reply(respErr("WRONGPASS invalid username-password pair or user is disabled."))
			return true
		}
		c.authed = true
		c.reply(respStatus("OK"))
		return true
	case "HELLO":
		if !resp3 {
			c.reply(respErr("ERR unknown command 'HELLO', with args beginning with: "))
			return true
		}
		for i := 2; i+2 < len(args); i++ {
			if strings.EqualFold(args[i], "AUTH") {
				if pass != "" && (args[i+1] != orDefault(user) || args[i+2] != pass) {
					c.reply(respErr("WRONGPASS invalid username-password pair or user is disabled."))
					return true
				}
				c.authed = true
			}
		}
		if pass != "" && !c.authed {
			c.reply(respErr("NOAUTH HELLO must be called with the client already authenticated"))
			return true
		}
		c.resp3 = len(args) > 1 && args[1] == "3"
		c.reply(hello)
		return true
	case "CLIENT":
		c.reply(respStatus("OK"))
		return true
	}
	if pass != "" && !c.authed {
		c.reply(respErr("NOAUTH Authentication required."))
		return true
	}
	return false
}

func orDefault(u string) string {
	if u == "" {
		return "default"
	}
	return u
}
