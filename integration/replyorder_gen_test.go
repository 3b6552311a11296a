package integration

import (
	"strconv"
)

// What the reply-order clients send: random pipelines drawn from every kind
// of command the proxy treats differently. Each command carries what its
// reply must show (a token, a counter, a value), so that a reply that
// answers another command is caught.

type roKind int

const (
	kEcho roKind = iota
	kPing
	kIncr
	kSet
	kGet
	kSetBig
	kGetBig
	kSelect
	kAuth
	kAuthWrong
	kHello
	kSetName
	kGetName
	kClientInfo
	kMulti
	kExec
	kDiscard
	kWatch
	kBlpopEmpty
	kRpush
	kBlpopList
	kEvalEcho
	kEvalIncr
	kEvalDeep
	kReset
	kQuit
	kSubscribe
	kUnsubscribe
	kPublish
	// Cluster groups only: commands whose keys span two slots, which the
	// proxy splits and merges.
	kMsetX     // MSET of a key in each of the client's two hash tags
	kMgetX     // MGET over both tags
	kMsetFresh // MSET of two new keys, one per tag, for the DEL after it
	kDelPair   // DEL of the two keys of the kMsetFresh before it
)

// inTx reports whether a command of kind is one the clients queue in MULTI.
func inTx(k roKind) bool {
	switch k {
	case kEcho, kIncr, kSet, kGet, kEvalEcho:
		return true
	}
	return false
}

// roCmd is one command and what its reply must show.
type roCmd struct {
	kind  roKind
	args  []string
	tok   string    // ECHO token, value written, client name, published message
	idx   int       // counter or key index; db for SELECT; protocol for HELLO
	chans []string  // (UN)SUBSCRIBE; nil for UNSUBSCRIBE of everything
	push  *roCmd    // BLPOP: the RPUSH before it; DEL: the MSET
	out   roOutcome // RPUSH, MSET of new keys: whether it ran
	idx2  int       // MSET, MGET over two tags: the key index in the second
	tok2  string    // MSET over two tags: the value of the second key
}

const (
	roDBs      = 2 // SELECT 0 and 1
	roCounters = 3
	roKeys     = 3
	roChannels = 4
)

// key names the client's key kind+i. In a cluster group every key of a
// client is in the client's own hash tag, so that its transactions,
// scripts and multi-key commands stay in one slot.
func (c *roClient) key(kind string, i int) string {
	if c.run.cluster {
		return "{" + c.run.prefix + "c" + strconv.Itoa(c.id) + "}:" + kind + strconv.Itoa(i)
	}
	return c.run.prefix + "c" + strconv.Itoa(c.id) + ":" + kind + strconv.Itoa(i)
}

// xkey names the client's key i in its second hash tag (cluster groups):
// a command with a key of each tag spans two slots.
func (c *roClient) xkey(i int) string {
	return "{" + c.run.prefix + "c" + strconv.Itoa(c.id) + "x}:k" + strconv.Itoa(i)
}

func (c *roClient) token() string {
	c.nextTok++
	return "t" + strconv.Itoa(c.id) + "." + strconv.Itoa(c.nextTok)
}

func (c *roClient) cmd(kind roKind, args ...string) *roCmd {
	return &roCmd{kind: kind, args: args}
}

func (c *roClient) echo() *roCmd {
	t := c.token()
	return &roCmd{kind: kEcho, args: []string{"ECHO", t}, tok: t}
}

func (c *roClient) incr() *roCmd {
	i := c.rng.Intn(roCounters)
	return &roCmd{kind: kIncr, args: []string{"INCR", c.key("n", i)}, idx: i}
}

func (c *roClient) set() *roCmd {
	i, t := c.rng.Intn(roKeys), c.token()
	return &roCmd{kind: kSet, args: []string{"SET", c.key("k", i), t}, idx: i, tok: t}
}

func (c *roClient) get() *roCmd {
	i := c.rng.Intn(roKeys)
	return &roCmd{kind: kGet, args: []string{"GET", c.key("k", i)}, idx: i}
}

func (c *roClient) auth() *roCmd {
	return &roCmd{kind: kAuth, args: []string{"AUTH", c.run.password}}
}

func (c *roClient) hello(proto int, withAuth bool) *roCmd {
	args := []string{"HELLO", strconv.Itoa(proto)}
	if withAuth {
		args = append(args, "AUTH", "default", c.run.password)
	}
	cmd := &roCmd{kind: kHello, args: args, idx: proto}
	if withAuth {
		cmd.tok = "auth"
	}
	return cmd
}

func (c *roClient) evalEcho() *roCmd {
	t := c.token()
	return &roCmd{kind: kEvalEcho, args: []string{"EVAL", "return ARGV[1]", "0", t}, tok: t}
}

