package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The reply-order test's view of RESP: whole reply values (not raw bytes,
// as respConn returns), read without a depth limit that a real reply could
// exceed (Lua answers 8,000 levels deep), and a per-client log of what was
// sent and received, printed when an invariant breaks.

// rval is one RESP2/RESP3 value.
type rval struct {
	typ   byte   // the type byte: + - : $ * _ , # ( = % ~ > !
	str   string // text of simple, bulk, verbatim (without "txt:"), error, number
	null  bool   // $-1, *-1, _
	elems []rval // array, set, push; map as key, value, key, value…
	size  int    // bytes on the wire
}

func (v rval) isErr() bool   { return v.typ == '-' || v.typ == '!' }
func (v rval) isArray() bool { return (v.typ == '*' || v.typ == '~') && !v.null }

// isBulk reports whether v is a non-null bulk or verbatim string.
func (v rval) isBulk() bool { return (v.typ == '$' || v.typ == '=') && !v.null }

// is reports whether v is a simple string equal to s.
func (v rval) is(s string) bool { return v.typ == '+' && v.str == s }

// isInt reports whether v is an integer and returns it.
func (v rval) isInt() (int64, bool) {
	if v.typ != ':' {
		return 0, false
	}
	n, err := strconv.ParseInt(v.str, 10, 64)
	return n, err == nil
}

// String renders v briefly for logs: long strings are cut.
func (v rval) String() string {
	var b strings.Builder
	v.render(&b, 0)
	return b.String()
}

func (v rval) render(b *strings.Builder, depth int) {
	if b.Len() > 200 {
		return
	}
	switch {
	case v.null:
		b.WriteString("(nil)")
	case v.elems != nil || v.typ == '*' || v.typ == '%' || v.typ == '~' || v.typ == '>':
		if depth > 6 {
			fmt.Fprintf(b, "%c…(%d bytes)", v.typ, v.size)
			return
		}
		b.WriteByte(v.typ)
		b.WriteByte('[')
		for i, e := range v.elems {
			if i > 0 {
				b.WriteByte(' ')
			}
			e.render(b, depth+1)
		}
		b.WriteByte(']')
	default:
		s := v.str
		if len(s) > 80 {
			s = s[:40] + fmt.Sprintf("…(%d bytes)…", len(s)) + s[len(s)-20:]
		}
		if v.typ == '$' || v.typ == '=' {
			fmt.Fprintf(b, "%q", s)
		} else {
			b.WriteByte(v.typ)
			b.WriteString(s)
		}
	}
}

// readVal reads one whole value. An attribute is read and dropped with the
// value it annotates returned. errPartial wraps the error when the
// connection ended inside a frame.
func readVal(br *bufio.Reader) (rval, error) {
	v, err := readValDepth(br, 0)
	for err == nil && v.typ == '|' {
		v, err = readValDepth(br, 0)
	}
	return v, err
}

// errPartial marks a connection that ended in the middle of a frame.
var errPartial = errors.New("connection ended inside a reply frame")

func readValDepth(br *bufio.Reader, depth int) (rval, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if depth > 0 || len(line) > 0 {
			return rval{}, fmt.Errorf("%w: %v", errPartial, err)
		}
		return rval{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return rval{}, fmt.Errorf("bad line %q", line)
	}
	v := rval{typ: line[0], size: len(line)}
	text := string(line[1 : len(line)-2])
	partial := func(err error) (rval, error) { return rval{}, fmt.Errorf("%w: %v", errPartial, err) }
	switch v.typ {
	case '+', '-', ':', ',', '#', '(':
		v.str = text
	case '_':
		v.null = true
	case '$', '!', '=':
		n, err := strconv.Atoi(text)
		if err != nil {
			return rval{}, fmt.Errorf("bad length %q", line)
		}
		if n < 0 {
			v.null = true
			return v, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return partial(err)
		}
		v.size += n + 2
		v.str = string(buf[:n])
		if v.typ == '=' && len(v.str) >= 4 {
			v.str = v.str[4:]
		}
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(text)
		if err != nil {
			return rval{}, fmt.Errorf("bad length %q", line)
		}
		if n < 0 {
			v.null = true
			return v, nil
		}
		if v.typ == '%' || v.typ == '|' {
			n *= 2
		}
		v.elems = make([]rval, 0, min(n, 1024))
		for range n {
			e, err := readValDepth(br, depth+1)
			if err != nil {
				if errors.Is(err, errPartial) {
					return rval{}, err
				}
				return partial(err)
			}
			v.size += e.size
			v.elems = append(v.elems, e)
		}
	default:
		return rval{}, fmt.Errorf("unknown frame type %q", line)
	}
	return v, nil
}

// roLog keeps the last entries of one client's traffic.
type roLog struct {
	mu      sync.Mutex
	entries []string
	next    int
	full    bool
}

// roLogSize is how many entries a client keeps (about 200 KB); the last
// roLogShown are printed with a failure, all of them go to a file.
const (
	roLogSize  = 2000
	roLogShown = 60
)

func (l *roLog) add(format string, args ...any) {
	e := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries == nil {
		l.entries = make([]string, roLogSize)
	}
	l.entries[l.next] = e
	l.next = (l.next + 1) % roLogSize
	l.full = l.full || l.next == 0
}

// tail returns the last n entries, oldest first.
func (l *roLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	if l.full {
		out = append(out, l.entries[l.next:]...)
	}
	out = append(out, l.entries[:l.next]...)
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return "    " + strings.Join(out, "\n    ")
}

// shortArgs renders a command for the log, cutting long arguments.
func shortArgs(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if len(a) > 60 {
			a = a[:24] + fmt.Sprintf("…(%d bytes)", len(a))
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}
