package cluster

import (
	"bytes"
	"slices"
)

// Lookup returns the table entry for a command line (args[0] is the name,
// any case): a container command's "name|subcommand" entry when the
// subcommand is known, else the command's own; nil for an unknown command.
func (t Table) Lookup(args [][]byte) *Command {
	if len(args) == 0 {
		return nil
	}
	// The name is lowered into a stack buffer, and a map index with
	// string(bytes) does not allocate: no garbage per command.
	var buf [64]byte
	name := appendLower(buf[:0], args[0])
	c := t[string(name)]
	if c != nil && c.HasSubcommands && len(args) > 1 {
		name = appendLower(append(name, '|'), args[1])
		if sub := t[string(name)]; sub != nil {
			return sub
		}
	}
	return c
}

// Keys returns the keys of a command line (args[0] is the name), in the
// order COMMAND GETKEYS lists them, found as Redis finds them: with the
// command's key specs (Redis 7), else its legacy first/last/step range.
//
// ok is false when the table cannot tell: the command is unknown, or one
// of its key specs is "unknown" or flagged incomplete and the search
// reaches it, and this package has no key function for it (Unresolvable
// lists them: MIGRATE in Redis 7.0), or it has no key specs and is flagged
// movablekeys. The caller then asks the server (COMMAND GETKEYS) or
// refuses the command. SORT and SORT_RO, whose specs are "unknown" for
// BY/GET/STORE, are resolved as Redis's own sortGetKeys does.
//
// A command line that Redis will refuse before it looks at the keys (wrong
// number of arguments, a key count that is not a number or runs past the
// end) has no keys: keys is nil and ok true, and any node will answer the
// error. So has a keyless command, and EVAL or FCALL with 0 keys.
// Shard channels (SPUBLISH, SSUBSCRIBE) are not keys; see ShardChannels.
func (t Table) Keys(args [][]byte) (keys [][]byte, ok bool) {
	return t.find(args, false)
}

// ShardChannels returns the shard channels of SPUBLISH, SSUBSCRIBE and
// SUNSUBSCRIBE (the key specs flagged not_key), which pick a slot as keys
// do; nil for other commands. ok is as for Keys.
func (t Table) ShardChannels(args [][]byte) (channels [][]byte, ok bool) {
	return t.find(args, true)
}

// find collects the arguments that the key specs with (notKeys) or without
// the not_key flag point at.
func (t Table) find(args [][]byte, notKeys bool) ([][]byte, bool) {
	c := t.Lookup(args)
	if c == nil {
		return nil, false
	}
	argc := len(args)
	if (c.Arity > 0 && argc != c.Arity) || (c.Arity < 0 && argc < -c.Arity) {
		return nil, true
	}
	if len(c.KeySpecs) == 0 {
		if notKeys {
			return nil, true
		}
		return legacyKeys(c, args)
	}
	var keys [][]byte
	for _, s := range c.KeySpecs {
		if s.NotKey() != notKeys {
			continue
		}
		first, last, step, found, ok := s.bounds(args)
		switch {
		case !ok && keyFuncs[c.Name] != nil:
			return keyFuncs[c.Name](args), true
		case !ok:
			return nil, false
		case !found:
			continue
		case last >= argc || last < first || first >= argc:
			// Out of bounds, or a key count that is not a number:
			// Redis finds no keys and the command fails by itself.
			return nil, true
		}
		for i := first; i <= last; i += step {
			keys = append(keys, args[i])
		}
		if s.hasFlag("incomplete") {
			if f := keyFuncs[c.Name]; f != nil {
				return f(args), true
			}
			return nil, false
		}
	}
	return keys, true
}

