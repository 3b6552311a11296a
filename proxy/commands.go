package proxy

import "bytes"

// cmdKind says what the session must do with a command besides forwarding it.
type cmdKind uint8

const (
	kindPlain      cmdKind = iota // forwarded; its reply changes nothing the proxy tracks
	kindQuit                      // answered by the proxy (+OK), then the client is closed
	kindAuth                      // AUTH [user] pass: identity changes on success
	kindHello                     // HELLO [proto [AUTH u p] [SETNAME n]]
	kindSelect                    // SELECT db
	kindReset                     // RESET: back to a clean connection
	kindMulti                     // MULTI: pins until EXEC/DISCARD
	kindExec                      // EXEC: ends MULTI and WATCH
	kindDiscard                   // DISCARD: ends MULTI and WATCH
	kindWatch                     // WATCH: pins until EXEC/DISCARD/UNWATCH
	kindUnwatch                   // UNWATCH
	kindBlocking                  // may block server-side for as long as its timeout says
	kindDuplex                    // the connection turns full duplex (pub/sub, MONITOR, tracking)
	kindPin                       // state the pool key cannot express: pin the connection
	kindRefused                   // answered with an error by the proxy, never forwarded
	kindClientKill                // CLIENT KILL: only the session's own connection
	kindLocalOK                   // answered +OK by the proxy (proxy-terminated AUTH)
	kindAbortTx                   // EXEC of a transaction with a refused command: DISCARD, then EXECABORT
)

// cmdInfo is the classification of one command.
type cmdInfo struct {
	kind cmdKind
	// refusal is the error reply for kindRefused.
	refusal string
	// wait marks WAIT and WAITAOF, which wait for the writes of the
	// connection they run on.
	wait bool
	// class is the command's latency class.
	class cmdClass
	// share marks commands that may go on a shared connection: plain
	// ones that neither ask about nor change the connection they run on.
	share bool
	// byName marks a classification made from the command's name alone:
	// every command of that name gets the same (batchMemo).
	byName bool
}

// lookup maps a lower-case command name to its kind. Commands not listed
// are plain. CLIENT and XREAD/XREADGROUP depend on their arguments and are
// handled in classify.
func lookup(name string) (cmdKind, bool) {
	switch name {
	case "quit":
		return kindQuit, true
	case "auth":
		return kindAuth, true
	case "hello":
		return kindHello, true
	case "select":
		return kindSelect, true
	case "reset":
		return kindReset, true
	case "multi":
		return kindMulti, true
	case "exec":
		return kindExec, true
	case "discard":
		return kindDiscard, true
	case "watch":
		return kindWatch, true
	case "unwatch":
		return kindUnwatch, true
	case "blpop", "brpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop", "wait", "waitaof":
		return kindBlocking, true
	case "subscribe", "psubscribe", "ssubscribe", "monitor",
		// (P|S)UNSUBSCRIBE answer once per channel even outside subscribed
		// mode, so their replies cannot be counted either.
		"unsubscribe", "punsubscribe", "sunsubscribe":
		return kindDuplex, true
	case "sync", "psync", "replconf":
		// Replication streams are not replies: they would desynchronise
		// the connection for good.
		return kindRefused, true
	}
	return kindPlain, false
}

// The text of errors the proxy answers on its own. They follow Redis's
// "-CODE message" convention so clients classify them as server errors.
const (
	errNotSupported = "ERR command not supported by sentinel-proxy"
	errClientReply  = "ERR CLIENT REPLY OFF and SKIP are not supported by sentinel-proxy (replies could not be matched to commands)"
)

// classify looks at a command's name (and, where it matters, its arguments).
// It does not allocate.
func classify(args [][]byte) cmdInfo {
	if len(args) == 0 {
		return cmdInfo{kind: kindPlain}
	}
	var buf [32]byte
	name := lower(buf[:0], args[0])
	if name == nil {
		return cmdInfo{kind: kindPlain}
	}
	info := classifyName(args, name)
	info.class = classOf(info.kind, string(name))
	if info.kind == kindPlain {
		var shareByName bool
		info.share, shareByName = shareable(args, name)
		info.byName = info.byName && shareByName
	}
	return info
}

