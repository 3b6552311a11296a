package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// cutOnWatch relays connections to a node and cuts (both sides) any
// connection that sends a WATCH, before the WATCH reaches the node: the
// proxy sees the connection lost with the WATCH unanswered.
type cutOnWatch struct {
	ln   net.Listener
	to   string
	mu   sync.Mutex
	cuts int
}

func startCutOnWatch(t *testing.T, to string) *cutOnWatch {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutOnWatch{ln: ln, to: to}
	t.Cleanup(func() { ln.Close() })
	go c.accept()
	return c
}

func (c *cutOnWatch) accept() {
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
				if n > 0 && bytes.Contains(bytes.ToUpper(buf[:n]), []byte("\r\nWATCH\r\n")) {
					c.mu.Lock()
					c.cuts++
					c.mu.Unlock()
					return
				}
				if n > 0 {
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

func (c *cutOnWatch) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cuts
}

// TestClusterLostWatch checks a WATCH whose connection is lost in the
// middle of a batch: the rest of the batch (MULTI … EXEC) is answered as a
// Sentinel group's session answers its next batch (the EXEC fails with a
// null reply, as when a watched key was touched), and nothing of the lost
// WATCH is left for the batches after it.
func TestClusterLostWatch(t *testing.T) {
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
		o.HoldTimeout = 5 * time.Second
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
}
