package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSharedConnCarriesEveryClient runs many clients' pipelines at once and
// checks that each gets its own replies, in order, while one backend
// connection carries them all.
func TestSharedConnCarriesEveryClient(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), sharing)
	const clients, rounds = 40, 150
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.DialTimeout("tcp", paddr, 5*time.Second)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(60 * time.Second))
			fr := NewFramer(bufio.NewReader(nc), 0)
			for j := range rounds {
				v := fmt.Sprintf("v-%d-%d", i, j)
				var req []byte
				req = appendCommand(req, "SET", "k:"+strconv.Itoa(i), v)
				req = appendCommand(req, "INCR", "n:"+strconv.Itoa(i))
				req = appendCommand(req, "GET", "k:"+strconv.Itoa(i))
				req = appendCommand(req, "ECHO", v)
				if _, err := nc.Write(req); err != nil {
					errs <- err.Error()
					return
				}
				want := []string{"+OK\r\n", ":" + strconv.Itoa(j+1) + "\r\n",
					"$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n", "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n"}
				for k, w := range want {
					var b strings.Builder
					if _, err := fr.Next(&b); err != nil {
						errs <- err.Error()
						return
					}
					if b.String() != w {
						errs <- fmt.Sprintf("client %d round %d reply %d = %q, want %q", i, j, k, b.String(), w)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if st := srv.Stats(); st.Pool.Dials != 1 || st.Pool.Shared != 1 {
		t.Errorf("backend connections: %d dialed, %d shared; want the one shared connection only", st.Pool.Dials, st.Pool.Shared)
	}
}

// TestSharingOff checks that sharing is off by default: every batch takes
// a pooled connection of its own.
func TestSharingOff(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), nil)
	c := dialRedis(t, paddr)
	if got := c.do("SET", "a", "1"); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	if st := srv.Stats(); st.Pool.Shared != 0 || st.Pool.Idle != 1 {
		t.Errorf("pool: %d shared, %d idle; want 0 shared, the one connection back in the pool", st.Pool.Shared, st.Pool.Idle)
	}
}

