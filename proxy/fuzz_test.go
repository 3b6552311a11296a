package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// framerVectors are reply streams, each given as its top-level frames. The
// unit tests run them and FuzzFramer starts from them.
var framerVectors = []struct {
	name   string
	frames []string
}{
	{"simple string", []string{"+OK\r\n"}},
	{"empty simple string", []string{"+\r\n"}},
	{"error", []string{"-READONLY You can't write against a read only replica.\r\n"}},
	{"integer", []string{":1\r\n", ":-42\r\n"}},
	{"bulk", []string{"$3\r\nbar\r\n"}},
	{"bulk with CRLF inside", []string{"$4\r\n\r\n\r\n\r\n"}},
	{"empty bulk", []string{"$0\r\n\r\n"}},
	{"null bulk", []string{"$-1\r\n"}},
	{"null array", []string{"*-1\r\n"}},
	{"empty array", []string{"*0\r\n"}},
	{"array", []string{"*2\r\n$3\r\nfoo\r\n:1\r\n"}},
	{"null", []string{"_\r\n"}},
	{"doubles", []string{",3.141\r\n", ",inf\r\n", ",-inf\r\n", ",nan\r\n", ",1.5e-3\r\n"}},
	{"booleans", []string{"#t\r\n", "#f\r\n"}},
	{"big number", []string{"(3492890328409238509324850943850943825024385\r\n"}},
	{"bulk error", []string{"!21\r\nSYNTAX invalid syntax\r\n"}},
	{"verbatim", []string{"=15\r\ntxt:Some string\r\n"}},
	{"map", []string{"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n"}},
	{"empty map", []string{"%0\r\n"}},
	{"set", []string{"~2\r\n+a\r\n+b\r\n"}},
	{"top-level attribute then reply", []string{"|1\r\n+ttl\r\n:3\r\n", "$3\r\nbar\r\n"}},
	{"empty attribute", []string{"|0\r\n", ":1\r\n"}},
	{"push", []string{">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"}},
	{"push between replies", []string{"+OK\r\n", ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", ":5\r\n"}},
	{"nested aggregates", []string{"*3\r\n*2\r\n:1\r\n:2\r\n%1\r\n+k\r\n*1\r\n_\r\n~1\r\n*0\r\n"}},
	{"attribute inside array", []string{"*2\r\n|1\r\n+ttl\r\n:3\r\n:1\r\n:2\r\n"}},
	{"attribute before last element", []string{"*2\r\n:1\r\n|1\r\n+a\r\n*2\r\n+x\r\n+y\r\n*1\r\n:2\r\n"}},
	{"attribute inside map value", []string{"%1\r\n+k\r\n|1\r\n+a\r\n+b\r\n+v\r\n"}},
	{"attribute with aggregate value", []string{"*1\r\n|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n:7\r\n"}},
	{"nested attribute", []string{"|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n+d\r\n", "+OK\r\n"}},
	{"streamed string", []string{"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n"}},
	{"empty streamed string", []string{"$?\r\n;0\r\n"}},
	{"streamed string in array", []string{"*2\r\n$?\r\n;2\r\nab\r\n;0\r\n:1\r\n"}},
	{"streamed array", []string{"*?\r\n:1\r\n:2\r\n.\r\n"}},
	{"empty streamed set", []string{"~?\r\n.\r\n"}},
	{"streamed map", []string{"%?\r\n+a\r\n:1\r\n+b\r\n*?\r\n.\r\n.\r\n"}},
	{"streamed push", []string{">?\r\n+pubsub\r\n+x\r\n.\r\n"}},
	{"counted inside streamed", []string{"*?\r\n*2\r\n:1\r\n$?\r\n;1\r\nz\r\n;0\r\n|1\r\n+a\r\n+b\r\n:3\r\n.\r\n"}},
	{"streamed inside counted", []string{"*2\r\n~?\r\n:1\r\n.\r\n*?\r\n.\r\n"}},
	{"long simple string", []string{"+" + strings.Repeat("s", 5000) + "\r\n"}},
	{"long error", []string{"-ERR " + strings.Repeat("e", 3000) + "\r\n"}},
	{"large bulk", []string{"$3000\r\n" + strings.Repeat("b", 3000) + "\r\n", "+OK\r\n"}},
	{"large array", []string{"*300\r\n" + strings.Repeat(":12345\r\n", 300)}},
	{"just over capture", []string{"$1016\r\n" + strings.Repeat("c", 1016) + "\r\n", "$1015\r\n" + strings.Repeat("c", 1015) + "\r\n"}},
	// DEBUG PROTOCOL output of redis 7.0.15 (redis-protocol-notes.md §2.1).
	{"debug protocol resp3", []string{
		"$11\r\nHello World\r\n", ":12345\r\n", ",3.141\r\n",
		"(1234567999999999999999999999999999999\r\n", "_\r\n",
		"*3\r\n:0\r\n:1\r\n:2\r\n", "~3\r\n:0\r\n:1\r\n:2\r\n",
		"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n",
		"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n",
		"$39\r\nSome real reply following the attribute\r\n",
		">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n",
		"$40\r\nSome real reply following the push reply\r\n",
		"=29\r\ntxt:This is a verbatim\nstring\r\n", "#t\r\n", "#f\r\n",
	}},
	{"debug protocol resp2", []string{
		"$11\r\nHello World\r\n", ":12345\r\n", "$5\r\n3.141\r\n",
		"$37\r\n1234567999999999999999999999999999999\r\n", "$-1\r\n",
		"*3\r\n:0\r\n:1\r\n:2\r\n", "*3\r\n:0\r\n:1\r\n:2\r\n",
		"*6\r\n:0\r\n:0\r\n:1\r\n:1\r\n:2\r\n:0\r\n",
		"$39\r\nSome real reply following the attribute\r\n",
		"-ERR RESP2 is not supported by this command\r\n",
		"$25\r\nThis is a verbatim\nstring\r\n", ":1\r\n", ":0\r\n",
	}},
}

// fuzzFrame is what a frame looks like once copied out of the framer.
type fuzzFrame struct {
	typ   byte
	size  int64
	small string
	hasSm bool
}

// frameAll reads every frame of r; it checks per frame that the bytes
// written equal Size and Small, and that memory stays within its bounds.
func frameAll(t *testing.T, r io.Reader, bufSize int) ([]fuzzFrame, []byte, error) {
	f := NewFramer(r, bufSize)
	f.MaxDepth = 16
	f.MaxBulk = 1 << 16
	var out bytes.Buffer
	var frames []fuzzFrame
	for {
		before := out.Len()
		fr, err := f.Next(&out)
		if len(f.stack) > f.MaxDepth || cap(f.stack) > max(f.MaxDepth, len(f.stackArr)) || cap(f.capBuf) > DefaultCaptureLimit {
			t.Fatalf("memory bound broken: stack %d (cap %d), capture cap %d", len(f.stack), cap(f.stack), cap(f.capBuf))
		}
		if err == nil && cap(f.stack) != len(f.stackArr) {
			t.Fatalf("a stack of cap %d kept after the frame", cap(f.stack))
		}
		if err != nil {
			return frames, out.Bytes(), err
		}
		wrote := out.Bytes()[before:]
		if fr.Size != int64(len(wrote)) || fr.Size == 0 || fr.Type != wrote[0] {
			t.Fatalf("frame {%q %d} but wrote %q", fr.Type, fr.Size, wrote)
		}
		if (fr.Small != nil) != (fr.Size <= DefaultCaptureLimit) || (fr.Small != nil && !bytes.Equal(fr.Small, wrote)) {
			t.Fatalf("Small %q for written %q", fr.Small, wrote)
		}
		frames = append(frames, fuzzFrame{fr.Type, fr.Size, string(fr.Small), fr.Small != nil})
	}
}

func errClass(err error) string {
	var perr *ProtocolError
	switch {
	case errors.As(err, &perr):
		return "protocol"
	case err == io.EOF:
		return "eof"
	case err == io.ErrUnexpectedEOF:
		return "unexpected eof"
	}
	return "other: " + err.Error()
}

func FuzzFramer(f *testing.F) {
	for _, v := range framerVectors {
		if s := strings.Join(v.frames, ""); len(s) < 2000 {
			f.Add([]byte(s))
		}
	}
	for _, s := range []string{
		"", "+OK\r\n", "-ERR x\r\n", ":1\r\n", "$3\r\nbar\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n",
		"_\r\n", ",1.5\r\n", "#t\r\n", "(12\r\n", "!3\r\nERR\r\n", "=7\r\ntxt:abc\r\n",
		"%1\r\n+a\r\n+b\r\n", "~1\r\n:1\r\n", "|1\r\n+a\r\n+b\r\n:1\r\n", ">2\r\n+a\r\n+b\r\n",
		"$?\r\n;1\r\na\r\n;0\r\n", "*?\r\n:1\r\n.\r\n", "%?\r\n+a\r\n+b\r\n.\r\n",
		"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n", strings.Repeat("*1\r\n", 17) + ":1\r\n",
		strings.Repeat("*2\r\n", 17) + ":1\r\n", strings.Repeat("*1\r\n|1\r\n+a\r\n", 20) + ":1\r\n",
		strings.Repeat("%1\r\n+k\r\n*?\r\n", 9) + strings.Repeat(".\r\n", 9) + "+OK\r\n",
		"$3\r\nfooXY", "+OK\rX", "x\r\n", ".\r\n", ";1\r\na\r\n", "$65537\r\n",
	} {
		f.Add([]byte(s))
	}
	for _, sh := range nestShapes {
		f.Add([]byte(nestFrame(sh.links, 20, ":1\r\n") + "+OK\r\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		frames, written, err := frameAll(t, bytes.NewReader(data), 64)
		if !bytes.HasPrefix(data, written) {
			t.Fatalf("wrote %q, not a prefix of the input", written)
		}
		class := errClass(err)
		if class == "eof" && len(written) != len(data) {
			t.Fatalf("clean EOF after %d of %d bytes", len(written), len(data))
		}
		if strings.HasPrefix(class, "other") {
			t.Fatalf("unexpected error %v", err)
		}
		// How the input is split into reads must not matter.
		frames1, written1, err1 := frameAll(t, iotest.OneByteReader(bytes.NewReader(data)), 0)
		// (Bytes of a frame cut short by an error may be written in one case
		// and not the other; both are prefixes of the input.)
		if !equalFrames(frames, frames1) || !bytes.HasPrefix(data, written1) || errClass(err1) != class {
			t.Fatalf("one byte at a time: %d frames, %v; whole: %d frames, %v", len(frames1), err1, len(frames), err)
		}
		var perr, perr1 *ProtocolError
		if errors.As(err, &perr) && errors.As(err1, &perr1) && perr.Offset != perr1.Offset {
			t.Fatalf("protocol error offset %d vs %d one byte at a time", perr.Offset, perr1.Offset)
		}
		// A recursive parser with no depth limit finds the same frames, and
		// the same end (unless the framer hit its MaxDepth of 16 first).
		sizes, status := refFrames(data, 1<<16)
		if errors.As(err, &perr) && strings.HasPrefix(perr.Msg, "nesting deeper") {
			if len(sizes) < len(frames) {
				t.Fatalf("reference: %d frames before a nesting error after %d", len(sizes), len(frames))
			}
			sizes, status = sizes[:len(frames)], refBad
		}
		if want := map[int]string{refOK: "eof", refIncomplete: "unexpected eof", refBad: "protocol"}[status]; want != class {
			t.Fatalf("framer ended with %v, reference with %s", err, want)
		}
		if len(sizes) != len(frames) {
			t.Fatalf("framer read %d frames, reference %d", len(frames), len(sizes))
		}
		var off int64
		for i, fr := range frames {
			if fr.size != int64(sizes[i]) || fr.typ != data[off] {
				t.Fatalf("frame %d: {%q %d}, reference size %d", i, fr.typ, fr.size, sizes[i])
			}
			off += fr.size
		}
		// The complete frames, re-read on their own, are the same frames.
		var total int64
		for _, fr := range frames {
			total += fr.size
		}
		again, written2, err2 := frameAll(t, bytes.NewReader(data[:total]), 0)
		if err2 != io.EOF || !equalFrames(frames, again) || !bytes.Equal(written2, data[:total]) {
			t.Fatalf("re-reading the frames: %d frames, %v", len(again), err2)
		}
	})
}

func equalFrames(a, b []fuzzFrame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseRequest(f *testing.F) {
	for _, tc := range requestCases {
		if len(tc.in) < 2000 {
			f.Add([]byte(tc.in))
		}
	}
	for _, s := range []string{
		"", "*", "*1\r", "*1\r\n$", "*1\r\n$4\r\nPI", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n",
		"PING", "PING\r", "\x00", "*1\x00\r\n", "ECHO \"\\x\"\r\n", "'\\'' \"\\\\\"\r\n",
	} {
		f.Add([]byte(s))
	}
	lim := RequestLimits{MaxBulk: 1 << 16, MaxMultibulk: 1 << 10, MaxInline: 1 << 10}
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := data[:len(data):len(data)] // no spare capacity to read past the end
		cmd, n, need, err := ParseRequest(buf, lim)
		if err != nil {
			var rerr *RequestError
			if !errors.As(err, &rerr) || n != 0 || !strings.HasPrefix(rerr.Text, "Protocol error: ") ||
				strings.ContainsAny(rerr.Text, "\r\n") {
				t.Fatalf("bad error %q with n=%d", err, n)
			}
			return
		}
		if n == 0 {
			if need <= len(buf) || cmd.Args != nil {
				t.Fatalf("incomplete with need %d for %d bytes, args %q", need, len(buf), cmd.Args)
			}
			return
		}
		if n > len(buf) || need != 0 {
			t.Fatalf("n=%d need=%d for %d bytes", n, need, len(buf))
		}
		// The request ends where it ends whatever follows it, and every
		// prefix of it is incomplete with a need no further than its end.
		if c2, n2, _, err2 := ParseRequest(buf[:n:n], lim); n2 != n || err2 != nil || !equalArgs(c2.Args, cmd.Args) {
			t.Fatalf("alone, the request parses to n=%d err=%v", n2, err2)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			_, pn, pneed, perr := ParseRequest(buf[:i:i], lim)
			if pn != 0 || perr != nil || pneed > n || pneed <= i {
				t.Fatalf("prefix %d of %d: n=%d need=%d err=%v", i, n, pn, pneed, perr)
			}
		}
		if cmd.Args == nil {
			return
		}
		if buf[0] == '*' && !bytes.Equal(cmd.Raw, buf[:n]) {
			t.Fatalf("multibulk Raw %q is not the input", cmd.Raw)
		}
		again, n3, _, err3 := ParseRequest(cmd.Raw, lim)
		if err3 != nil || n3 != len(cmd.Raw) || !equalArgs(again.Args, cmd.Args) {
			t.Fatalf("Raw %q parses to %q (n=%d, %v), want %q", cmd.Raw, again.Args, n3, err3, cmd.Args)
		}
	})
}

func equalArgs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
