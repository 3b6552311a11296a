package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// The merges below answer the keyspace-wide commands a proxy sends to
// every master (fan-out) from the masters' replies: raw RESP frames, one
// per master, in the caller's order of the masters. An error reply from
// any master is the answer (the first in that order); the error returned
// is for replies that are not what the command answers.

// MergeKeys answers KEYS: the masters' arrays of keys, concatenated.
func MergeKeys(replies [][]byte) ([]byte, error) {
	if e, err := firstError(replies); e != nil || err != nil {
		return e, wrapMerge("keys", err)
	}
	var elems [][]byte
	size := 16
	for j, r := range replies {
		es, err := arrayElements(r)
		if err != nil {
			return nil, fmt.Errorf("merge keys: reply %d: %w", j, err)
		}
		elems = append(elems, es...)
		size += len(r)
	}
	out := appendHeader(make([]byte, 0, size), '*', len(elems))
	for _, e := range elems {
		out = append(out, e...)
	}
	return out, nil
}

// MergeDBSize answers DBSIZE: the sum of the masters' counts.
func MergeDBSize(replies [][]byte) ([]byte, error) {
	if e, err := firstError(replies); e != nil || err != nil {
		return e, wrapMerge("dbsize", err)
	}
	out, err := sumReply(replies)
	return out, wrapMerge("dbsize", err)
}

// MergeFlush answers FLUSHALL and FLUSHDB: +OK when every master said so.
// Masters that flushed before another failed stay flushed.
func MergeFlush(replies [][]byte) ([]byte, error) {
	if e, err := firstError(replies); e != nil || err != nil {
		return e, wrapMerge("flush", err)
	}
	out, err := okReply(replies)
	return out, wrapMerge("flush", err)
}

// MergeRandomKey answers RANDOMKEY: the first key of the replies, or a null
// in the client's protocol (2 or 3) when every master is empty, or there
// are none. Pass the replies in a random order of the masters, or every
// answer comes from the first master that has keys.
func MergeRandomKey(replies [][]byte, proto int) ([]byte, error) {
	if e, err := firstError(replies); e != nil || err != nil {
		return e, wrapMerge("randomkey", err)
	}
	for j, r := range replies {
		_, null, err := bulk(r)
		switch {
		case err != nil:
			return nil, fmt.Errorf("merge randomkey: reply %d: %w", j, err)
		case !null:
			return r, nil
		}
	}
	if proto >= 3 {
		return []byte("_\r\n"), nil
	}
	return []byte("$-1\r\n"), nil
}

// MergeInfoKeyspace answers INFO KEYSPACE: per database, the sums of the
// masters' fields (keys, expires, and any later Redis adds), but avg_ttl,
// which is averaged weighted by expires, as Redis's own is an average over
// the keys with a TTL. The reply is framed as the first master's (a bulk
// string in RESP2, a verbatim string in RESP3).
func MergeInfoKeyspace(replies [][]byte) ([]byte, error) {
	if e, err := firstError(replies); e != nil || err != nil {
		return e, wrapMerge("info keyspace", err)
	}
	type db struct {
		fields []string // in the order of the first master that has it
		sums   map[string]int64
		ttlSum int64 // avg_ttl × expires, summed
	}
	dbs := map[int]*db{}
	for j, r := range replies {
		text, null, err := bulk(r)
		if err == nil && null {
			err = errors.New("null reply")
		}
		if err != nil {
			return nil, fmt.Errorf("merge info keyspace: reply %d: %w", j, err)
		}
		for line := range bytes.Lines(text) {
			line = bytes.TrimRight(line, "\r\n")
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			name, fields, ok := bytes.Cut(line, []byte(":"))
			n, okN := parseInt(bytes.TrimPrefix(name, []byte("db")))
			if !ok || !okN || !bytes.HasPrefix(name, []byte("db")) || n < 0 {
				return nil, fmt.Errorf("merge info keyspace: reply %d: bad line %q", j, line)
			}
			d := dbs[int(n)]
			if d == nil {
				d = &db{sums: map[string]int64{}}
				dbs[int(n)] = d
			}
			var expires, ttl int64
			for f := range bytes.SplitSeq(fields, []byte(",")) {
				k, v, ok := bytes.Cut(f, []byte("="))
				num, okV := parseInt(v)
				if !ok || !okV {
					return nil, fmt.Errorf("merge info keyspace: reply %d: bad field %q", j, f)
				}
				key := string(k)
				if _, seen := d.sums[key]; !seen {
					d.fields = append(d.fields, key)
				}
				d.sums[key] += num
				switch key {
				case "expires":
					expires = num
				case "avg_ttl":
					ttl = num
				}
			}
			d.ttlSum += expires * ttl
		}
	}
	text := []byte("# Keyspace\r\n")
	for _, n := range slices.Sorted(maps.Keys(dbs)) {
		d := dbs[n]
		text = append(text, "db"...)
		text = strconv.AppendInt(text, int64(n), 10)
		for i, k := range d.fields {
			sep := byte(',')
			if i == 0 {
				sep = ':'
			}
			text = append(text, sep)
			v := d.sums[k]
			if k == "avg_ttl" {
				v = 0
				if e := d.sums["expires"]; e > 0 {
					v = d.ttlSum / e
				}
			}
			text = append(text, k...)
			text = append(text, '=')
			text = strconv.AppendInt(text, v, 10)
		}
		text = append(text, '\r', '\n')
	}
	if replies[0][0] == '=' {
		out := appendHeader(nil, '=', len(text)+4)
		out = append(out, "txt:"...)
		out = append(out, text...)
		return append(out, '\r', '\n'), nil
	}
	return appendBulk(nil, text), nil
}

