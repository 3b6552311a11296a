package cluster

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Keys of distinct slots: Slot("a") 15495, Slot("b") 3300, Slot("c") 7365;
// "{a}x" hashes as "a".
func TestSplit(t *testing.T) {
	table := redis70(t)
	sa, sb := int(Slot([]byte("a"))), int(Slot([]byte("b")))
	if sa == sb || Slot([]byte("c")) == Slot([]byte("a")) || Slot([]byte("c")) == Slot([]byte("b")) {
		t.Fatal("test keys share a slot")
	}
	type sub struct {
		args string
		keys []int
	}
	crossSlot := "-" + CrossSlotError + "\r\n"
	tests := []struct {
		line  string
		kind  Kind
		slot  int
		subs  []sub
		reply string
	}{
		{line: "GET a", kind: Single, slot: sa},
		{line: "PING", kind: Single, slot: -1},
		{line: "MGET", kind: Single, slot: -1}, // arity: any node refuses it
		{line: "mget a {a}b a{a}", kind: Single, slot: sa},
		{line: "MSET {b}1 x b y", kind: Single, slot: sb},
		{line: "EVAL s 0", kind: Single, slot: -1},
		{line: "EVAL s 2 a {a}z", kind: Single, slot: sa},
		{line: "MGET a b a c", kind: Scatter, slot: -1, subs: []sub{
			{"MGET a a", []int{0, 2}}, {"MGET b", []int{1}}, {"MGET c", []int{3}}}},
		{line: "mget {b}1 a {b}2", kind: Scatter, slot: -1, subs: []sub{
			{"mget {b}1 {b}2", []int{0, 2}}, {"mget a", []int{1}}}},
		{line: "MSET a 1 b 2 a 3", kind: Scatter, slot: -1, subs: []sub{
			{"MSET a 1 a 3", []int{0, 2}}, {"MSET b 2", []int{1}}}},
		{line: "Del a b", kind: Scatter, slot: -1, subs: []sub{{"Del a", []int{0}}, {"Del b", []int{1}}}},
		{line: "UNLINK b a b", kind: Scatter, slot: -1, subs: []sub{{"UNLINK b b", []int{0, 2}}, {"UNLINK a", []int{1}}}},
		{line: "exists a a b", kind: Scatter, slot: -1, subs: []sub{{"exists a a", []int{0, 1}}, {"exists b", []int{2}}}},
		{line: "TOUCH c b", kind: Scatter, slot: -1, subs: []sub{{"TOUCH c", []int{0}}, {"TOUCH b", []int{1}}}},
		{line: "MSET a 1 b", kind: Refuse, slot: -1, reply: "-ERR wrong number of arguments for 'mset' command\r\n"},
		{line: "MSETNX a 1 b 2", kind: Refuse, slot: -1, reply: crossSlot},
		{line: "SUNIONSTORE a b c", kind: Refuse, slot: -1, reply: crossSlot},
		{line: "RENAME a b", kind: Refuse, slot: -1, reply: crossSlot},
		{line: "EVAL s 2 a b", kind: Refuse, slot: -1, reply: crossSlot},
		{line: "SSUBSCRIBE a b", kind: Refuse, slot: -1, reply: crossSlot},
		{line: "MIGRATE h 1 x 0 1 KEYS a b", kind: Unresolved, slot: -1},
		{line: "NOSUCH a b", kind: Unresolved, slot: -1},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			p := table.Split(fields(tt.line), nil)
			if p.Kind != tt.kind || p.Slot != tt.slot || string(p.Reply) != tt.reply {
				t.Fatalf("Split = %v slot %d reply %q, want %v slot %d reply %q", p.Kind, p.Slot, p.Reply, tt.kind, tt.slot, tt.reply)
			}
			if len(p.Subs) != len(tt.subs) {
				t.Fatalf("%d sub-commands, want %d", len(p.Subs), len(tt.subs))
			}
			for i, s := range p.Subs {
				args := string(bytes.Join(s.Args, []byte(" ")))
				if args != tt.subs[i].args || !slices.Equal(s.Keys, tt.subs[i].keys) {
					t.Errorf("sub %d = %q keys %v, want %q keys %v", i, args, s.Keys, tt.subs[i].args, tt.subs[i].keys)
				}
				if want := AppendCommand(nil, s.Args); !bytes.Equal(s.Cmd, want) {
					t.Errorf("sub %d Cmd %q, want %q", i, s.Cmd, want)
				}
				if s.Slot != Slot(s.Args[1]) {
					t.Errorf("sub %d slot %d, its first key's %d", i, s.Slot, Slot(s.Args[1]))
				}
			}
		})
	}
	// The exact bytes of one sub-command.
	p := table.Split(fields("MGET a b a"), nil)
	if want := "*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\na\r\n"; string(p.Subs[0].Cmd) != want {
		t.Errorf("Cmd = %q, want %q", p.Subs[0].Cmd, want)
	}
}

