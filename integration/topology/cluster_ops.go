package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
)

const (
	// mfRetry is how long Failover waits before sending CLUSTER FAILOVER
	// again: Redis gives up a manual failover silently after 5 s
	// (CLUSTER_MF_TIMEOUT) when the replica cannot catch up or win.
	mfRetry = 6 * time.Second

	// migrateBatch is the number of keys one MIGRATE moves.
	migrateBatch = 100

	// migrateTimeout bounds one MIGRATE, on the server and on our client.
	migrateTimeout = 10 * time.Second
)

// Failover sends CLUSTER FAILOVER (the planned, lossless kind: the master
// pauses writes until the replica has caught up) to replica and waits until
// replica serves its old master's slots, the old master (if live) has
// become its replica and is in sync, and the cluster is stable (WaitStable).
// It resends the command if Redis dropped the attempt (after 5 s). replica
// must be a live replica whose master is reachable; for a dead master, kill
// it and use WaitStable instead. ctx bounds the wait (60 s by default).
func (c *Cluster) Failover(ctx context.Context, replica *Node) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if c.ids[replica] == "" {
		return fmt.Errorf("cluster failover: %s is not a node of this cluster", replica.Name)
	}
	me, err := replica.self(ctx)
	if err != nil {
		return fmt.Errorf("cluster failover: %w", err)
	}
	if !me.flags["slave"] {
		return fmt.Errorf("cluster failover: %s is not a replica", replica.Name)
	}
	master := c.NodeByID(me.master)
	var sent time.Time
	began := time.Now()
	err = poll(ctx, 50*time.Millisecond, "cluster failover of "+replica.Name, func(ctx context.Context) error {
		me, err := replica.self(ctx)
		if err != nil {
			return err
		}
		if me.flags["master"] && len(me.slots) > 0 {
			return c.checkStable(ctx)
		}
		if !sent.IsZero() && time.Since(sent) < mfRetry {
			return fmt.Errorf("%s is not a master serving slots yet", replica.Name)
		}
		err = replica.client.Do(ctx, "cluster", "failover").Err()
		switch {
		case err != nil && sent.IsZero():
			// Not a replica, or its master is down: waiting will
			// not help.
			return permanent(fmt.Errorf("cluster failover on %s: %w", replica.Name, err))
		case err != nil:
			// A resend may race the first attempt's success.
			return fmt.Errorf("cluster failover resent on %s: %w", replica.Name, err)
		}
		sent = time.Now()
		return fmt.Errorf("cluster failover sent to %s", replica.Name)
	})
	if err != nil {
		return err
	}
	c.opts.Logger.Info("cluster failover done", zap.String("new_master", replica.Name),
		zap.String("old_master", nameOf(master)), zap.Duration("took", time.Since(began)))
	return nil
}

// Reshard moves count slots from the master from to the master to with
// `redis-cli --cluster reshard` (which migrates the keys, 10 per MIGRATE,
// while clients keep writing: they get ASK and TRYAGAIN meanwhile), then
// waits until the cluster is stable. It returns the slots that moved.
func (c *Cluster) Reshard(ctx context.Context, from, to *Node, count int) ([]int, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if c.ids[from] == "" || c.ids[to] == "" || from == to {
		return nil, fmt.Errorf("reshard: want two different nodes of this cluster, got %s and %s", nameOf(from), nameOf(to))
	}
	before, err := c.slotsOf(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("reshard: %w", err)
	}
	err = c.redisCLI(ctx, "cluster-reshard", "--cluster", "reshard", to.Addr,
		"--cluster-from", c.ids[from], "--cluster-to", c.ids[to],
		"--cluster-slots", strconv.Itoa(count), "--cluster-yes",
		"--cluster-timeout", strconv.FormatInt(migrateTimeout.Milliseconds(), 10))
	if err != nil {
		return nil, err
	}
	if err := c.WaitStable(ctx); err != nil {
		return nil, fmt.Errorf("after reshard: %w", err)
	}
	after, err := c.slotsOf(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("reshard: %w", err)
	}
	var moved []int
	for _, s := range before {
		if _, ok := slices.BinarySearch(after, s); ok {
			moved = append(moved, s)
		}
	}
	c.opts.Logger.Info("reshard done", zap.String("from", from.Name), zap.String("to", to.Name), zap.Int("slots", len(moved)))
	return moved, nil
}

// slotsOf returns the slots n serves, ascending, in the first live node's
// view.
func (c *Cluster) slotsOf(ctx context.Context, n *Node) ([]int, error) {
	v, err := c.view(ctx)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range v {
		if e.id == c.ids[n] {
			for _, r := range e.slots {
				for s := r[0]; s <= r[1]; s++ {
					out = append(out, s)
				}
			}
		}
	}
	return out, nil
}

// Migration is one slot being moved from one master to another by hand,
// step by step as the Redis Cluster specification describes, so a test can
// hold the slot half-moved: while it is open, the source answers -ASK for
// keys it no longer has, and the target answers them only after ASKING.
type Migration struct {
	c        *Cluster
	Slot     int
	From, To *Node
}

