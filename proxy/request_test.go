package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// reqCase is one request stream: its complete requests (args == nil for an
// ignored one) or the error the last one ends in.
type reqCase struct {
	name string
	in   string
	want [][]string // per request; nil entry = ignored (*0, blank line)
	err  string     // error expected after the requests in want
}

func args(a ...string) []string { return a }

var requestCases = []reqCase{
	// Multibulk.
	{name: "multibulk", in: "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n", want: [][]string{args("SET", "k", "hello")}},
	{name: "empty bulk", in: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", want: [][]string{args("ECHO", "")}},
	{name: "binary bulk", in: "*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\x00\xff\r\n", want: [][]string{args("ECHO", "\r\n\x00\xff")}},
	{name: "pipeline", in: "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
		want: [][]string{args("PING"), args("GET", "k"), args("PING"), args("PING")}},
	{name: "*0 ignored", in: "*0\r\n*1\r\n$4\r\nPING\r\n", want: [][]string{nil, args("PING")}},
	{name: "*-1 ignored", in: "*-1\r\n", want: [][]string{nil}},
	{name: "*-5 ignored", in: "*-5\r\nPING\r\n", want: [][]string{nil, args("PING")}},
	// Redis does not check the byte after a CR, nor the two after a payload.
	{name: "CR then any byte", in: "*1\rX$4\rYPING\r\n", want: [][]string{args("PING")}},
	{name: "payload not followed by CRLF", in: "*2\r\n$4\r\nECHO\r\n$3\r\nabcXY*1\r\n$4\r\nPING\r\r",
		want: [][]string{args("ECHO", "abc"), args("PING")}},
	{name: "trailing CRLF is an empty inline line", in: "*1\r\n$1\r\nA\r\n\r\n", want: [][]string{args("A"), nil}},
	// Inline.
	{name: "inline", in: "SET k v\r\n", want: [][]string{args("SET", "k", "v")}},
	{name: "inline LF only", in: "PING\nECHO x\n", want: [][]string{args("PING"), args("ECHO", "x")}},
	{name: "empty lines", in: "\r\n\n   \t\r\nPING\r\n", want: [][]string{nil, nil, nil, args("PING")}},
	{name: "separators", in: " \t a\tb  c \r\n", want: [][]string{args("a", "b", "c")}},
	{name: "CR inside line separates", in: "ECHO a\rb\r\n", want: [][]string{args("ECHO", "a", "b")}},
	{name: "vertical tab and form feed", in: "\vECHO\vx\r\nECHO a\fb\r\n", want: [][]string{args("ECHO\vx"), args("ECHO", "a\fb")}},
	{name: "double quotes", in: "SET \"a b\" \"c d\"\r\n", want: [][]string{args("SET", "a b", "c d")}},
	{name: "escapes", in: "ECHO \"a\\x41\\n\\q\"\r\n", want: [][]string{args("ECHO", "aA\nq")}},
	{name: "all escapes", in: "ECHO \"\\\\a\\\"\\t\\b\\a\\r\"\r\n", want: [][]string{args("ECHO", "\\a\"\t\b\a\r")}},
	{name: "hex needs two digits", in: "ECHO \"\\x4\" \"\\xg1\" \"\\xFf\"\r\n", want: [][]string{args("ECHO", "x4", "xg1", "\xff")}},
	{name: "quote inside word", in: "ECHO foo\"bar baz\"\r\n", want: [][]string{args("ECHO", "foobar baz")}},
	{name: "single quotes", in: "ECHO 'a\\'b\\n'\r\n", want: [][]string{args("ECHO", "a'b\\n")}},
	{name: "single quote with double inside", in: "ECHO 'say \"hi\"'\r\n", want: [][]string{args("ECHO", "say \"hi\"")}},
	{name: "empty quotes", in: "ECHO \"\" ''\r\n", want: [][]string{args("ECHO", "", "")}},
	{name: "closing quote then form feed", in: "ECHO \"x\"\f\r\n", want: [][]string{args("ECHO", "x")}},
	{name: "quoted CR escape at end", in: "ECHO \"\\r\"\r\n", want: [][]string{args("ECHO", "\r")}},
	// Errors.
	{name: "closing quote followed by text", in: "ECHO \"a\"b\r\n", err: "Protocol error: unbalanced quotes in request"},
	{name: "unterminated double quote", in: "ECHO \"a\r\n", err: "Protocol error: unbalanced quotes in request"},
	{name: "unterminated single quote", in: "ECHO 'a\r\n", err: "Protocol error: unbalanced quotes in request"},
	{name: "escaped closing quote", in: "ECHO \"a\\\"\r\n", err: "Protocol error: unbalanced quotes in request"},
	{name: "quote at end of word", in: "ECHO a\"\r\n", err: "Protocol error: unbalanced quotes in request"},
	{name: "error after pipeline", in: "PING\r\nECHO 'x'y\r\n", want: [][]string{args("PING")}, err: "Protocol error: unbalanced quotes in request"},
	{name: "count -0", in: "*-0\r\n", err: "Protocol error: invalid multibulk length"},
	{name: "count 00", in: "*00\r\n", err: "Protocol error: invalid multibulk length"},
	{name: "count +1", in: "*+1\r\n", err: "Protocol error: invalid multibulk length"},
	{name: "count empty", in: "*\r\n", err: "Protocol error: invalid multibulk length"},
	{name: "count with space", in: "*1 \r\n", err: "Protocol error: invalid multibulk length"},
	{name: "count over INT_MAX", in: "*2147483648\r\n", err: "Protocol error: invalid multibulk length"},
	{name: "count over limit", in: "*1048577\r\n", err: "Protocol error: invalid multibulk length"},
	{name: "expected $", in: "*1\r\nx4\r\n", err: "Protocol error: expected '$', got 'x'"},
	{name: "expected $ got CR", in: "*1\r\n\r\n", err: "Protocol error: expected '$', got ' '"},
	{name: "expected $ got LF", in: "*1\r\n\n\r\n", err: "Protocol error: expected '$', got ' '"},
	{name: "expected $ got raw byte", in: "*1\r\n\xff\r\n", err: "Protocol error: expected '$', got '\xff'"},
	{name: "bulk -1", in: "*1\r\n$-1\r\n", err: "Protocol error: invalid bulk length"},
	{name: "bulk -0", in: "*3\r\n$-0\r\n", err: "Protocol error: invalid bulk length"},
	{name: "bulk 04", in: "*1\r\n$04\r\nPING\r\n", err: "Protocol error: invalid bulk length"},
	{name: "bulk empty", in: "*1\r\n$\r\n", err: "Protocol error: invalid bulk length"},
	{name: "bulk with space", in: "*1\r\n$4 \r\nPING\r\n", err: "Protocol error: invalid bulk length"},
	{name: "bulk over proto-max-bulk-len", in: "*1\r\n$536870913\r\n", err: "Protocol error: invalid bulk length"},
	{name: "bulk overflow", in: "*1\r\n$99999999999999999999\r\n", err: "Protocol error: invalid bulk length"},
	{name: "too big inline", in: strings.Repeat("A", 65537), err: "Protocol error: too big inline request"},
	{name: "too big inline with newline", in: "ECHO " + strings.Repeat("a", 100000) + "\r\n", err: "Protocol error: too big inline request"},
	{name: "too big mbulk count", in: "*" + strings.Repeat("1", 65536), err: "Protocol error: too big mbulk count string"},
	{name: "too big bulk count", in: "*1\r\n$" + strings.Repeat("1", 65536), err: "Protocol error: too big bulk count string"},
	// A NUL hides the end of a line from Redis's strchr.
	{name: "NUL in inline line", in: "PING\x00\r\n" + strings.Repeat("x", 65532), err: "Protocol error: too big inline request"},
	{name: "NUL in count line", in: "*1\x00\r\n" + strings.Repeat("x", 65532), err: "Protocol error: too big mbulk count string"},
	{name: "NUL in bulk count line", in: "*1\r\n$4\x00\r\n" + strings.Repeat("x", 65532), err: "Protocol error: too big bulk count string"},
}

// parseAll parses a stream the way a caller does and returns the requests
// and the final error; it checks n, need and Raw on the way.
func parseAll(t *testing.T, in []byte, lim RequestLimits) ([][]string, error) {
	t.Helper()
	var got [][]string
	for len(in) > 0 {
		cmd, n, need, err := ParseRequest(in, lim)
		if err != nil {
			var rerr *RequestError
			if !errors.As(err, &rerr) || n != 0 {
				t.Fatalf("error %v (%T) with n=%d", err, err, n)
			}
			return got, err
		}
		if n == 0 {
			if need <= len(in) {
				t.Fatalf("incomplete with need %d <= len %d", need, len(in))
			}
			return got, nil
		}
		if n > len(in) || need != 0 {
			t.Fatalf("n=%d need=%d for len %d", n, need, len(in))
		}
		if cmd.Args == nil {
			got = append(got, nil)
		} else {
			got = append(got, toStrings(cmd.Args))
			checkRaw(t, in[:n], cmd)
		}
		in = in[n:]
	}
	return got, nil
}

func toStrings(a [][]byte) []string {
	s := make([]string, len(a))
	for i, b := range a {
		s[i] = string(b)
	}
	return s
}

// checkRaw verifies that Args point into Raw, that a multibulk Raw is the
// caller's buffer itself, and that Raw parses back to the same Args.
func checkRaw(t *testing.T, consumed []byte, cmd Command) {
	t.Helper()
	if consumed[0] == '*' && unsafe.SliceData(cmd.Raw) != unsafe.SliceData(consumed) {
		t.Fatalf("multibulk Raw is a copy")
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(cmd.Raw)))
	for _, a := range cmd.Args {
		p := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
		if len(a) > 0 && (p < start || p+uintptr(len(a)) > start+uintptr(len(cmd.Raw))) {
			t.Fatalf("arg %q does not point into Raw", a)
		}
	}
	again, n, _, err := ParseRequest(cmd.Raw, RequestLimits{})
	if err != nil || n != len(cmd.Raw) || fmt.Sprintf("%q", toStrings(again.Args)) != fmt.Sprintf("%q", toStrings(cmd.Args)) {
		t.Fatalf("Raw %q parses to %q (n=%d, err %v), want %q", cmd.Raw, toStrings(again.Args), n, err, toStrings(cmd.Args))
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range requestCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAll(t, []byte(tc.in), RequestLimits{})
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Fatalf("requests %q, want %q", got, tc.want)
			}
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.err {
				t.Fatalf("error %q, want %q", gotErr, tc.err)
			}
		})
	}
}

