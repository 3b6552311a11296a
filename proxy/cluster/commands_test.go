package cluster

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// redis70 is the COMMAND reply of Redis 7.0.15 (go test -run
// TestAgainstCluster -update rewrites it), as go-redis decodes it.
func redis70(t testing.TB) Table {
	t.Helper()
	b, err := os.ReadFile("testdata/command-7.0.json")
	if err != nil {
		t.Fatalf("read testdata: %v", err)
	}
	reply, err := decodeJSON(b)
	if err != nil {
		t.Fatalf("decode testdata: %v", err)
	}
	table, err := ParseCommands(reply)
	if err != nil {
		t.Fatalf("ParseCommands: %v", err)
	}
	return table
}

// decodeJSON turns JSON into the tree go-redis gives: numbers as int64.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	var conv func(any) any
	conv = func(v any) any {
		switch x := v.(type) {
		case json.Number:
			if i, err := x.Int64(); err == nil {
				return i
			}
			return x.String()
		case []any:
			for i := range x {
				x[i] = conv(x[i])
			}
		case map[string]any:
			m := make(map[any]any, len(x))
			for k, e := range x {
				m[k] = conv(e)
			}
			return m
		}
		return v
	}
	return conv(v), nil
}

// TestParseCommandsRedis70 checks the parsed real table: entries,
// subcommands, the legacy range and what cannot be resolved.
func TestParseCommandsRedis70(t *testing.T) {
	table := redis70(t)
	if len(table) < 300 {
		t.Fatalf("%d commands parsed, want the full 7.0 table (366)", len(table))
	}
	get := table["get"]
	if get == nil || get.Arity != 2 || get.FirstKey != 1 || get.LastKey != 1 || get.Step != 1 ||
		!slices.Contains(get.Flags, "readonly") || len(get.KeySpecs) != 1 {
		t.Errorf("get = %+v", get)
	}
	if o := table["object"]; o == nil || !o.HasSubcommands {
		t.Errorf("object = %+v, want a container", o)
	}
	if e := table["object|encoding"]; e == nil || e.Arity != 3 || e.KeySpecs[0].Index != 2 {
		t.Errorf("object|encoding = %+v", e)
	}
	x := table["xread"].KeySpecs[0]
	if x.BeginSearch != "keyword" || x.Keyword != "STREAMS" || x.StartFrom != 1 || x.FindKeys != "range" ||
		x.LastKey != -1 || x.Limit != 2 || x.KeyStep != 1 {
		t.Errorf("xread key spec = %+v", x)
	}
	if got := table.Unresolvable(); !slices.Equal(got, []string{"migrate"}) {
		t.Errorf("Unresolvable() = %v, want [migrate]", got)
	}
}

