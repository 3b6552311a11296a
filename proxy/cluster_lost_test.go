package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// faultRelay relays connections to a node. A chunk of requests that
// intercept picks is not forwarded: reply (if any) goes back instead, and
// the connection is cut, both sides.
type faultRelay struct {
	ln        net.Listener
	to        string
	intercept func(chunk []byte) (reply []byte, cut bool)
	mu        sync.Mutex
	cuts      int
	conns     []net.Conn
}

// startCutOnWatch relays to a node and cuts any connection that sends a
// WATCH, before the WATCH reaches the node: the proxy sees the connection
// lost with the WATCH unanswered.
func startCutOnWatch(t *testing.T, to string) *faultRelay {
	return startRelay(t, to, func(chunk []byte) ([]byte, bool) {
		return nil, bytes.Contains(bytes.ToUpper(chunk), []byte("\r\nWATCH\r\n"))
	})
}

// stop closes the listener and every relayed connection: the node is
// unreachable from then on.
func (c *faultRelay) stop() {
	c.ln.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nc := range c.conns {
		nc.Close()
	}
}

func startRelay(t *testing.T, to string, intercept func(chunk []byte) ([]byte, bool)) *faultRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &faultRelay{ln: ln, to: to, intercept: intercept}
	t.Cleanup(func() { ln.Close() })
	go c.accept()
	return c
}

func (c *faultRelay) accept() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", c.to)
		if err != nil {
			in.Close()
			continue
		}
		c.mu.Lock()
		c.conns = append(c.conns, in, out)
		c.mu.Unlock()
		go func() {
			_, _ = io.Copy(in, out)
			in.Close()
		}()
		go func() {
			defer out.Close()
			defer in.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if reply, cut := c.intercept(buf[:n]); cut {
						c.mu.Lock()
						c.cuts++
						c.mu.Unlock()
						_, _ = in.Write(reply)
						return
					}
					if _, err := out.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (c *faultRelay) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cuts
}

