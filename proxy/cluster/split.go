package cluster

import (
	"errors"
	"fmt"
)

// CrossSlotError is Redis Cluster's own error text for a command whose keys
// hash to different slots (clusterRedirectClient in cluster.c).
const CrossSlotError = "CROSSSLOT Keys in request don't hash to the same slot"

// crossSlotReply is CrossSlotError as a reply frame.
var crossSlotReply = []byte("-" + CrossSlotError + "\r\n")

// SlotFunc returns the hash slot of a key; Slot is the one Redis uses.
type SlotFunc func(key []byte) uint16

// Kind says what a Plan asks of the caller.
type Kind int

const (
	// Single: send the command unchanged to the master of Plan.Slot,
	// or to any master when Slot is -1 (the command has no keys, or
	// arguments Redis refuses before it looks at keys).
	Single Kind = iota
	// Scatter: send each of Plan.Subs to the master of its slot, and
	// answer the client Plan.Merge of their replies.
	Scatter
	// Refuse: answer the client Plan.Reply, an error frame (-CROSSSLOT,
	// or the arity error of an MSET Redis would refuse) without asking
	// any node.
	Refuse
	// Unresolved: the table cannot find the command's keys (Table.Keys
	// said !ok); ask a node (COMMAND GETKEYS) or refuse the command.
	Unresolved
)