// BeginMigration opens the migration of slot to the master to: CLUSTER
// SETSLOT IMPORTING on to, then MIGRATING on the slot's current master.
// No key moves yet.
func (c *Cluster) BeginMigration(ctx context.Context, slot int, to *Node) (*Migration, error) {
	from, err := c.MasterOf(ctx, slot)
	if err != nil {
		return nil, fmt.Errorf("begin migration: %w", err)
	}
	if c.ids[to] == "" || from == to {
		return nil, fmt.Errorf("begin migration of slot %d: target %s is not another node of this cluster", slot, nameOf(to))
	}
	if me, err := to.self(ctx); err != nil || !me.flags["master"] {
		return nil, fmt.Errorf("begin migration of slot %d: target %s is not a master (%v)", slot, to.Name, err)
	}
	s := strconv.Itoa(slot)
	if err := to.client.Do(ctx, "cluster", "setslot", s, "importing", c.ids[from]).Err(); err != nil {
		return nil, fmt.Errorf("setslot importing on %s: %w", to.Name, err)
	}
	if err := from.client.Do(ctx, "cluster", "setslot", s, "migrating", c.ids[to]).Err(); err != nil {
		return nil, fmt.Errorf("setslot migrating on %s: %w", from.Name, err)
	}
	c.opts.Logger.Info("migration begun", zap.Int("slot", slot), zap.String("from", from.Name), zap.String("to", to.Name))
	return &Migration{c: c, Slot: slot, From: from, To: to}, nil
}

// MoveKeys moves up to max of the slot's keys (CLUSTER GETKEYSINSLOT, then
// one MIGRATE) and returns how many it asked to move; 0 means none was
// left on the source.
func (m *Migration) MoveKeys(ctx context.Context, max int) (int, error) {
	keys, err := m.From.client.ClusterGetKeysInSlot(ctx, m.Slot, max).Result()
	if err != nil {
		return 0, fmt.Errorf("cluster getkeysinslot %d on %s: %w", m.Slot, m.From.Name, err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	args := []any{"migrate", m.To.Host, m.To.Port, "", 0, migrateTimeout.Milliseconds()}
	if pw := m.c.opts.Password; pw != "" {
		args = append(args, "auth", pw)
	}
	args = append(args, "keys")
	for _, k := range keys {
		args = append(args, k)
	}
	// A MIGRATE of many keys may take longer than the check client's 1 s.
	cl := m.From.client.WithTimeout(migrateTimeout + time.Second)
	if err := cl.Do(ctx, args...).Err(); err != nil {
		return 0, fmt.Errorf("migrate %d keys of slot %d from %s: %w", len(keys), m.Slot, m.From.Name, err)
	}
	return len(keys), nil
}

// Finish moves the remaining keys, assigns the slot to the target (CLUSTER
// SETSLOT NODE on the target, then the source, then every other live
// master) and waits until the cluster is stable.
func (m *Migration) Finish(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	err := poll(ctx, time.Millisecond, "move the keys of slot "+strconv.Itoa(m.Slot), func(ctx context.Context) error {
		n, err := m.MoveKeys(ctx, migrateBatch)
		switch {
		case err != nil:
			return permanent(err)
		case n > 0:
			return errors.New("keys left")
		}
		return nil
	})
	if err != nil {
		return err
	}
	s, id := strconv.Itoa(m.Slot), m.c.ids[m.To]
	for _, n := range append([]*Node{m.To, m.From}, m.c.nodes...) {
		if n != m.To && n != m.From {
			if me, err := n.self(ctx); !n.live() || err != nil || !me.flags["master"] {
				continue
			}
		}
		if err := n.client.Do(ctx, "cluster", "setslot", s, "node", id).Err(); err != nil {
			return fmt.Errorf("setslot %s node on %s: %w", s, n.Name, err)
		}
	}
	if err := m.c.WaitStable(ctx); err != nil {
		return fmt.Errorf("after moving slot %d: %w", m.Slot, err)
	}
	m.c.opts.Logger.Info("migration finished", zap.Int("slot", m.Slot), zap.String("from", m.From.Name), zap.String("to", m.To.Name))
	return nil
}

// MoveSlot moves slot and its keys to the master to (BeginMigration, then
// Finish).
func (c *Cluster) MoveSlot(ctx context.Context, slot int, to *Node) error {
	m, err := c.BeginMigration(ctx, slot, to)
	if err != nil {
		return err
	}
	return m.Finish(ctx)
}

// self returns n's own line of CLUSTER NODES.
func (n *Node) self(ctx context.Context) (nodesEntry, error) {
	v, err := n.clusterNodes(ctx)
	if err != nil {
		return nodesEntry{}, err
	}
	for _, e := range v {
		if e.flags["myself"] {
			return e, nil
		}
	}
	return nodesEntry{}, fmt.Errorf("cluster nodes on %s: no myself line", n.Name)
}

// nameOf is n.Name, or "<nil>".
func nameOf(n *Node) string {
	if n == nil {
		return "<nil>"
	}
	return n.Name
}