// TestSplitLegacyTable splits with a Redis 6 table, which has no key specs.
func TestSplitLegacyTable(t *testing.T) {
	table, err := ParseCommands([]any{
		[]any{"mset", int64(-3), []any{"write"}, int64(1), int64(-1), int64(2)},
		[]any{"mget", int64(-2), []any{"readonly"}, int64(1), int64(-1), int64(1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := table.Split(fields("MSET a 1 b 2"), nil)
	if p.Kind != Scatter || len(p.Subs) != 2 || string(p.Subs[1].Cmd) != "*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$1\r\n2\r\n" {
		t.Fatalf("Split = %+v", p)
	}
}

func TestMerge(t *testing.T) {
	table := redis70(t)
	tests := []struct {
		name, line string
		replies    []string
		want       string
		err        bool
	}{
		{name: "mget resp2", line: "MGET a b a c",
			replies: []string{"*2\r\n$1\r\n1\r\n$1\r\n1\r\n", "*1\r\n$-1\r\n", "*1\r\n$0\r\n\r\n"},
			want:    "*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n1\r\n$0\r\n\r\n"},
		{name: "mget resp3", line: "MGET a b a c",
			replies: []string{"*2\r\n_\r\n_\r\n", "*1\r\n$3\r\nb\r\n\r\n", "*1\r\n_\r\n"},
			want:    "*4\r\n_\r\n$3\r\nb\r\n\r\n_\r\n_\r\n"},
		{name: "mget error", line: "MGET a b c",
			replies: []string{"*1\r\n$-1\r\n", "-MOVED 3300 127.0.0.1:7001\r\n", "-ERR second\r\n"},
			want:    "-MOVED 3300 127.0.0.1:7001\r\n"},
		{name: "mget blob error", line: "MGET a b",
			replies: []string{"!5\r\nERR x\r\n", "*1\r\n$-1\r\n"}, want: "!5\r\nERR x\r\n"},
		{name: "mget too few values", line: "MGET a b a",
			replies: []string{"*1\r\n$-1\r\n", "*1\r\n$-1\r\n"}, err: true},
		{name: "mget not an array", line: "MGET a b",
			replies: []string{":1\r\n", "*1\r\n$-1\r\n"}, err: true},
		{name: "mget truncated", line: "MGET a b",
			replies: []string{"*1\r\n$5\r\nab", "*1\r\n$-1\r\n"}, err: true},
		{name: "mget trailing bytes", line: "MGET a b",
			replies: []string{"*1\r\n$-1\r\n+OK\r\n", "*1\r\n$-1\r\n"}, err: true},
		{name: "reply count", line: "MGET a b", replies: []string{"*1\r\n$-1\r\n"}, err: true},
		{name: "mset", line: "MSET a 1 b 2", replies: []string{"+OK\r\n", "+OK\r\n"}, want: "+OK\r\n"},
		{name: "mset error", line: "MSET a 1 b 2",
			replies: []string{"+OK\r\n", "-OOM command not allowed\r\n"}, want: "-OOM command not allowed\r\n"},
		{name: "mset odd reply", line: "MSET a 1 b 2", replies: []string{"+OK\r\n", ":1\r\n"}, err: true},
		{name: "del", line: "DEL a b c", replies: []string{":1\r\n", ":0\r\n", ":1\r\n"}, want: ":2\r\n"},
		{name: "exists duplicates", line: "EXISTS a a b", replies: []string{":2\r\n", ":1\r\n"}, want: ":3\r\n"},
		{name: "unlink error", line: "UNLINK a b", replies: []string{":1\r\n", "-READONLY x\r\n"}, want: "-READONLY x\r\n"},
		{name: "touch not an integer", line: "TOUCH a b", replies: []string{":1\r\n", "$1\r\n1\r\n"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := table.Split(fields(tt.line), nil)
			if p.Kind != Scatter {
				t.Fatalf("Split(%q) = %v", tt.line, p.Kind)
			}
			replies := make([][]byte, len(tt.replies))
			for i, r := range tt.replies {
				replies[i] = []byte(r)
			}
			got, err := p.Merge(replies)
			if (err != nil) != tt.err || string(got) != tt.want {
				t.Fatalf("Merge = %q, %v; want %q, error %v", got, err, tt.want, tt.err)
			}
		})
	}
	p := table.Split(fields("GET a"), nil)
	if _, err := p.Merge(nil); err == nil {
		t.Error("Merge of a Single plan: no error")
	}
}

// model is a Redis of one database of strings, answering the scattered
// commands as Redis 7 does (db.c, t_string.c), in RESP2 or RESP3.
type model map[string]string

func (m model) exec(args [][]byte, proto int) []byte {
	null := "$-1\r\n"
	if proto == 3 {
		null = "_\r\n"
	}
	name := strings.ToLower(string(args[0]))
	var n int64
	switch name {
	case "mget":
		out := appendHeader(nil, '*', len(args)-1)
		for _, k := range args[1:] {
			if v, ok := m[string(k)]; ok {
				out = appendBulk(out, []byte(v))
			} else {
				out = append(out, null...)
			}
		}
		return out
	case "mset":
		if len(args)%2 == 0 {
			return arityReply(name)
		}
		for i := 1; i < len(args); i += 2 {
			m[string(args[i])] = string(args[i+1])
		}
		return []byte("+OK\r\n")
	case "del", "unlink":
		for _, k := range args[1:] {
			if _, ok := m[string(k)]; ok {
				delete(m, string(k))
				n++
			}
		}
	case "exists", "touch":
		for _, k := range args[1:] {
			if _, ok := m[string(k)]; ok {
				n++
			}
		}
	default:
		return []byte("-ERR unknown command\r\n")
	}
	return appendInteger(nil, n)
}

// decodeCommand parses a RESP command back into its arguments.
func decodeCommand(t testing.TB, cmd []byte) [][]byte {
	t.Helper()
	if err := checkFrame(cmd); err != nil {
		t.Fatalf("command %q: %v", cmd, err)
	}
	elems, err := arrayElements(cmd)
	if err != nil {
		t.Fatalf("command %q: %v", cmd, err)
	}
	args := make([][]byte, len(elems))
	for i, e := range elems {
		if args[i], _, err = bulk(e); err != nil {
			t.Fatalf("command %q: %v", cmd, err)
		}
	}
	return args
}

// checkAgainstModel runs line on one model directly and, split and merged,
// on another with the same data: the replies and the data after must be
// equal.
func checkAgainstModel(t testing.TB, table Table, data model, args [][]byte, proto int) Kind {
	t.Helper()
	direct, scattered := maps.Clone(data), maps.Clone(data)
	want := direct.exec(args, proto)
	p := table.Split(args, nil)
	var got []byte
	switch p.Kind {
	case Single:
		got = scattered.exec(args, proto)
	case Refuse:
		got = p.Reply
	case Scatter:
		replies := make([][]byte, len(p.Subs))
		for i, s := range p.Subs {
			sub := decodeCommand(t, s.Cmd)
			keys, _ := table.Keys(sub)
			for _, k := range keys {
				if Slot(k) != s.Slot {
					t.Fatalf("%q: sub-command %q has key %q of slot %d", args, sub, k, Slot(k))
				}
			}
			replies[i] = scattered.exec(sub, proto)
		}
		var err error
		if got, err = p.Merge(replies); err != nil {
			t.Fatalf("%q: Merge: %v", args, err)
		}
	default:
		t.Fatalf("%q: Split = %v", args, p.Kind)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%q (RESP%d): got %q, want %q", args, proto, got, want)
	}
	if !maps.Equal(direct, scattered) {
		t.Fatalf("%q: data after %v, want %v", args, scattered, direct)
	}
	return p.Kind
}

// randomKey returns a key of few enough choices to repeat, half of them
// hash-tagged so that some share a slot.
func randomKey(rng *rand.Rand) []byte {
	if rng.IntN(2) == 0 {
		return []byte("{" + string(rune('a'+rng.IntN(3))) + "}" + strconv.Itoa(rng.IntN(4)))
	}
	return []byte("k" + strconv.Itoa(rng.IntN(8)))
}

// TestSplitMergeModel is the property: for random MGET, MSET, DEL, UNLINK,
// EXISTS and TOUCH over random data, split and merge answer what one
// Redis (the model) answers, and leave the same data.
func TestSplitMergeModel(t *testing.T) {
	table := redis70(t)
	rng := rand.New(rand.NewPCG(12, 34))
	names := []string{"MGET", "mset", "DEL", "unlink", "EXISTS", "touch"}
	kinds := map[Kind]int{}
	for range 3000 {
		data := model{}
		for range rng.IntN(12) {
			data[string(randomKey(rng))] = strconv.Itoa(rng.IntN(100))
		}
		name := names[rng.IntN(len(names))]
		args := [][]byte{[]byte(name)}
		for range 1 + rng.IntN(8) {
			args = append(args, randomKey(rng))
			if name == "mset" && rng.IntN(20) > 0 { // now and then, a key without a value
				args = append(args, []byte(strconv.Itoa(rng.IntN(100))))
			}
		}
		kinds[checkAgainstModel(t, table, data, args, 2+rng.IntN(2))]++
	}
	if kinds[Single] < 100 || kinds[Scatter] < 1000 || kinds[Refuse] < 10 {
		t.Errorf("too few of a kind: %v", kinds)
	}
	t.Logf("plans: %v", kinds)
}

// FuzzSplitMerge checks the property for any command line (of the
// commands the model knows) and any data.
func FuzzSplitMerge(f *testing.F) {
	table := redis70(f)
	for _, s := range []string{"MGET a b a c", "MSET a 1 b 2 a 3", "DEL a a b", "EXISTS {a}1 a a b", "TOUCH x", "mset a 1 b"} {
		f.Add(s, "a b {a}z", true)
	}
	f.Fuzz(func(t *testing.T, line, keys string, resp3 bool) {
		args := fields(line)
		if len(args) == 0 {
			return
		}
		switch strings.ToLower(string(args[0])) {
		case "mget", "mset", "del", "unlink", "exists", "touch":
		default:
			return
		}
		data := model{}
		for i, k := range strings.Fields(keys) {
			data[k] = strconv.Itoa(i)
		}
		proto := 2
		if resp3 {
			proto = 3
		}
		_ = checkAgainstModel(t, table, data, args, proto)
	})
}

// BenchmarkSplitMGET splits and merges an MGET of 10 keys in 10 slots.
func BenchmarkSplitMGET(b *testing.B) {
	table := redis70(b)
	args := fields("MGET k0 k1 k2 k3 k4 k5 k6 k7 k8 k9")
	reply := []byte("*1\r\n$5\r\nvalue\r\n")
	b.ReportAllocs()
	for b.Loop() {
		p := table.Split(args, nil)
		replies := make([][]byte, len(p.Subs))
		for i := range replies {
			replies[i] = reply
		}
		if _, err := p.Merge(replies); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSplitGET plans a one-key command, what every command of a
// cluster group costs on the way in.
func BenchmarkSplitGET(b *testing.B) {
	table := redis70(b)
	args := fields("GET key:000000000000")
	b.ReportAllocs()
	for b.Loop() {
		if p := table.Split(args, nil); p.Kind != Single {
			b.Fatal(p.Kind)
		}
	}
}