// wrapMerge adds the command to a merge error; nil stays nil.
func wrapMerge(cmd string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("merge %s: %w", cmd, err)
}

// A cluster SCAN cursor, as the client sees it, is a decimal unsigned
// 64-bit number (what Redis sends, and what clients parse cursors into):
// the high ScanShardBits bits are the index of the shard being scanned,
// in the caller's order of the masters (keep it stable: sorted addresses),
// and the low 64-ScanShardBits bits that shard's own cursor. So "0" starts
// at shard 0 with the node's cursor 0, a cluster of one shard passes its
// cursors through unchanged, and when a shard's scan ends (its cursor 0)
// the next begins: the client gets shard+1 with node cursor 0, a non-zero
// cursor, and "0" only after the last shard. A batch may be empty then,
// which SCAN allows. Node cursors of Redis use far fewer than 54 bits
// (those of a hash table's size, plus 14 for the slot where a node keeps
// a table per slot); a larger one is an error, not a silent wrap.
const ScanShardBits = 10

// MaxScanShards is the number of shards a cluster SCAN cursor can address.
const MaxScanShards = 1 << ScanShardBits

// nodeCursorMask keeps the node's cursor of a cluster cursor.
const nodeCursorMask = 1<<(64-ScanShardBits) - 1

// ErrInvalidCursor is DecodeCursor's error for a cursor that is not a
// number, or names a shard the cluster does not have (one from before it
// shrank); answer it as Redis does: -ERR invalid cursor.
var ErrInvalidCursor = errors.New("invalid cursor")

// EncodeCursor returns the cluster cursor of shard's node cursor node.
func EncodeCursor(shard int, node uint64) (uint64, error) {
	if shard < 0 || shard >= MaxScanShards {
		return 0, fmt.Errorf("scan cursor: shard %d out of range", shard)
	}
	if node > nodeCursorMask {
		return 0, fmt.Errorf("scan cursor: node cursor %d needs more than %d bits", node, 64-ScanShardBits)
	}
	return uint64(shard)<<(64-ScanShardBits) | node, nil
}

// DecodeCursor returns the shard (index among shards) and the node cursor
// of a client's SCAN cursor argument.
func DecodeCursor(cursor []byte, shards int) (shard int, node uint64, err error) {
	c, err := strconv.ParseUint(string(cursor), 10, 64)
	if err != nil {
		return 0, 0, ErrInvalidCursor
	}
	shard = int(c >> (64 - ScanShardBits))
	if shard >= shards {
		return 0, 0, ErrInvalidCursor
	}
	return shard, c & nodeCursorMask, nil
}

// ScanReply builds the client's reply from the SCAN reply (*2: the node's
// next cursor, its keys) of the master of shard, out of shards: the keys
// passed through byte for byte, with the cluster cursor of where to go on.
// An error reply is passed through.
func ScanReply(shard, shards int, reply []byte) ([]byte, error) {
	if err := checkFrame(reply); err != nil {
		return nil, fmt.Errorf("merge scan: %w", err)
	}
	if isError(reply) {
		return reply, nil
	}
	elems, err := arrayElements(reply)
	if err != nil || len(elems) != 2 {
		return nil, fmt.Errorf("merge scan: want [cursor, keys], got %q", head(reply))
	}
	c, null, err := bulk(elems[0])
	if err != nil || null {
		return nil, fmt.Errorf("merge scan: bad cursor %q", head(elems[0]))
	}
	node, err := strconv.ParseUint(string(c), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("merge scan: bad cursor %q", c)
	}
	if len(elems[1]) == 0 || elems[1][0] != '*' {
		return nil, fmt.Errorf("merge scan: want an array of keys, got %q", head(elems[1]))
	}
	var next uint64
	switch {
	case node != 0:
		next, err = EncodeCursor(shard, node)
	case shard+1 < shards:
		next, err = EncodeCursor(shard+1, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("merge scan: %w", err)
	}
	out := appendHeader(make([]byte, 0, len(elems[1])+32), '*', 2)
	out = appendBulk(out, strconv.AppendUint(nil, next, 10))
	return append(out, elems[1]...), nil
}