// TestParseRequestEverySplit feeds every prefix of each valid stream: a
// prefix never yields more than the requests it fully holds, and need is a
// true lower bound on the length that completes the next request.
func TestParseRequestEverySplit(t *testing.T) {
	for _, tc := range requestCases {
		if tc.err != "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			// Offsets where each request ends.
			var ends []int
			for off := 0; off < len(in); {
				_, n, _, err := ParseRequest(in[off:], RequestLimits{})
				if err != nil || n == 0 {
					t.Fatalf("whole stream at %d: n=%d err=%v", off, n, err)
				}
				off += n
				ends = append(ends, off)
			}
			for i := 0; i < len(in); i++ {
				prefix := append([]byte(nil), in[:i]...) // exact capacity: no peeking past the end
				off, done := 0, 0
				for {
					_, n, need, err := ParseRequest(prefix[off:], RequestLimits{})
					if err != nil {
						t.Fatalf("prefix %d: %v", i, err)
					}
					if n == 0 {
						if off+need > ends[done] || need < len(prefix)-off+1 {
							t.Fatalf("prefix %d at %d: need %d, request ends at %d", i, off, need, ends[done])
						}
						break
					}
					off += n
					if off != ends[done] {
						t.Fatalf("prefix %d: request ends at %d, want %d", i, off, ends[done])
					}
					done++
				}
			}
		})
	}
}

