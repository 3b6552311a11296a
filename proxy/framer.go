package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
)

// Framer limits used when the corresponding Framer field is zero.
const (
	// DefaultMaxDepth is the most nesting levels a Framer holds at once
	// (see Framer.MaxDepth): twice the deepest Redis reply. Redis 7.0 nests
	// a Lua table that contains itself 7,995 deep, then writes "-ERR reached
	// lua stack limit" (Lua's LUAI_MAXCSTACK 8000; measured for arrays, maps
	// and sets, RESP2 and RESP3); no other reply nests more than a few
	// levels. Worst case 16,384 x 16 bytes = 256 KiB per backend connection,
	// only while such a frame is read.
	DefaultMaxDepth = 1 << 14
	// DefaultMaxBulk is Redis's proto-max-bulk-len, the largest bulk string
	// accepted in replies and requests.
	DefaultMaxBulk = 512 << 20
	// DefaultCaptureLimit is the largest frame returned in Frame.Small.
	DefaultCaptureLimit = 1 << 10
	defaultFramerBuf    = 16 << 10
	minFramerBuf        = 64
	// maxHeaderLen bounds the text of a length line ("$123", "*?"): a
	// signed 64-bit number has at most 20 characters.
	maxHeaderLen = 32
)

// Parser states of the element being read.
const (
	stType    = iota // expecting a type byte and, for length types, its header line
	stLine           // inside a simple line (+ - : _ , # ( ), looking for CRLF
	stPayload        // inside a bulk payload, remain bytes left
	stCRLF           // expecting the CRLF after a payload
)

// level is one open aggregate on the nesting stack.
type level struct {
	left int64 // elements still expected; -1 for a streamed aggregate (ends with '.')
	attr bool  // the aggregate is an attribute: when complete it does not count as an element
}

// Framer splits a RESP2/RESP3 reply stream into top-level frames and copies
// each frame's bytes unchanged to a writer as they arrive. Its memory is
// bounded whatever the input: the read buffer, the capture buffer and a
// nesting stack of at most MaxDepth levels, grown only while a frame needs
// it and given back when the frame ends. Payloads are streamed in chunks
// and element counts are only counters, never allocations. It checks framing
// only: the text of simple lines (+ - : _ , # () is passed through unchecked.
//
// Set the limit fields before the first call to Next. A Framer is not safe
// for concurrent use.
type Framer struct {
	// MaxDepth is the most nesting levels held at once (0 → DefaultMaxDepth):
	// one per aggregate with elements to come after the one being read, so
	// nesting in the last element (*1 *1 *1 ...) costs one level in all.
	MaxDepth int
	// MaxBulk is the largest bulk, bulk error, verbatim string or streamed
	// string chunk accepted (0 → 512 MiB, Redis's proto-max-bulk-len).
	MaxBulk int64
	// CaptureLimit is the largest frame whose bytes are returned in
	// Frame.Small (0 → 1 KiB; negative: never capture).
	CaptureLimit int

	br       *bufio.Reader
	stack    []level
	stackArr [8]level // backing array for shallow nesting, so the stack costs no allocation
	capBuf   []byte   // bytes of a frame read in several rounds, while within CaptureLimit
	err      error    // sticky protocol or write error

	// State of the frame in progress; kept across read errors so that Next
	// can resume after, for example, a read deadline.
	inFrame  bool
	typ      byte
	size     int64
	mode     uint8
	remain   int64 // payload bytes left in stPayload
	inStream bool  // inside a streamed string ($?), expecting ';' chunks
}

// NewFramer returns a Framer reading from r through its own buffer of
// bufSize bytes (bufSize <= 0 → 16 KiB; at least 64).
func NewFramer(r io.Reader, bufSize int) *Framer {
	if bufSize <= 0 {
		bufSize = defaultFramerBuf
	}
	if bufSize < minFramerBuf {
		bufSize = minFramerBuf
	}
	// NewReaderSize(r, …) would return r itself when r is a large enough
	// *bufio.Reader; the framer must own its buffer, so Reset instead.
	br := bufio.NewReaderSize(nil, bufSize)
	br.Reset(r)
	f := &Framer{br: br}
	f.stack = f.stackArr[:0]
	return f
}