// TestKeys checks Keys on the real 7.0 table for every kind of key spec.
// The integration test checks the same against COMMAND GETKEYS.
func TestKeys(t *testing.T) {
	table := redis70(t)
	tests := []struct {
		line string
		want string // keys joined by spaces; "-" means ok is false
	}{
		{"GET k", "k"},
		{"get K", "K"},
		{"SET k v EX 10 GET", "k"},
		{"MSET a 1 b 2 c 3", "a b c"},
		{"MGET a b c", "a b c"},
		{"DEL a b", "a b"},
		{"EXISTS a a", "a a"},
		{"EVAL s 2 a b x y", "a b"},
		{"EVAL s 0", ""},
		{"FCALL f 1 a x", "a"},
		{"ZUNIONSTORE dst 2 a b WEIGHTS 1 2", "dst a b"},
		{"ZINTER 2 a b", "a b"},
		{"SINTERCARD 2 a b LIMIT 1", "a b"},
		{"XREAD COUNT 2 STREAMS s1 s2 0 0", "s1 s2"},
		{"xread block 0 streams s1 $", "s1"},
		{"XREADGROUP GROUP g c STREAMS s1 s2 > >", "s1 s2"},
		{"BLMPOP 0 2 a b LEFT COUNT 2", "a b"},
		{"LMPOP 1 a LEFT", "a"},
		{"BZMPOP 1 2 z1 z2 MIN", "z1 z2"},
		{"LMOVE src dst LEFT RIGHT", "src dst"},
		{"BLPOP a b 0", "a b"},
		{"OBJECT ENCODING k", "k"},
		{"object Freq k", "k"},
		{"OBJECT HELP", ""},
		{"OBJECT NOSUCH k", ""},
		{"XINFO STREAM s FULL", "s"},
		{"GEORADIUS k 0 0 1 km STORE dst", "k dst"},
		{"GEORADIUS k 0 0 1 km STOREDIST d2", "k d2"},
		{"SORT k", "k"},
		{"SORT k BY w LIMIT 0 1 GET # STORE dst", "k dst"},
		{"SORT k STORE a STORE b", "k b"},
		{"SORT_RO k BY w GET #", "k"},
		{"MIGRATE h 1 k 0 1000", "k"},
		{"MIGRATE h 1 \"\" 0 1000 KEYS a b", "-"},
		{"PING", ""},
		{"SPUBLISH ch m", ""},
		{"NOSUCHCOMMAND k", "-"},
		// Refused by Redis before the keys matter: no keys.
		{"GET", ""},
		{"GET a b", ""},
		{"EVAL s 3 a", ""},
		{"EVAL s x a", ""},
		{"EVAL s 01 a", ""},
		{"ZUNIONSTORE dst 9 a", ""},
	}
	for _, tc := range tests {
		keys, ok := table.Keys(fields(tc.line))
		got := "-"
		if ok {
			got = string(bytes.Join(keys, []byte(" ")))
		}
		if got != tc.want {
			t.Errorf("Keys(%s) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestShardChannels checks the not_key specs of the sharded pub/sub
// commands.
func TestShardChannels(t *testing.T) {
	table := redis70(t)
	tests := []struct{ line, want string }{
		{"SPUBLISH ch msg", "ch"},
		{"SSUBSCRIBE a b", "a b"},
		{"SUNSUBSCRIBE", ""},
		{"GET k", ""},
		{"PUBLISH ch msg", ""},
	}
	for _, tc := range tests {
		ch, ok := table.ShardChannels(fields(tc.line))
		if got := string(bytes.Join(ch, []byte(" "))); !ok || got != tc.want {
			t.Errorf("ShardChannels(%s) = %q, %v; want %q", tc.line, got, ok, tc.want)
		}
	}
}

// TestParseCommandsShapes checks older and RESP3 replies and the rules
// that only show there: the legacy range, movablekeys without specs, a
// backwards keyword search, an incomplete spec.
func TestParseCommandsShapes(t *testing.T) {
	spec := func(flags []any, bs, fk map[any]any) map[any]any {
		return map[any]any{"flags": flags, "begin_search": bs, "find_keys": fk}
	}
	reply := []any{
		// Redis 6: seven elements, no key specs.
		[]any{"mset", int64(-3), []any{"write"}, int64(1), int64(-1), int64(2), []any{"@write"}},
		[]any{"eval", int64(-3), []any{"noscript", "movablekeys"}, int64(0), int64(0), int64(0)},
		// Redis 7 in RESP3: maps.
		[]any{"tail", int64(-2), []any{}, int64(0), int64(0), int64(0), []any{}, []any{}, []any{
			spec([]any{"RO"},
				map[any]any{"type": "keyword", "spec": map[any]any{"keyword": "KEYS", "startfrom": int64(-1)}},
				map[any]any{"type": "range", "spec": map[any]any{"lastkey": int64(-1), "keystep": int64(1), "limit": int64(0)}}),
		}, []any{}},
		[]any{"part", int64(-2), []any{}, int64(0), int64(0), int64(0), []any{}, []any{}, []any{
			spec([]any{"RW", "incomplete"},
				map[any]any{"type": "index", "spec": map[any]any{"index": int64(1)}},
				map[any]any{"type": "range", "spec": map[any]any{"lastkey": int64(0), "keystep": int64(1), "limit": int64(0)}}),
		}, []any{}},
		nil, // COMMAND INFO of an unknown name
	}
	table, err := ParseCommands(reply)
	if err != nil {
		t.Fatalf("ParseCommands: %v", err)
	}
	tests := []struct{ line, want string }{
		{"MSET a 1 b 2", "a b"},
		{"MSET a 1 b", "a b"}, // as Redis's legacy range: position 3 is a key
		{"EVAL s 1 k", "-"},
		{"TAIL x KEYS a b", "a b"},
		{"TAIL keys KEYS a", "a"}, // backwards from the end: the last KEYS
		{"TAIL a b", ""},          // no keyword: no keys
		{"TAIL x KEYS", ""},       // keyword last: out of bounds
		{"PART k", "-"},           // incomplete
	}
	for _, tc := range tests {
		keys, ok := table.Keys(fields(tc.line))
		got := "-"
		if ok {
			got = string(bytes.Join(keys, []byte(" ")))
		}
		if got != tc.want {
			t.Errorf("Keys(%s) = %q, want %q", tc.line, got, tc.want)
		}
	}
	if got := table.Unresolvable(); !slices.Equal(got, []string{"eval", "part"}) {
		t.Errorf("Unresolvable() = %v, want [eval part]", got)
	}
}

// TestParseCommandsErrors checks that malformed replies are reported.
func TestParseCommandsErrors(t *testing.T) {
	good := func() []any {
		return []any{"get", int64(2), []any{"readonly"}, int64(1), int64(1), int64(1), []any{}, []any{},
			[]any{[]any{"flags", []any{"RO"}, "begin_search", []any{"type", "index", "spec", []any{"index", int64(1)}},
				"find_keys", []any{"type", "range", "spec", []any{"lastkey", int64(0), "keystep", int64(1), "limit", int64(0)}}}},
			[]any{}}
	}
	tests := []struct {
		name  string
		reply any
		want  string
	}{
		{"not an array", "OK", "want an array"},
		{"short entry", []any{[]any{"get", int64(2)}}, "at least 6"},
		{"name not a string", []any{[]any{int64(1), int64(2), []any{}, int64(1), int64(1), int64(1)}}, "name"},
		{"arity not a number", func() any { e := good(); e[1] = "x"; return []any{e} }(), "integer"},
		{"odd key spec map", func() any { e := good(); e[8] = []any{[]any{"flags"}}; return []any{e} }(), "pairs"},
		{"bad begin_search type", func() any {
			e := good()
			e[8] = []any{[]any{"flags", []any{}, "begin_search", []any{"type", "sideways", "spec", []any{}},
				"find_keys", []any{"type", "unknown", "spec", []any{}}}}
			return []any{e}
		}(), "sideways"},
		{"zero key step", func() any {
			e := good()
			e[8] = []any{[]any{"flags", []any{}, "begin_search", []any{"type", "index", "spec", []any{"index", int64(1)}},
				"find_keys", []any{"type", "range", "spec", []any{"lastkey", int64(0), "keystep", int64(0), "limit", int64(0)}}}}
			return []any{e}
		}(), "key step"},
	}
	if _, err := ParseCommands([]any{good()}); err != nil {
		t.Fatalf("the good entry fails: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCommands(tc.reply)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseCommands = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestLookupAllocations checks that finding a command's entry and keys
// does not allocate for a command with fixed positions.
func TestLookupAllocations(t *testing.T) {
	table := redis70(t)
	args := fields("GET somekey")
	if n := testing.AllocsPerRun(100, func() { table.Lookup(args) }); n != 0 {
		t.Errorf("Lookup allocates %.0f times", n)
	}
}

// FuzzKeys checks that Keys never panics on the real table and only
// returns arguments of the command line, never its name.
func FuzzKeys(f *testing.F) {
	table := redis70(f)
	for _, s := range []string{"GET k", "EVAL s 2 a b", "XREAD STREAMS a b 0 0", "SORT k STORE d",
		"BLMPOP 0 2 a b LEFT", "OBJECT ENCODING k", "MIGRATE h 1 \"\" 0 1 KEYS a", "ZUNIONSTORE d -1 a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := fields(line)
		keys, ok := table.Keys(args)
		if !ok && keys != nil {
			t.Fatalf("Keys(%q) = %q with ok false", line, keys)
		}
		for _, k := range keys {
			found := false
			for _, a := range args[1:] {
				if len(a) == len(k) && (len(k) == 0 || &a[0] == &k[0]) {
					found = true
				}
			}
			if !found {
				t.Fatalf("Keys(%q) returned %q, not one of its arguments", line, k)
			}
		}
		_, _ = table.ShardChannels(args)
	})
}

func fields(line string) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(line) {
		out = append(out, []byte(f))
	}
	return out
}

// FuzzParseCommands feeds JSON-shaped COMMAND replies to ParseCommands and
// the command lines of the seed corpus to the tables it accepts: nothing
// may panic, whatever positions a reply declares.
func FuzzParseCommands(f *testing.F) {
	f.Add([]byte(`[["get",2,["readonly"],1,1,1,[],[],[["flags",["RO"],"begin_search",["type","index","spec",["index",1]],"find_keys",["type","range","spec",["lastkey",0,"keystep",1,"limit",0]]]],[]]]`), "get k")
	f.Add([]byte(`[["eval",-3,[],0,0,0,[],[],[["flags",["RW"],"begin_search",["type","index","spec",["index",2]],"find_keys",["type","keynum","spec",["keynumidx",0,"firstkey",1,"keystep",1]]]],[]]]`), "eval s 2 a b")
	f.Add([]byte(`[["x",-2,[],0,0,0,[],[],[["flags",[],"begin_search",["type","keyword","spec",["keyword","K","startfrom",-1]],"find_keys",["type","range","spec",["lastkey",-1,"keystep",2,"limit",3]]]],[]]]`), "x a K b c d")
	f.Add([]byte(`[["m",-3,["movablekeys"],1,-1,2]]`), "m a b c d")
	f.Fuzz(func(t *testing.T, reply []byte, line string) {
		v, err := decodeJSON(reply)
		if err != nil {
			return
		}
		table, err := ParseCommands(v)
		if err != nil {
			return
		}
		args := fields(line)
		if keys, ok := table.Keys(args); !ok && keys != nil {
			t.Fatalf("Keys(%q) = %q with ok false", line, keys)
		}
		_, _ = table.ShardChannels(args)
		_ = table.Unresolvable()
	})
}
