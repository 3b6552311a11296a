package cluster

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// node70 is a node of CLUSTER SHARDS as Redis 7.0.15 sends it in RESP2.
func node70(id string, port int64, role, health string, offset int64) []any {
	return []any{"id", id, "port", port, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
		"role", role, "replication-offset", offset, "health", health}
}

// shards70 is CLUSTER SHARDS of a 3+3 cluster after a kill -9 of the
// master of 0-5460 (measured on 7.0.15): the dead master is a shard of its
// own without slots, health "fail"; its replica is master of 0-5460.
func shards70() []any {
	return []any{
		[]any{"slots", []any{}, "nodes", []any{node70("dead", 7001, "master", "fail", 14)}},
		[]any{"slots", []any{int64(10923), int64(16383)}, "nodes", []any{
			node70("m3", 7003, "master", "online", 28), node70("r3", 7004, "replica", "online", 28)}},
		[]any{"slots", []any{int64(5461), int64(10922)}, "nodes", []any{
			node70("m2", 7002, "master", "online", 28), node70("r2", 7006, "replica", "loading", 0)}},
		[]any{"slots", []any{int64(0), int64(5460)}, "nodes", []any{node70("r1", 7005, "master", "online", 14)}},
	}
}

// TestParseShards checks the map of a measured 7.0 reply.
func TestParseShards(t *testing.T) {
	m, err := ParseShards(shards70(), ParseOptions{From: "127.0.0.1:7003"})
	if err != nil {
		t.Fatalf("ParseShards: %v", err)
	}
	lookups := map[uint16]string{0: "127.0.0.1:7005", 5460: "127.0.0.1:7005", 5461: "127.0.0.1:7002",
		10922: "127.0.0.1:7002", 10923: "127.0.0.1:7003", 16383: "127.0.0.1:7003"}
	for slot, want := range lookups {
		if got, ok := m.Lookup(slot); !ok || got != want {
			t.Errorf("Lookup(%d) = %q, %v; want %q", slot, got, ok, want)
		}
	}
	if _, ok := m.Lookup(Slots); ok {
		t.Errorf("Lookup(16384) succeeded")
	}
	if got := m.Masters(); !slices.Equal(got, []string{"127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7005"}) {
		t.Errorf("Masters() = %v", got)
	}
	if u := m.Unassigned(); len(u) != 0 {
		t.Errorf("Unassigned() = %v, want none", u)
	}
	dead := m.Shards[0]
	if len(dead.Slots) != 0 || dead.Master.Online() || dead.Master.Health != "fail" || dead.Master.Addr != "127.0.0.1:7001" {
		t.Errorf("dead shard = %+v", dead)
	}
	sh, ok := m.Shard(6000)
	if !ok || sh.Master.ID != "m2" || len(sh.Replicas) != 1 || sh.Replicas[0].Online() ||
		sh.Replicas[0].Role != "replica" || sh.Replicas[0].Health != "loading" {
		t.Errorf("Shard(6000) = %+v, %v", sh, ok)
	}
	if sh, _ := m.Shard(16000); sh.Replicas[0].ReplicationOffset != 28 || sh.Replicas[0].Port != 7004 || !sh.Replicas[0].Online() {
		t.Errorf("Shard(16000) replica = %+v", sh.Replicas[0])
	}
}

// TestParseShardsRESP3 checks the same reply with RESP3 maps.
func TestParseShardsRESP3(t *testing.T) {
	pairs := func(a []any) map[any]any {
		m := make(map[any]any)
		for i := 0; i < len(a); i += 2 {
			m[a[i]] = a[i+1]
		}
		return m
	}
	var reply []any
	for _, sh := range shards70() {
		f := sh.([]any)
		var nodes []any
		for _, n := range f[3].([]any) {
			nodes = append(nodes, pairs(n.([]any)))
		}
		reply = append(reply, map[any]any{"slots": f[1], "nodes": nodes})
	}
	m, err := ParseShards(reply, ParseOptions{})
	if err != nil {
		t.Fatalf("ParseShards: %v", err)
	}
	if got, ok := m.Lookup(100); !ok || got != "127.0.0.1:7005" {
		t.Errorf("Lookup(100) = %q, %v", got, ok)
	}
}

