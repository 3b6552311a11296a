package proxy

import (
	"bytes"
	"fmt"
)

// Frame describes one top-level reply frame read by a Framer.
type Frame struct {
	// Type is the first byte of the top-level frame: + - : $ * _ , # ( ! = % ~ | >
	Type byte
	// Size is the total bytes of the frame on the wire, including nested
	// elements and CRLFs.
	Size int64
	// Small holds the frame's exact bytes when Size <= the framer's capture
	// limit, else nil. It is valid until the next call to Next.
	Small []byte
}

// IsError reports whether the frame is an error reply (- or !).
func (f Frame) IsError() bool { return f.Type == '-' || f.Type == '!' }

// IsReply reports whether the frame answers a command: false for pushes (>)
// and attributes (|), which are not replies (an attribute precedes the reply
// it annotates).
func (f Frame) IsReply() bool { return f.Type != '>' && f.Type != '|' }

// ErrorText returns the error message ("READONLY You can't ...") for - and !
// frames when captured, else "".
func (f Frame) ErrorText() string {
	if len(f.Small) < 3 {
		return ""
	}
	switch f.Type {
	case '-':
		return string(f.Small[1 : len(f.Small)-2])
	case '!':
		i := bytes.IndexByte(f.Small, '\n')
		if i < 0 || i+1 > len(f.Small)-2 {
			return ""
		}
		return string(f.Small[i+1 : len(f.Small)-2])
	}
	return ""
}

// ProtocolError reports malformed RESP read by a Framer. The stream cannot be
// resynchronised after it: the connection must be closed.
type ProtocolError struct {
	Offset int64  // bytes of the frame consumed before the fault
	Msg    string // what was wrong
}

// Error describes the fault and where in the frame it was found.
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("resp protocol error at frame offset %d: %s", e.Offset, e.Msg)
}
