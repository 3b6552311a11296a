package cluster

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Map is a cluster's slot map: its shards and which one serves each of
// the 16384 slots. Build it with ParseShards or ParseSlots; it is read-only
// afterwards and safe for concurrent use.
type Map struct {
	// Shards as the server listed them. CLUSTER SHARDS also lists shards
	// without slots (an empty master, or in 7.0 a failed master whose
	// slots its replica took over).
	Shards []Shard
	// owner is the index in Shards of each slot's shard, -1 if none.
	owner [Slots]int16
}

// Shard is a master, the slots it serves and its replicas.
type Shard struct {
	// Slots are inclusive ranges, as listed.
	Slots []SlotRange
	// Master is the shard's master; its Addr is "" when the reply named
	// none, or named one that cannot be dialled (endpoint "?").
	Master Node
	// Replicas as listed. CLUSTER SLOTS leaves out failed replicas;
	// CLUSTER SHARDS lists them with their Health.
	Replicas []Node
}

// SlotRange is an inclusive range of slots.
type SlotRange struct{ Start, End uint16 }

// Node is one node of a shard.
type Node struct {
	// ID is the cluster node ID ("" from a CLUSTER SLOTS reply of Redis
	// before 4).
	ID string
	// Addr is host:port to dial: the preferred endpoint, or the host the
	// reply came from when the endpoint is empty or NULL (a node behind an
	// address it does not know), and the port (the TLS port with
	// ParseOptions.TLS, when listed). "" when the endpoint is "?" (a node
	// announcing hostnames without one: not dialable).
	Addr string
	// Endpoint, IP and Hostname as the server gave them.
	Endpoint, IP, Hostname string
	// Port and TLSPort; 0 when not listed.
	Port, TLSPort int
	// Role is "master" or "replica".
	Role string
	// Health is CLUSTER SHARDS's "online", "loading" or, for a failed
	// node, "fail" in Redis 7.0.15 (measured; the documentation says
	// "failed"). "" from CLUSTER SLOTS, which lists no failed replicas.
	Health string
	// ReplicationOffset is from CLUSTER SHARDS, 0 from CLUSTER SLOTS.
	ReplicationOffset int64
}

// Online reports whether the node may take traffic: listed healthy by
// CLUSTER SHARDS, or listed at all by CLUSTER SLOTS.
func (n Node) Online() bool { return n.Health == "online" || n.Health == "" }

// ParseOptions tell the parsers how to turn a listed node into an address.
type ParseOptions struct {
	// From is the address (host:port) the reply came from; its host
	// replaces an empty or NULL endpoint.
	From string
	// TLS picks each node's tls-port (CLUSTER SHARDS) when listed.
	TLS bool
}

// Lookup returns the address of the master serving slot; ok is false when
// the slot is unassigned or its master has no usable address.
func (m *Map) Lookup(slot uint16) (master string, ok bool) {
	if slot >= Slots {
		return "", false
	}
	i := m.owner[slot]
	if i < 0 || m.Shards[i].Master.Addr == "" {
		return "", false
	}
	return m.Shards[i].Master.Addr, true
}

// Shard returns the shard serving slot.
func (m *Map) Shard(slot uint16) (*Shard, bool) {
	if slot >= Slots || m.owner[slot] < 0 {
		return nil, false
	}
	return &m.Shards[m.owner[slot]], true
}

// Unassigned returns the ranges of slots no shard serves, ascending.
func (m *Map) Unassigned() []SlotRange {
	var out []SlotRange
	for s := 0; s < Slots; s++ {
		if m.owner[s] >= 0 {
			continue
		}
		if n := len(out); n > 0 && int(out[n-1].End) == s-1 {
			out[n-1].End = uint16(s)
		} else {
			out = append(out, SlotRange{uint16(s), uint16(s)})
		}
	}
	return out
}

