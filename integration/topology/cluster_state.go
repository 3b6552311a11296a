package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ClusterShard is one master serving slots and its replicas, as the
// cluster sees them at the time of the call.
type ClusterShard struct {
	Master   *Node
	Replicas []*Node
	// Slots are the inclusive ranges the master serves, ascending.
	Slots [][2]int
}

// nodesEntry is one line of CLUSTER NODES:
// <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…
type nodesEntry struct {
	id     string
	port   int
	flags  map[string]bool // myself, master, slave, fail?, fail, handshake, noaddr, …
	master string          // the master's ID for a replica, "" for a master
	link   string          // connected / disconnected
	slots  [][2]int
	open   []string // "[slot->-id]" (migrating) / "[slot-<-id]" (importing), myself only
}

// parseClusterNodes parses the reply of CLUSTER NODES.
func parseClusterNodes(s string) ([]nodesEntry, error) {
	var out []nodesEntry
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("cluster nodes: short line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		addr, _, _ = strings.Cut(addr, ",")
		_, port, _ := strings.Cut(addr, ":")
		e := nodesEntry{id: f[0], port: atoi(port), flags: make(map[string]bool), link: f[7]}
		for _, fl := range strings.Split(f[2], ",") {
			e.flags[fl] = true
		}
		if f[3] != "-" {
			e.master = f[3]
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				e.open = append(e.open, s)
				continue
			}
			lo, hi, isRange := strings.Cut(s, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a > b {
				return nil, fmt.Errorf("cluster nodes: bad slot range %q in %q", s, line)
			}
			e.slots = append(e.slots, [2]int{a, b})
		}
		out = append(out, e)
	}
	return out, nil
}

// nodes runs CLUSTER NODES on n.
func (n *Node) clusterNodes(ctx context.Context) ([]nodesEntry, error) {
	s, err := n.client.Do(ctx, "cluster", "nodes").Text()
	if err != nil {
		return nil, fmt.Errorf("cluster nodes on %s: %w", n.Name, err)
	}
	return parseClusterNodes(s)
}