func TestParseRequestNeed(t *testing.T) {
	tests := []struct {
		in   string
		need int
	}{
		{"", 1},
		{"*", 2},
		{"*3\r", 4},
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n", 32 + 100000000 + 2}, // the full size
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\nabc", 32 + 100000000 + 2},
		{"*3\r\n$100000000\r\n", 16 + 100000000 + 2 + 2*minArgSize},
		{"*1000\r\n", 7 + 1000*minArgSize},
		{"*2\r\n$3\r\nGET\r\n$1\r", 13 + minArgSize},
		{"PING", 5},
		{"PING\r", 6},
	}
	for _, tc := range tests {
		_, n, need, err := ParseRequest([]byte(tc.in), RequestLimits{})
		if n != 0 || err != nil || need != tc.need {
			t.Errorf("%q: n=%d need=%d err=%v, want need %d", tc.in, n, need, err, tc.need)
		}
	}
}

func TestParseRequestLimits(t *testing.T) {
	lim := RequestLimits{MaxBulk: 5, MaxMultibulk: 2, MaxInline: 10}
	tests := []struct{ in, err string }{
		{"*2\r\n$5\r\nhello\r\n$0\r\n\r\n", ""},
		{"*1\r\n$6\r\nhello!\r\n", "Protocol error: invalid bulk length"},
		{"*3\r\n", "Protocol error: invalid multibulk length"},
		{"ECHO 1234\r\n", ""}, // 10 bytes before the LF
		{"ECHO 12345\r\n", "Protocol error: too big inline request"},
		{"ECHO 12345", ""}, // 10 bytes without LF: still incomplete
		{"ECHO 123456", "Protocol error: too big inline request"},
		{"*2" + strings.Repeat("0", 9), "Protocol error: too big mbulk count string"},
		{"*1\r\n$" + strings.Repeat("0", 10), "Protocol error: too big bulk count string"},
		// Inline commands are held to the same limits, unbalanced quotes first.
		{"A 123456\n", "Protocol error: invalid bulk length"},
		{"A B C\n", "Protocol error: invalid multibulk length"},
		{"A B 'C\n", "Protocol error: unbalanced quotes in request"},
	}
	for _, tc := range tests {
		_, _, _, err := ParseRequest([]byte(tc.in), lim)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err {
			t.Errorf("%q: error %q, want %q", tc.in, got, tc.err)
		}
	}
}

