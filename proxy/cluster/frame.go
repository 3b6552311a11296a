package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// The merges of Split and of the fan-out helpers read and write raw RESP
// frames: replies are passed through byte for byte where they can be, so
// what a client receives is what a node sent, in whichever protocol
// (RESP2 or RESP3) the node's connection speaks.

// ErrIncompleteFrame is FrameLen's error for a frame that runs past the
// end of the bytes given: a reader needs more, a merge got a truncated
// reply.
var ErrIncompleteFrame = errors.New("resp: incomplete frame")

// maxNesting bounds the depth of aggregates frameLen follows, so that a
// hostile or corrupt reply cannot exhaust the stack.
const maxNesting = 128

// FrameLen returns the length of the RESP2 or RESP3 frame at the start of
// b, aggregates and RESP3 attributes included. The error is
// ErrIncompleteFrame when b holds only the beginning of a frame, another
// one when the bytes are not RESP. It lets a caller cut a connection's
// byte stream into the replies that Merge and the fan-out merges take.
func FrameLen(b []byte) (int, error) {
	return frameLen(b, 0)
}

func frameLen(b []byte, depth int) (int, error) {
	if depth > maxNesting {
		return 0, errors.New("resp: nesting too deep")
	}
	end := bytes.Index(b, []byte("\r\n"))
	if end < 0 {
		return 0, ErrIncompleteFrame
	}
	if end == 0 {
		return 0, errors.New("resp: empty frame")
	}
	head, n := b[1:end], end+2
	switch b[0] {
	case '+', '-', ',', '(', '#':
		// Simple strings and errors, doubles, big numbers, booleans:
		// one line. Their contents are the client's business.
		return n, nil
	case '_':
		if len(head) != 0 {
			return 0, fmt.Errorf("resp: bad null %q", head)
		}
		return n, nil
	case ':':
		if _, ok := parseInt(head); !ok {
			return 0, fmt.Errorf("resp: bad integer %q", head)
		}
		return n, nil
	case '$', '!', '=':
		l, ok := parseInt(head)
		switch {
		case ok && l == -1 && b[0] == '$': // RESP2 null bulk
			return n, nil
		case !ok || l < 0:
			return 0, fmt.Errorf("resp: bad length %q", head)
		case int64(len(b)-n) < l+2:
			return 0, ErrIncompleteFrame
		case b[n+int(l)] != '\r' || b[n+int(l)+1] != '\n':
			return 0, errors.New("resp: bulk not terminated by CRLF")
		}
		return n + int(l) + 2, nil
	case '*', '~', '>', '%', '|':
		count, ok := parseInt(head)
		switch {
		case ok && count == -1 && b[0] == '*': // RESP2 null array
			return n, nil
		case !ok || count < 0:
			return 0, fmt.Errorf("resp: bad count %q", head)
		}
		if b[0] == '%' || b[0] == '|' {
			count *= 2
		}
		if b[0] == '|' {
			count++ // an attribute precedes the frame it describes
		}
		for ; count > 0; count-- {
			if n >= len(b) {
				return 0, ErrIncompleteFrame
			}
			m, err := frameLen(b[n:], depth+1)
			if err != nil {
				return 0, err
			}
			n += m
		}
		return n, nil
	}
	return 0, fmt.Errorf("resp: unknown type byte %q", b[0])
}

// checkFrame reports an error unless r is exactly one RESP frame.
func checkFrame(r []byte) error {
	n, err := FrameLen(r)
	switch {
	case err != nil:
		return err
	case n != len(r):
		return fmt.Errorf("resp: %d bytes after the frame", len(r)-n)
	}
	return nil
}

// isError reports whether the frame r is an error reply (simple or RESP3
// blob error).
func isError(r []byte) bool {
	return len(r) > 0 && (r[0] == '-' || r[0] == '!')
}

// firstError returns the first reply that is an error, or nil; every reply
// must be one whole frame.
func firstError(replies [][]byte) ([]byte, error) {
	for i, r := range replies {
		if err := checkFrame(r); err != nil {
			return nil, fmt.Errorf("reply %d: %w", i, err)
		}
	}
	for _, r := range replies {
		if isError(r) {
			return r, nil
		}
	}
	return nil, nil
}

// arrayElements returns the elements of the array frame r (one whole
// frame), each a whole frame itself.
func arrayElements(r []byte) ([][]byte, error) {
	if len(r) == 0 || r[0] != '*' {
		return nil, fmt.Errorf("want an array, got %q", head(r))
	}
	end := bytes.Index(r, []byte("\r\n"))
	count, ok := parseInt(r[1:end])
	if !ok || count < 0 {
		return nil, fmt.Errorf("want an array, got %q", head(r))
	}
	out := make([][]byte, 0, min(count, int64(len(r))))
	n := end + 2
	for range count {
		m, err := FrameLen(r[n:])
		if err != nil {
			return nil, err
		}
		out = append(out, r[n:n+m])
		n += m
	}
	return out, nil
}

// integer returns the value of the integer frame r.
func integer(r []byte) (int64, error) {
	if len(r) < 4 || r[0] != ':' {
		return 0, fmt.Errorf("want an integer, got %q", head(r))
	}
	v, ok := parseInt(r[1 : len(r)-2])
	if !ok {
		return 0, fmt.Errorf("want an integer, got %q", head(r))
	}
	return v, nil
}

// bulk returns the contents of the bulk string frame r (RESP3 verbatim
// strings too, their three-letter format and ':' removed); null is false.
func bulk(r []byte) (s []byte, null bool, err error) {
	switch {
	case isNull(r):
		return nil, true, nil
	case len(r) < 4 || (r[0] != '$' && r[0] != '='):
		return nil, false, fmt.Errorf("want a bulk string, got %q", head(r))
	}
	s = r[bytes.Index(r, []byte("\r\n"))+2 : len(r)-2]
	if r[0] == '=' {
		if len(s) < 4 || s[3] != ':' {
			return nil, false, fmt.Errorf("bad verbatim string %q", head(r))
		}
		s = s[4:]
	}
	return s, false, nil
}

// isNull reports whether r is a null: RESP2 null bulk or array, RESP3 null.
func isNull(r []byte) bool {
	s := string(r)
	return s == "$-1\r\n" || s == "*-1\r\n" || s == "_\r\n"
}

// head returns the first line of a frame, for error messages.
func head(r []byte) []byte {
	if i := bytes.IndexByte(r, '\r'); i >= 0 {
		r = r[:i]
	}
	if len(r) > 40 {
		r = r[:40]
	}
	return r
}

// AppendCommand appends args as a RESP command (an array of bulk strings,
// as Redis expects: *N\r\n$len\r\narg\r\n…) to dst.
func AppendCommand(dst []byte, args [][]byte) []byte {
	dst = appendHeader(dst, '*', len(args))
	for _, a := range args {
		dst = appendBulk(dst, a)
	}
	return dst
}

// appendHeader appends a frame header: a type byte, a count or length.
func appendHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, typ)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

// appendBulk appends b as a bulk string frame.
func appendBulk(dst, b []byte) []byte {
	dst = appendHeader(dst, '$', len(b))
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

// appendInteger appends v as an integer frame.
func appendInteger(dst []byte, v int64) []byte {
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, v, 10)
	return append(dst, '\r', '\n')
}
