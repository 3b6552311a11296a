// Package cluster holds what a proxy needs to route commands to a Redis
// Cluster: the hash slot of a key (Slot), the key positions of every
// command read from the server's own COMMAND reply (Table, Keys), the slot
// map read from CLUSTER SHARDS or CLUSTER SLOTS (Map), the fetching of
// both from seed nodes (Fetch, FetchCommands), the parsing of -MOVED and
// -ASK replies (ParseRedirect), and the live slot map itself (Router).
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