func TestParseRequestInlineRaw(t *testing.T) {
	cmd, n, _, err := ParseRequest([]byte("SET \"a b\" 'c'\r\nPING\r\n"), RequestLimits{})
	if err != nil || n != 15 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if want := "*3\r\n$3\r\nSET\r\n$3\r\na b\r\n$1\r\nc\r\n"; string(cmd.Raw) != want {
		t.Fatalf("Raw %q, want %q", cmd.Raw, want)
	}
}

func TestParseRequestAllocations(t *testing.T) {
	mb := []byte("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")
	if a := testing.AllocsPerRun(1000, func() { ParseRequest(mb, RequestLimits{}) }); a != 1 {
		t.Errorf("multibulk: %v allocations, want 1 (the Args slice)", a)
	}
	partial := mb[:len(mb)-3]
	if a := testing.AllocsPerRun(1000, func() { ParseRequest(partial, RequestLimits{}) }); a != 0 {
		t.Errorf("incomplete multibulk: %v allocations, want 0", a)
	}
	inline := []byte("PING\r\n")
	if a := testing.AllocsPerRun(1000, func() { ParseRequest(inline, RequestLimits{}) }); a > 2 {
		t.Errorf("inline: %v allocations, want at most 2 (Raw and Args)", a)
	}
}

func BenchmarkParseRequest(b *testing.B) {
	mb := []byte("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(mb)))
	for b.Loop() {
		if _, n, _, _ := ParseRequest(mb, RequestLimits{}); n != len(mb) {
			b.Fatal(n)
		}
	}
}

func BenchmarkParseRequestInline(b *testing.B) {
	in := []byte("PING\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, n, _, _ := ParseRequest(in, RequestLimits{}); n != len(in) {
			b.Fatal(n)
		}
	}
}

