package proxy

import (
	"bytes"
	"strconv"
	"strings"
)

// What the copier reads from frames and replies: the state a command
// changed, and the first elements of pub/sub frames.

// apply records what an answered command changed on the connection. d.mu
// is held.
func (d *duplex) apply(e *entry, failed bool) {
	l := &d.link
	switch {
	case e.op == opReset:
		*l = link{st: cleanState, subs: l.subs, reset: true}
		for i := range l.subs {
			clear(l.subs[i])
		}
		return
	case e.op == opTxEnd:
		l.txEnd()
		return
	case l.tx == txMulti:
		// Queued: it runs at EXEC, if at all, and what it did is not known.
		if !failed && e.op != opNone {
			l.unsure = true
		}
		return
	case failed:
		return
	}
	switch e.op {
	case opSelect:
		if len(e.args) == 2 {
			if db, err := strconv.Atoi(e.args[1]); err == nil {
				l.st.db = db
			}
		}
	case opAuth:
		switch len(e.args) {
		case 2:
			l.st.user, l.st.pass = "default", e.args[1]
		case 3:
			l.st.user, l.st.pass = e.args[1], e.args[2]
		}
	case opHello:
		l.hello(e.args)
	case opSetName:
		l.setName(e.args[2])
	case opSticky:
		l.stick()
	case opMonitor:
		l.monitor = true
	case opTrackOn:
		l.tracking = true
	case opTrackOff:
		l.tracking = false
	case opMulti:
		l.multi()
	case opWatch:
		l.watch()
	case opUnwatch:
		l.unwatch()
	}
}

// hello records HELLO [protover [AUTH user pass] [SETNAME name]].
func (l *link) hello(args []string) {
	if len(args) < 2 {
		return
	}
	if v, err := strconv.Atoi(args[1]); err == nil {
		l.st.proto = v
	}
	for i := 2; i < len(args); i++ {
		switch {
		case strings.EqualFold(args[i], "auth") && i+2 < len(args):
			l.st.user, l.st.pass = args[i+1], args[i+2]
			i += 2
		case strings.EqualFold(args[i], "setname") && i+1 < len(args):
			l.setName(args[i+1])
			i++
		}
	}
}

func isConfirmName(name []byte) bool {
	return kindOf(string(name)) >= 0
}

func isMessageName(name []byte) bool {
	switch string(name) {
	case "message", "pmessage", "smessage":
		return true
	}
	return false
}

// firstName returns the first element of an array or push frame when it is
// a bulk string of at most 12 bytes (the longest pub/sub keyword), else nil.
// known is false while h is too short to tell.
func firstName(h []byte) (name []byte, known bool) {
	i := bytes.Index(h, []byte("\r\n"))
	if i < 0 {
		return nil, len(h) > maxHeaderLen
	}
	rest := h[i+2:]
	if len(rest) == 0 {
		return nil, false
	}
	if rest[0] != '$' {
		return nil, true
	}
	j := bytes.Index(rest, []byte("\r\n"))
	if j < 0 {
		return nil, len(rest) > 4
	}
	n, err := strconv.Atoi(string(rest[1:j]))
	if err != nil || n < 0 || n > 12 {
		return nil, true
	}
	if body := rest[j+2:]; len(body) >= n {
		return body[:n], true
	}
	return nil, false
}

// parseConfirmation decodes a whole (un)subscribe confirmation (RESP2 array
// or RESP3 push): the set it concerns, whether it unsubscribes, and the
// channel (nil when Redis had nothing to unsubscribe).
func parseConfirmation(f []byte) (set int, unsub bool, ch []byte, ok bool) {
	if len(f) < 4 || f[0] != '*' && f[0] != '>' || !bytes.HasPrefix(f[1:], []byte("3\r\n")) {
		return 0, false, nil, false
	}
	name, rest, ok := cutBulk(f[4:])
	if !ok || name == nil {
		return 0, false, nil, false
	}
	set = kindOf(string(name))
	if set < 0 {
		return 0, false, nil, false
	}
	unsub = bytes.HasSuffix(name, []byte("unsubscribe"))
	if bytes.HasPrefix(rest, []byte("_\r\n")) {
		return set, unsub, nil, true
	}
	ch, _, ok = cutBulk(rest)
	if !ok || ch == nil && !unsub {
		return 0, false, nil, false
	}
	return set, unsub, ch, true
}

// cutBulk reads a bulk string (nil for "$-1") from the start of b.
func cutBulk(b []byte) (bulk, rest []byte, ok bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 2 || b[0] != '$' {
		return nil, nil, false
	}
	n, err := strconv.Atoi(string(b[1:i]))
	switch {
	case err != nil || n < -1:
		return nil, nil, false
	case n == -1:
		return nil, b[i+2:], true
	case len(b) < i+2+n+2:
		return nil, nil, false
	}
	return b[i+2 : i+2+n], b[i+2+n+2:], true
}