// Masters returns the addresses of the masters that serve slots, sorted.
func (m *Map) Masters() []string {
	var out []string
	for _, sh := range m.Shards {
		if len(sh.Slots) > 0 && sh.Master.Addr != "" && !slices.Contains(out, sh.Master.Addr) {
			out = append(out, sh.Master.Addr)
		}
	}
	slices.Sort(out)
	return out
}

// index fills owner from Shards; a slot listed twice is an error.
func (m *Map) index() error {
	for i := range m.owner {
		m.owner[i] = -1
	}
	for i, sh := range m.Shards {
		for _, r := range sh.Slots {
			if r.Start > r.End || r.End >= Slots {
				return fmt.Errorf("bad slot range %d-%d", r.Start, r.End)
			}
			for s := int(r.Start); s <= int(r.End); s++ {
				if m.owner[s] >= 0 {
					return fmt.Errorf("slot %d listed twice", s)
				}
				m.owner[s] = int16(i)
			}
		}
	}
	return nil
}

// ParseShards builds a Map from the reply of CLUSTER SHARDS (Redis 7): an
// array of shards, each a map of "slots" (flat start, end, start, end …
// integers) and "nodes" (maps of id, endpoint, ip, hostname, port,
// tls-port, role, replication-offset, health).
func ParseShards(reply any, opts ParseOptions) (*Map, error) {
	list, err := asArray(reply)
	if err != nil {
		return nil, fmt.Errorf("cluster shards: %w", err)
	}
	m := &Map{}
	for i, v := range list {
		f, err := asFields(v)
		if err != nil {
			return nil, fmt.Errorf("cluster shards: shard %d: %w", i, err)
		}
		var sh Shard
		bounds, err := asArray(f["slots"])
		if err != nil || len(bounds)%2 != 0 {
			return nil, fmt.Errorf("cluster shards: shard %d: slots: want start/end pairs (%v)", i, err)
		}
		for j := 0; j < len(bounds); j += 2 {
			r, err := slotRange(bounds[j], bounds[j+1])
			if err != nil {
				return nil, fmt.Errorf("cluster shards: shard %d: %w", i, err)
			}
			sh.Slots = append(sh.Slots, r)
		}
		nodes, err := asArray(f["nodes"])
		if err != nil {
			return nil, fmt.Errorf("cluster shards: shard %d: nodes: %w", i, err)
		}
		for j, nv := range nodes {
			n, err := shardNode(nv, opts)
			if err != nil {
				return nil, fmt.Errorf("cluster shards: shard %d node %d: %w", i, j, err)
			}
			if n.Role == "master" && sh.Master.Role == "" {
				sh.Master = n
			} else {
				sh.Replicas = append(sh.Replicas, n)
			}
		}
		m.Shards = append(m.Shards, sh)
	}
	if err := m.index(); err != nil {
		return nil, fmt.Errorf("cluster shards: %w", err)
	}
	return m, nil
}