// bulk encodes s as a RESP bulk string.
func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// TestParseRequestMatchesRedis sends the same requests to a real
// redis-server and checks that it splits and rejects them exactly as
// ParseRequest does. Inline lines are sent as "RPUSH list <line>" so that
// LRANGE shows the arguments Redis saw; multibulk cases are ECHO commands.
func TestParseRequestMatchesRedis(t *testing.T) {
	addr := startRedis(t)
	lines := []string{
		`a b c`, " \t a\tb  c ", "a\rb", "\va\vb", "a\fb", `"a b" "c d"`, `"a\x41\n\q"`,
		`"\\a\"\t\b\a\r"`, `"\x4" "\xg1" "\xFf" "\x00"`, `foo"bar baz"`, `'a\'b\n'`, `'say "hi"'`,
		`"" ''`, "\"x\"\f", `"a"b`, `"a`, `'a`, `"a\"`, `a"`, `'a'b`, `a'b c'`, `"\\"`, `x "y`,
		"\"tab\there\"", `'\\'`, `"\"" '\''`, "\u00e9t\u00e9 \"\u00fcber\"",
	}
	c := dialRedis(t, addr)
	for _, line := range lines {
		in := "RPUSH list " + line + "\r\n"
		cmd, n, _, err := ParseRequest([]byte(in), RequestLimits{})
		c.send(in)
		got := c.reply()
		if err != nil {
			if want := "-ERR " + err.Error() + "\r\n"; got != want {
				t.Errorf("line %q: redis replied %q, we say %q", line, got, want)
			}
			if eof := c.reply(); eof != "EOF" {
				t.Errorf("line %q: redis did not close after the error: %q", line, eof)
			}
			c = dialRedis(t, addr)
			continue
		}
		if n != len(in) {
			t.Fatalf("line %q: n=%d", line, n)
		}
		if len(cmd.Args) == 2 {
			if !strings.HasPrefix(got, "-ERR wrong number of arguments") {
				t.Errorf("line %q: we see no values, redis replied %q", line, got)
			}
			continue
		}
		c.send("*4\r\n$6\r\nLRANGE\r\n$4\r\nlist\r\n$1\r\n0\r\n$2\r\n-1\r\n*2\r\n$3\r\nDEL\r\n$4\r\nlist\r\n")
		var want strings.Builder
		want.WriteString("*" + strconv.Itoa(len(cmd.Args)-2) + "\r\n")
		for _, a := range cmd.Args[2:] {
			want.WriteString(bulk(string(a)))
		}
		if lr := c.reply(); lr != want.String() {
			t.Errorf("line %q: redis saw %q, we parsed %q", line, lr, want.String())
		}
		c.reply() // DEL
	}

	raw := []string{
		"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n",
		"*1\r\n$4\r\nPING\r\n",
		"*2\r\n$4\r\nECHO\r\n$3\r\nabcXY",
		"*2\r\n$4\r\nECHO\rX$1\rYz\r\n",
		"*0\r\n", "*-1\r\n", "*-7\r\n", "\r\n", "\n", "   \r\n",
		"*-0\r\n", "*00\r\n", "*+1\r\n", "*\r\n", "*1 \r\n", "*2147483648\r\n",
		"*1\r\nx4\r\n", "*1\r\n\r\n", "*1\r\n\n\r\n", "*1\r\n$-1\r\n", "*3\r\n$-0\r\n", "*1\r\n$04\r\nPING\r\n",
		"*1\r\n$\r\n", "*1\r\n$4 \r\nPING\r\n", "*1\r\n$536870913\r\n",
	}
	c = dialRedis(t, addr)
	for _, in := range raw {
		cmd, n, _, err := ParseRequest([]byte(in), RequestLimits{})
		c.send(in)
		switch {
		case err != nil:
			if got, want := c.reply(), "-ERR "+err.Error()+"\r\n"; got != want {
				t.Errorf("%q: redis replied %q, we say %q", in, got, want)
			}
			if eof := c.reply(); eof != "EOF" {
				t.Errorf("%q: redis did not close after the error: %q", in, eof)
			}
			c = dialRedis(t, addr)
		case n != len(in):
			t.Fatalf("%q: n=%d", in, n)
		case cmd.Args == nil:
			// Ignored: the next command's reply must come first.
			c.send("*2\r\n$4\r\nECHO\r\n$4\r\nnext\r\n")
			if got := c.reply(); got != bulk("next") {
				t.Errorf("%q: ignored by us, but redis replied %q", in, got)
			}
		default:
			want := "+PONG\r\n"
			if len(cmd.Args) == 2 {
				want = bulk(string(cmd.Args[1]))
			}
			if got := c.reply(); got != want {
				t.Errorf("%q: redis replied %q, we parsed %q", in, got, toStrings(cmd.Args))
			}
		}
	}
}
