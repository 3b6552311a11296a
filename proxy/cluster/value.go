package cluster

import (
	"fmt"
	"strconv"
	"strings"
)

// The parsers in this package read reply trees as go-redis decodes them
// (Cmd.Result of a Do call): string for simple and bulk strings, int64,
// []any for arrays (and RESP3 sets), map[any]any for RESP3 maps, nil.

// asArray returns v as an array; nil is an empty one (RESP2 has no empty
// map, and an absent element reads as nil).
func asArray(v any) ([]any, error) {
	switch a := v.(type) {
	case []any:
		return a, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("want an array, got %T", v)
}

// asString returns v as a string.
func asString(v any) (string, error) {
	switch s := v.(type) {
	case string:
		return s, nil
	case []byte:
		return string(s), nil
	}
	return "", fmt.Errorf("want a string, got %T", v)
}

// asInt returns v as an int. A numeric string is accepted: some replies
// carry numbers as bulk strings.
func asInt(v any) (int, error) {
	switch n := v.(type) {
	case int64:
		return int(n), nil
	case int:
		return n, nil
	case string:
		i, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("want an integer, got %q", n)
		}
		return i, nil
	}
	return 0, fmt.Errorf("want an integer, got %T", v)
}

// asFields returns a map reply as name → value, names lower-cased: a RESP3
// map, or the flat name, value, name, value … array RESP2 sends instead.
func asFields(v any) (map[string]any, error) {
	out := make(map[string]any)
	switch m := v.(type) {
	case map[any]any:
		for k, val := range m {
			name, err := asString(k)
			if err != nil {
				return nil, fmt.Errorf("map key: %w", err)
			}
			out[strings.ToLower(name)] = val
		}
		return out, nil
	case map[string]any:
		for k, val := range m {
			out[strings.ToLower(k)] = val
		}
		return out, nil
	}
	a, err := asArray(v)
	if err != nil {
		return nil, err
	}
	if len(a)%2 != 0 {
		return nil, fmt.Errorf("want name/value pairs, got %d elements", len(a))
	}
	for i := 0; i < len(a); i += 2 {
		name, err := asString(a[i])
		if err != nil {
			return nil, fmt.Errorf("field name: %w", err)
		}
		out[strings.ToLower(name)] = a[i+1]
	}
	return out, nil
}

// asStrings returns an array of strings, lower-cased if lower.
func asStrings(v any, lower bool) ([]string, error) {
	a, err := asArray(v)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(a))
	for i, e := range a {
		s, err := asString(e)
		if err != nil {
			return nil, err
		}
		if lower {
			s = strings.ToLower(s)
		}
		out[i] = s
	}
	return out, nil
}