// shardNode parses one node map of CLUSTER SHARDS.
func shardNode(v any, opts ParseOptions) (Node, error) {
	f, err := asFields(v)
	if err != nil {
		return Node{}, err
	}
	var n Node
	strs := map[string]*string{"id": &n.ID, "endpoint": &n.Endpoint, "ip": &n.IP,
		"hostname": &n.Hostname, "role": &n.Role, "health": &n.Health}
	for name, p := range strs {
		if f[name] == nil {
			continue // absent, or NULL (an unknown endpoint)
		}
		if *p, err = asString(f[name]); err != nil {
			return Node{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	ints := map[string]*int{"port": &n.Port, "tls-port": &n.TLSPort}
	for name, p := range ints {
		if f[name] == nil {
			continue
		}
		if *p, err = asInt(f[name]); err != nil {
			return Node{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if f["replication-offset"] != nil {
		off, err := asInt(f["replication-offset"])
		if err != nil {
			return Node{}, fmt.Errorf("replication-offset: %w", err)
		}
		n.ReplicationOffset = int64(off)
	}
	n.Role = strings.ToLower(n.Role)
	if n.Role == "slave" {
		n.Role = "replica"
	}
	n.Addr = address(n, opts)
	return n, nil
}

// address picks the address to dial for n (see Node.Addr).
func address(n Node, opts ParseOptions) string {
	port := n.Port
	if (opts.TLS && n.TLSPort != 0) || port == 0 {
		port = n.TLSPort
	}
	host := n.Endpoint
	switch host {
	case "?":
		return ""
	case "":
		h, _, err := net.SplitHostPort(opts.From)
		if err != nil {
			return ""
		}
		host = h
	}
	if port == 0 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// slotRange parses a start and end slot.
func slotRange(a, b any) (SlotRange, error) {
	s, err1 := asInt(a)
	e, err2 := asInt(b)
	if err1 != nil || err2 != nil || s < 0 || e < s || e >= Slots {
		return SlotRange{}, fmt.Errorf("bad slot range %v-%v", a, b)
	}
	return SlotRange{uint16(s), uint16(e)}, nil
}

// ParseSlots builds a Map from the reply of CLUSTER SLOTS, the fallback
// before Redis 7: an array of [start, end, master, replica …], each node
// [endpoint, port, id, metadata map] (the id since Redis 4, the metadata
// since 7). A master serving several ranges is listed once per range; its
// ranges are gathered into one shard. Health is left "".
func ParseSlots(reply any, opts ParseOptions) (*Map, error) {
	list, err := asArray(reply)
	if err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	m := &Map{}
	byMaster := make(map[string]int)
	for i, v := range list {
		e, err := asArray(v)
		if err != nil || len(e) < 3 {
			return nil, fmt.Errorf("cluster slots: entry %d: want start, end, master … (%v)", i, err)
		}
		r, err := slotRange(e[0], e[1])
		if err != nil {
			return nil, fmt.Errorf("cluster slots: entry %d: %w", i, err)
		}
		var nodes []Node
		for j, nv := range e[2:] {
			n, err := slotsNode(nv, opts)
			if err != nil {
				return nil, fmt.Errorf("cluster slots: entry %d node %d: %w", i, j, err)
			}
			n.Role = "replica"
			if j == 0 {
				n.Role = "master"
			}
			nodes = append(nodes, n)
		}
		key := nodes[0].ID
		if key == "" {
			key = nodes[0].Addr
		}
		k, seen := byMaster[key]
		if !seen {
			k = len(m.Shards)
			byMaster[key] = k
			m.Shards = append(m.Shards, Shard{Master: nodes[0], Replicas: nodes[1:]})
		}
		m.Shards[k].Slots = append(m.Shards[k].Slots, r)
	}
	if err := m.index(); err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	return m, nil
}

// slotsNode parses one node array of CLUSTER SLOTS.
func slotsNode(v any, opts ParseOptions) (Node, error) {
	a, err := asArray(v)
	if err != nil || len(a) < 2 {
		return Node{}, fmt.Errorf("want endpoint, port … (%v)", err)
	}
	var n Node
	if a[0] != nil {
		if n.Endpoint, err = asString(a[0]); err != nil {
			return Node{}, fmt.Errorf("endpoint: %w", err)
		}
	}
	if n.Port, err = asInt(a[1]); err != nil {
		return Node{}, fmt.Errorf("port: %w", err)
	}
	if len(a) > 2 {
		if n.ID, err = asString(a[2]); err != nil {
			return Node{}, fmt.Errorf("id: %w", err)
		}
	}
	if len(a) > 3 {
		meta, err := asFields(a[3])
		if err != nil {
			return Node{}, fmt.Errorf("metadata: %w", err)
		}
		if s, ok := meta["ip"].(string); ok {
			n.IP = s
		}
		if s, ok := meta["hostname"].(string); ok {
			n.Hostname = s
		}
	}
	if n.IP == "" && net.ParseIP(n.Endpoint) != nil {
		n.IP = n.Endpoint
	}
	// CLUSTER SLOTS lists one port per node, no separate TLS port.
	n.Addr = address(n, ParseOptions{From: opts.From})
	return n, nil
}
