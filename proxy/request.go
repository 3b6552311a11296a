package proxy

import (
	"bytes"
	"math"
	"strconv"
)

// Request limits used when the corresponding RequestLimits field is zero
// (DefaultMaxBulk applies to requests too).
const (
	// DefaultMaxMultibulk is the Redis 2.x hard limit (1024*1024). Redis 7
	// accepts up to INT_MAX arguments, but no client library sends anywhere
	// near a million in one command, and the Args slice of a complete
	// request costs 24 bytes per argument.
	DefaultMaxMultibulk = 1 << 20
	// DefaultMaxInline is Redis's PROTO_INLINE_MAX_SIZE.
	DefaultMaxInline = 64 << 10
)

// Command is one client request. Raw is its RESP multibulk encoding (inline
// commands are re-encoded); Args slice into Raw (no copies).
type Command struct {
	Raw  []byte
	Args [][]byte
}

// RequestLimits bound what a client may send. A zero field takes its default.
type RequestLimits struct {
	// MaxBulk is the largest bulk argument (default 512 MiB, Redis's
	// proto-max-bulk-len). Longer → "invalid bulk length". Inline arguments
	// are held to it too.
	MaxBulk int64
	// MaxMultibulk is the most arguments in one command (default 1<<20;
	// values above INT_MAX are lowered to it, as Redis does). More →
	// "invalid multibulk length". Inline commands are held to it too.
	MaxMultibulk int64
	// MaxInline is the longest inline line and the longest multibulk or bulk
	// count line without a CR (default 64 KiB, Redis's PROTO_INLINE_MAX_SIZE).
	MaxInline int
	// MaxQuery is the largest request in bytes, all arguments together
	// (default 1 GiB, Redis's client-query-buffer-limit).
	MaxQuery int64
}

func (l RequestLimits) withDefaults() RequestLimits {
	if l.MaxBulk <= 0 {
		l.MaxBulk = DefaultMaxBulk
	}
	if l.MaxMultibulk <= 0 {
		l.MaxMultibulk = DefaultMaxMultibulk
	}
	if l.MaxMultibulk > math.MaxInt32 {
		l.MaxMultibulk = math.MaxInt32
	}
	if l.MaxInline <= 0 {
		l.MaxInline = DefaultMaxInline
	}
	if l.MaxQuery <= 0 {
		l.MaxQuery = 1 << 30
	}
	return l
}

// RequestError is a client protocol error. Its text is Redis's own: reply
// "-ERR " + Error() and close the connection, as Redis does.
type RequestError struct {
	Text string
}

// Error returns Redis's text, without the "ERR " prefix.
func (e *RequestError) Error() string { return e.Text }

// The request errors whose text does not vary.
var (
	errInvalidMultibulk = &RequestError{"Protocol error: invalid multibulk length"}
	errInvalidBulk      = &RequestError{"Protocol error: invalid bulk length"}
	errUnbalanced       = &RequestError{"Protocol error: unbalanced quotes in request"}
	errTooBigInline     = &RequestError{"Protocol error: too big inline request"}
	errTooBigMbulk      = &RequestError{"Protocol error: too big mbulk count string"}
	errTooBigBulk       = &RequestError{"Protocol error: too big bulk count string"}
	// errQueryLimit: Redis closes such a client without a reply; the proxy
	// says why first.
	errQueryLimit = &RequestError{"Protocol error: request exceeds client-query-buffer-limit"}
)

// minArgSize is the smallest encoding of one multibulk argument: "$0\r\n\r\n".
const minArgSize = 6

