package proxy

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		cmd  string
		want cmdKind
	}{
		{"GET k", kindPlain},
		{"get k", kindPlain},
		{"QUIT", kindQuit},
		{"AUTH pw", kindAuth},
		{"auth user pw", kindAuth},
		{"HELLO 3 AUTH u p", kindHello},
		{"SELECT 2", kindSelect},
		{"RESET", kindReset},
		{"MULTI", kindMulti},
		{"EXEC", kindExec},
		{"DISCARD", kindDiscard},
		{"WATCH a b", kindWatch},
		{"UNWATCH", kindUnwatch},
		{"BLPOP q 0", kindBlocking},
		{"BRPOP q 0", kindBlocking},
		{"BRPOPLPUSH a b 0", kindBlocking},
		{"BLMOVE a b LEFT RIGHT 0", kindBlocking},
		{"BLMPOP 0 1 a LEFT", kindBlocking},
		{"BZPOPMIN z 0", kindBlocking},
		{"BZPOPMAX z 0", kindBlocking},
		{"BZMPOP 0 1 z MIN", kindBlocking},
		{"WAIT 1 0", kindBlocking},
		{"XREAD BLOCK 0 STREAMS s $", kindBlocking},
		{"xreadgroup GROUP g c block 100 STREAMS s >", kindBlocking},
		{"XREAD COUNT 1 STREAMS block 0", kindPlain}, // "block" is a stream name here
		{"XREAD STREAMS s 0", kindPlain},
		{"SUBSCRIBE c", kindDuplex},
		{"PSUBSCRIBE c*", kindDuplex},
		{"SSUBSCRIBE c", kindDuplex},
		{"UNSUBSCRIBE", kindDuplex},
		{"MONITOR", kindDuplex},
		{"CLIENT TRACKING ON", kindDuplex},
		{"CLIENT TRACKING off", kindPlain},
		{"CLIENT SETNAME app", kindPin},
		{"CLIENT ID", kindPin},
		{"CLIENT NO-EVICT on", kindPin},
		{"CLIENT GETNAME", kindPlain},
		{"CLIENT LIST", kindPlain},
		{"CLIENT REPLY ON", kindPlain},
		{"CLIENT REPLY OFF", kindRefused},
		{"client reply skip", kindRefused},
		{"SYNC", kindRefused},
		{"PSYNC ? -1", kindRefused},
		{"REPLCONF listening-port 1", kindRefused},
		{strings.Repeat("X", 100), kindPlain},
	}
	for _, tt := range tests {
		var args [][]byte
		for _, f := range strings.Fields(tt.cmd) {
			args = append(args, []byte(f))
		}
		if got := classify(args).kind; got != tt.want {
			t.Errorf("classify(%q) = %d, want %d", tt.cmd, got, tt.want)
		}
	}
	if r := classify([][]byte{[]byte("CLIENT"), []byte("REPLY"), []byte("OFF")}); !strings.Contains(r.refusal, "CLIENT REPLY OFF") {
		t.Errorf("refusal text %q does not name the command", r.refusal)
	}
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	args := [][]byte{[]byte("CLIENT"), []byte("SETNAME"), []byte("x")}
	if n := testing.AllocsPerRun(100, func() { classify(args) }); n != 0 {
		t.Errorf("classify allocates %v times", n)
	}
}