// String returns the kind's name, for logs and test failures.
func (k Kind) String() string {
	switch k {
	case Single:
		return "single"
	case Scatter:
		return "scatter"
	case Refuse:
		return "refuse"
	case Unresolved:
		return "unresolved"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Plan is how to run one command line on a cluster; Table.Split makes it.
// It is immutable, and Merge is safe for concurrent use.
type Plan struct {
	Kind Kind
	// Slot is the slot of every key, for Single; -1 when the command
	// has none.
	Slot int
	// Subs are the sub-commands of Scatter, one per slot, in the order
	// of the first key of each slot in the command.
	Subs []Sub
	// Reply is the error frame to answer, for Refuse.
	Reply []byte

	merge func(p *Plan, replies [][]byte) ([]byte, error)
	keys  int // the number of keys of the original command
}

// Sub is one sub-command of a scattered command: the original command
// restricted to the keys of one slot, so that it is valid on its own in
// Redis Cluster (and can follow a -MOVED or -ASK by itself).
type Sub struct {
	// Slot is the slot of all its keys.
	Slot uint16
	// Args are the sub-command's arguments, the name first; they share
	// the original's bytes.
	Args [][]byte
	// Cmd is Args as RESP, ready to write to a node.
	Cmd []byte
	// Keys[i] is the position, among the keys of the original command
	// (0 is its first key), of this sub-command's i-th key.
	Keys []int
}

// splitters are the commands that are scattered across slots when their
// keys span several, with how their replies are merged. Each has one range
// of keys to the end of the line, a key every step arguments.
var splitters = map[string]func(p *Plan, replies [][]byte) ([]byte, error){
	"mget":   mergeValues,
	"mset":   mergeOK,
	"del":    mergeSum,
	"unlink": mergeSum,
	"exists": mergeSum,
	"touch":  mergeSum,
}

// Split says how to run a command line (args[0] is the name, any case) on
// a cluster whose key slots slot gives (nil means Slot), finding its keys
// as Keys does (shard channels count as keys: Redis Cluster refuses an
// SSUBSCRIBE across slots too):
//
//   - all keys in one slot, or none: Single;
//   - MGET, MSET, DEL, UNLINK, EXISTS and TOUCH with keys in several
//     slots: Scatter, one sub-command per slot, the keys of each in their
//     original order and duplicates kept (EXISTS k k counts k twice, and
//     MSET k 1 k 2 leaves 2, as on one Redis);
//   - any other command with keys in several slots: Refuse with
//     -CROSSSLOT, MSETNX included (it could not be atomic);
//   - keys the table cannot find: Unresolved.
//
// Merge then answers what a single Redis would have: MGET the values in
// the order of the keys, MSET +OK, the others the sum of the counts. A
// sub-reply that is an error becomes the whole reply (the first error in
// the order of Subs), for MGET too: a client asking for values gets no
// partial array, as from one Redis that failed. The sub-commands that
// succeeded are not undone: a scattered MSET or DEL is not atomic, and a
// WRONGTYPE from a scattered MGET tells nothing of the other slots.
func (t Table) Split(args [][]byte, slot SlotFunc) Plan {
	if slot == nil {
		slot = Slot
	}
	if c := t.Lookup(args); c != nil && c.oneKey > 0 && c.oneKey < len(args) &&
		(c.Arity > 0 && len(args) == c.Arity || c.Arity < 0 && len(args) >= -c.Arity) {
		// One key at a fixed place: what Keys would find, without
		// collecting it.
		return Plan{Kind: Single, Slot: int(slot(args[c.oneKey]))}
	}
	keys, ok := t.Keys(args)
	if !ok {
		return Plan{Kind: Unresolved, Slot: -1}
	}
	if len(keys) == 0 {
		keys, _ = t.ShardChannels(args)
	}
	if len(keys) == 0 {
		return Plan{Kind: Single, Slot: -1}
	}
	first := slot(keys[0])
	same := true
	for _, k := range keys[1:] {
		if slot(k) != first {
			same = false
			break
		}
	}
	if same {
		return Plan{Kind: Single, Slot: int(first)}
	}
	c := t.Lookup(args)
	merge := splitters[c.Name]
	if merge == nil {
		return Plan{Kind: Refuse, Slot: -1, Reply: crossSlotReply}
	}
	begin, step, ok := keyRange(c, args)
	switch {
	case !ok || (len(args)-begin+step-1)/step != len(keys):
		// A table whose entry for these commands is not what Redis
		// has: better refused than split wrongly.
		return Plan{Kind: Refuse, Slot: -1, Reply: crossSlotReply}
	case (len(args)-begin)%step != 0:
		// MSET with a key and no value: one Redis refuses it before
		// touching anything, and so must the scattered whole.
		return Plan{Kind: Refuse, Slot: -1, Reply: arityReply(c.Name)}
	}
	return scatter(args, begin, step, slot, merge)
}

// keyRange returns where the keys of a scattered command begin in args
// and the step between them; they run to the end of the line.
func keyRange(c *Command, args [][]byte) (begin, step int, ok bool) {
	switch len(c.KeySpecs) {
	case 0:
		last := c.LastKey
		if last < 0 {
			last += len(args)
		}
		begin, step = c.FirstKey, c.Step
		ok = begin > 0 && step > 0 && last+step >= len(args) && last < len(args)
		return begin, step, ok
	case 1:
		s := c.KeySpecs[0]
		if !s.resolvable() || s.FindKeys != "range" {
			return 0, 0, false
		}
		first, last, step, found, ok := s.bounds(args)
		ok = ok && found && first > 0 && step > 0 && last+step >= len(args) && last < len(args)
		return first, step, ok
	}
	return 0, 0, false
}

// scatter builds the Scatter plan of args, whose keys begin at begin, one
// every step arguments (the key and its step-1 values go together).
func scatter(args [][]byte, begin, step int, slot SlotFunc, merge func(*Plan, [][]byte) ([]byte, error)) Plan {
	p := Plan{Kind: Scatter, Slot: -1, merge: merge}
	index := make(map[uint16]int) // slot → position in p.Subs
	for i := begin; i < len(args); i += step {
		s := slot(args[i])
		j, ok := index[s]
		if !ok {
			j = len(p.Subs)
			index[s] = j
			p.Subs = append(p.Subs, Sub{Slot: s, Args: args[:begin:begin]})
		}
		sub := &p.Subs[j]
		sub.Args = append(sub.Args, args[i:i+step]...)
		sub.Keys = append(sub.Keys, p.keys)
		p.keys++
	}
	for j := range p.Subs {
		p.Subs[j].Cmd = AppendCommand(nil, p.Subs[j].Args)
	}
	return p
}

// arityReply is Redis 7's reply to a command with a wrong number of
// arguments (addReplyErrorArity).
func arityReply(name string) []byte {
	return []byte("-ERR wrong number of arguments for '" + name + "' command\r\n")
}

// Merge builds the client's reply to a scattered command from the replies
// to its sub-commands: raw RESP frames, one each, in the order of Subs,
// after any -MOVED or -ASK was followed (a redirect still there is an
// error reply like any other). Elements of MGET replies are passed through
// byte for byte, so nulls stay in the protocol the nodes answered in ($-1
// in RESP2, _ in RESP3): the connections to the nodes must speak the
// client's protocol. The error is for replies that are not what the
// sub-commands answer (their number, a frame cut short, a type Redis does
// not send); the client then gets no reply of Merge's making.
func (p *Plan) Merge(replies [][]byte) ([]byte, error) {
	if p.Kind != Scatter || p.merge == nil {
		return nil, errors.New("merge: not a scattered plan")
	}
	if len(replies) != len(p.Subs) {
		return nil, fmt.Errorf("merge: %d replies for %d sub-commands", len(replies), len(p.Subs))
	}
	e, err := firstError(replies)
	switch {
	case err != nil:
		return nil, fmt.Errorf("merge: %w", err)
	case e != nil:
		return e, nil
	}
	out, err := p.merge(p, replies)
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	return out, nil
}

// mergeValues answers MGET: an array of the values in the order of the
// original keys.
func mergeValues(p *Plan, replies [][]byte) ([]byte, error) {
	values := make([][]byte, p.keys)
	size := 16
	for j, r := range replies {
		elems, err := arrayElements(r)
		if err != nil {
			return nil, fmt.Errorf("reply %d: %w", j, err)
		}
		if len(elems) != len(p.Subs[j].Keys) {
			return nil, fmt.Errorf("reply %d: %d values for %d keys", j, len(elems), len(p.Subs[j].Keys))
		}
		for i, e := range elems {
			values[p.Subs[j].Keys[i]] = e
			size += len(e)
		}
	}
	out := appendHeader(make([]byte, 0, size), '*', len(values))
	for _, v := range values {
		out = append(out, v...)
	}
	return out, nil
}

// mergeOK answers MSET: +OK when every sub-command said so.
func mergeOK(_ *Plan, replies [][]byte) ([]byte, error) {
	return okReply(replies)
}

// mergeSum answers DEL, UNLINK, EXISTS and TOUCH: the sum of the counts.
func mergeSum(_ *Plan, replies [][]byte) ([]byte, error) {
	return sumReply(replies)
}

// okReply returns +OK if every reply is +OK.
func okReply(replies [][]byte) ([]byte, error) {
	for j, r := range replies {
		if string(r) != "+OK\r\n" {
			return nil, fmt.Errorf("reply %d: want +OK, got %q", j, head(r))
		}
	}
	return []byte("+OK\r\n"), nil
}

// sumReply returns the sum of integer replies as an integer frame.
func sumReply(replies [][]byte) ([]byte, error) {
	var sum int64
	for j, r := range replies {
		n, err := integer(r)
		if err != nil {
			return nil, fmt.Errorf("reply %d: %w", j, err)
		}
		sum += n
	}
	return appendInteger(nil, sum), nil
}