// ParseRequest parses one request from the start of buf, exactly as Redis
// 7.0's processMultibulkBuffer and processInlineBuffer do (see below).
//
// It returns n == 0 and err == nil when buf holds no complete request yet;
// need is then a lower bound (>= len(buf)+1) on the total bytes buf must hold
// before the request can complete: once a bulk's header is seen it counts that
// bulk in full, plus 6 bytes (the smallest argument, "$0\r\n\r\n") for each
// argument still to come, so it is exact when the last argument's header has
// arrived; len(buf)+1 when nothing better is known. need is 0 otherwise. A complete request
// returns n > 0, the bytes consumed. Redis silently ignores "*0", any
// "*<negative>" and empty or blank inline lines: those return n > 0 with
// cmd.Args == nil, and the caller skips them. For a multibulk request Raw is
// buf[:n] itself; for an inline one Raw is a fresh RESP encoding. Errors are
// *RequestError.
//
// Redis's leniencies are kept, so that the proxy and the server always agree
// on where a request ends: the byte after a CR in a count line, and the two
// bytes after a bulk payload, are skipped without being checked; a NUL byte
// before the end of a count line or inline line hides that end (Redis uses
// strchr), so such a request never completes and fails once MaxInline is
// exceeded. Redis reports an over-long line only when it has read more than
// MaxInline bytes of it without its end, which depends on how the data was
// split into reads; here a line is too long exactly when its end is not
// within its first MaxInline+1 bytes.
func ParseRequest(buf []byte, lim RequestLimits) (cmd Command, n int, need int, err error) {
	return parseRequest(buf, lim, nil)
}

// arenaMaxArgs is the most arguments a command may have to take its Args
// from a reader's arena; a longer one gets a slice of its own.
const arenaMaxArgs = 64

// parseRequest is ParseRequest. When arena is not nil, the Args of a
// multibulk command of at most arenaMaxArgs arguments are appended to
// *arena instead of allocated: a reader parsing a pipeline allocates
// nothing per command. A full arena is replaced by a larger one; the
// commands already parsed keep the old one.
func parseRequest(buf []byte, lim RequestLimits, arena *[][]byte) (cmd Command, n int, need int, err error) {
	if len(buf) == 0 {
		return Command{}, 0, 1, nil
	}
	lim = lim.withDefaults()
	if buf[0] != '*' {
		return parseInline(buf, lim)
	}
	// Args is allocated once the request is known to be complete, so an
	// incomplete one costs nothing. Short commands collect their arguments
	// on the stack on the way; longer ones take a second pass.
	var small [16][]byte
	count, n, need, err := scanMultibulk(buf, lim, small[:])
	if n == 0 || count <= 0 {
		return Command{}, n, need, err
	}
	var args [][]byte
	if arena != nil && count <= arenaMaxArgs {
		a, k := *arena, int(count)
		if len(a)+k > cap(a) {
			a = make([][]byte, 0, max(2*cap(a), arenaMaxArgs))
		}
		args = a[len(a) : len(a)+k : len(a)+k]
		*arena = a[:len(a)+k]
	} else {
		args = make([][]byte, count)
	}
	if count <= int64(len(small)) {
		copy(args, small[:count])
	} else {
		scanMultibulk(buf, lim, args)
	}
	return Command{Raw: buf[:n:n], Args: args}, n, 0, nil
}

// lineEnd returns the index of the first c in b[from:], or -1 when a NUL
// byte comes first or c is not within the first max+1 bytes of b[from:].
func lineEnd(b []byte, from int, c byte, max int) int {
	end := min(len(b), from+max+1)
	// Count lines are a few bytes long: a plain loop beats IndexByte's setup.
	for i := from; i < min(end, from+16); i++ {
		switch b[i] {
		case c:
			return i
		case 0:
			return -1
		}
	}
	if end <= from+16 {
		return -1
	}
	window := b[from:end]
	i := bytes.IndexByte(window, c)
	if i < 0 || bytes.IndexByte(window[:i], 0) >= 0 {
		return -1
	}
	return from + i
}