func (c *roClient) evalIncr() *roCmd {
	i := c.rng.Intn(roCounters)
	return &roCmd{kind: kEvalIncr, args: []string{"EVAL", "return redis.call('INCR', KEYS[1])", "1", c.key("n", i)}, idx: i}
}

// txCmd is a command for inside MULTI.
func (c *roClient) txCmd() *roCmd {
	switch c.rng.Intn(5) {
	case 0:
		return c.echo()
	case 1, 2:
		return c.incr()
	case 3:
		return c.set()
	}
	return c.get()
}

// gen returns the next pipeline for the client's state. It assumes every
// command of the pipeline succeeds; the checks go by what the replies say.
func (c *roClient) gen() []*roCmd {
	var p []*roCmd
	if !c.authed {
		if c.rng.Intn(3) == 0 {
			p = append(p, c.hello(2+c.rng.Intn(2), true))
		} else {
			p = append(p, c.auth())
		}
	}
	switch {
	case len(c.subs) > 0:
		return c.genSubscribed(p)
	case c.tx != txNone:
		return c.genTx(p)
	}
	n := 1 + c.rng.Intn(10)
	for len(p) < n {
		w := c.rng.Intn(1000)
		switch {
		case w < 150:
			p = append(p, c.echo())
		case w < 300:
			p = append(p, c.incr())
		case w < 380:
			p = append(p, c.set())
		case w < 460:
			p = append(p, c.get())
		case w < 490:
			db := c.rng.Intn(roDBs)
			p = append(p, &roCmd{kind: kSelect, args: []string{"SELECT", strconv.Itoa(db)}, idx: db})
		case w < 520:
			p = append(p, c.hello(2+c.rng.Intn(2), c.rng.Intn(2) == 0))
		case w < 540:
			p = append(p, c.auth())
		case w < 545:
			p = append(p, &roCmd{kind: kAuthWrong, args: []string{"AUTH", "wrong-" + c.token()}})
		case w < 575:
			t := "roc" + c.token()
			p = append(p, &roCmd{kind: kSetName, args: []string{"CLIENT", "SETNAME", t}, tok: t})
		case w < 595 && c.run.cluster:
			// A cluster group answers CLIENT SETNAME itself and
			// forwards no name: GETNAME would show a pooled
			// connection's.
			p = append(p, c.cmd(kPing, "PING"))
		case w < 595:
			p = append(p, c.cmd(kGetName, "CLIENT", "GETNAME"))
		case w < 625:
			p = append(p, c.cmd(kClientInfo, "CLIENT", "INFO"))
		case w < 675:
			if c.rng.Intn(3) == 0 {
				i := c.rng.Intn(roKeys)
				p = append(p, &roCmd{kind: kWatch, args: []string{"WATCH", c.key("k", i)}, idx: i})
			}
			p = append(p, c.cmd(kMulti, "MULTI"))
			for range 1 + c.rng.Intn(4) {
				p = append(p, c.txCmd())
			}
			if c.rng.Intn(6) == 0 {
				p = append(p, c.cmd(kDiscard, "DISCARD"))
			} else {
				p = append(p, c.cmd(kExec, "EXEC"))
			}
			if c.run.avoid["afterexec"] {
				return p
			}
		case w < 690:
			// A transaction left open across pipelines (and perhaps a
			// failover): genTx continues it.
			p = append(p, c.cmd(kMulti, "MULTI"))
			for range c.rng.Intn(3) {
				p = append(p, c.txCmd())
			}
			return p
		case w < 715:
			p = append(p, c.cmd(kBlpopEmpty, "BLPOP", c.key("empty", 0), "0.1"))
		case w < 740:
			t := c.token()
			l := c.key("l:"+t+":", 0)
			push := &roCmd{kind: kRpush, args: []string{"RPUSH", l, t}, tok: t}
			p = append(p, push, &roCmd{kind: kBlpopList, args: []string{"BLPOP", l, "0.1"}, tok: t, push: push})
		case w < 770:
			p = append(p, c.evalEcho())
		case w < 800:
			p = append(p, c.evalIncr())
		case w < 803:
			p = append(p, c.cmd(kEvalDeep, "EVAL", "local a = {}; local b = {a}; a[1] = b; return a", "0"))
		case w < 830:
			p = append(p, c.cmd(kPing, "PING"))
		case w < 840:
			t := c.token()
			v := bigValue(t, 100<<10+c.rng.Intn(900<<10))
			p = append(p, &roCmd{kind: kSetBig, args: []string{"SET", c.key("big", 0), v}, tok: v})
		case w < 850:
			p = append(p, c.cmd(kGetBig, "GET", c.key("big", 0)))
		case w < 860:
			p = append(p, c.cmd(kReset, "RESET"), c.auth())
		case w < 880:
			p = append(p, c.subscribe())
			if c.rng.Intn(2) == 0 {
				p = append(p, c.cmd(kPing, "PING"))
			}
			return p
		case w < 884:
			return append(p, c.cmd(kQuit, "QUIT"))
		case w < 940 && c.run.cluster:
			p = append(p, c.crossSlot()...)
		default:
			p = append(p, c.echo())
		}
	}
	return p
}