// TestClusterLostTx checks a WATCH whose connection is lost in the middle of
// a batch: the rest of the batch (MULTI … EXEC) is answered as a Sentinel
// group's session answers its next batch (the EXEC fails with a null reply,
// as when a watched key was touched), and nothing of the lost WATCH is left
// for the batches after it. Then a transaction the proxy holds (MULTI
// without WATCH) whose master cannot be reached: its commands did not run,
// and an EXEC among them ends it.
func TestClusterLostTx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{Masters: 3})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	seeds := c.Addrs()[:3]
	cut := startCutOnWatch(t, seeds[0])
	fetch := func(ctx context.Context, addrs []string) (*cluster.Map, cluster.Source, error) {
		m, src, err := cluster.Fetch(ctx, seeds, cluster.FetchOptions{})
		if err != nil {
			return nil, src, err
		}
		out := *m
		out.Shards = slices.Clone(m.Shards)
		for i := range out.Shards {
			if out.Shards[i].Master.Addr == seeds[0] {
				out.Shards[i].Master.Addr = cut.ln.Addr().String()
			}
		}
		return &out, src, nil
	}
	r := cluster.NewRouter(seeds, cluster.RouterOptions{RefreshInterval: time.Hour, Fetch: fetch})
	ch := r.Changed()
	rctx, stop := context.WithCancel(context.Background())
	r.Start(rctx)
	t.Cleanup(func() { stop(); r.Close() })
	<-ch
	_, addr := startProxy(t, nil, func(o *Options) {
		o.Source = nil
		o.HoldTimeout = time.Second
		o.Cluster = &ClusterOptions{Router: r, FetchCommands: func(ctx context.Context) (cluster.Table, error) {
			return cluster.FetchCommands(ctx, seeds, cluster.FetchOptions{})
		}}
	})
	k, _ := keyIn(r, cut.ln.Addr().String(), "lw", 0)
	n := "{" + k + "}n"
	for _, proto := range []string{"2", "3"} {
		null := nullReply(int(proto[0] - '0'))
		conn := dialRedis(t, addr)
		if proto == "3" {
			conn.do("HELLO", "3")
		}
		conn.do("SET", k, "v")
		cases := []struct {
			name string
			tx   [][]string // between MULTI and EXEC
			next string     // EXEC's reply in the batch after
		}{
			{"commands with keys", [][]string{{"INCR", n}, {"GET", k}}, ""},
			{"commands without keys (a held MULTI)", [][]string{{"PING"}}, "*1\r\n+PONG\r\n"},
		}
		for _, tc := range cases {
			before := cut.count()
			cmds := append([][]string{{"WATCH", k}, {"MULTI"}}, tc.tx...)
			cmds = append(cmds, []string{"EXEC"})
			got := pipeline(conn, cmds...)
			want := []string{"-" + errMayHaveRun + "\r\n", "+OK\r\n"}
			for range tc.tx {
				want = append(want, "+QUEUED\r\n")
			}
			want = append(want, null)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("RESP%s, %s: reply %d to %v = %q, want %q", proto, tc.name, i, cmds[i], got[i], want[i])
				}
			}
			if cut.count() != before+1 {
				t.Errorf("RESP%s, %s: %d connections cut, want 1", proto, tc.name, cut.count()-before)
			}
			// Nothing of the lost WATCH is left: the next transaction
			// runs, and a cross-slot MGET is split.
			got = pipeline(conn, []string{"MULTI"}, tc.tx[0], []string{"EXEC"})
			if got[2] == null || got[2][0] != '*' {
				t.Errorf("RESP%s, %s: EXEC in the next batch = %q, want its results", proto, tc.name, got[2])
			}
			if tc.next != "" && got[2] != tc.next {
				t.Errorf("RESP%s, %s: EXEC in the next batch = %q, want %q", proto, tc.name, got[2], tc.next)
			}
			other, _ := keyIn(r, seeds[1], "lwo", 0)
			if got := pipeline(conn, []string{"MGET", k, other}); got[0] != "*2\r\n$1\r\nv\r\n$-1\r\n" && got[0] != "*2\r\n$1\r\nv\r\n_\r\n" {
				t.Errorf("RESP%s, %s: MGET after = %q, want v and a null", proto, tc.name, got[0])
			}
		}
	}
	// A slot its master no longer serves (CLUSTER DELSLOTS): the node
	// answers -CLUSTERDOWN, which no client sees. A shard subscriber's
	// connection (whose replies are not held back) gets the proxy's error
	// at once; a command elsewhere is retried until the hold deadline,
	// then answered -MASTERDOWN.
	// (Without full coverage, only that slot is down, not the cluster.)
	for _, a := range seeds {
		if err := c.NodeByAddr(a).Client().Do(ctx, "config", "set", "cluster-require-full-coverage", "no").Err(); err != nil {
			t.Fatal(err)
		}
	}
	k2, _ := keyIn(r, seeds[1], "down", 0)
	slot := int(cluster.Slot([]byte(k2)))
	sub := dialRedis(t, addr)
	if got := sub.do("HELLO", "3"); got[0] != '%' {
		t.Fatalf("HELLO 3 = %q", got)
	}
	if got := pipeline(sub, []string{"SSUBSCRIBE", "{" + k2 + "}ch"}); !strings.HasPrefix(got[0], ">3\r\n$10\r\nssubscribe") {
		t.Fatalf("SSUBSCRIBE = %q", got[0])
	}
	if err := c.NodeByAddr(seeds[1]).Client().Do(ctx, "cluster", "delslots", slot).Err(); err != nil {
		t.Fatal(err)
	}
	// Redis unsubscribes the slot's shard channels (a sunsubscribe push).
	reply := pipeline(sub, []string{"GET", k2})[0]
	for strings.HasPrefix(reply, ">") {
		t.Logf("push %q", reply)
		reply = sub.reply()
	}
	if !strings.HasPrefix(reply, "-"+errDuplexNotServed+"CLUSTERDOWN") {
		t.Errorf("GET of a slot not served, on a shard subscriber's connection = %q, want %q…", reply, errDuplexNotServed)
	}
	ok, _ := keyIn(r, seeds[1], "up", 0)
	got := pipeline(dialRedis(t, addr), []string{"GET", k2}, []string{"SET", ok, "1"})
	if !strings.HasPrefix(got[0], "-MASTERDOWN ") || got[1] != "+OK\r\n" {
		t.Errorf("GET of a slot not served, SET of another = %q, want -MASTERDOWN and +OK", got)
	}

	cut.stop()
	conn := dialRedis(t, addr)
	got = pipeline(conn, []string{"MULTI"}, []string{"GET", k}, []string{"EXEC"})
	if got[0] != "+OK\r\n" || !strings.HasPrefix(got[1], "-MASTERDOWN") || !strings.HasPrefix(got[2], "-MASTERDOWN") {
		t.Errorf("MULTI, GET, EXEC with the master unreachable = %q, want +OK and two -MASTERDOWN", got)
	}
	// (Keys of another master: commands without keys go to the first
	// master, which may be the one cut off.)
	if got := pipeline(conn, []string{"MULTI"}, []string{"SET", ok, "2"}, []string{"EXEC"}); !slices.Equal(got, []string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n+OK\r\n"}) {
		t.Errorf("the next transaction = %q, want it run", got)
	}
	// Without its EXEC in the failed run, the transaction stays open and
	// its EXEC fails, as after any error while queuing.
	got = pipeline(conn, []string{"MULTI"}, []string{"GET", k})
	if got[0] != "+OK\r\n" || !strings.HasPrefix(got[1], "-MASTERDOWN") {
		t.Errorf("MULTI, GET with the master unreachable = %q, want +OK and -MASTERDOWN", got)
	}
	if got := pipeline(conn, []string{"GET", ok}, []string{"EXEC"}); got[0] != "-CROSSSLOT Keys in request don't hash to the same slot\r\n" || !strings.HasPrefix(got[1], "-EXECABORT") {
		t.Errorf("GET of another slot, EXEC after = %q, want -CROSSSLOT and -EXECABORT", got)
	}
	if got := pipeline(conn, []string{"GET", ok}); got[0] != "$1\r\n2\r\n" {
		t.Errorf("GET after the transaction = %q", got)
	}
}
