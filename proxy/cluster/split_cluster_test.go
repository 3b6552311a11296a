package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// TestSplitAgainstCluster runs split commands and fan-outs on a real
// cluster of 3 masters, in RESP2 and RESP3: each sub-command is sent to
// its slot's master over a raw connection, and the merged replies are
// compared with what one Redis answers. It also checks the refusals
// against the nodes' own errors (CROSSSLOT, MSET's arity).
func TestSplitAgainstCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{Masters: 3, ReplicasPerMaster: -1})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	table, err := cluster.FetchCommands(ctx, c.Addrs(), cluster.FetchOptions{})
	if err != nil {
		t.Fatalf("fetch commands: %v", err)
	}
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	var addrs []string
	owner := map[uint16]string{} // every slot's master
	for _, sh := range shards {
		addrs = append(addrs, sh.Master.Addr)
		for _, r := range sh.Slots {
			for slot := r[0]; slot <= r[1]; slot++ {
				owner[uint16(slot)] = sh.Master.Addr
			}
		}
	}
	if len(owner) != cluster.Slots || len(addrs) != 3 {
		t.Fatalf("%d masters serve %d slots", len(addrs), len(owner))
	}
	slices.Sort(addrs) // the stable shard order of SCAN cursors
	// MasterOf, as a proxy would route, agrees for the keys written.
	for _, k := range splitKeys() {
		slot := cluster.Slot([]byte(k))
		if m, err := c.MasterOf(ctx, int(slot)); err != nil || m.Addr != owner[slot] {
			t.Fatalf("master of %d: %v, %v; shards say %s", slot, m, err, owner[slot])
		}
	}
	for _, proto := range []int{2, 3} {
		t.Run("RESP"+strconv.Itoa(proto), func(t *testing.T) {
			conns := map[string]*rawConn{}
			for _, a := range addrs {
				conns[a] = dialRaw(ctx, t, a, proto)
			}
			s := &splitSession{t: t, table: table, conns: conns, owner: owner, addrs: addrs, proto: proto}
			s.run()
		})
	}
}

// splitKeys are the keys the test writes: enough to cover every master,
// and two sharing a hash tag.
func splitKeys() []string {
	keys := []string{"{t}1", "{t}2"}
	for i := range 30 {
		keys = append(keys, "k"+strconv.Itoa(i))
	}
	return keys
}

type splitSession struct {
	t     *testing.T
	table cluster.Table
	conns map[string]*rawConn // by master address
	owner map[uint16]string   // slot → master address
	addrs []string            // masters, sorted
	proto int
}

