package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

var update = flag.Bool("update", false, "rewrite testdata/command-7.0.json from the real server's COMMAND reply")

// TestAgainstCluster checks the package against a real 3+3 Redis Cluster:
// Slot against CLUSTER KEYSLOT, the map from CLUSTER SHARDS against CLUSTER
// SLOTS and CLUSTER NODES (before and after a kill -9 of a master), Fetch's
// choice of seeds, and Keys against COMMAND GETKEYS.
func TestAgainstCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := topology.StartCluster(ctx, topology.ClusterOptions{})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	node := c.Nodes()[0].Client()

	t.Run("slot equals CLUSTER KEYSLOT", func(t *testing.T) { slotVersusKeyslot(ctx, t, node) })
	t.Run("map", func(t *testing.T) { compareMaps(ctx, t, c) })
	t.Run("keys equal COMMAND GETKEYS", func(t *testing.T) { keysVersusGetkeys(ctx, t, c) })
	t.Run("map after kill -9", func(t *testing.T) { mapAfterKill(ctx, t, c) })
}

// slotVersusKeyslot compares Slot with CLUSTER KEYSLOT for 4000 random
// keys rich in braces, and a few fixed ones.
func slotVersusKeyslot(ctx context.Context, t *testing.T, node *redis.Client) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"", "{}", "{{a}}", "a{b}{c}", "{}{a}", "{a", "a}", "foo", "{user1000}.following", "\x00\xff"}
	const alphabet = "{}ab\x00\xff\xc3\xa9 "
	for range 4000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = byte(rng.IntN(256))
			} else {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		keys = append(keys, string(b))
	}
	pipe := node.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.ClusterKeySlot(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	bad := 0
	for i, k := range keys {
		if got, want := cluster.Slot([]byte(k)), cmds[i].Val(); int64(got) != want {
			bad++
			if bad <= 10 {
				t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT = %d", k, got, want)
			}
		}
	}
	t.Logf("%d keys compared, %d differ", len(keys), bad)
}

// compareMaps checks that Fetch (CLUSTER SHARDS), ParseSlots (CLUSTER
// SLOTS) and the topology's CLUSTER NODES view agree on every slot's master
// and each master's replicas.
func compareMaps(ctx context.Context, t *testing.T, c *topology.Cluster) {
	m, src, err := cluster.Fetch(ctx, c.Addrs(), cluster.FetchOptions{})
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if src.Command != "CLUSTER SHARDS" || !slices.Contains(c.Addrs(), src.Addr) {
		t.Errorf("Fetch source = %+v, want CLUSTER SHARDS from a seed", src)
	}
	if u := m.Unassigned(); len(u) != 0 {
		t.Errorf("Unassigned() = %v, want none", u)
	}
	slotsMap := slotsFrom(ctx, t, c.Nodes()[1])
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("topology shards: %v", err)
	}
	want := make(map[uint16]string)
	wantReplicas := make(map[string][]string)
	for _, sh := range shards {
		for _, r := range sh.Slots {
			for s := r[0]; s <= r[1]; s++ {
				want[uint16(s)] = sh.Master.Addr
			}
		}
		for _, r := range sh.Replicas {
			wantReplicas[sh.Master.Addr] = append(wantReplicas[sh.Master.Addr], r.Addr)
		}
	}
	for s := range uint16(cluster.Slots) {
		a, okA := m.Lookup(s)
		b, okB := slotsMap.Lookup(s)
		if !okA || !okB || a != want[s] || b != want[s] {
			t.Fatalf("slot %d: SHARDS %q %v, SLOTS %q %v, CLUSTER NODES %q", s, a, okA, b, okB, want[s])
		}
	}
	if got := m.Masters(); len(got) != 3 || !slices.Equal(got, slotsMap.Masters()) {
		t.Errorf("Masters(): SHARDS %v, SLOTS %v; want the same 3", got, slotsMap.Masters())
	}
	for _, mp := range []*cluster.Map{m, slotsMap} {
		for _, sh := range mp.Shards {
			got := replicaAddrs(sh)
			if !slices.Equal(got, sorted(wantReplicas[sh.Master.Addr])) || !sh.Master.Online() {
				t.Errorf("shard of %s: replicas %v, master health %q; want %v online",
					sh.Master.Addr, got, sh.Master.Health, wantReplicas[sh.Master.Addr])
			}
			if sh.Master.ID != c.ID(c.NodeByAddr(sh.Master.Addr)) {
				t.Errorf("shard of %s: ID %s, want %s", sh.Master.Addr, sh.Master.ID, c.ID(c.NodeByAddr(sh.Master.Addr)))
			}
		}
	}
}