// bounds returns the positions of the first and last key the spec points at
// in args, and the step between keys; found is false when its keyword is
// absent (the spec has no keys then), ok false when the spec cannot say.
// An invalid key count makes last < first.
func (s KeySpec) bounds(args [][]byte) (first, last, step int, found, ok bool) {
	argc := len(args)
	switch s.BeginSearch {
	case "index":
		first = s.Index
	case "keyword":
		start, end := s.StartFrom, 1
		if s.StartFrom > 0 {
			end = argc - 1
		} else {
			start = argc + s.StartFrom
		}
		// The same walk as Redis: forwards from StartFrom to the
		// second to last argument, or backwards to argument 1.
		for i := start; i != end; {
			if i >= argc || i < 1 {
				break
			}
			if bytes.EqualFold(args[i], []byte(s.Keyword)) {
				first = i + 1
				break
			}
			if start <= end {
				i++
			} else {
				i--
			}
		}
		if first == 0 {
			return 0, 0, 0, false, true
		}
	default:
		return 0, 0, 0, false, false
	}
	switch s.FindKeys {
	case "range":
		switch {
		case s.LastKey >= 0:
			last = first + s.LastKey
		case s.Limit == 0:
			last = argc + s.LastKey
		default:
			last = first + (argc-first)/s.Limit + s.LastKey
		}
		return first, last, s.KeyStep, true, true
	case "keynum":
		if first+s.KeyNumIdx >= argc {
			return first, first - 1, 1, true, true
		}
		n, isNum := parseInt(args[first+s.KeyNumIdx])
		if !isNum || n < 0 || n > int64(argc) {
			return first, first - 1, 1, true, true
		}
		first += s.FirstKey
		return first, first + int(n) - 1, s.KeyStep, true, true
	}
	return 0, 0, 0, false, false
}

// keyFuncs find the keys of the commands whose key specs cannot, as
// Redis's own getkeys functions do (db.c, 7.0).
var keyFuncs = map[string]func(args [][]byte) [][]byte{
	"sort":    sortKeys,
	"sort_ro": func(args [][]byte) [][]byte { return sortKeys(args[:min(len(args), 2)]) },
}

// sortKeys returns SORT's key and the destination of its last STORE option,
// skipping the arguments of LIMIT (2), GET and BY (1). The patterns of BY
// and GET name other keys, but Redis Cluster refuses them unless they hash
// to the key's slot, so they do not route.
func sortKeys(args [][]byte) [][]byte {
	if len(args) < 2 {
		return nil // a table without SORT's arity; Redis refuses this
	}
	keys := args[1:2:2]
	var store []byte
	for i := 2; i < len(args); i++ {
		switch {
		case bytes.EqualFold(args[i], []byte("limit")):
			i += 2
		case bytes.EqualFold(args[i], []byte("get")), bytes.EqualFold(args[i], []byte("by")):
			i++
		case bytes.EqualFold(args[i], []byte("store")) && i+1 < len(args):
			// The last STORE wins, as in SORT itself. Redis 7.0 goes
			// on from the destination, not past it.
			store = args[i+1]
		}
	}
	if store != nil {
		keys = append(keys, store)
	}
	return keys
}

// legacyKeys finds the keys with the first/last/step range of commands
// without key specs (Redis before 7).
func legacyKeys(c *Command, args [][]byte) ([][]byte, bool) {
	if slices.Contains(c.Flags, "movablekeys") {
		return nil, false
	}
	if c.FirstKey <= 0 {
		return nil, true
	}
	last := c.LastKey
	if last < 0 {
		last += len(args)
	}
	var keys [][]byte
	for i := c.FirstKey; i <= last && i < len(args); i += max(c.Step, 1) {
		keys = append(keys, args[i])
	}
	return keys, true
}

// Unresolvable returns the names of the commands (and subcommands) whose
// keys Keys cannot always find, sorted: a key spec that is "unknown" or
// flagged incomplete, or no key specs and the movablekeys flag, and no
// key function of this package (SORT and SORT_RO have one). Against Redis
// 7.0.15 that is only "migrate".
func (t Table) Unresolvable() []string {
	var out []string
	for name, c := range t {
		if keyFuncs[name] != nil {
			continue
		}
		bad := len(c.KeySpecs) == 0 && slices.Contains(c.Flags, "movablekeys")
		for _, s := range c.KeySpecs {
			if !s.NotKey() && !s.resolvable() {
				bad = true
			}
		}
		if bad {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// appendLower appends b in lower case (ASCII) to dst.
func appendLower(dst, b []byte) []byte {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// parseInt parses a decimal integer as Redis's string2ll: an optional '-',
// digits, no spaces, no '+', no leading zeros.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	if len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		n = -n
	}
	return n, true
}
