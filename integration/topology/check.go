package topology

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// failoverRetry bounds how long Failover retries -INPROG / -NOGOODSLAVE.
const failoverRetry = 30 * time.Second

// CurrentMaster returns the master address every live sentinel (running and
// not paused) names, after checking that the node there answers ROLE with
// "master". It fails while the sentinels disagree (a failover in progress).
func (t *Topology) CurrentMaster(ctx context.Context) (string, error) {
	var addr string
	var views []string
	for _, s := range t.sentinels {
		if !s.live() {
			continue
		}
		cmd := redis.NewStringSliceCmd(ctx, "sentinel", "get-master-addr-by-name", t.opts.MasterName)
		if err := s.client.Process(ctx, cmd); err != nil {
			return "", fmt.Errorf("get-master-addr-by-name on %s: %w", s.Name, err)
		}
		v := cmd.Val()
		if len(v) != 2 {
			return "", fmt.Errorf("get-master-addr-by-name on %s: unexpected reply %q", s.Name, v)
		}
		a := joinPort(v[0], atoi(v[1]))
		views = append(views, s.Name+"="+a)
		if addr == "" {
			addr = a
		} else if a != addr {
			return "", fmt.Errorf("sentinels disagree: %s", strings.Join(views, " "))
		}
	}
	if addr == "" {
		return "", errors.New("no live sentinel")
	}
	n := t.NodeByAddr(addr)
	if n == nil || n.sentinel {
		return "", fmt.Errorf("sentinels name %s, not a node of this topology", addr)
	}
	if !n.live() {
		// Not asked: a dead node costs a dial timeout or a log line.
		return "", fmt.Errorf("sentinels name %s, which is not running or paused", n.Name)
	}
	role, err := n.role(ctx)
	if err != nil {
		return "", err
	}
	if role != "master" {
		return "", fmt.Errorf("sentinels name %s but its role is %s", n.Name, role)
	}
	return addr, nil
}

// Failover asks a live sentinel for SENTINEL FAILOVER and returns once it
// has accepted. While a previous failover is still running (-INPROG) or no
// replica qualifies yet (-NOGOODSLAVE, e.g. right after another failover),
// it retries for up to 30 s. The switch itself is asynchronous: follow with
// WaitForNewMaster.
func (t *Topology) Failover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, failoverRetry)
	defer cancel()
	return poll(ctx, 200*time.Millisecond, "sentinel failover", func(ctx context.Context) error {
		s := t.liveSentinel()
		if s == nil {
			return permanent(errors.New("no live sentinel"))
		}
		cmd := redis.NewStatusCmd(ctx, "sentinel", "failover", t.opts.MasterName)
		err := s.client.Process(ctx, cmd)
		if err == nil {
			t.opts.Logger.Info("failover requested", zap.String("sentinel", s.Name))
			return nil
		}
		var rerr redis.Error
		if errors.As(err, &rerr) {
			code, _, _ := strings.Cut(rerr.Error(), " ")
			if code == "INPROG" || code == "NOGOODSLAVE" {
				return fmt.Errorf("sentinel failover on %s: %w", s.Name, err)
			}
		}
		return permanent(fmt.Errorf("sentinel failover on %s: %w", s.Name, err))
	})
}

// WaitForNewMaster waits until every live sentinel names the same master,
// other than old, and that node answers ROLE with "master". It returns the
// new master's address. ctx bounds the wait (60 s if it has no deadline).
func (t *Topology) WaitForNewMaster(ctx context.Context, old string) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var addr string
	err := poll(ctx, 50*time.Millisecond, "wait for new master", func(ctx context.Context) error {
		a, err := t.CurrentMaster(ctx)
		if err != nil {
			return err
		}
		if a == old {
			return fmt.Errorf("master is still %s", old)
		}
		addr = a
		return nil
	})
	return addr, err
}

// WaitStable waits until the topology has settled: every live sentinel
// names the same master, which answers ROLE master; every other live data
// node replicates from it with its link up and is listed online by it; and
// every live sentinel sees the master without failover flags, every live
// replica as a healthy replica of it, and all the other sentinels. After a
// SENTINEL FAILOVER, or a restart of the old master, this takes 10 to 20 s
// (measured): Sentinel converts the old master to a replica only after ~10 s
// and refreshes its view of replicas from INFO every 10 s. After a kill -9
// of the master it takes about 5 s.
func (t *Topology) WaitStable(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	return poll(ctx, 100*time.Millisecond, "wait for stable topology", t.checkStable)
}

