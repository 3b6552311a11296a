// Package cluster holds what a proxy needs to route commands to a Redis
// Cluster: the hash slot of a key (Slot), the key positions of every
// command read from the server's own COMMAND reply (Table, Keys), the slot
// map read from CLUSTER SHARDS or CLUSTER SLOTS (Map), the fetching of
// both from seed nodes (Fetch, FetchCommands), the parsing of -MOVED and
// -ASK replies (ParseRedirect), and the live slot map itself (Router).
//
// Commands whose keys span slots are planned by Table.Split: MGET, MSET,
// DEL, UNLINK, EXISTS and TOUCH are scattered into one sub-command per
// slot (raw RESP, ready to send) and Plan.Merge answers from the raw
// sub-replies what one Redis would; any other such command is refused with
// Redis Cluster's -CROSSSLOT. The keyspace-wide commands sent to every
// master are answered by MergeKeys, MergeDBSize, MergeFlush,
// MergeRandomKey and MergeInfoKeyspace; SCAN's cursor carries the shard
// (EncodeCursor, DecodeCursor, ScanReply). These are pure functions of
// bytes (FrameLen cuts a byte stream into frames); the proxy does the I/O.
//
// What it owns: parsing, lookups and the Router's refresh. Parsers take the
// values go-redis decodes (Cmd.Result of a Do call: string, int64, []any,
// map[any]any, nil) so they are testable without a server and work for
// RESP2 and RESP3 replies alike. It keeps no connections: Fetch and
// FetchCommands dial, ask and close. It imports nothing of the proxy, so
// the proxy can import it.
//
// Goroutine model: Table and Map are immutable once built and safe for
// concurrent use; a refresh builds a new one. Fetch and FetchCommands ask
// every seed at once, each from its own goroutine, take the first good
// answer, cancel the rest and wait for them before returning. A Router has
// one goroutine, from Start until its context ends or Close returns, which
// refreshes the map periodically and on request; Lookup reads an
// atomically swapped immutable view and never blocks.
package cluster