// Reset discards all buffered data and state (including a sticky error) and
// makes the framer read from r. Limit fields are kept.
func (f *Framer) Reset(r io.Reader) {
	f.br.Reset(r)
	f.stack = f.stackArr[:0]
	f.err = nil
	f.inFrame = false
	f.resetFrame()
}

// Buffered returns the number of bytes read from the underlying reader but
// not yet consumed by a frame.
func (f *Framer) Buffered() int { return f.br.Buffered() }

func (f *Framer) resetFrame() {
	f.typ, f.size, f.mode, f.remain, f.inStream = 0, 0, stType, 0, false
	f.capBuf = f.capBuf[:0]
}

func (f *Framer) maxDepth() int {
	if f.MaxDepth > 0 {
		return f.MaxDepth
	}
	return DefaultMaxDepth
}

func (f *Framer) maxBulk() int64 {
	if f.MaxBulk > 0 {
		return f.MaxBulk
	}
	return DefaultMaxBulk
}

func (f *Framer) captureLimit() int {
	switch {
	case f.CaptureLimit > 0:
		return f.CaptureLimit
	case f.CaptureLimit < 0:
		return -1
	}
	return DefaultCaptureLimit
}

// Next reads exactly one top-level frame, copying its bytes to w unchanged as
// they arrive; w may be nil (discard). A frame already complete in the buffer
// is handed to w in one Write call; a large payload is copied in chunks of at
// most the buffer size and never held whole in memory.
//
// Errors: io.EOF when the stream ends cleanly between frames;
// io.ErrUnexpectedEOF when it ends inside one; other read errors wrapped
// (errors.Is works), after which Next may be called again to resume the same
// frame; an error from w, wrapped; *ProtocolError for malformed input (bad
// type byte, bad length, missing CRLF, nesting deeper than MaxDepth, bulk over
// MaxBulk). After a write or protocol error the framer is unusable (every
// call returns the same error) until Reset. Bytes of a partial frame may
// already have been written to w when an error is returned.
func (f *Framer) Next(w io.Writer) (Frame, error) {
	if f.err != nil {
		return Frame{}, f.err
	}
	if !f.inFrame {
		f.inFrame = true
		f.resetFrame()
	}
	limit := f.captureLimit()
	need := 1
	for {
		if f.br.Buffered() < need {
			if _, err := f.br.Peek(need); err != nil && f.br.Buffered() < need {
				if errors.Is(err, io.EOF) {
					if f.size == 0 && f.br.Buffered() == 0 {
						f.inFrame = false
						return Frame{}, io.EOF
					}
					return Frame{}, io.ErrUnexpectedEOF
				}
				return Frame{}, fmt.Errorf("read reply: %w", err)
			}
		}
		buf, _ := f.br.Peek(f.br.Buffered())
		k, done, perr := f.step(buf)
		if perr != nil {
			f.stack = f.stackArr[:0] // the framer is dead: let a deep stack go now
			f.err = perr
			return Frame{}, perr
		}
		chunk := buf[:k]
		whole := done && f.size == 0 // the frame is this one chunk
		if k > 0 {
			if w != nil {
				if n, err := w.Write(chunk); err != nil || n != k {
					if err == nil {
						err = io.ErrShortWrite
					}
					f.err = fmt.Errorf("write reply: %w", err)
					return Frame{}, f.err
				}
			}
			if !whole && f.size+int64(k) <= int64(limit) {
				if cap(f.capBuf) < limit { // once per framer, never grown by append
					f.capBuf = append(make([]byte, 0, limit), f.capBuf...)
				}
				f.capBuf = append(f.capBuf, chunk...)
			}
			f.size += int64(k)
			if _, err := f.br.Discard(k); err != nil {
				f.err = fmt.Errorf("discard reply: %w", err) // cannot happen: k <= Buffered
				return Frame{}, f.err
			}
		}
		if done {
			fr := Frame{Type: f.typ, Size: f.size}
			if f.size <= int64(limit) {
				if whole {
					fr.Small = chunk // still in the read buffer, which only Next refills
				} else {
					fr.Small = f.capBuf
				}
			}
			f.stack = f.stackArr[:0] // a deep frame's stack is not kept with the connection
			f.inFrame = false
			return fr, nil
		}
		// What is left unconsumed is at most a partial header line or a
		// CR, so it always fits in the buffer with room for one more byte.
		need = f.br.Buffered() + 1
	}
}