func (t *Topology) checkStable(ctx context.Context) error {
	addr, err := t.CurrentMaster(ctx)
	if err != nil {
		return err
	}
	master := t.NodeByAddr(addr)
	if err := t.checkReplication(ctx, master); err != nil {
		return err
	}
	for _, s := range t.sentinels {
		if s.live() {
			if err := t.checkSentinel(ctx, s, master); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkReplication checks that every other live data node is an online
// replica of master, as seen from both ends.
func (t *Topology) checkReplication(ctx context.Context, master *Node) error {
	info, err := master.info(ctx, "replication")
	if err != nil {
		return err
	}
	if info["role"] != "master" {
		return fmt.Errorf("%s: role %s, want master", master.Name, info["role"])
	}
	online := make(map[int]bool)
	for k, v := range info {
		if strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online") {
			online[atoi(field(v, "port"))] = true
		}
	}
	for _, n := range t.data {
		if n == master || !n.live() {
			continue
		}
		if !online[n.Port] {
			return fmt.Errorf("%s is not an online replica of %s", n.Name, master.Name)
		}
		ri, err := n.info(ctx, "replication")
		if err != nil {
			return err
		}
		if ri["role"] != "slave" || atoi(ri["master_port"]) != master.Port || ri["master_link_status"] != "up" {
			return fmt.Errorf("%s: role %s, master port %s, link %s; want a replica of %s with link up",
				n.Name, ri["role"], ri["master_port"], ri["master_link_status"], master.Name)
		}
	}
	return nil
}

// checkSentinel checks one sentinel's view: master without failover flags,
// every live replica healthy, every other sentinel known.
func (t *Topology) checkSentinel(ctx context.Context, s, master *Node) error {
	name := t.opts.MasterName
	m := redis.NewMapStringStringCmd(ctx, "sentinel", "master", name)
	if err := s.client.Process(ctx, m); err != nil {
		return fmt.Errorf("sentinel master on %s: %w", s.Name, err)
	}
	if mv := m.Val(); mv["flags"] != "master" || atoi(mv["port"]) != master.Port {
		return fmt.Errorf("%s sees master %s:%s flags %s", s.Name, mv["ip"], mv["port"], mv["flags"])
	}

	reps := redis.NewMapStringStringSliceCmd(ctx, "sentinel", "replicas", name)
	if err := s.client.Process(ctx, reps); err != nil {
		return fmt.Errorf("sentinel replicas on %s: %w", s.Name, err)
	}
	for _, n := range t.data {
		if n == master || !n.live() {
			continue
		}
		var seen map[string]string
		for _, r := range reps.Val() {
			if atoi(r["port"]) == n.Port {
				seen = r
			}
		}
		switch {
		case seen == nil:
			return fmt.Errorf("%s does not know replica %s", s.Name, n.Name)
		case seen["flags"] != "slave" || seen["master-link-status"] != "ok" || atoi(seen["master-port"]) != master.Port:
			return fmt.Errorf("%s sees replica %s flags %s link %s master port %s", s.Name, n.Name,
				seen["flags"], seen["master-link-status"], seen["master-port"])
		}
	}

	sents := redis.NewMapStringStringSliceCmd(ctx, "sentinel", "sentinels", name)
	if err := s.client.Process(ctx, sents); err != nil {
		return fmt.Errorf("sentinel sentinels on %s: %w", s.Name, err)
	}
	if got, want := len(sents.Val()), len(t.sentinels)-1; got != want {
		return fmt.Errorf("%s knows %d other sentinels, want %d", s.Name, got, want)
	}
	for _, o := range sents.Val() {
		if n := t.NodeByAddr(joinPort(o["ip"], atoi(o["port"]))); n != nil && n.live() && o["flags"] != "sentinel" {
			return fmt.Errorf("%s sees sentinel %s flags %s", s.Name, n.Name, o["flags"])
		}
	}
	return nil
}

// role returns the first element of ROLE ("master", "slave", "sentinel").
func (n *Node) role(ctx context.Context) (string, error) {
	v, err := n.client.Do(ctx, "role").Slice()
	if err != nil {
		return "", fmt.Errorf("role on %s: %w", n.Name, err)
	}
	if len(v) == 0 {
		return "", fmt.Errorf("role on %s: empty reply", n.Name)
	}
	r, _ := v[0].(string)
	return r, nil
}

// liveSentinel returns the first running, unpaused sentinel, or nil.
func (t *Topology) liveSentinel() *Node {
	for _, s := range t.sentinels {
		if s.live() {
			return s
		}
	}
	return nil
}

// permanentError stops poll at once.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return permanentError{err} }

// poll runs check every interval until it succeeds, returns a permanent
// error, or ctx ends; the error then names what was awaited and the last
// reason it was not reached.
func poll(ctx context.Context, interval time.Duration, what string, check func(context.Context) error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if p, ok := err.(permanentError); ok {
			return fmt.Errorf("%s: %w", what, p.err)
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// field returns key's value in an INFO line like "ip=…,port=…,state=…".
func field(line, key string) string {
	for _, kv := range strings.Split(line, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// atoi is strconv.Atoi returning 0 on error; a bad port then matches no node.
func atoi(s string) int {
	i, _ := strconv.Atoi(s)
	return i
}