// view returns CLUSTER NODES from the first live node that answers.
func (c *Cluster) view(ctx context.Context) ([]nodesEntry, error) {
	var errs []error
	for _, n := range c.nodes {
		if !n.live() {
			continue
		}
		v, err := n.clusterNodes(ctx)
		if err == nil {
			return v, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errors.New("no live cluster node")
	}
	return nil, errors.Join(errs...)
}

// Shards returns the masters that serve slots, each with its replicas
// (running or not), ordered by first slot, as the first live node that
// answers sees them. Call WaitStable first for a view every node shares.
func (c *Cluster) Shards(ctx context.Context) ([]ClusterShard, error) {
	v, err := c.view(ctx)
	if err != nil {
		return nil, err
	}
	var shards []ClusterShard
	for _, e := range v {
		if e.flags["master"] && len(e.slots) > 0 {
			m := c.NodeByID(e.id)
			if m == nil {
				return nil, fmt.Errorf("master %s is not a node of this cluster", e.id)
			}
			shards = append(shards, ClusterShard{Master: m, Slots: slices.Clone(e.slots)})
		}
	}
	slices.SortFunc(shards, func(a, b ClusterShard) int { return a.Slots[0][0] - b.Slots[0][0] })
	for _, e := range v {
		if !e.flags["slave"] {
			continue
		}
		for i := range shards {
			if c.ids[shards[i].Master] == e.master {
				if r := c.NodeByID(e.id); r != nil {
					shards[i].Replicas = append(shards[i].Replicas, r)
				}
			}
		}
	}
	return shards, nil
}

// Masters returns the masters that serve slots, ordered by first slot.
func (c *Cluster) Masters(ctx context.Context) ([]*Node, error) {
	shards, err := c.Shards(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Node, len(shards))
	for i, s := range shards {
		out[i] = s.Master
	}
	return out, nil
}

// Replicas returns the replicas of the masters that serve slots, in the
// order of Masters.
func (c *Cluster) Replicas(ctx context.Context) ([]*Node, error) {
	shards, err := c.Shards(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Node
	for _, s := range shards {
		out = append(out, s.Replicas...)
	}
	return out, nil
}

// MasterOf returns the master serving slot (0 … 16383).
func (c *Cluster) MasterOf(ctx context.Context, slot int) (*Node, error) {
	shards, err := c.Shards(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range shards {
		for _, r := range s.Slots {
			if slot >= r[0] && slot <= r[1] {
				return s.Master, nil
			}
		}
	}
	return nil, fmt.Errorf("slot %d is not served", slot)
}

// WaitStable waits until the cluster has settled: every live node (running,
// not paused) says cluster_state:ok with all 16384 slots ok and knows every
// node; all live nodes have the same view of who serves which slot and who
// replicates whom; no live node sees another live one as failing or
// disconnected, and each lists every live one as "online" in CLUSTER
// SHARDS; every slot's master is live; no slot is migrating or importing;
// and every live replica is online with its master and not syncing. After a kill -9 of a master it takes about two node timeouts;
// after CLUSTER FAILOVER, about a second. ctx bounds the wait (60 s if it
// has no deadline).
func (c *Cluster) WaitStable(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, "wait for stable cluster", c.checkStable)
}

func (c *Cluster) checkStable(ctx context.Context) error {
	var ref string
	var refNode *Node
	var view []nodesEntry
	for _, n := range c.nodes {
		if !n.live() {
			continue
		}
		info, err := n.clusterInfo(ctx)
		if err != nil {
			return err
		}
		if info["cluster_state"] != "ok" || info["cluster_slots_ok"] != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("%s: cluster_state %s, slots ok %s", n.Name, info["cluster_state"], info["cluster_slots_ok"])
		}
		if got := atoi(info["cluster_known_nodes"]); got != len(c.nodes) {
			return fmt.Errorf("%s knows %d nodes, want %d", n.Name, got, len(c.nodes))
		}
		v, err := n.clusterNodes(ctx)
		if err != nil {
			return err
		}
		for _, e := range v {
			if e.flags["myself"] && len(e.open) > 0 {
				return fmt.Errorf("%s has open slots %v", n.Name, e.open)
			}
			o := c.NodeByID(e.id)
			if o == nil || o == n || !o.live() {
				continue
			}
			if e.flags["fail"] || e.flags["fail?"] || e.flags["handshake"] || e.flags["noaddr"] || e.link != "connected" {
				return fmt.Errorf("%s sees %s with flags %s, link %s", n.Name, o.Name, flagList(e.flags), e.link)
			}
		}
		if err := c.checkHealth(ctx, n); err != nil {
			return err
		}
		if s := canonical(v); refNode == nil {
			ref, refNode, view = s, n, v
		} else if s != ref {
			return fmt.Errorf("%s and %s disagree:\n%s\nversus\n%s", refNode.Name, n.Name, ref, s)
		}
	}
	if refNode == nil {
		return errors.New("no live cluster node")
	}
	return c.checkRoles(ctx, view)
}

// checkRoles checks the agreed view against the processes: every slot's
// master is live and says it is a master; every live replica follows its
// master with the link up, and the master lists it online.
func (c *Cluster) checkRoles(ctx context.Context, view []nodesEntry) error {
	byID := make(map[string]nodesEntry, len(view))
	for _, e := range view {
		byID[e.id] = e
	}
	for _, e := range view {
		n := c.NodeByID(e.id)
		if n == nil {
			return fmt.Errorf("unknown node %s in the cluster", e.id)
		}
		switch {
		case e.flags["master"] && len(e.slots) > 0 && !n.live():
			return fmt.Errorf("%s serves slots %v but is not running", n.Name, e.slots)
		case !n.live():
			continue
		case e.flags["master"]:
			if r, err := n.role(ctx); err != nil || r != "master" {
				return fmt.Errorf("%s: role %q (%v), want master", n.Name, r, err)
			}
		case e.flags["slave"]:
			m := c.NodeByID(e.master)
			if m == nil || !m.live() || !byID[e.master].flags["master"] {
				return fmt.Errorf("%s replicates %s, which is not a live master", n.Name, e.master)
			}
			ri, err := n.info(ctx, "replication")
			if err != nil {
				return err
			}
			if ri["role"] != "slave" || atoi(ri["master_port"]) != m.Port || ri["master_link_status"] != "up" || ri["master_sync_in_progress"] != "0" {
				return fmt.Errorf("%s: role %s, master port %s, link %s, syncing %s; want an in-sync replica of %s",
					n.Name, ri["role"], ri["master_port"], ri["master_link_status"], ri["master_sync_in_progress"], m.Name)
			}
			mi, err := m.info(ctx, "replication")
			if err != nil {
				return err
			}
			online := false
			for k, v := range mi {
				if strings.HasPrefix(k, "slave") && atoi(field(v, "port")) == n.Port && field(v, "state") == "online" {
					online = true
				}
			}
			if !online {
				return fmt.Errorf("%s does not list %s as an online replica", m.Name, n.Name)
			}
		}
	}
	return nil
}

// checkHealth checks that n's CLUSTER SHARDS lists every live node as
// online: what clients that read CLUSTER SHARDS or CLUSTER SLOTS see.
func (c *Cluster) checkHealth(ctx context.Context, n *Node) error {
	shards, err := n.client.ClusterShards(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster shards on %s: %w", n.Name, err)
	}
	for _, sh := range shards {
		for _, e := range sh.Nodes {
			if o := c.NodeByID(e.ID); o != nil && o.live() && e.Health != "online" {
				return fmt.Errorf("%s lists %s as %s in CLUSTER SHARDS (replication offset %d)", n.Name, o.Name, e.Health, e.ReplicationOffset)
			}
		}
	}
	return nil
}

// canonical renders the parts of a CLUSTER NODES view every node must agree
// on: each node's role, master and slots. Flags that differ by observer
// (myself, fail?, link state) are left out.
func canonical(v []nodesEntry) string {
	lines := make([]string, 0, len(v))
	for _, e := range v {
		role := "master"
		if e.flags["slave"] {
			role = "replica-of-" + e.master
		}
		lines = append(lines, fmt.Sprintf("%s %s %v", e.id, role, e.slots))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// clusterInfo runs CLUSTER INFO on n and returns its key:value lines.
func (n *Node) clusterInfo(ctx context.Context) (map[string]string, error) {
	s, err := n.client.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster info on %s: %w", n.Name, err)
	}
	m := make(map[string]string)
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// flagList renders a flag set sorted, for error messages.
func flagList(flags map[string]bool) string {
	var l []string
	for f := range flags {
		l = append(l, f)
	}
	slices.Sort(l)
	return strings.Join(l, ",")
}