// crossSlot returns a command whose keys span the client's two hash tags
// (cluster groups): MSET or MGET of its tracked keys, or an MSET of two new
// keys followed by their DEL.
func (c *roClient) crossSlot() []*roCmd {
	i, j := c.rng.Intn(roKeys), c.rng.Intn(roKeys)
	switch c.rng.Intn(3) {
	case 0:
		t, t2 := c.token(), c.token()
		return []*roCmd{{kind: kMsetX, args: []string{"MSET", c.key("k", i), t, c.xkey(j), t2}, idx: i, tok: t, idx2: j, tok2: t2}}
	case 1:
		return []*roCmd{{kind: kMgetX, args: []string{"MGET", c.xkey(j), c.key("k", i)}, idx: i, idx2: j}}
	}
	t := c.token()
	a, b := c.key("d:"+t+":", 0), "{"+c.run.prefix+"c"+strconv.Itoa(c.id)+"x}:d:"+t
	push := &roCmd{kind: kMsetFresh, args: []string{"MSET", a, t, b, t}, tok: t}
	return []*roCmd{push, {kind: kDelPair, args: []string{"DEL", a, b}, push: push}}
}

// subscribe subscribes to one or two channels the client is not on.
func (c *roClient) subscribe() *roCmd {
	cmd := &roCmd{kind: kSubscribe, args: []string{"SUBSCRIBE"}}
	for range 1 + c.rng.Intn(2) {
		ch := c.key("ch", c.rng.Intn(roChannels))
		if !contains(c.subs, ch) && !contains(cmd.chans, ch) {
			cmd.chans = append(cmd.chans, ch)
			cmd.args = append(cmd.args, ch)
		}
	}
	if len(cmd.chans) == 0 { // all taken: subscribe again to one (Redis confirms it again)
		cmd.chans = []string{c.subs[0]}
		cmd.args = append(cmd.args, c.subs[0])
	}
	return cmd
}

// genSubscribed continues a subscribed session. In RESP2 only
// (UN)SUBSCRIBE, PING, RESET and QUIT are allowed; in RESP3 anything is.
func (c *roClient) genSubscribed(p []*roCmd) []*roCmd {
	n := len(p) + 1 + c.rng.Intn(4)
	for len(p) < n {
		w := c.rng.Intn(100)
		if c.proto == 3 {
			switch {
			case w < 20:
				p = append(p, c.echo())
				continue
			case w < 40:
				ch := c.subs[c.rng.Intn(len(c.subs))]
				t := c.token()
				p = append(p, &roCmd{kind: kPublish, args: []string{"PUBLISH", ch, t}, tok: t})
				continue
			case w < 50 && !c.run.avoid["subkeys"]:
				p = append(p, c.incr())
				continue
			case w < 55 && !c.run.avoid["subkeys"]:
				p = append(p, c.get())
				continue
			}
		}
		switch {
		case w < 60:
			p = append(p, c.cmd(kPing, "PING"))
		case w < 72:
			p = append(p, c.subscribe())
		case w < 80:
			ch := c.subs[c.rng.Intn(len(c.subs))]
			p = append(p, &roCmd{kind: kUnsubscribe, args: []string{"UNSUBSCRIBE", ch}, chans: []string{ch}})
		case w < 92:
			return append(p, c.cmd(kUnsubscribe, "UNSUBSCRIBE"))
		case w < 98:
			return append(p, c.cmd(kReset, "RESET"), c.auth())
		default:
			return append(p, c.cmd(kQuit, "QUIT"))
		}
	}
	return p
}

// genTx continues a transaction left open by an earlier pipeline, or ends
// one the replies showed broken.
func (c *roClient) genTx(p []*roCmd) []*roCmd {
	if c.tx == txOpen {
		for range c.rng.Intn(4) {
			p = append(p, c.txCmd())
		}
		if c.rng.Intn(3) == 0 {
			return append(p, c.txCmd()) // still open
		}
	}
	if c.rng.Intn(5) == 0 {
		return append(p, c.cmd(kDiscard, "DISCARD"))
	}
	return append(p, c.cmd(kExec, "EXEC"))
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
