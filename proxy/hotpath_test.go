package proxy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBatchMemo(t *testing.T) {
	args := byteArgs
	var m batchMemo
	set := args("SET", "k", "v")
	m.put(set, classify(set), nil)
	if got, ok := m.get(args("SET", "x", "y")); !ok || got != classify(set) {
		t.Errorf("SET after SET: %+v, %v; want the memo", got, ok)
	}
	for _, other := range [][][]byte{args("set", "k", "v"), args("GET", "k"), args("SETEX", "k", "1", "v"), nil} {
		if _, ok := m.get(other); ok {
			t.Errorf("%q after SET: a memo hit, want a miss", other)
		}
	}
	// Not kept: commands classified by their arguments, commands whose
	// subcommand the policy looks at, refused ones and WAIT.
	deny, err := NewPolicy("g", "deny", nil, []string{"object|freq"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args [][]byte
		info cmdInfo
		p    *Policy
	}{
		{args("CLIENT", "GETNAME"), classify(args("CLIENT", "GETNAME")), nil},
		{args("XREAD", "STREAMS", "s", "0"), classify(args("XREAD", "STREAMS", "s", "0")), nil},
		{args("SCRIPT", "EXISTS", "x"), classify(args("SCRIPT", "EXISTS", "x")), nil},
		{args("CONFIG", "GET", "port"), classify(args("CONFIG", "GET", "port")), nil},
		{args("OBJECT", "ENCODING", "k"), classify(args("OBJECT", "ENCODING", "k")), deny},
		{args("GET", "k"), cmdInfo{kind: kindRefused, refusal: errNoAuth}, nil},
		{args("WAIT", "1", "0"), classify(args("WAIT", "1", "0")), nil},
		{args("MULTI"), classify(args("MULTI")), nil},
		{args("AVERYLONGCOMMANDNAMEX"), classify(args("AVERYLONGCOMMANDNAMEX")), nil},
	} {
		m.put(set, classify(set), nil)
		m.put(tt.args, tt.info, tt.p)
		if _, ok := m.get(tt.args); ok {
			t.Errorf("%q was kept", tt.args)
		}
		if _, ok := m.get(set); ok {
			t.Errorf("SET still kept after %q", tt.args)
		}
	}
}

// A pipeline of one command name with the decisions around it changing:
// each command is vetted as if alone.
func TestPipelineVettedPerCommand(t *testing.T) {
	const backendPass = "backend pw"
	r := startRedis(t, "--requirepass", backendPass)
	auth, err := NewAuth([]User{{Name: "default", Password: "front"}}, "", backendPass)
	if err != nil {
		t.Fatal(err)
	}
	_, paddr := startProxy(t, newFakeSource(r), func(o *Options) { o.Auth = auth; o.Policy = nil })
	c := dialRedis(t, paddr)
	var b strings.Builder
	cmds := [][]string{
		{"GET", "k"}, {"GET", "k"}, {"AUTH", "front"}, {"GET", "k"}, {"SET", "k", "v"}, {"GET", "k"},
		{"CONFIG", "GET", "port"}, {"CONFIG", "SET", "port", "1"}, {"CONFIG", "GET", "port"},
		{"GET", "k"},
	}
	for _, cmd := range cmds {
		b.Write(appendArgs(nil, byteArgs(cmd...)))
	}
	c.send(b.String())
	want := []string{
		"-NOAUTH", "-NOAUTH", "+OK", "$-1", "+OK", "$1\r\nv", "*2", "-NOPERM", "*2", "$1\r\nv",
	}
	for i, w := range want {
		if got := c.reply(); !strings.HasPrefix(got, w) {
			t.Errorf("%v = %q, want prefix %q", cmds[i], got, w)
		}
	}
}

// classHistogram takes n observations at once and exposes what
// prometheus.Histogram, fed one at a time, exposes. The values are powers
// of two, so that the sums are exact either way.
func TestClassHistogram(t *testing.T) {
	bounds := []float64{.001, .01, .1}
	labels := prometheus.Labels{"group": "g"}
	h := newClassHistogram("x_seconds", "help", labels, bounds)
	ref := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_seconds", Help: "help", ConstLabels: labels, Buckets: bounds}, []string{"class"})
	for _, o := range []struct {
		c cmdClass
		v float64
		n uint64
	}{{classRead, 1.0 / 1024, 3}, {classRead, 1.0 / 128, 2}, {classRead, 1.0 / 16, 1}, {classWrite, .25, 4}, {classWrite, 1.0 / 128, 1}} {
		h.observe(o.c, o.v, o.n)
		for range o.n {
			ref.WithLabelValues(classNames[o.c]).Observe(o.v)
		}
	}
	var want strings.Builder
	want.WriteString("# HELP x_seconds help\n# TYPE x_seconds histogram\n")
	for c := range numClasses {
		ref.WithLabelValues(classNames[c]) // every class is exposed
		b := [4]int{}
		sum, count := "0", 0
		switch c {
		case classRead:
			b, sum, count = [4]int{3, 5, 6, 6}, "0.0810546875", 6
		case classWrite:
			b, sum, count = [4]int{0, 1, 1, 5}, "1.0078125", 5
		}
		for i, le := range []string{"0.001", "0.01", "0.1", "+Inf"} {
			fmt.Fprintf(&want, "x_seconds_bucket{class=%q,group=\"g\",le=%q} %d\n", classNames[c], le, b[i])
		}
		fmt.Fprintf(&want, "x_seconds_sum{class=%q,group=\"g\"} %s\n", classNames[c], sum)
		fmt.Fprintf(&want, "x_seconds_count{class=%q,group=\"g\"} %d\n", classNames[c], count)
	}
	if err := testutil.CollectAndCompare(h, strings.NewReader(want.String())); err != nil {
		t.Errorf("classHistogram: %v", err)
	}
	if err := testutil.CollectAndCompare(ref, strings.NewReader(want.String())); err != nil {
		t.Errorf("the test's expectation differs from prometheus.Histogram's: %v", err)
	}
}

func byteArgs(s ...string) [][]byte {
	var a [][]byte
	for _, x := range s {
		a = append(a, []byte(x))
	}
	return a
}

// fastWriter writes without allocating (rawWriteOps), and writes everything, also when
// the socket fills up and the write waits for the poller.
func TestFastWriterWritesAllWithoutAllocating(t *testing.T) {
	c, peer := tcpPair(t)
	w := makeFastWriter(c, rawConnOf(c))
	if w.raw == nil {
		t.Fatal("no raw writes on a TCP connection")
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	small := []byte("+OK\r\n")
	// (AllocsPerRun's average is whole: under -race, where sync.Pool drops
	// a quarter of what is put back, a new op's 2 allocations count as 0.)
	if n := testing.AllocsPerRun(200, func() { w.Write(small) }); n != 0 {
		t.Errorf("a write allocates %v times, want 0", n)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB: fills the socket
	if n, err := w.Write(big); n != len(big) || err != nil {
		t.Fatalf("big write = %d, %v", n, err)
	}
	c.Close()
	b := <-got
	want := append(bytes.Repeat(small, 201), big...) // AllocsPerRun runs once more
	if !bytes.Equal(b, want) {
		t.Errorf("the peer read %d bytes, want %d, the same", len(b), len(want))
	}
}
