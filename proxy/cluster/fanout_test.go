package cluster

import (
	"errors"
	"slices"
	"strconv"
	"testing"
)

func frames(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, f := range s {
		out[i] = []byte(f)
	}
	return out
}

func TestFanOutMerges(t *testing.T) {
	info1 := "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=1000\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n"
	info2 := "# Keyspace\r\ndb0:keys=5,expires=3,avg_ttl=2000\r\n"
	merged := "# Keyspace\r\ndb0:keys=8,expires=4,avg_ttl=1750\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n"
	verbatim := func(s string) string {
		return "=" + strconv.Itoa(len(s)+4) + "\r\ntxt:" + s + "\r\n"
	}
	bulkOf := func(s string) string { return string(appendBulk(nil, []byte(s))) }
	tests := []struct {
		name    string
		merge   func([][]byte) ([]byte, error)
		replies []string
		want    string
		err     bool
	}{
		{name: "keys", merge: MergeKeys,
			replies: []string{"*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*0\r\n", "*1\r\n$1\r\nc\r\n"},
			want:    "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"},
		{name: "keys none", merge: MergeKeys, want: "*0\r\n"},
		{name: "keys error", merge: MergeKeys, replies: []string{"*0\r\n", "-ERR x\r\n"}, want: "-ERR x\r\n"},
		{name: "keys not an array", merge: MergeKeys, replies: []string{":1\r\n"}, err: true},
		{name: "dbsize", merge: MergeDBSize, replies: []string{":3\r\n", ":0\r\n", ":39\r\n"}, want: ":42\r\n"},
		{name: "dbsize error", merge: MergeDBSize, replies: []string{":3\r\n", "-LOADING x\r\n"}, want: "-LOADING x\r\n"},
		{name: "dbsize bad", merge: MergeDBSize, replies: []string{":3\r\n", ":x\r\n"}, err: true},
		{name: "flushall", merge: MergeFlush, replies: []string{"+OK\r\n", "+OK\r\n"}, want: "+OK\r\n"},
		{name: "flushall error", merge: MergeFlush, replies: []string{"+OK\r\n", "-READONLY r\r\n", "-ERR s\r\n"}, want: "-READONLY r\r\n"},
		{name: "flushall bad", merge: MergeFlush, replies: []string{"+QUEUED\r\n"}, err: true},
		{name: "info keyspace", merge: MergeInfoKeyspace, replies: []string{bulkOf(info1), bulkOf(info2)}, want: bulkOf(merged)},
		{name: "info keyspace resp3", merge: MergeInfoKeyspace, replies: []string{verbatim(info2), verbatim(info1)},
			want: verbatim(merged)},
		{name: "info keyspace empty", merge: MergeInfoKeyspace, replies: []string{bulkOf("# Keyspace\r\n"), bulkOf("# Keyspace\r\n")},
			want: bulkOf("# Keyspace\r\n")},
		{name: "info keyspace bad", merge: MergeInfoKeyspace, replies: []string{bulkOf("# Keyspace\r\ndbx:keys=1\r\n")}, err: true},
		{name: "truncated", merge: MergeDBSize, replies: []string{":3"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.merge(frames(tt.replies...))
			if (err != nil) != tt.err || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestMergeRandomKey(t *testing.T) {
	tests := []struct {
		replies []string
		proto   int
		want    string
		err     bool
	}{
		{replies: []string{"$-1\r\n", "$1\r\nb\r\n", "$1\r\nc\r\n"}, proto: 2, want: "$1\r\nb\r\n"},
		{replies: []string{"_\r\n", "$1\r\nb\r\n"}, proto: 3, want: "$1\r\nb\r\n"},
		{replies: []string{"$-1\r\n", "$-1\r\n"}, proto: 2, want: "$-1\r\n"},
		{replies: []string{"_\r\n", "_\r\n"}, proto: 3, want: "_\r\n"},
		{proto: 2, want: "$-1\r\n"},
		{proto: 3, want: "_\r\n"},
		{replies: []string{"$1\r\nb\r\n", "-ERR x\r\n"}, proto: 2, want: "-ERR x\r\n"},
		{replies: []string{":1\r\n"}, proto: 2, err: true},
	}
	for _, tt := range tests {
		got, err := MergeRandomKey(frames(tt.replies...), tt.proto)
		if (err != nil) != tt.err || string(got) != tt.want {
			t.Errorf("MergeRandomKey(%q, %d) = %q, %v; want %q, error %v", tt.replies, tt.proto, got, err, tt.want, tt.err)
		}
	}
}

func TestScanCursor(t *testing.T) {
	for _, tt := range []struct {
		shard int
		node  uint64
	}{{0, 0}, {0, 12345}, {1, 0}, {3, 1<<54 - 1}, {MaxScanShards - 1, 7}} {
		c, err := EncodeCursor(tt.shard, tt.node)
		if err != nil {
			t.Fatalf("EncodeCursor(%d, %d): %v", tt.shard, tt.node, err)
		}
		shard, node, err := DecodeCursor([]byte(strconv.FormatUint(c, 10)), MaxScanShards)
		if err != nil || shard != tt.shard || node != tt.node {
			t.Errorf("DecodeCursor(Encode(%d, %d) = %d) = %d, %d, %v", tt.shard, tt.node, c, shard, node, err)
		}
	}
	if c, _ := EncodeCursor(0, 99); c != 99 {
		t.Errorf("shard 0's cursors are not passed through: 99 → %d", c)
	}
	if _, err := EncodeCursor(0, 1<<54); err == nil {
		t.Error("a node cursor of 55 bits was encoded")
	}
	if _, err := EncodeCursor(MaxScanShards, 0); err == nil {
		t.Error("shard MaxScanShards was encoded")
	}
	two, _ := EncodeCursor(2, 5)
	for _, bad := range []string{"", "x", "-1", "+1", " 1", "18446744073709551616", strconv.FormatUint(two, 10)} {
		if _, _, err := DecodeCursor([]byte(bad), 2); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("DecodeCursor(%q, 2) = %v, want ErrInvalidCursor", bad, err)
		}
	}
}

// TestScanWalk scans three fake shards from cursor "0" to the final "0",
// as a client would, and gets every key once.
func TestScanWalk(t *testing.T) {
	// Each shard's keys in batches of 2; the node cursor is the batch
	// index, 0 after the last.
	shards := [][]string{{"a", "b", "c"}, {}, {"d", "e", "f", "g"}}
	nodeScan := func(shard int, cursor uint64) []byte {
		keys := shards[shard]
		from := min(int(cursor)*2, len(keys))
		to := min(from+2, len(keys))
		next := cursor + 1
		if to == len(keys) {
			next = 0
		}
		out := appendHeader(nil, '*', 2)
		out = appendBulk(out, strconv.AppendUint(nil, next, 10))
		out = appendHeader(out, '*', to-from)
		for _, k := range keys[from:to] {
			out = appendBulk(out, []byte(k))
		}
		return out
	}
	var got []string
	cursor := []byte("0")
	for calls := 0; ; calls++ {
		if calls > 20 {
			t.Fatal("scan does not end")
		}
		shard, node, err := DecodeCursor(cursor, len(shards))
		if err != nil {
			t.Fatalf("DecodeCursor(%s): %v", cursor, err)
		}
		reply, err := ScanReply(shard, len(shards), nodeScan(shard, node))
		if err != nil {
			t.Fatalf("ScanReply: %v", err)
		}
		elems, err := arrayElements(reply)
		if err != nil || len(elems) != 2 {
			t.Fatalf("reply %q: %v", reply, err)
		}
		cursor, _, _ = bulk(elems[0])
		keys, _ := arrayElements(elems[1])
		for _, k := range keys {
			s, _, _ := bulk(k)
			got = append(got, string(s))
		}
		if string(cursor) == "0" {
			break
		}
	}
	if want := []string{"a", "b", "c", "d", "e", "f", "g"}; !slices.Equal(got, want) {
		t.Errorf("scanned %q, want %q", got, want)
	}
}

func TestScanReply(t *testing.T) {
	first, _ := EncodeCursor(1, 0)
	tests := []struct {
		shard, shards int
		reply, want   string
		err           bool
	}{
		{shard: 0, shards: 1, reply: "*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n", want: "*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n"},
		{shard: 0, shards: 2, reply: "*2\r\n$1\r\n0\r\n*0\r\n",
			want: "*2\r\n$" + strconv.Itoa(len(strconv.FormatUint(first, 10))) + "\r\n" + strconv.FormatUint(first, 10) + "\r\n*0\r\n"},
		{shard: 1, shards: 2, reply: "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nz\r\n", want: "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nz\r\n"},
		{shard: 0, shards: 2, reply: "-ERR invalid cursor\r\n", want: "-ERR invalid cursor\r\n"},
		{shard: 0, shards: 2, reply: "*1\r\n$1\r\n0\r\n", err: true},
		{shard: 0, shards: 2, reply: "*2\r\n$1\r\nx\r\n*0\r\n", err: true},
		{shard: 0, shards: 2, reply: "*2\r\n$1\r\n0\r\n:1\r\n", err: true},
		{shard: 0, shards: 2, reply: "*2\r\n$20\r\n18446744073709551615\r\n*0\r\n", err: true},
		{shard: 0, shards: 2, reply: "*2\r\n$1\r\n0\r\n*1\r\n", err: true},
	}
	for _, tt := range tests {
		got, err := ScanReply(tt.shard, tt.shards, []byte(tt.reply))
		if (err != nil) != tt.err || string(got) != tt.want {
			t.Errorf("ScanReply(%d, %d, %q) = %q, %v; want %q, error %v", tt.shard, tt.shards, tt.reply, got, err, tt.want, tt.err)
		}
	}
}

func TestFrameLen(t *testing.T) {
	valid := []string{
		"+OK\r\n", "-ERR x\r\n", ":-12\r\n", "$0\r\n\r\n", "$3\r\na\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n",
		"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", "_\r\n", "#t\r\n", ",1.5\r\n", "(123\r\n", "!3\r\nERR\r\n",
		"=7\r\ntxt:abc\r\n", "%1\r\n+k\r\n:1\r\n", "~1\r\n+a\r\n", ">2\r\n+message\r\n+x\r\n",
		"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
	}
	for _, f := range valid {
		n, err := FrameLen([]byte(f + "+next\r\n"))
		if err != nil || n != len(f) {
			t.Errorf("FrameLen(%q) = %d, %v; want %d", f, n, err, len(f))
		}
		for i := range len(f) {
			if _, err := FrameLen([]byte(f[:i])); !errors.Is(err, ErrIncompleteFrame) {
				t.Errorf("FrameLen(%q) = %v, want ErrIncompleteFrame", f[:i], err)
			}
		}
	}
	for _, bad := range []string{"\r\n", "x\r\n", ":x\r\n", "$-2\r\n", "$1\r\nab\r\n", "*-2\r\n", "%-1\r\n", "$01\r\na\r\n", "_-1\r\n"} {
		if _, err := FrameLen([]byte(bad)); err == nil || errors.Is(err, ErrIncompleteFrame) {
			t.Errorf("FrameLen(%q) = %v, want a protocol error", bad, err)
		}
	}
	deep := []byte{}
	for range maxNesting + 2 {
		deep = append(deep, "*1\r\n"...)
	}
	if _, err := FrameLen(append(deep, ":1\r\n"...)); err == nil {
		t.Error("FrameLen follows any nesting")
	}
}

// FuzzFrameLen checks that FrameLen and the merges never panic, and that a
// frame's length is within the bytes.
func FuzzFrameLen(f *testing.F) {
	for _, s := range []string{"*2\r\n$1\r\na\r\n_\r\n", "|1\r\n+a\r\n:1\r\n:2\r\n", "$3\r\nab", "*2\r\n$1\r\n0\r\n*0\r\n"} {
		f.Add([]byte(s))
	}
	table := redis70(f)
	mget := table.Split(fields("MGET a b"), nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := FrameLen(b)
		if err == nil && (n <= 0 || n > len(b)) {
			t.Fatalf("FrameLen(%q) = %d", b, n)
		}
		two := [][]byte{b, b}
		_, _ = mget.Merge(two)
		_, _ = MergeKeys(two)
		_, _ = MergeDBSize(two)
		_, _ = MergeFlush(two)
		_, _ = MergeRandomKey(two, 3)
		_, _ = MergeInfoKeyspace(two)
		_, _ = ScanReply(0, 2, b)
	})
}