// shareable reports whether a plain command means the same on a connection
// other sessions use too, and whether that follows from its name alone.
// CLIENT's subcommands ask about or change the connection (CLIENT INFO,
// SETINFO, NO-TOUCH, TRACKING OFF, …); READONLY, READWRITE and ASKING are
// connection state; SCRIPT DEBUG turns the connection into a debugging
// session.
func shareable(args [][]byte, name []byte) (share, byName bool) {
	switch string(name) {
	case "client", "readonly", "readwrite", "asking":
		return false, true
	case "script":
		return len(args) < 2 || !bytes.EqualFold(args[1], []byte("debug")), false
	}
	return true, true
}

func classifyName(args [][]byte, name []byte) cmdInfo {
	kind, ok := lookup(string(name))
	switch {
	case ok && kind == kindRefused:
		return cmdInfo{kind: kindRefused, refusal: errNotSupported}
	case ok:
		return cmdInfo{kind: kind, wait: string(name) == "wait" || string(name) == "waitaof", byName: true}
	case string(name) == "client":
		return classifyClient(args)
	case string(name) == "xread" || string(name) == "xreadgroup":
		for _, a := range args[1:] {
			if bytes.EqualFold(a, []byte("block")) {
				return cmdInfo{kind: kindBlocking}
			}
			if bytes.EqualFold(a, []byte("streams")) {
				break
			}
		}
		return cmdInfo{kind: kindPlain}
	}
	return cmdInfo{kind: kindPlain, byName: true}
}

// classifyClient handles the CLIENT subcommands that change connection state.
func classifyClient(args [][]byte) cmdInfo {
	if len(args) < 2 {
		return cmdInfo{kind: kindPlain}
	}
	sub := args[1]
	switch {
	case bytes.EqualFold(sub, []byte("reply")):
		if len(args) == 3 && bytes.EqualFold(args[2], []byte("on")) {
			return cmdInfo{kind: kindPlain}
		}
		if len(args) == 3 && (bytes.EqualFold(args[2], []byte("off")) || bytes.EqualFold(args[2], []byte("skip"))) {
			return cmdInfo{kind: kindRefused, refusal: errClientReply}
		}
		return cmdInfo{kind: kindPlain} // Redis answers the syntax error
	case bytes.EqualFold(sub, []byte("tracking")):
		if len(args) >= 3 && bytes.EqualFold(args[2], []byte("on")) {
			// Invalidation pushes arrive whenever the server likes.
			return cmdInfo{kind: kindDuplex}
		}
		return cmdInfo{kind: kindPlain}
	case bytes.EqualFold(sub, []byte("kill")):
		return cmdInfo{kind: kindClientKill}
	case bytes.EqualFold(sub, []byte("setname")),
		bytes.EqualFold(sub, []byte("id")),
		bytes.EqualFold(sub, []byte("no-evict")),
		bytes.EqualFold(sub, []byte("caching")):
		// The answer or effect belongs to one server connection: keep it.
		return cmdInfo{kind: kindPin}
	}
	return cmdInfo{kind: kindPlain}
}

// lower appends the ASCII lower case of b to dst, or returns nil when b is
// longer than dst's capacity (no command name is that long).
func lower(dst, b []byte) []byte {
	if len(b) > cap(dst) {
		return nil
	}
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// batchMemo remembers how the last command of a batch was classified and
// vetted, so that a pipeline of the same command (SET, SET, …) is looked up
// once. It keeps only a plain command that classify and the policy judged
// by its name alone (cmdInfo.byName; vetting's refusals and rewrites clear
// it); any other command clears the memo, so a command that changes what
// vetting decides (AUTH, MULTI, …) is never skipped over.
type batchMemo struct {
	name [16]byte
	n    int // 0: empty
	info cmdInfo
}

// get returns the memo's cmdInfo if args name the same command, byte for
// byte.
func (m *batchMemo) get(args [][]byte) (cmdInfo, bool) {
	if m.n == 0 || len(args) == 0 || string(args[0]) != string(m.name[:m.n]) {
		return cmdInfo{}, false
	}
	return m.info, true
}

// put remembers info, what classify and vet made of args under p, when
// another command of the same name is sure to get the same; else it
// clears the memo.
func (m *batchMemo) put(args [][]byte, info cmdInfo, p *Policy) {
	m.n = 0
	if len(args) == 0 || len(args[0]) > len(m.name) || info.kind != kindPlain || !info.byName {
		return
	}
	var buf [16]byte
	name := lower(buf[:0], args[0])
	if p == nil {
		p = defaultPolicy
	}
	if _, ok := p.withSub[string(name)]; ok {
		return // the policy looks at the subcommand
	}
	m.n = copy(m.name[:], args[0])
	m.info = info
}