// scanMultibulk checks the multibulk request at the start of buf. It returns
// the argument count (<= 0: an ignored request) and n > 0 when the request is
// complete, else n == 0 and need or an error. It stores the arguments it
// passes in args, as far as args is long.
func scanMultibulk(buf []byte, lim RequestLimits, args [][]byte) (count int64, n, need int, err error) {
	nl := lineEnd(buf, 0, '\r', lim.MaxInline)
	if nl < 0 {
		if len(buf) > lim.MaxInline {
			return 0, 0, 0, errTooBigMbulk
		}
		return 0, 0, len(buf) + 1, nil
	}
	if nl+1 >= len(buf) { // Redis also needs the byte after the CR
		return 0, 0, nl + 2, nil
	}
	count, ok := string2ll(buf[1:nl])
	if !ok || count > lim.MaxMultibulk {
		return 0, 0, 0, errInvalidMultibulk
	}
	pos := nl + 2
	if count <= 0 {
		return count, pos, 0, nil
	}
	for j := int64(0); j < count; j++ {
		nl = lineEnd(buf, pos, '\r', lim.MaxInline)
		if nl < 0 {
			if len(buf)-pos > lim.MaxInline {
				return 0, 0, 0, errTooBigBulk
			}
			return 0, 0, needAtLeast(len(buf)+1, int64(pos)+minArgSize*(count-j)), nil
		}
		if nl+1 >= len(buf) {
			return 0, 0, needAtLeast(len(buf)+1, int64(pos)+minArgSize*(count-j)), nil
		}
		if buf[pos] != '$' {
			return 0, 0, 0, expectedDollar(buf[pos])
		}
		size, ok := string2ll(buf[pos+1 : nl])
		if !ok || size < 0 || size > lim.MaxBulk {
			return 0, 0, 0, errInvalidBulk
		}
		pos = nl + 2
		end := int64(pos) + size + 2 // the two bytes after the payload are skipped unchecked
		if end > int64(len(buf)) {
			return 0, 0, needAtLeast(len(buf)+1, end+minArgSize*(count-j-1)), nil
		}
		if j < int64(len(args)) {
			args[j] = buf[pos : pos+int(size) : pos+int(size)]
		}
		pos = int(end)
	}
	return count, pos, 0, nil
}

func needAtLeast(a int, b int64) int {
	if b > math.MaxInt {
		return math.MaxInt
	}
	return max(a, int(b))
}

// expectedDollar builds Redis's error for a multibulk element that is not a
// bulk string. Like addReplyErrorFormat, it maps CR and LF to spaces.
func expectedDollar(c byte) error {
	if c == '\r' || c == '\n' {
		c = ' '
	}
	return &RequestError{"Protocol error: expected '$', got '" + string([]byte{c}) + "'"}
}