// mapAfterKill kills a master and checks what CLUSTER SHARDS and CLUSTER
// SLOTS say once its replica took over, and that Fetch skips a dead seed.
func mapAfterKill(ctx context.Context, t *testing.T, c *topology.Cluster) {
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatalf("shards: %v", err)
	}
	victim, replica := shards[0].Master, shards[0].Replicas[0]
	if err := victim.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if err := c.WaitStable(ctx); err != nil {
		t.Fatalf("not stable after the kill: %v", err)
	}
	m, src, err := cluster.Fetch(ctx, []string{victim.Addr, replica.Addr}, cluster.FetchOptions{DialTimeout: time.Second})
	if err != nil || src.Addr != replica.Addr {
		t.Fatalf("Fetch with a dead seed first = %+v, %v; want an answer from %s", src, err, replica.Addr)
	}
	slot := uint16(shards[0].Slots[0][0])
	if got, ok := m.Lookup(slot); !ok || got != replica.Addr {
		t.Errorf("Lookup(%d) after the kill = %q, %v; want %s", slot, got, ok, replica.Addr)
	}
	var dead *cluster.Shard
	for i, sh := range m.Shards {
		if sh.Master.Addr == victim.Addr {
			dead = &m.Shards[i]
		}
	}
	if dead == nil || len(dead.Slots) != 0 || dead.Master.Online() {
		t.Errorf("CLUSTER SHARDS lists the killed master as %+v; want a shard without slots, not online", dead)
	} else {
		t.Logf("CLUSTER SHARDS lists the killed master %s as role %q health %q with no slots", victim.Name, dead.Master.Role, dead.Master.Health)
	}
	slotsMap := slotsFrom(ctx, t, replica)
	for s := range uint16(cluster.Slots) {
		a, _ := m.Lookup(s)
		if b, _ := slotsMap.Lookup(s); a != b {
			t.Fatalf("slot %d: SHARDS %q, SLOTS %q", s, a, b)
		}
	}
	if _, _, err := cluster.Fetch(ctx, []string{victim.Addr}, cluster.FetchOptions{DialTimeout: time.Second}); err == nil || !strings.Contains(err.Error(), victim.Addr) {
		t.Errorf("Fetch from a dead seed only: %v, want an error naming %s", err, victim.Addr)
	}
}

// slotsFrom parses CLUSTER SLOTS from n.
func slotsFrom(ctx context.Context, t *testing.T, n *topology.Node) *cluster.Map {
	t.Helper()
	reply, err := n.Client().Do(ctx, "cluster", "slots").Result()
	if err != nil {
		t.Fatalf("cluster slots: %v", err)
	}
	m, err := cluster.ParseSlots(reply, cluster.ParseOptions{From: n.Addr})
	if err != nil {
		t.Fatalf("parse cluster slots: %v", err)
	}
	return m
}