// TestSharedSlowClient checks that a client that does not read its large
// replies holds up nobody else, holds only a bounded amount of the proxy's
// memory, and is disconnected once it has taken nothing for
// shareStallTimeout.
func TestSharedSlowClient(t *testing.T) {
	r := startRedis(t)
	srv, paddr := startProxy(t, newFakeSource(r), sharing)
	c := dialRedis(t, paddr)
	big := strings.Repeat("x", 1<<20)
	if got := c.do("SET", "big", big); got != "+OK\r\n" {
		t.Fatalf("SET big = %q", got)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// 200 GETs of 1 MiB, never read: far more than the socket buffers hold.
	slow, err := net.Dial("tcp", paddr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	var req []byte
	for range 200 {
		req = appendCommand(req, "GET", "big")
	}
	go slow.Write(req)
	// Until its batch streams, and its shared connection takes no new
	// batches (retired): a batch written behind it before that waits for
	// it (README, Known gaps), which a fixed pause cannot rule out on a
	// loaded machine.
	waitFor(t, func() bool { return sharedRetired(srv) })
	start := time.Now()
	for i := range 200 {
		if got := c.do("ECHO", strconv.Itoa(i)); got != "$"+strconv.Itoa(len(strconv.Itoa(i)))+"\r\n"+strconv.Itoa(i)+"\r\n" {
			t.Fatalf("ECHO %d = %q", i, got)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("200 ECHOs beside a client that does not read took %v", d)
	}
	// Its replies stream at its pace: the proxy holds a few MiB of them,
	// not 200 (as it did when a shared batch's replies were kept whole).
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	if grew := int64(during.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB for a client that does not read", grew>>20)
	}
	// It is disconnected after shareStallTimeout without progress.
	clients := srv.Stats().Clients
	deadline := time.Now().Add(shareStallTimeout + 10*time.Second)
	for srv.Stats().Clients == clients {
		if time.Now().After(deadline) {
			t.Fatalf("the client that does not read is still connected after %v", shareStallTimeout+10*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := io.Copy(io.Discard, slow)
	if n >= 200<<20 {
		t.Errorf("the disconnected client still read %d bytes: all its replies", n)
	}
	if got := c.do("ECHO", "after"); got != "$5\r\nafter\r\n" {
		t.Errorf("ECHO after = %q", got)
	}
}

// TestSharedLargeReplies checks that a batch whose replies outgrow
// shareMaxReply, streamed from the shared connection, answers every
// command in order and byte for byte, large and small replies mixed.
func TestSharedLargeReplies(t *testing.T) {
	r := startRedis(t)
	_, paddr := startProxy(t, newFakeSource(r), sharing)
	c := dialRedis(t, paddr)
	big := strings.Repeat("y", 300<<10)
	if got := c.do("SET", "big", big); got != "+OK\r\n" {
		t.Fatalf("SET big = %q", got)
	}
	bulk := func(v string) string { return "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n" }
	for round := range 3 {
		var req []byte
		var want []string
		for i := range 12 {
			tag := fmt.Sprintf("r%d-%d", round, i)
			req = appendCommand(req, "ECHO", tag)
			req = appendCommand(req, "GET", "big")
			req = appendCommand(req, "INCR", "n")
			req = appendCommand(req, "GET", "nosuchkey")
			want = append(want, bulk(tag), bulk(big), fmt.Sprintf(":%d\r\n", round*12+i+1), "$-1\r\n")
		}
		req = appendCommand(req, "LPUSH", "big") // an error among them
		want = append(want, "-ERR wrong number of arguments for 'lpush' command\r\n")
		c.send(string(req))
		for i, w := range want {
			if got := c.reply(); got != w {
				if len(got) > 80 {
					got = got[:80] + "…"
				}
				t.Fatalf("round %d reply %d = %q, want %.80q", round, i, got, w)
			}
		}
	}
	if got := c.do("ECHO", "end"); got != bulk("end") {
		t.Errorf("ECHO end = %q", got)
	}
}

// TestSharedConnLost checks how a shared connection lost under a batch is
// settled: replies that came are passed on, reads whose replies were lost
// are sent again on another connection, and a write whose reply was lost is
// answered "may have run", with what follows it, as on a connection of the
// session's own, and never sent again.
func TestSharedConnLost(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	// A command on a key starting with "die" breaks its connection, the
	// first time, without a reply; everything else is answered with its
	// name, key and connection number.
	addr := fakeMaster(t, func(n int, c net.Conn) {
		serveRequests(c, func(cmd Command) bool {
			name, key := strings.ToUpper(string(cmd.Args[0])), string(cmd.Args[1])
			mu.Lock()
			seen[name+" "+key]++
			first := seen[name+" "+key] == 1
			mu.Unlock()
			if strings.HasPrefix(key, "die") && first {
				return false
			}
			_, err := c.Write([]byte("+" + name + "-" + key + "-" + strconv.Itoa(n) + "\r\n"))
			return err == nil
		})
	})
	_, paddr := startProxy(t, newFakeSource(addr), sharing)

	c := dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(appendCommand(nil, "GET", "a"), "GET", "die1"), "GET", "b")))
	for i, want := range []string{"+GET-a-0\r\n", "+GET-die1-1\r\n", "+GET-b-1\r\n"} {
		if got := c.reply(); got != want {
			t.Fatalf("reads, reply %d = %q, want %q (lost reads are sent again)", i, got, want)
		}
	}

	c = dialRedis(t, paddr)
	c.send(string(appendCommand(appendCommand(appendCommand(nil, "GET", "c"), "SET", "die2"), "GET", "d")))
	if got := c.reply(); !strings.HasPrefix(got, "+GET-c-") {
		t.Fatalf("first reply = %q", got)
	}
	for i := range 2 {
		if got := c.reply(); got != "-"+errMayHaveRun+"\r\n" {
			t.Fatalf("after a lost write, reply %d = %q, want %q", i, got, errMayHaveRun)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["SET die2"] != 1 {
		t.Errorf("the write whose reply was lost ran %d times, want once", seen["SET die2"])
	}
}

// sharing turns shared connections on in a test's proxy.
func sharing(o *Options) { o.SharedConns = 1 }

// sharedRetired reports whether one of srv's shared connections is retired:
// a batch on it streams at its client's pace.
func sharedRetired(srv *Server) bool {
	p := srv.shared
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, set := range p.sets {
		for _, slot := range set {
			if slot.c != nil && slot.c.retired.Load() {
				return true
			}
		}
	}
	return false
}