// TestAddress checks how a listed node becomes an address to dial.
func TestAddress(t *testing.T) {
	tests := []struct {
		name string
		node []any
		opts ParseOptions
		want string
	}{
		{"ip endpoint", []any{"endpoint", "10.0.0.1", "port", int64(6379)}, ParseOptions{}, "10.0.0.1:6379"},
		{"hostname endpoint", []any{"endpoint", "redis-1.example", "hostname", "redis-1.example", "port", int64(6379)}, ParseOptions{}, "redis-1.example:6379"},
		{"NULL endpoint", []any{"endpoint", nil, "port", int64(7000)}, ParseOptions{From: "lb.example:6379"}, "lb.example:7000"},
		{"empty endpoint", []any{"endpoint", "", "port", int64(7000)}, ParseOptions{From: "[::1]:6379"}, "[::1]:7000"},
		{"unknown hostname", []any{"endpoint", "?", "port", int64(7000)}, ParseOptions{From: "x:1"}, ""},
		{"tls port", []any{"endpoint", "10.0.0.1", "port", int64(6379), "tls-port", int64(6380)}, ParseOptions{TLS: true}, "10.0.0.1:6380"},
		{"tls port only", []any{"endpoint", "10.0.0.1", "tls-port", int64(6380)}, ParseOptions{}, "10.0.0.1:6380"},
		{"ipv6", []any{"endpoint", "::1", "port", int64(6379)}, ParseOptions{}, "[::1]:6379"},
	}
	for _, tc := range tests {
		n, err := shardNode(append(tc.node, "role", "master"), tc.opts)
		if err != nil || n.Addr != tc.want {
			t.Errorf("%s: Addr = %q, %v; want %q", tc.name, n.Addr, err, tc.want)
		}
	}
	// A master without a dialable address serves no lookups.
	m, err := ParseShards([]any{[]any{"slots", []any{int64(0), int64(16383)}, "nodes", []any{[]any{"endpoint", "?", "port", int64(1), "role", "master"}}}}, ParseOptions{})
	if err != nil {
		t.Fatalf("ParseShards: %v", err)
	}
	if a, ok := m.Lookup(0); ok {
		t.Errorf("Lookup(0) = %q with endpoint \"?\", want not ok", a)
	}
}

// TestParseSlots checks CLUSTER SLOTS replies of 7.0 and older, and that
// a master's ranges are gathered into one shard.
func TestParseSlots(t *testing.T) {
	n := func(endpoint any, port int64, id string, meta ...any) []any {
		return []any{endpoint, port, id, meta}
	}
	reply := []any{
		[]any{int64(0), int64(99), n("127.0.0.1", 7001, "a"), n("127.0.0.1", 7004, "ra")},
		[]any{int64(100), int64(199), n("127.0.0.1", 7002, "b", "hostname", "host-b")},
		[]any{int64(200), int64(299), n("127.0.0.1", 7001, "a"), n("127.0.0.1", 7004, "ra")},
		[]any{int64(500), int64(500), n(nil, 7003, "c")},
		// Redis 3: no id.
		[]any{int64(600), int64(600), []any{"127.0.0.1", int64(7009)}},
	}
	m, err := ParseSlots(reply, ParseOptions{From: "10.1.1.1:7000"})
	if err != nil {
		t.Fatalf("ParseSlots: %v", err)
	}
	if len(m.Shards) != 4 {
		t.Fatalf("%d shards, want 4 (a's ranges gathered)", len(m.Shards))
	}
	a := m.Shards[0]
	if a.Master.ID != "a" || len(a.Slots) != 2 || a.Slots[1] != (SlotRange{200, 299}) || len(a.Replicas) != 1 ||
		a.Replicas[0].Role != "replica" || !a.Replicas[0].Online() || a.Master.IP != "127.0.0.1" {
		t.Errorf("shard a = %+v", a)
	}
	if m.Shards[1].Master.Hostname != "host-b" {
		t.Errorf("hostname of b = %q", m.Shards[1].Master.Hostname)
	}
	tests := map[uint16]string{0: "127.0.0.1:7001", 250: "127.0.0.1:7001", 150: "127.0.0.1:7002",
		500: "10.1.1.1:7003", 600: "127.0.0.1:7009"}
	for slot, want := range tests {
		if got, ok := m.Lookup(slot); !ok || got != want {
			t.Errorf("Lookup(%d) = %q, %v; want %q", slot, got, ok, want)
		}
	}
	want := []SlotRange{{300, 499}, {501, 599}, {601, 16383}}
	if got := m.Unassigned(); !slices.Equal(got, want) {
		t.Errorf("Unassigned() = %v, want %v", got, want)
	}
	if _, ok := m.Lookup(400); ok {
		t.Errorf("Lookup of an unassigned slot succeeded")
	}
	empty, err := ParseSlots([]any{}, ParseOptions{})
	if err != nil || !slices.Equal(empty.Unassigned(), []SlotRange{{0, 16383}}) {
		t.Errorf("empty map: %v, unassigned %v", err, empty.Unassigned())
	}
}

