package faultshim

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/proxy"
)

// fakeServer answers every request with "+<last argument>" and records the
// requests it received, per connection, in order.
type fakeServer struct {
	ln net.Listener
	mu sync.Mutex
	// got[remote address] lists the requests' arguments joined by spaces.
	got map[string][]string
	wg  sync.WaitGroup
}

func startFake(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln, got: map[string][]string{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go f.serve(nc)
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeServer) serve(nc net.Conn) {
	defer f.wg.Done()
	defer nc.Close()
	var buf []byte
	rd := make([]byte, 4096)
	for {
		n, err := nc.Read(rd)
		buf = append(buf, rd[:n]...)
		var out []byte
		for {
			cmd, m, _, perr := proxy.ParseRequest(buf, proxy.RequestLimits{})
			if perr != nil || m == 0 {
				break
			}
			buf = buf[m:]
			var args []string
			for _, a := range cmd.Args {
				args = append(args, string(a))
			}
			f.mu.Lock()
			f.got[nc.RemoteAddr().String()] = append(f.got[nc.RemoteAddr().String()], strings.Join(args, " "))
			f.mu.Unlock()
			out = append(out, "+"+args[len(args)-1]+"\r\n"...)
		}
		if len(out) > 0 {
			if _, err := nc.Write(out); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// received returns every request the server got, all connections together.
func (f *fakeServer) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []string
	for _, reqs := range f.got {
		all = append(all, reqs...)
	}
	return all
}

func (f *fakeServer) peers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.got {
		out = append(out, a)
	}
	return out
}

func encode(args ...string) string {
	s := "*" + strconv.Itoa(len(args)) + "\r\n"
	for _, a := range args {
		s += "$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n"
	}
	return s
}

// pipeline sends ECHO <tag>1 … ECHO <tag>n in one write and reads n lines.
func pipeline(t *testing.T, c net.Conn, br *bufio.Reader, tag string, n int) []string {
	t.Helper()
	var req string
	for i := 1; i <= n; i++ {
		req += encode("ECHO", tag+strconv.Itoa(i))
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var out []string
	for range n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		out = append(out, strings.TrimSuffix(line, "\r\n"))
	}
	return out
}

func newShim(t *testing.T, target string) *Shim {
	t.Helper()
	s, err := New(target, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestRelayAndUpstreamAddrs(t *testing.T) {
	f := startFake(t)
	s := newShim(t, f.ln.Addr().String())
	c, br := dial(t, s.Addr())
	got := pipeline(t, c, br, "a", 3)
	if want := []string{"+a1", "+a2", "+a3"}; !slices.Equal(got, want) {
		t.Fatalf("replies %q, want %q", got, want)
	}
	if up, peers := s.UpstreamAddrs(), f.peers(); !slices.Equal(up, peers) {
		t.Errorf("UpstreamAddrs %v, server saw %v", up, peers)
	}
}

// TestInjectLoading: the refused commands are answered in their place, in
// order, never reach the server, and so is everything after them on that
// connection.
func TestInjectLoading(t *testing.T) {
	f := startFake(t)
	s := newShim(t, f.ln.Addr().String())
	c, br := dial(t, s.Addr())
	s.Inject(Loading)
	var got []string
	for round := 0; s.Stats().Refusals == 0; round++ {
		if round == 50 {
			t.Fatal("no pipeline was refused in 50 rounds")
		}
		got = pipeline(t, c, br, fmt.Sprintf("r%d.", round), 6)
		if s.Stats().Refusals == 0 {
			continue // arrived in more than one read: not refused
		}
		k := slices.IndexFunc(got, func(l string) bool { return strings.HasPrefix(l, "-LOADING") })
		if k < 0 {
			t.Fatalf("refusal counted but replies are %q", got)
		}
		for i, l := range got {
			want := fmt.Sprintf("+r%d.%d", round, i+1)
			if i >= k {
				want = strings.TrimSuffix(Loading, "\r\n")
			}
			if l != want {
				t.Fatalf("reply %d = %q, want %q (all: %q)", i, l, want, got)
			}
		}
		recv := f.received()
		last := ""
		if len(recv) > 0 {
			last = recv[len(recv)-1]
		}
		want := fmt.Sprintf("ECHO r%d.%d", round, k) // the last one forwarded
		if k == 0 {
			want = ""
			if round > 0 {
				want = fmt.Sprintf("ECHO r%d.6", round-1)
			}
		}
		if last != want {
			t.Fatalf("server received %q last, want %q", last, want)
		}
	}
	before := len(f.received())
	more := pipeline(t, c, br, "after", 2)
	for _, l := range more {
		if l != strings.TrimSuffix(Loading, "\r\n") {
			t.Fatalf("after the refusal: %q, want every command refused", more)
		}
	}
	if after := len(f.received()); after != before {
		t.Errorf("server received %d more requests after the refusal", after-before)
	}
	// What a loading Redis accepts still goes through, in its place.
	io.WriteString(c, encode("ECHO", "x")+encode("SELECT", "1")+encode("ECHO", "y"))
	var got3 []string
	for range 3 {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		got3 = append(got3, strings.TrimSuffix(l, "\r\n"))
	}
	loading := strings.TrimSuffix(Loading, "\r\n")
	if want := []string{loading, "+1", loading}; !slices.Equal(got3, want) {
		t.Errorf("ECHO, SELECT, ECHO while refusing: %q, want %q", got3, want)
	}
	if st := s.Stats(); st.Injected < 3 {
		t.Errorf("Injected = %d, want at least 3", st.Injected)
	}
}

// TestInjectSkipsSubscribers: a connection that subscribed is never
// refused (its replies cannot be counted).
func TestInjectSkipsSubscribers(t *testing.T) {
	f := startFake(t)
	s := newShim(t, f.ln.Addr().String())
	c, br := dial(t, s.Addr())
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, encode("SUBSCRIBE", "ch"))
	if l, err := br.ReadString('\n'); err != nil || l != "+ch\r\n" {
		t.Fatalf("SUBSCRIBE: %q %v", l, err)
	}
	s.Inject(Readonly)
	for i := range 10 {
		for _, l := range pipeline(t, c, br, "s"+strconv.Itoa(i), 4) {
			if strings.HasPrefix(l, "-") {
				t.Fatalf("subscribed connection refused: %q", l)
			}
		}
	}
	if !s.Disarm() {
		t.Error("the injection was used")
	}
}

// TestCut: a cut towards the client delivers at most the chosen bytes and
// then ends the connection; a cut towards the server delivers a prefix of
// the requests.
func TestCut(t *testing.T) {
	f := startFake(t)
	s := newShim(t, f.ln.Addr().String())
	c, br := dial(t, s.Addr())
	pipeline(t, c, br, "x", 1)
	if !s.Cut(ToClient, 5, false) {
		t.Fatal("no connection to cut")
	}
	io.WriteString(c, encode("ECHO", "0123456789"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(br)
	if err != nil || len(b) > 5 || !strings.HasPrefix("+0123456789\r\n", string(b)) {
		t.Fatalf("after a cut within 5 bytes: %q, %v", b, err)
	}

	// The cut connection may still be listed for a moment after the
	// client saw its end: wait until it is gone, so that the next cut
	// can only pick the new one.
	waitFor(t, func() bool { return len(s.UpstreamAddrs()) == 0 })
	c2, _ := dial(t, s.Addr())
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	waitFor(t, func() bool { return len(s.UpstreamAddrs()) == 1 })
	if !s.Cut(ToServer, 10, true) {
		t.Fatal("no connection to cut")
	}
	io.WriteString(c2, encode("ECHO", "will-not-arrive-whole"))
	io.ReadAll(c2)
	for _, r := range f.received() {
		if strings.Contains(r, "will-not") {
			t.Fatalf("server received the whole request %q despite a cut within 10 bytes", r)
		}
	}
	if s.Stats().Cuts != 2 {
		t.Errorf("Cuts = %d, want 2", s.Stats().Cuts)
	}
}

func TestCutAllAndClose(t *testing.T) {
	f := startFake(t)
	s := newShim(t, f.ln.Addr().String())
	var conns []net.Conn
	for range 3 {
		c, br := dial(t, s.Addr())
		pipeline(t, c, br, "c", 1)
		conns = append(conns, c)
	}
	if n := s.CutAll(); n != 3 {
		t.Fatalf("CutAll = %d, want 3", n)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after CutAll")
		}
	}
	waitFor(t, func() bool { return len(s.UpstreamAddrs()) == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