func (f *Framer) protoErr(k int, format string, args ...any) error {
	return &ProtocolError{Offset: f.size + int64(k), Msg: fmt.Sprintf(format, args...)}
}

// step advances the parser over buf as far as the data allows. It returns the
// number of bytes consumed (whole tokens, except payloads and simple lines,
// which may be consumed in part) and whether the top-level frame is complete,
// in which case it stops right after the frame.
func (f *Framer) step(buf []byte) (k int, done bool, err error) {
	for {
		switch f.mode {
		case stType:
			if k >= len(buf) {
				return k, false, nil
			}
			t := buf[k]
			if f.size == 0 && k == 0 {
				f.typ = t
			}
			if f.inStream && t != ';' {
				return k, false, f.protoErr(k, "expected ';' chunk in streamed string, got %q", t)
			}
			switch t {
			case '+', '-', ':', '_', ',', '#', '(':
				k++
				f.mode = stLine
				continue
			case '$', '!', '=', '*', '%', '~', '|', '>', ';', '.':
			default:
				return k, false, f.protoErr(k, "invalid type byte %q", t)
			}
			hl, text, ok, msg := header(buf[k:])
			if msg != "" {
				return k, false, f.protoErr(k, "%s", msg)
			}
			if !ok {
				return k, false, nil // wait for the rest of the header line
			}
			elem, attr, msg := f.open(t, text)
			if msg != "" {
				return k, false, f.protoErr(k, "%s", msg)
			}
			k += hl
			if elem && f.complete(attr) {
				return k, true, nil
			}
		case stLine:
			i := bytes.IndexByte(buf[k:], '\r')
			if i < 0 {
				return len(buf), false, nil
			}
			if k+i+1 >= len(buf) {
				return k + i, false, nil // keep the CR until its LF is seen
			}
			if buf[k+i+1] != '\n' {
				return k + i, false, f.protoErr(k+i, "CR not followed by LF")
			}
			k += i + 2
			f.mode = stType
			if f.complete(false) {
				return k, true, nil
			}
		case stPayload:
			if avail := int64(len(buf) - k); avail < f.remain {
				f.remain -= avail
				return len(buf), false, nil
			}
			k += int(f.remain)
			f.remain = 0
			f.mode = stCRLF
		case stCRLF:
			if len(buf)-k < 2 {
				if len(buf)-k == 1 && buf[k] != '\r' {
					return k, false, f.protoErr(k, "bulk payload not followed by CRLF")
				}
				return k, false, nil
			}
			if buf[k] != '\r' || buf[k+1] != '\n' {
				return k, false, f.protoErr(k, "bulk payload not followed by CRLF")
			}
			k += 2
			f.mode = stType
			if !f.inStream && f.complete(false) {
				return k, true, nil
			}
		}
	}
}

// header finds the header line at the start of b (b[0] is the type byte).
// It returns the line's length including CRLF and its text, ok == false when
// the line is not complete yet, or a message when it is malformed.
func header(b []byte) (hl int, text []byte, ok bool, msg string) {
	window := b[1:min(len(b), maxHeaderLen+2)]
	i := bytes.IndexByte(window, '\r')
	if i < 0 {
		if len(b) >= maxHeaderLen+2 {
			return 0, nil, false, "length line too long"
		}
		return 0, nil, false, ""
	}
	i++ // index in b
	if i+1 >= len(b) {
		return 0, nil, false, ""
	}
	if b[i+1] != '\n' {
		return 0, nil, false, "CR not followed by LF"
	}
	return i + 2, b[1:i], true, ""
}

