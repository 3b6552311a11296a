package cluster

import (
	"fmt"
	"slices"
	"strings"
)

// Table maps lower-case command names, and "name|subcommand" for
// subcommands (Redis 7), to what the server's COMMAND reply says about
// them. Build it with ParseCommands; it is read-only afterwards.
type Table map[string]*Command

// Command is one entry of the COMMAND reply.
type Command struct {
	// Name is lower case; "object|encoding" for a subcommand.
	Name string
	// Arity as Redis gives it, the name included: N means exactly N
	// arguments, -N at least N.
	Arity int
	// Flags are lower case: "write", "readonly", "movablekeys", …
	Flags []string
	// FirstKey, LastKey and Step are the legacy key range (LastKey
	// negative counts from the end; 0 FirstKey means no keys). It cannot
	// describe commands flagged "movablekeys".
	FirstKey, LastKey, Step int
	// KeySpecs are the Redis 7 key specifications, empty before 7.
	KeySpecs []KeySpec
	// HasSubcommands says the command is a container ("object", "xinfo"):
	// its keys are described by its "name|subcommand" entries.
	HasSubcommands bool

	// oneKey is the position of the command's only key when one key
	// spec says just that (GET, SET, INCR, …): Split's fast path. 0 for
	// any other command.
	oneKey int
}

// setOneKey sets oneKey from the key specs.
func (c *Command) setOneKey() {
	if len(c.KeySpecs) != 1 || c.HasSubcommands {
		return
	}
	s := c.KeySpecs[0]
	if s.BeginSearch == "index" && s.FindKeys == "range" && s.LastKey == 0 && s.Index > 0 &&
		s.resolvable() && !s.NotKey() && keyFuncs[c.Name] == nil {
		c.oneKey = s.Index
	}
}

// KeySpec is one Redis 7 key specification: where the search for keys
// begins in the arguments, and how the keys are found from there. Argument
// indexes count the command name as 0, for subcommands too.
type KeySpec struct {
	// Flags as the server spells them (RW, RO, OW, RM, access, update,
	// insert, delete, not_key, incomplete, variable_flags).
	Flags []string

	// BeginSearch is "index", "keyword" or "unknown".
	BeginSearch string
	// Index is the first key's position, for BeginSearch "index".
	Index int
	// Keyword and StartFrom, for BeginSearch "keyword": the keys begin
	// after the first argument equal to Keyword (any case), searched
	// from StartFrom forwards, or backwards from the end if negative.
	Keyword   string
	StartFrom int

	// FindKeys is "range", "keynum" or "unknown".
	FindKeys string
	// For FindKeys "range": the last key is LastKey arguments after the
	// first (negative: counted from the end; with Limit, -1 means the
	// first 1/Limit of the remaining arguments).
	LastKey, Limit int
	// For FindKeys "keynum": the number of keys is the argument KeyNumIdx
	// after the begin, and the first key FirstKey after the begin.
	KeyNumIdx, FirstKey int
	// KeyStep is the distance between keys (both kinds).
	KeyStep int
}

// hasFlag reports whether the spec has flag (any case).
func (s KeySpec) hasFlag(flag string) bool {
	return slices.ContainsFunc(s.Flags, func(f string) bool { return strings.EqualFold(f, flag) })
}

// NotKey reports whether the spec names something that is not a key but
// hashes like one: the channel of SPUBLISH, SSUBSCRIBE and SUNSUBSCRIBE.
func (s KeySpec) NotKey() bool { return s.hasFlag("not_key") }

// resolvable reports whether the spec alone finds every key it stands for;
// Redis itself falls back to the command's own key function otherwise.
func (s KeySpec) resolvable() bool {
	return s.BeginSearch != "unknown" && s.FindKeys != "unknown" && !s.hasFlag("incomplete")
}

// ParseCommands builds a Table from the reply of COMMAND (every command) or
// COMMAND INFO name … (nil entries, for names the server does not know,
// are skipped). It reads Redis 7 replies (with key specs and subcommands)
// and older six- or seven-element ones.
func ParseCommands(reply any) (Table, error) {
	entries, err := asArray(reply)
	if err != nil {
		return nil, fmt.Errorf("command reply: %w", err)
	}
	t := make(Table, len(entries))
	for i, e := range entries {
		if e == nil {
			continue
		}
		if err := t.add(e); err != nil {
			return nil, fmt.Errorf("command reply entry %d: %w", i, err)
		}
	}
	for _, c := range t {
		c.setOneKey()
	}
	return t, nil
}