func (s *splitSession) run() {
	t := s.t
	null := "$-1\r\n"
	if s.proto == 3 {
		null = "_\r\n"
	}
	s.fanOut("FLUSHALL", cluster.MergeFlush, "+OK\r\n")
	keys := splitKeys()
	mset := []string{"MSET"}
	for i, k := range keys {
		mset = append(mset, k, "v"+strconv.Itoa(i))
	}
	s.expect(mset, "+OK\r\n")

	mget, want := []string{"mget"}, []string{}
	for i, k := range keys {
		mget = append(mget, k)
		want = append(want, "$"+strconv.Itoa(len("v"+strconv.Itoa(i)))+"\r\nv"+strconv.Itoa(i)+"\r\n")
		if i%7 == 0 { // a missing key and a duplicate now and then
			mget = append(mget, "missing"+k, keys[0])
			want = append(want, null, "$2\r\nv0\r\n")
		}
	}
	s.expect(mget, "*"+strconv.Itoa(len(want))+"\r\n"+strings.Join(want, ""))
	s.expect([]string{"EXISTS", "k1", "k1", "k2", "nope", "{t}1"}, ":4\r\n")
	s.expect([]string{"TOUCH", "k3", "nope", "k4"}, ":2\r\n")

	// The fan-outs, with every key there.
	s.fanOutKeys("KEYS", keys)
	s.fanOut("DBSIZE", cluster.MergeDBSize, ":"+strconv.Itoa(len(keys))+"\r\n")
	info := "# Keyspace\r\ndb0:keys=" + strconv.Itoa(len(keys)) + ",expires=0,avg_ttl=0\r\n"
	if s.proto == 3 {
		s.fanOut("INFO keyspace", cluster.MergeInfoKeyspace, "="+strconv.Itoa(len(info)+4)+"\r\ntxt:"+info+"\r\n")
	} else {
		s.fanOut("INFO keyspace", cluster.MergeInfoKeyspace, "$"+strconv.Itoa(len(info))+"\r\n"+info+"\r\n")
	}
	rk := s.fanOutReply("RANDOMKEY", func(r [][]byte) ([]byte, error) { return cluster.MergeRandomKey(r, s.proto) })
	if k := bulks(t, []byte("*1\r\n"+string(rk))); !slices.Contains(keys, k[0]) {
		t.Errorf("RANDOMKEY = %q, not a key written", rk)
	}
	s.scan(keys)

	s.expect([]string{"DEL", "k0", "k1", "k0", "nope", "{t}2"}, ":3\r\n")
	s.expect([]string{"UNLINK", "k0", "k2", "k3"}, ":2\r\n")
	s.expect([]string{"EXISTS", "k0", "k1", "k2", "k3", "{t}1", "{t}2"}, ":1\r\n")

	// Refusals: the nodes give the same errors as Split.
	crossSlot := "-" + cluster.CrossSlotError + "\r\n"
	for _, line := range [][]string{{"MSETNX", "k5", "x", "k6", "y"}, {"SUNION", "k5", "k6"}, {"RENAME", "k5", "k6"}} {
		p := s.plan(line)
		if p.Kind != cluster.Refuse || string(p.Reply) != crossSlot {
			t.Errorf("Split(%q) = %v %q", line, p.Kind, p.Reply)
		}
		if got := s.send(s.addrs[0], line); got != crossSlot {
			t.Errorf("node answers %q with %q, Split with %q", line, got, crossSlot)
		}
	}
	odd := []string{"MSET", "{t}1", "x", "{t}2"}
	node := s.send(s.owner[cluster.Slot([]byte("{t}1"))], odd)
	if p := s.plan([]string{"MSET", "k5", "x", "k6"}); p.Kind != cluster.Refuse || string(p.Reply) != node {
		t.Errorf("odd MSET: Split replies %q, a node %q", p.Reply, node)
	}
	s.fanOut("FLUSHALL", cluster.MergeFlush, "+OK\r\n")
	s.fanOut("DBSIZE", cluster.MergeDBSize, ":0\r\n")
}

func (s *splitSession) plan(line []string) cluster.Plan {
	return s.table.Split(toBytes(line), nil)
}

// expect splits line, sends the sub-commands to their masters, and checks
// the merged reply.
func (s *splitSession) expect(line []string, want string) {
	s.t.Helper()
	p := s.plan(line)
	if p.Kind != cluster.Scatter {
		s.t.Fatalf("Split(%q) = %v, want scatter", line, p.Kind)
	}
	nodes := map[string]bool{}
	replies := make([][]byte, len(p.Subs))
	for i, sub := range p.Subs {
		addr := s.owner[sub.Slot]
		nodes[addr] = true
		replies[i] = s.conns[addr].do(s.t, sub.Cmd)
	}
	if len(line) > 20 && len(nodes) != len(s.addrs) {
		s.t.Errorf("%s of %d keys went to %d masters of %d", line[0], len(line)-1, len(nodes), len(s.addrs))
	}
	got, err := p.Merge(replies)
	if err != nil || string(got) != want {
		s.t.Errorf("%s … (%d keys, %d sub-commands on %d masters): got %q, %v; want %q",
			line[0], len(line)-1, len(p.Subs), len(nodes), got, err, want)
	}
}

// send sends line to addr as it is and returns the reply.
func (s *splitSession) send(addr string, line []string) string {
	return string(s.conns[addr].do(s.t, cluster.AppendCommand(nil, toBytes(line))))
}

// fanOutReply sends line to every master and merges the replies.
func (s *splitSession) fanOutReply(line string, merge func([][]byte) ([]byte, error)) []byte {
	s.t.Helper()
	var replies [][]byte
	for _, a := range s.addrs {
		replies = append(replies, []byte(s.send(a, strings.Fields(line))))
	}
	got, err := merge(replies)
	if err != nil {
		s.t.Fatalf("%s: merge %q: %v", line, replies, err)
	}
	return got
}

