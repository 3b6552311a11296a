package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// parseArenaAll parses every request in buf with an arena, as clientReader.next
// does for one batch.
func parseArenaAll(t testing.TB, buf []byte, arena *[][]byte) []Command {
	var cmds []Command
	for len(buf) > 0 {
		cmd, n, _, err := parseRequest(buf, RequestLimits{}, arena)
		if err != nil || n == 0 {
			t.Fatalf("parseRequest: n=%d err=%v", n, err)
		}
		cmds = append(cmds, cmd)
		buf = buf[n:]
	}
	return cmds
}

func encodeCmd(args ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.Bytes()
}

// TestParseArena checks that commands parsed into one arena keep their own
// arguments: across the arena's growth, beside a command too long for the
// arena (a slice of its own), and that they match ParseRequest's.
func TestParseArena(t *testing.T) {
	var pipeline [][]string
	var buf []byte
	for i := range 600 {
		args := []string{"set", fmt.Sprintf("key:%d", i), strings.Repeat("v", i%7)}
		switch {
		case i%50 == 7:
			args = []string{"mget"}
			for k := range arenaMaxArgs + 5 {
				args = append(args, fmt.Sprintf("k%d", k))
			}
		case i%3 == 0:
			args = []string{"ping"}
		}
		pipeline = append(pipeline, args)
		buf = append(buf, encodeCmd(args...)...)
	}
	var arena [][]byte
	cmds := parseArenaAll(t, buf, &arena)
	if len(cmds) != len(pipeline) {
		t.Fatalf("%d commands, want %d", len(cmds), len(pipeline))
	}
	for i, cmd := range cmds {
		want := pipeline[i]
		if len(cmd.Args) != len(want) || cap(cmd.Args) != len(want) {
			t.Fatalf("command %d: %d args (cap %d), want %d", i, len(cmd.Args), cap(cmd.Args), len(want))
		}
		for k := range want {
			if string(cmd.Args[k]) != want[k] {
				t.Fatalf("command %d arg %d = %q, want %q", i, k, cmd.Args[k], want[k])
			}
		}
		plain, _, _, _ := ParseRequest(cmd.Raw, RequestLimits{})
		if !bytes.Equal(plain.Raw, cmd.Raw) || len(plain.Args) != len(cmd.Args) {
			t.Fatalf("command %d differs from ParseRequest's", i)
		}
	}
	// Appending to one command's Args must not reach the next one's.
	first := cmds[1].Args
	_ = append(first, []byte("x"))
	if string(cmds[2].Args[0]) != pipeline[2][0] {
		t.Fatalf("appending to command 1's Args changed command 2's")
	}
}

// TestParseArenaAllocs checks that a pipeline of short commands parsed
// into a warm arena allocates nothing.
func TestParseArenaAllocs(t *testing.T) {
	var buf []byte
	for i := range 16 {
		buf = append(buf, encodeCmd("set", fmt.Sprintf("key:%d", i), "xxx")...)
	}
	var arena [][]byte
	parseArenaAll(t, buf, &arena)
	allocs := testing.AllocsPerRun(100, func() {
		arena = arena[:0]
		for b := buf; len(b) > 0; {
			_, n, _, _ := parseRequest(b, RequestLimits{}, &arena)
			b = b[n:]
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per 16-command pipeline, want 0", allocs)
	}
}
