package proxy

import (
	"bytes"
	"errors"
	"hash"
	"hash/crc32"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// chunkReader returns its chunks one per Read call.
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// writeLog records every Write call.
type writeLog struct {
	buf   bytes.Buffer
	calls int
	max   int
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.calls++
	w.max = max(w.max, len(p))
	return w.buf.Write(p)
}

// readAllFrames runs a framer until it fails and checks that each frame's
// bytes were written to w during its own Next call.
func readAllFrames(t *testing.T, f *Framer) ([]Frame, []byte, error) {
	t.Helper()
	var frames []Frame
	var w writeLog
	for i := 0; i < 100000; i++ {
		before := w.buf.Len()
		fr, err := f.Next(&w)
		if err != nil {
			return frames, w.buf.Bytes(), err
		}
		got := w.buf.Bytes()[before:]
		if int64(len(got)) != fr.Size {
			t.Fatalf("frame %d: wrote %d bytes, Size %d", len(frames), len(got), fr.Size)
		}
		if fr.Small != nil && !bytes.Equal(fr.Small, got) {
			t.Fatalf("frame %d: Small %q, wrote %q", len(frames), fr.Small, got)
		}
		fr.Small = append([]byte(nil), fr.Small...)
		frames = append(frames, fr)
	}
	t.Fatal("framer never stopped")
	return nil, nil, nil
}

func checkFrames(t *testing.T, label string, input []byte, want []string, f *Framer) {
	t.Helper()
	frames, written, err := readAllFrames(t, f)
	if !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s: final error %v, want io.EOF", label, err)
	}
	if !bytes.Equal(written, input) {
		t.Fatalf("%s: written bytes differ from input\n got %q\nwant %q", label, written, input)
	}
	if len(frames) != len(want) {
		t.Fatalf("%s: %d frames, want %d", label, len(frames), len(want))
	}
	for i, w := range want {
		fr := frames[i]
		if fr.Type != w[0] || fr.Size != int64(len(w)) {
			t.Fatalf("%s: frame %d = {%q %d}, want {%q %d}", label, i, fr.Type, fr.Size, w[0], len(w))
		}
		if len(w) <= DefaultCaptureLimit && string(fr.Small) != w {
			t.Fatalf("%s: frame %d Small = %q, want %q", label, i, fr.Small, w)
		}
		if len(w) > DefaultCaptureLimit && fr.Small != nil {
			t.Fatalf("%s: frame %d of %d bytes captured", label, i, len(w))
		}
	}
}

func TestFramerVectors(t *testing.T) {
	for _, tc := range framerVectors {
		t.Run(tc.name, func(t *testing.T) {
			input := []byte(strings.Join(tc.frames, ""))
			for _, size := range []int{0, 64} {
				checkFrames(t, "whole", input, tc.frames, NewFramer(bytes.NewReader(input), size))
				checkFrames(t, "one byte", input, tc.frames, NewFramer(iotest.OneByteReader(bytes.NewReader(input)), size))
			}
			if len(input) > 4096 {
				return // every split of the long vectors would be slow and adds nothing
			}
			for i := 1; i < len(input); i++ {
				r := &chunkReader{chunks: [][]byte{append([]byte(nil), input[:i]...), append([]byte(nil), input[i:]...)}}
				checkFrames(t, "split", input, tc.frames, NewFramer(r, 0))
			}
		})
	}
}

func TestFramerSmallFrameOneWrite(t *testing.T) {
	for _, in := range []string{"+OK\r\n", ":1\r\n", "$3\r\nbar\r\n", "*2\r\n$3\r\nfoo\r\n:1\r\n", "%1\r\n+a\r\n~1\r\n_\r\n"} {
		var w writeLog
		f := NewFramer(strings.NewReader(in), 0)
		fr, err := f.Next(&w)
		if err != nil || w.calls != 1 || w.buf.String() != in || string(fr.Small) != in {
			t.Fatalf("%q: err %v, %d Write calls, wrote %q, Small %q", in, err, w.calls, w.buf.Bytes(), fr.Small)
		}
	}
}

// loopReader serves data over and over without allocating.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func smallReplies() []byte {
	return []byte(strings.Repeat("+OK\r\n:1\r\n$3\r\nbar\r\n*2\r\n$3\r\nfoo\r\n:12\r\n-ERR x\r\n", 100))
}