// TestParseMapErrors checks that malformed replies are reported.
func TestParseMapErrors(t *testing.T) {
	master := func(port int64) []any { return []any{"127.0.0.1", port, "id"} }
	tests := []struct {
		name  string
		parse func(any, ParseOptions) (*Map, error)
		reply any
		want  string
	}{
		{"shards not an array", ParseShards, "x", "want an array"},
		{"odd slots", ParseShards, []any{[]any{"slots", []any{int64(1)}, "nodes", []any{}}}, "pairs"},
		{"slot out of range", ParseShards, []any{[]any{"slots", []any{int64(0), int64(16384)}, "nodes", []any{}}}, "bad slot range"},
		{"reversed range", ParseShards, []any{[]any{"slots", []any{int64(9), int64(1)}, "nodes", []any{}}}, "bad slot range"},
		{"slot twice", ParseShards, []any{
			[]any{"slots", []any{int64(0), int64(10)}, "nodes", []any{}},
			[]any{"slots", []any{int64(10), int64(20)}, "nodes", []any{}}}, "slot 10 listed twice"},
		{"bad port", ParseShards, []any{[]any{"slots", []any{}, "nodes", []any{[]any{"port", "x"}}}}, "port"},
		{"slots entry short", ParseSlots, []any{[]any{int64(0), int64(1)}}, "want start, end, master"},
		{"slots node short", ParseSlots, []any{[]any{int64(0), int64(1), []any{"127.0.0.1"}}}, "endpoint, port"},
		{"slots twice", ParseSlots, []any{[]any{int64(0), int64(5), master(1)}, []any{int64(5), int64(6), master(2)}}, "slot 5 listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.parse(tc.reply, ParseOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzParseShards feeds JSON-shaped replies to both parsers: they must
// not panic, and a Map they return must be consistent: Lookup names the
// master of the shard whose ranges hold the slot.
func FuzzParseShards(f *testing.F) {
	seed, _ := json.Marshal(shards70())
	f.Add(seed)
	f.Add([]byte(`[[0,5460,["127.0.0.1",7000,"a",[]],["127.0.0.1",7003,"b",[]]]]`))
	f.Add([]byte(`[{"slots":[0,1],"nodes":[{"endpoint":null,"port":1,"role":"master"}]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		reply, err := decodeJSON(b)
		if err != nil {
			return
		}
		for _, parse := range []func(any, ParseOptions) (*Map, error){ParseShards, ParseSlots} {
			m, err := parse(reply, ParseOptions{From: "127.0.0.1:1"})
			if err != nil {
				continue
			}
			for s := range uint16(Slots) {
				sh, ok := m.Shard(s)
				addr, lok := m.Lookup(s)
				if !ok {
					if lok {
						t.Fatalf("slot %d: Lookup %q without a shard", s, addr)
					}
					continue
				}
				in := false
				for _, r := range sh.Slots {
					in = in || (r.Start <= s && s <= r.End)
				}
				if !in || (lok && addr != sh.Master.Addr) {
					t.Fatalf("slot %d: shard %+v, Lookup %q", s, sh, addr)
				}
			}
		}
	})
}