func (s *splitSession) fanOut(line string, merge func([][]byte) ([]byte, error), want string) {
	s.t.Helper()
	if got := s.fanOutReply(line, merge); string(got) != want {
		s.t.Errorf("%s = %q, want %q", line, got, want)
	}
}

func (s *splitSession) fanOutKeys(line string, keys []string) {
	s.t.Helper()
	got := bulks(s.t, s.fanOutReply(line+" *", cluster.MergeKeys))
	slices.Sort(got)
	if want := slices.Sorted(slices.Values(keys)); !slices.Equal(got, want) {
		s.t.Errorf("%s * = %q, want %q", line, got, want)
	}
}

// scan walks the whole cluster with SCAN COUNT 4 from cursor 0, as a
// client of the proxy would, and checks it sees every key once.
func (s *splitSession) scan(keys []string) {
	t := s.t
	var got []string
	cursor := []byte("0")
	for calls := 0; ; calls++ {
		if calls > 100 {
			t.Fatal("scan does not end")
		}
		shard, node, err := cluster.DecodeCursor(cursor, len(s.addrs))
		if err != nil {
			t.Fatalf("decode cursor %s: %v", cursor, err)
		}
		reply := s.send(s.addrs[shard], []string{"SCAN", strconv.FormatUint(node, 10), "COUNT", "4"})
		merged, err := cluster.ScanReply(shard, len(s.addrs), []byte(reply))
		if err != nil {
			t.Fatalf("scan reply %q: %v", reply, err)
		}
		// *2, the cursor, then the keys' array.
		n, _ := cluster.FrameLen(merged[4:])
		cursor = []byte(bulks(t, append([]byte("*1\r\n"), merged[4:4+n]...))[0])
		got = append(got, bulks(t, merged[4+n:])...)
		if string(cursor) == "0" {
			break
		}
	}
	slices.Sort(got)
	if want := slices.Sorted(slices.Values(keys)); !slices.Equal(got, want) {
		t.Errorf("SCAN saw %q, want %q", got, want)
	}
}

// rawConn is a connection to a node that returns replies as raw frames.
type rawConn struct {
	conn net.Conn
	buf  []byte
}

func dialRaw(ctx context.Context, t *testing.T, addr string, proto int) *rawConn {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	r := &rawConn{conn: conn}
	if proto == 3 {
		if hello := r.do(t, cluster.AppendCommand(nil, toBytes([]string{"HELLO", "3"}))); hello[0] != '%' {
			t.Fatalf("HELLO 3 to %s: %q", addr, hello)
		}
	}
	return r
}

// do sends one command and reads one reply frame.
func (r *rawConn) do(t *testing.T, cmd []byte) []byte {
	t.Helper()
	if _, err := r.conn.Write(cmd); err != nil {
		t.Fatalf("write: %v", err)
	}
	chunk := make([]byte, 16<<10)
	for {
		n, err := cluster.FrameLen(r.buf)
		if err == nil {
			out := bytes.Clone(r.buf[:n])
			r.buf = r.buf[n:]
			return out
		}
		if !errors.Is(err, cluster.ErrIncompleteFrame) {
			t.Fatalf("reply %q: %v", r.buf, err)
		}
		m, err := r.conn.Read(chunk)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		r.buf = append(r.buf, chunk[:m]...)
	}
}

// bulks returns the strings of an array frame of bulk strings.
func bulks(t *testing.T, frame []byte) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(frame), "\r\n"), "\r\n")
	if len(lines) == 0 || lines[0] == "" || lines[0][0] != '*' {
		t.Fatalf("not an array: %q", frame)
	}
	var out []string
	for i := 1; i+1 < len(lines); i += 2 {
		if !strings.HasPrefix(lines[i], "$") {
			t.Fatalf("not a bulk string at %d: %q", i, frame)
		}
		out = append(out, lines[i+1])
	}
	if n, _ := strconv.Atoi(lines[0][1:]); n != len(out) {
		t.Fatalf("array of %d, %d bulks: %q", n, len(out), frame)
	}
	return out
}