func TestFramerSmallFramesDoNotAllocate(t *testing.T) {
	f := NewFramer(&loopReader{data: smallReplies()}, 0)
	allocs := testing.AllocsPerRun(10000, func() {
		if _, err := f.Next(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per small frame, want 0", allocs)
	}
}

func BenchmarkFramerSmall(b *testing.B) {
	data := smallReplies()
	f := NewFramer(&loopReader{data: data}, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(data) / 500))
	for b.Loop() {
		if _, err := f.Next(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// hashWriter checksums what passes through it and records the largest Write.
type hashWriter struct {
	h   hash.Hash32
	n   int64
	max int
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	w.max = max(w.max, len(p))
	return w.h.Write(p)
}

func TestFramerHugeBulkStreamsInBoundedMemory(t *testing.T) {
	const size = 100_000_000
	head := "$100000000\r\n"
	sent := crc32.NewIEEE()
	r := io.TeeReader(io.MultiReader(strings.NewReader(head),
		io.LimitReader(&loopReader{data: []byte("0123456789abcdefghijklmnopqrstuvwxyz")}, size),
		strings.NewReader("\r\n")), sent)
	w := &hashWriter{h: crc32.NewIEEE()}
	f := NewFramer(r, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fr, err := f.Next(w)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(head)) + size + 2; fr.Size != want || w.n != want || fr.Type != '$' || fr.Small != nil {
		t.Fatalf("frame {%q %d small=%v}, wrote %d, want size %d", fr.Type, fr.Size, fr.Small != nil, w.n, want)
	}
	if w.h.Sum32() != sent.Sum32() {
		t.Fatal("bytes changed on the way")
	}
	if w.max > defaultFramerBuf {
		t.Fatalf("a Write of %d bytes: the payload was not streamed in buffer-sized chunks", w.max)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 256<<10 {
		t.Fatalf("framer allocated %d bytes for a 100 MB bulk", grown)
	}
	if _, err := f.Next(w); err != io.EOF {
		t.Fatalf("after the bulk: %v, want io.EOF", err)
	}
}

func TestFramerMalformed(t *testing.T) {
	tests := []struct {
		name, in string
		depth    int
		maxBulk  int64
	}{
		{name: "bad type byte", in: "x\r\n"},
		{name: "bad type byte after frame", in: "+OK\r\nhello\r\n"},
		{name: "END at top level", in: ".\r\n"},
		{name: "chunk at top level", in: ";3\r\nabc\r\n"},
		{name: "bulk length not a number", in: "$abc\r\n"},
		{name: "bulk length empty", in: "$\r\n"},
		{name: "bulk length -2", in: "$-2\r\n"},
		{name: "bulk error null", in: "!-1\r\n"},
		{name: "verbatim streamed", in: "=?\r\n"},
		{name: "bulk length overflow", in: "$9223372036854775808\r\n"},
		{name: "length line too long", in: "*" + strings.Repeat("1", 40) + "\r\n"},
		{name: "array -2", in: "*-2\r\n"},
		{name: "map null", in: "%-1\r\n"},
		{name: "set null", in: "~-1\r\n"},
		{name: "map too long", in: "%4611686018427387904\r\n"},
		{name: "bulk without CRLF", in: "$3\r\nfooXY"},
		{name: "bulk with CR only", in: "$3\r\nfoo\rX"},
		{name: "CR without LF in line", in: "+OK\rX\n"},
		{name: "CR without LF in header", in: "$3\rX"},
		{name: "END inside counted array", in: "*2\r\n:1\r\n.\r\n"},
		{name: "END with text", in: "*?\r\n.x\r\n"},
		{name: "non-chunk in streamed string", in: "$?\r\n+OK\r\n"},
		{name: "negative chunk", in: "$?\r\n;-1\r\n"},
		{name: "streamed chunk", in: "$?\r\n;?\r\n"},
		{name: "depth over limit", in: "*2\r\n*2\r\n*2\r\n*2\r\n:1\r\n", depth: 3},
		{name: "streamed depth over limit", in: "*?\r\n~?\r\n%?\r\n>?\r\n", depth: 3},
		{name: "default depth over limit", in: strings.Repeat("*2\r\n", DefaultMaxDepth+1) + ":1\r\n"},
		{name: "bulk over limit", in: "$11\r\nhello world\r\n", maxBulk: 10},
		{name: "chunk over limit", in: "$?\r\n;11\r\nhello world\r\n;0\r\n", maxBulk: 10},
		{name: "bulk over default limit", in: "$536870913\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			readers := map[string]func() io.Reader{
				"whole":    func() io.Reader { return strings.NewReader(tc.in) },
				"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(tc.in)) },
			}
			for label, mk := range readers {
				f := NewFramer(mk(), 0)
				f.MaxDepth, f.MaxBulk = tc.depth, tc.maxBulk
				var err error
				for i := 0; i < 10 && err == nil; i++ {
					_, err = f.Next(io.Discard)
				}
				var perr *ProtocolError
				if !errors.As(err, &perr) {
					t.Fatalf("%s: error %v, want *ProtocolError", label, err)
				}
				if _, again := f.Next(io.Discard); again != err {
					t.Fatalf("%s: second call returned %v, want the same error", label, again)
				}
				f.Reset(strings.NewReader("+OK\r\n"))
				if fr, err := f.Next(io.Discard); err != nil || string(fr.Small) != "+OK\r\n" {
					t.Fatalf("%s: after Reset: %q %v", label, fr.Small, err)
				}
			}
		})
	}
}

func TestFramerHugeCountsDoNotAllocate(t *testing.T) {
	in := "*9223372036854775807\r\n%4611686018427387903\r\n~1000000000000\r\n"
	f := NewFramer(strings.NewReader(in), 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := f.Next(io.Discard)
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<10 {
		t.Fatalf("allocated %d bytes for huge element counts", grown)
	}
}

func TestFramerEOF(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"", io.EOF},
		{"+OK\r\n", io.EOF},
		{"+OK", io.ErrUnexpectedEOF},
		{"+OK\r", io.ErrUnexpectedEOF},
		{"$", io.ErrUnexpectedEOF},
		{"$3\r\nfo", io.ErrUnexpectedEOF},
		{"$3\r\nfoo\r", io.ErrUnexpectedEOF},
		{"*2\r\n:1\r\n", io.ErrUnexpectedEOF},
		{"|1\r\n+a\r\n+b\r\n", io.EOF}, // a complete top-level attribute frame
	}
	for _, tc := range tests {
		f := NewFramer(strings.NewReader(tc.in), 0)
		var err error
		for i := 0; i < 5 && err == nil; i++ {
			_, err = f.Next(nil)
		}
		if err != tc.want {
			t.Errorf("%q: got %v, want %v", tc.in, err, tc.want)
		}
	}
}

var errFlaky = errors.New("flaky read")

// flakyReader returns one byte per Read and fails once, like a read
// deadline, when cut bytes have been read.
type flakyReader struct {
	data   []byte
	off    int
	cut    int
	failed bool
}

func (r *flakyReader) Read(p []byte) (int, error) {
	if r.off == r.cut && !r.failed {
		r.failed = true
		return 0, errFlaky
	}
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	p[0] = r.data[r.off]
	r.off++
	return 1, nil
}

func TestFramerResumesAfterReadError(t *testing.T) {
	frames := []string{"*2\r\n$5\r\nhello\r\n%1\r\n+a\r\n,1.5\r\n", "$?\r\n;3\r\nabc\r\n;0\r\n", "+OK\r\n", ":1\r\n"}
	in := strings.Join(frames, "")
	for cut := 0; cut <= len(in); cut++ {
		f := NewFramer(&flakyReader{data: []byte(in), cut: cut}, 0)
		var w writeLog
		var got []string
		before, failures := 0, 0 // where the frame in progress started in w
		for i := 0; i < 100; i++ {
			fr, err := f.Next(&w)
			if errors.Is(err, errFlaky) {
				failures++
				continue // resume the same frame
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			if fr.Size != int64(w.buf.Len()-before) {
				t.Fatalf("cut %d: frame size %d, wrote %d", cut, fr.Size, w.buf.Len()-before)
			}
			before = w.buf.Len()
			got = append(got, string(fr.Small))
		}
		if failures != 1 || strings.Join(got, "|") != strings.Join(frames, "|") || w.buf.String() != in {
			t.Fatalf("cut %d: %d failures, frames %q, wrote %q", cut, failures, got, w.buf.Bytes())
		}
	}
}

var errWrite = errors.New("client gone")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestFramerWriteErrorIsSticky(t *testing.T) {
	f := NewFramer(strings.NewReader("+OK\r\n+OK\r\n"), 0)
	if _, err := f.Next(failWriter{}); !errors.Is(err, errWrite) {
		t.Fatalf("got %v, want the writer's error", err)
	}
	if _, err := f.Next(io.Discard); !errors.Is(err, errWrite) {
		t.Fatalf("second call: %v, want the same error", err)
	}
}

func TestFramerCaptureLimit(t *testing.T) {
	in := "$5\r\nhello\r\n"
	f := NewFramer(strings.NewReader(in+in), 0)
	f.CaptureLimit = len(in) - 1
	if fr, err := f.Next(nil); err != nil || fr.Small != nil || fr.Size != int64(len(in)) {
		t.Fatalf("limit below size: %q %v", fr.Small, err)
	}
	if got := f.Buffered(); got != len(in) {
		t.Fatalf("Buffered = %d, want the %d bytes of the second frame", got, len(in))
	}
	f.CaptureLimit = -1
	if fr, err := f.Next(nil); err != nil || fr.Small != nil {
		t.Fatalf("negative limit: %q %v", fr.Small, err)
	}
	if got := f.Buffered(); got != 0 {
		t.Fatalf("Buffered = %d after reading everything", got)
	}
}

func TestFrameMethods(t *testing.T) {
	tests := []struct {
		in             string
		isErr, isReply bool
		text           string
	}{
		{"-READONLY You can't write against a read only replica.\r\n", true, true, "READONLY You can't write against a read only replica."},
		{"!21\r\nSYNTAX invalid syntax\r\n", true, true, "SYNTAX invalid syntax"},
		{"!0\r\n\r\n", true, true, ""},
		{"+OK\r\n", false, true, ""},
		{"$3\r\nERR\r\n", false, true, ""},
		{">2\r\n+message\r\n+x\r\n", false, false, ""},
		{"|1\r\n+a\r\n+b\r\n", false, false, ""},
		{"_\r\n", false, true, ""},
	}
	for _, tc := range tests {
		fr, err := NewFramer(strings.NewReader(tc.in), 0).Next(nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if fr.IsError() != tc.isErr || fr.IsReply() != tc.isReply || fr.ErrorText() != tc.text {
			t.Errorf("%q: IsError %v IsReply %v ErrorText %q", tc.in, fr.IsError(), fr.IsReply(), fr.ErrorText())
		}
	}
	long := Frame{Type: '-', Size: 5000}
	if long.ErrorText() != "" {
		t.Error("uncaptured error frame has text")
	}
}

// TestFramerDebugProtocol frames the real DEBUG PROTOCOL output of
// redis-server in RESP3 and RESP2 and compares it with the vectors above.
func TestFramerDebugProtocol(t *testing.T) {
	addr := startRedis(t, "--enable-debug-command", "local")
	types := []string{"string", "integer", "double", "bignum", "null", "array", "set", "map",
		"attrib", "push", "verbatim", "true", "false"}
	for _, proto := range []string{"resp3", "resp2"} {
		t.Run(proto, func(t *testing.T) {
			c := dialRedis(t, addr)
			if proto == "resp3" {
				c.send("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
				if hello := c.reply(); hello[0] != '%' {
					t.Fatalf("HELLO 3 replied %q", hello)
				}
			}
			var got []string
			for _, typ := range types {
				c.send("*3\r\n$5\r\nDEBUG\r\n$8\r\nPROTOCOL\r\n" + bulk(typ))
				for {
					var buf bytes.Buffer
					fr, err := c.fr.Next(&buf)
					if err != nil {
						t.Fatal(err)
					}
					if string(fr.Small) != buf.String() {
						t.Fatalf("%s: Small %q, wrote %q", typ, fr.Small, buf.Bytes())
					}
					got = append(got, buf.String())
					if fr.IsReply() {
						break // an attribute or push comes before the reply
					}
				}
			}
			var want []string
			for _, v := range framerVectors {
				if v.name == "debug protocol "+proto {
					want = v.frames
				}
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("redis sent\n%q\nvectors are\n%q", got, want)
			}
		})
	}
}