// open applies a header line of type t. It reports whether an element
// completed with it (a null, an empty aggregate, the end of a streamed string
// or aggregate) and, if so, whether that element was an attribute.
func (f *Framer) open(t byte, text []byte) (elem, attr bool, msg string) {
	streamed := len(text) == 1 && text[0] == '?'
	var n int64
	if !streamed && t != '.' {
		var ok bool
		if n, ok = parseLen(text); !ok {
			return false, false, fmt.Sprintf("invalid length %q", text)
		}
	}
	switch t {
	case '$', '!', '=':
		switch {
		case streamed && t == '$':
			f.inStream = true
			return false, false, ""
		case n == -1 && t == '$':
			return true, false, "" // RESP2 null bulk string
		case streamed || n < 0:
			return false, false, fmt.Sprintf("invalid bulk length %q", text)
		case n > f.maxBulk():
			return false, false, fmt.Sprintf("bulk length %d over limit %d", n, f.maxBulk())
		}
		f.remain, f.mode = n, stPayload
		return false, false, ""
	case ';':
		switch {
		case !f.inStream:
			return false, false, "';' chunk outside a streamed string"
		case streamed || n < 0:
			return false, false, fmt.Sprintf("invalid chunk length %q", text)
		case n == 0:
			f.inStream = false
			return true, false, ""
		case n > f.maxBulk():
			return false, false, fmt.Sprintf("chunk length %d over limit %d", n, f.maxBulk())
		}
		f.remain, f.mode = n, stPayload
		return false, false, ""
	case '.':
		if len(text) != 0 {
			return false, false, fmt.Sprintf("invalid end marker %q", text)
		}
		if len(f.stack) == 0 || f.stack[len(f.stack)-1].left != -1 {
			return false, false, "end marker outside a streamed aggregate"
		}
		top := f.stack[len(f.stack)-1]
		f.stack = f.stack[:len(f.stack)-1]
		return true, top.attr, ""
	}
	// Aggregates: * % ~ | >
	attr = t == '|'
	left := int64(-1)
	if !streamed {
		switch {
		case n == -1 && t == '*':
			return true, false, "" // RESP2 null array
		case n < 0:
			return false, false, fmt.Sprintf("invalid aggregate length %q", text)
		case t == '%' || t == '|':
			if n > math.MaxInt64/2 {
				return false, false, fmt.Sprintf("invalid map length %q", text)
			}
			n *= 2 // key/value pairs
		}
		if n == 0 {
			return true, attr, ""
		}
		left = n
	}
	if top := len(f.stack) - 1; top >= 0 && f.stack[top].left == 1 && !attr {
		// Tail elimination: the last element of its parent, it ends when
		// the parent does, and only the top level is ever touched, so it
		// takes the parent's place with the parent's attr flag (an
		// attribute's last value ends the attribute). Not for an attribute,
		// which the parent's last element still follows, nor in a streamed
		// parent (left -1), which a '.' still ends.
		f.stack[top] = level{left: left, attr: f.stack[top].attr}
		return false, false, ""
	}
	if len(f.stack) >= f.maxDepth() {
		return false, false, fmt.Sprintf("nesting deeper than %d open levels", f.maxDepth())
	}
	f.push(level{left: left, attr: attr})
	return false, false, ""
}

// push adds a level, doubling the stack up to MaxDepth levels at most.
func (f *Framer) push(l level) {
	if len(f.stack) == cap(f.stack) {
		s := make([]level, len(f.stack), min(2*cap(f.stack), f.maxDepth()))
		copy(s, f.stack)
		f.stack = s
	}
	f.stack = append(f.stack, l)
}

// complete records that an element ended and reports whether it ended the
// top-level frame. An attribute inside an aggregate annotates the next
// element and is not counted as one of the aggregate's elements.
func (f *Framer) complete(attr bool) bool {
	for len(f.stack) > 0 {
		if attr {
			return false
		}
		top := &f.stack[len(f.stack)-1]
		if top.left < 0 {
			return false // streamed: only '.' closes it
		}
		top.left--
		if top.left > 0 {
			return false
		}
		attr = top.attr
		f.stack = f.stack[:len(f.stack)-1]
	}
	return true
}

// parseLen parses a decimal length: an optional '-' and 1 to 19 digits,
// without overflow.
func parseLen(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		n = -n
	}
	return n, true
}