func replicaAddrs(sh cluster.Shard) []string {
	var out []string
	for _, r := range sh.Replicas {
		if r.Online() {
			out = append(out, r.Addr)
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// keysVersusGetkeys compares Keys with COMMAND GETKEYS for a list of
// command lines, then for every command and subcommand of the server with
// made-up arguments of the command's arity.
func keysVersusGetkeys(ctx context.Context, t *testing.T, c *topology.Cluster) {
	node := c.Nodes()[0].Client()
	reply, err := node.Do(ctx, "command").Result()
	if err != nil {
		t.Fatalf("COMMAND: %v", err)
	}
	if *update {
		writeCommandJSON(t, reply)
	}
	table, err := cluster.FetchCommands(ctx, c.Addrs(), cluster.FetchOptions{})
	if err != nil {
		t.Fatalf("fetch commands: %v", err)
	}
	unresolvable := table.Unresolvable()
	t.Logf("%d commands; Keys cannot resolve: %v", len(table), unresolvable)

	lines := slices.Clone(commandLines)
	for name, cmd := range table {
		if cmd.HasSubcommands {
			continue
		}
		n := max(cmd.Arity, -cmd.Arity)
		args := strings.Split(name, "|")
		for i := len(args); i < n; i++ {
			args = append(args, "a"+strconv.Itoa(i))
		}
		lines = append(lines, strings.Join(args, " "))
	}
	checked, skipped := 0, 0
	for _, line := range lines {
		args := strings.Fields(line)
		got, ok := table.Keys(toBytes(args))
		want, gerr := getkeys(ctx, node, args)
		name := strings.ToLower(args[0])
		if cmd := table.Lookup(toBytes(args)); cmd != nil {
			name = cmd.Name
		}
		switch {
		case !ok && table.Lookup(toBytes(args)) == nil && gerr != nil:
			skipped++ // unknown to both
		case !ok && slices.Contains(unresolvable, name):
			skipped++ // the caller must ask the server: nothing to compare
		case !ok:
			t.Errorf("%s: Keys cannot tell, and %s is not listed by Unresolvable (GETKEYS: %q %v)", line, name, want, gerr)
		case gerr != nil && len(got) != 0:
			t.Errorf("%s: Keys = %q, COMMAND GETKEYS: %v", line, got, gerr)
		case gerr == nil && !slices.Equal(fromBytes(got), want):
			t.Errorf("%s: Keys = %q, COMMAND GETKEYS = %q", line, got, want)
		default:
			checked++
		}
	}
	t.Logf("%d command lines agree with COMMAND GETKEYS, %d unresolvable by design or unknown", checked, skipped)
	if got, _ := table.ShardChannels(toBytes([]string{"SPUBLISH", "ch", "msg"})); len(got) != 1 || string(got[0]) != "ch" {
		t.Errorf("ShardChannels(SPUBLISH ch msg) = %q, want [ch]", got)
	}
}

// commandLines are the hand-picked cases: every kind of key spec, and
// malformed lines Redis refuses.
var commandLines = []string{
	"GET k", "SET k v", "SET k v GET", "get k", "MSET a 1 b 2 c 3", "MGET a b c", "DEL a b c",
	"UNLINK a b", "EXISTS a b", "TOUCH a b", "EVAL s 2 a b x y", "EVAL s 0", "EVAL s 0 x",
	"EVALSHA sha 1 a", "EVAL_RO s 1 a arg", "FCALL f 2 a b arg", "FCALL_RO f 1 a", "FCALL f 0",
	"ZUNIONSTORE dst 2 a b WEIGHTS 1 2", "ZINTERSTORE dst 3 a b c AGGREGATE SUM", "ZUNION 2 a b",
	"ZDIFF 2 a b WITHSCORES", "ZDIFFSTORE dst 2 a b", "SINTERCARD 2 a b LIMIT 3",
	"XREAD COUNT 2 STREAMS s1 s2 0 0", "XREAD STREAMS s1 0", "XREAD BLOCK 0 STREAMS s1 s2 s3 1 2 3",
	"XREADGROUP GROUP g c COUNT 1 STREAMS s1 s2 > >", "XREAD STREAMS s1 s2 0",
	"BLMPOP 0 2 a b LEFT COUNT 2", "LMPOP 2 a b RIGHT", "ZMPOP 1 z MIN", "BZMPOP 1 2 z1 z2 MAX",
	"LMOVE src dst LEFT RIGHT", "BLMOVE src dst LEFT RIGHT 0", "RPOPLPUSH a b", "BRPOPLPUSH a b 0",
	"BLPOP a b c 0", "BZPOPMIN a b 0", "OBJECT ENCODING k", "object freq k", "OBJECT HELP",
	"XINFO STREAM s FULL", "XINFO GROUPS s", "XGROUP CREATE s g $ MKSTREAM", "MEMORY USAGE k SAMPLES 5",
	"RENAME a b", "COPY a b", "SMOVE a b m", "GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km",
	"GEORADIUS_RO k 0 0 1 km", "GEORADIUS k 0 0 1 km", "GEORADIUS k 0 0 1 km STORE dst",
	"BITOP AND dst a b", "BITFIELD k GET u8 0", "BITFIELD_RO k GET u8 0", "PFCOUNT a b",
	"PFMERGE dst a b", "LCS a b", "SORT k", "SORT k LIMIT 0 1 STORE dst", "SORT_RO k", "SORT_RO k BY w GET #",
	"SORT k BY w LIMIT 0 1 GET # STORE dst", "sort k store a STORE b", "SORT k LIMIT store 1 GET store",
	"SORT k STORE", "SORT k STORE store x",
	"MIGRATE h 1 k 0 1000", "MIGRATE h 1 \"\" 0 1000 KEYS a b", "WATCH a b", "SUBSCRIBE ch",
	"SPUBLISH ch msg", "PING", "DBSIZE", "GETEX k EX 10", "SET k v EX 10", "XADD s * f v",
	"XAUTOCLAIM s g c 0 0", "XTRIM s MAXLEN 10", "HSET h f v", "EXPIRE k 10", "DUMP k",
	// Refused by Redis: no keys.
	"EVAL s 3 a", "EVAL s x a", "EVAL s -1 a", "ZUNIONSTORE dst x a", "ZUNION 0 a", "GET", "GET a b",
	"BLMPOP 0 5 a LEFT", "XREAD COUNT 1", "NOSUCHCOMMAND k",
}

// getkeys runs COMMAND GETKEYS.
func getkeys(ctx context.Context, node *redis.Client, args []string) ([]string, error) {
	a := []any{"command", "getkeys"}
	for _, s := range args {
		a = append(a, s)
	}
	return node.Do(ctx, a...).StringSlice()
}

func toBytes(s []string) [][]byte {
	out := make([][]byte, len(s))
	for i, x := range s {
		out[i] = []byte(x)
	}
	return out
}

func fromBytes(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}

// writeCommandJSON stores the COMMAND reply as JSON for the unit tests:
// strings as strings, integers as numbers, arrays as arrays, nil as null.
func writeCommandJSON(t *testing.T, reply any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(reply); err != nil {
		t.Fatalf("encode COMMAND reply: %v", err)
	}
	if err := os.WriteFile("testdata/command-7.0.json", buf.Bytes(), 0o644); err != nil {
		t.Fatalf("write testdata: %v", err)
	}
	t.Logf("wrote testdata/command-7.0.json (%d bytes)", buf.Len())
}
