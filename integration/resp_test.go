package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// respConn is a minimal RESP2/RESP3 client that returns every frame's exact
// bytes. It is written independently of the proxy's framer so the two check
// each other. Methods return errors and never call t.Fatal, so helper
// goroutines may use it too.
type respConn struct {
	nc net.Conn
	br *bufio.Reader
}

// dialRESP connects to addr; the connection is closed when t ends.
func dialRESP(t testing.TB, addr string) *respConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &respConn{nc: nc, br: bufio.NewReader(nc)}
}

// encode returns args as a RESP multibulk request.
func encode(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

// send writes args as one command without reading the reply.
func (c *respConn) send(args ...string) error {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(encode(args...))
	return err
}

// do sends one command and returns its reply, skipping nothing: a push that
// arrives first is returned instead (callers that expect pushes use read).
func (c *respConn) do(args ...string) (string, error) {
	if err := c.send(args...); err != nil {
		return "", err
	}
	return c.read(10 * time.Second)
}

// mustDo is do for the test goroutine.
func (c *respConn) mustDo(t testing.TB, args ...string) string {
	t.Helper()
	r, err := c.do(args...)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return r
}

// read returns the next whole frame, waiting at most d.
func (c *respConn) read(d time.Duration) (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	var out []byte
	err := readFrame(c.br, &out, 0)
	return string(out), err
}

// readFrame appends one RESP2/RESP3 frame (attributes included as frames of
// their own) to out.
func readFrame(br *bufio.Reader, out *[]byte, depth int) error {
	if depth > 64 {
		return errors.New("frame nested too deep")
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return fmt.Errorf("bad line %q", line)
	}
	*out = append(*out, line...)
	text := string(line[1 : len(line)-2])
	switch line[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return nil
	case '$', '!', '=':
		n, err := strconv.Atoi(text)
		if err != nil {
			return fmt.Errorf("bad length %q", line)
		}
		if n < 0 {
			return nil
		}
		start := len(*out)
		*out = append(*out, make([]byte, n+2)...)
		_, err = io.ReadFull(br, (*out)[start:])
		return err
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(text)
		if err != nil {
			return fmt.Errorf("bad length %q", line)
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range max(n, 0) {
			if err := readFrame(br, out, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown frame type %q", line)
}

// bulkStrings decodes a frame that is an array or push of bulk strings
// ("*3\r\n$7\r\nmessage\r\n…"), or returns nil.
func bulkStrings(frame string) []string {
	if len(frame) == 0 || frame[0] != '*' && frame[0] != '>' {
		return nil
	}
	br := bufio.NewReader(strings.NewReader(frame))
	line, err := br.ReadString('\n')
	if err != nil {
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSuffix(line[1:], "\r\n"))
	if err != nil || n < 0 {
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		var el []byte
		if err := readFrame(br, &el, 1); err != nil || len(el) == 0 || el[0] != '$' {
			return nil
		}
		_, body, _ := strings.Cut(string(el), "\r\n")
		out = append(out, strings.TrimSuffix(body, "\r\n"))
	}
	return out
}