// add parses one COMMAND entry and its subcommands into t.
func (t Table) add(entry any) error {
	f, err := asArray(entry)
	if err != nil {
		return err
	}
	if len(f) < 6 {
		return fmt.Errorf("want at least 6 elements, got %d", len(f))
	}
	c := &Command{}
	name, err := asString(f[0])
	if err != nil {
		return fmt.Errorf("name: %w", err)
	}
	c.Name = strings.ToLower(name)
	ints := []*int{&c.Arity, nil, &c.FirstKey, &c.LastKey, &c.Step}
	for j, p := range ints {
		if p == nil {
			continue
		}
		if *p, err = asInt(f[1+j]); err != nil {
			return fmt.Errorf("%s: element %d: %w", c.Name, 1+j, err)
		}
	}
	if c.Flags, err = asStrings(f[2], true); err != nil {
		return fmt.Errorf("%s: flags: %w", c.Name, err)
	}
	if len(f) > 8 {
		specs, err := asArray(f[8])
		if err != nil {
			return fmt.Errorf("%s: key specs: %w", c.Name, err)
		}
		for k, s := range specs {
			ks, err := parseKeySpec(s)
			if err != nil {
				return fmt.Errorf("%s: key spec %d: %w", c.Name, k, err)
			}
			c.KeySpecs = append(c.KeySpecs, ks)
		}
	}
	if len(f) > 9 {
		subs, err := asArray(f[9])
		if err != nil {
			return fmt.Errorf("%s: subcommands: %w", c.Name, err)
		}
		for _, s := range subs {
			if err := t.add(s); err != nil {
				return fmt.Errorf("%s: subcommand: %w", c.Name, err)
			}
		}
		c.HasSubcommands = len(subs) > 0
	}
	t[c.Name] = c
	return nil
}

// parseKeySpec parses one key specification (a map).
func parseKeySpec(v any) (KeySpec, error) {
	var s KeySpec
	m, err := asFields(v)
	if err != nil {
		return s, err
	}
	if s.Flags, err = asStrings(m["flags"], false); err != nil {
		return s, fmt.Errorf("flags: %w", err)
	}
	bs, err := parseSearch(m["begin_search"])
	if err != nil {
		return s, fmt.Errorf("begin_search: %w", err)
	}
	fk, err := parseSearch(m["find_keys"])
	if err != nil {
		return s, fmt.Errorf("find_keys: %w", err)
	}
	s.BeginSearch, s.FindKeys = bs.kind, fk.kind
	ints := map[string]*int{}
	switch s.BeginSearch {
	case "index":
		ints["index"] = &s.Index
	case "keyword":
		ints["startfrom"] = &s.StartFrom
		if s.Keyword, err = asString(bs.spec["keyword"]); err != nil {
			return s, fmt.Errorf("begin_search keyword: %w", err)
		}
	case "unknown":
	default:
		return s, fmt.Errorf("begin_search type %q", s.BeginSearch)
	}
	for name, p := range ints {
		if *p, err = asInt(bs.spec[name]); err != nil {
			return s, fmt.Errorf("begin_search %s: %w", name, err)
		}
	}
	clear(ints)
	switch s.FindKeys {
	case "range":
		ints["lastkey"], ints["keystep"], ints["limit"] = &s.LastKey, &s.KeyStep, &s.Limit
	case "keynum":
		ints["keynumidx"], ints["firstkey"], ints["keystep"] = &s.KeyNumIdx, &s.FirstKey, &s.KeyStep
	case "unknown":
	default:
		return s, fmt.Errorf("find_keys type %q", s.FindKeys)
	}
	for name, p := range ints {
		if *p, err = asInt(fk.spec[name]); err != nil {
			return s, fmt.Errorf("find_keys %s: %w", name, err)
		}
	}
	// Positions Redis never declares would index outside the arguments
	// (or at the command name): refuse them here, so Keys need not.
	switch {
	case s.BeginSearch == "index" && s.Index < 1:
		return s, fmt.Errorf("begin_search index %d", s.Index)
	case s.BeginSearch == "keyword" && s.StartFrom == 0:
		return s, fmt.Errorf("begin_search startfrom 0")
	case s.FindKeys == "keynum" && (s.KeyNumIdx < 0 || s.FirstKey < 1):
		return s, fmt.Errorf("find_keys keynumidx %d, firstkey %d", s.KeyNumIdx, s.FirstKey)
	case s.FindKeys == "range" && s.Limit < 0:
		return s, fmt.Errorf("find_keys limit %d", s.Limit)
	case s.resolvable() && s.KeyStep < 1:
		return s, fmt.Errorf("key step %d", s.KeyStep)
	}
	return s, nil
}

type search struct {
	kind string
	spec map[string]any
}

// parseSearch parses a begin_search or find_keys map: its type and spec.
func parseSearch(v any) (search, error) {
	m, err := asFields(v)
	if err != nil {
		return search{}, err
	}
	kind, err := asString(m["type"])
	if err != nil {
		return search{}, fmt.Errorf("type: %w", err)
	}
	spec, err := asFields(m["spec"])
	if err != nil {
		return search{}, fmt.Errorf("spec: %w", err)
	}
	return search{kind: strings.ToLower(kind), spec: spec}, nil
}