// string2ll parses a decimal integer as Redis's string2ll does: an optional
// '-', no '+', no leading zeros ("0" alone is fine, "-0" is not), no spaces,
// 64-bit range.
func string2ll(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) >= 21 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	if b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if v > math.MaxUint64/10 {
			return 0, false
		}
		v *= 10
		if v > math.MaxUint64-uint64(c-'0') {
			return 0, false
		}
		v += uint64(c - '0')
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return int64(-v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// parseInline parses an inline request (a line not starting with '*').
func parseInline(buf []byte, lim RequestLimits) (Command, int, int, error) {
	nl := lineEnd(buf, 0, '\n', lim.MaxInline)
	if nl < 0 {
		if len(buf) > lim.MaxInline {
			return Command{}, 0, 0, errTooBigInline
		}
		return Command{}, 0, len(buf) + 1, nil
	}
	line := buf[:nl]
	if nl > 0 && buf[nl-1] == '\r' {
		line = buf[:nl-1]
	}
	n := nl + 1
	// First pass: count the arguments and size the RESP encoding.
	argc, size, longest := 0, 0, 0
	for p := 0; ; {
		var l int
		var ok bool
		if p, l, ok = splitArg(line, p, nil); !ok {
			return Command{}, 0, 0, errUnbalanced
		}
		if l < 0 {
			break
		}
		argc++
		longest = max(longest, l)
		size += 1 + decimalLen(l) + 2 + l + 2
	}
	if argc == 0 {
		return Command{}, n, 0, nil
	}
	// Redis has neither limit for inline commands; they are applied so that
	// Raw always parses again under the same limits. With the defaults a
	// line of at most MaxInline bytes cannot reach them.
	if int64(longest) > lim.MaxBulk {
		return Command{}, 0, 0, errInvalidBulk
	}
	if int64(argc) > lim.MaxMultibulk {
		return Command{}, 0, 0, errInvalidMultibulk
	}
	size += 1 + decimalLen(argc) + 2
	raw := make([]byte, 0, size)
	args := make([][]byte, argc)
	raw = append(raw, '*')
	raw = strconv.AppendInt(raw, int64(argc), 10)
	raw = append(raw, '\r', '\n')
	p := 0
	for j := range args {
		_, l, _ := splitArg(line, p, nil)
		raw = append(raw, '$')
		raw = strconv.AppendInt(raw, int64(l), 10)
		raw = append(raw, '\r', '\n')
		start := len(raw)
		p, _, _ = splitArg(line, p, &raw)
		args[j] = raw[start:len(raw):len(raw)]
		raw = append(raw, '\r', '\n')
	}
	return Command{Raw: raw, Args: args}, n, 0, nil
}

func decimalLen(v int) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// isSpace is C's isspace in the C locale, which sdssplitargs uses to skip
// blanks and to check what follows a closing quote.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// splitArg reads the next argument of an inline line from position p,
// following Redis's sdssplitargs: blanks (isspace) separate arguments; an
// unquoted argument ends at space, tab, CR or LF; "double quotes" take the
// escapes \xHH \n \r \t \b \a and \<any> for that character; 'single quotes'
// take only \'; a quote may open inside an argument, and a closing quote
// must be followed by a blank or the end of the line. It returns the position
// after the argument, its length (-1 when the line has no more arguments)
// and ok == false for unbalanced quotes. When dst is not nil the argument's
// bytes are appended to it. line holds no NUL byte (ParseRequest never finds
// the end of a line past one), so the end of the slice stands for C's NUL.
func splitArg(line []byte, p int, dst *[]byte) (next, length int, ok bool) {
	at := func(i int) byte {
		if i < len(line) {
			return line[i]
		}
		return 0
	}
	emit := func(c byte) {
		length++
		if dst != nil {
			*dst = append(*dst, c)
		}
	}
	for p < len(line) && isSpace(line[p]) {
		p++
	}
	if p >= len(line) {
		return p, -1, true
	}
	inq, insq := false, false
	for {
		c := at(p)
		switch {
		case inq:
			switch {
			case c == '\\' && at(p+1) == 'x' && isHex(at(p+2)) && isHex(at(p+3)):
				emit(unhex(at(p+2))<<4 | unhex(at(p+3)))
				p += 3
			case c == '\\' && at(p+1) != 0:
				p++
				switch e := at(p); e {
				case 'n':
					emit('\n')
				case 'r':
					emit('\r')
				case 't':
					emit('\t')
				case 'b':
					emit('\b')
				case 'a':
					emit('\a')
				default:
					emit(e)
				}
			case c == '"':
				if n := at(p + 1); n != 0 && !isSpace(n) {
					return 0, 0, false
				}
				return p + 1, length, true
			case c == 0:
				return 0, 0, false
			default:
				emit(c)
			}
		case insq:
			switch {
			case c == '\\' && at(p+1) == '\'':
				p++
				emit('\'')
			case c == '\'':
				if n := at(p + 1); n != 0 && !isSpace(n) {
					return 0, 0, false
				}
				return p + 1, length, true
			case c == 0:
				return 0, 0, false
			default:
				emit(c)
			}
		default:
			switch c {
			case ' ', '\n', '\r', '\t', 0:
				return p, length, true
			case '"':
				inq = true
			case '\'':
				insq = true
			default:
				emit(c)
			}
		}
		p++
	}
}
