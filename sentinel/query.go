package sentinel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// sentinelConn is one known sentinel: its client, its goroutines' kick
// channel and what the main loop knows of it. Fields below client are owned
// by the main loop.
type sentinelConn struct {
	addr   string
	host   string // substituted for 0.0.0.0 in its answers
	client *redis.SentinelClient
	kick   chan struct{} // cap 1: "query now", coalesced
	wake   chan struct{} // cap 1: "subscribe now", coalesced (see subscribe)

	discovered bool
	runID      string
	subscribed bool
	tried      bool   // at least one query completed
	last       answer // most recent query, failed or not
	lastOK     answer // most recent successful query
}

// answer is one sentinel's view of the master, from one query.
type answer struct {
	sentinel string
	started  time.Time     // when the query was sent
	at       time.Time     // when it completed
	err      error         // no view: transport, auth or protocol error
	unknown  bool          // the sentinel does not know MasterName
	addr     string        // GET-MASTER-ADDR-BY-NAME, the address to route to
	epoch    int64         // config-epoch from SENTINEL MASTER
	flags    string        // SENTINEL MASTER flags
	state    string        // SENTINEL MASTER failover-state ("" = none)
	infoAddr string        // SENTINEL MASTER ip:port: lags addr on a leader (§1.4)
	timeout  time.Duration // SENTINEL MASTER failover-timeout (0 = not reported)
	promoted string        // SENTINEL REPLICAS' "promoted" replica, asked only while a failover selects or promotes it
	runID    string        // SENTINEL MYID, when asked and supported
	peers    []peer        // SENTINEL SENTINELS, when asked
}

// peer is another sentinel, as SENTINEL SENTINELS lists it.
type peer struct {
	addr  string // "" when it announced no usable address
	runID string
}

// hasFlag reports whether the SENTINEL MASTER flags contain f.
func (a answer) hasFlag(f string) bool {
	for _, x := range strings.Split(a.flags, ",") {
		if x == f {
			return true
		}
	}
	return false
}

// failing reports whether this sentinel is failing over the master its
// SENTINEL MASTER reply describes (infoAddr): that master is objectively
// down, or a failover of it is running and has not reached the promotion.
// It is judged on the SENTINEL MASTER reply alone, whose fields are one
// snapshot: the address from GET-MASTER-ADDR-BY-NAME, read a moment later,
// may already be the promoted replica, and the leader's SENTINEL MASTER
// keeps the old ip until its own +switch-master (§1.4). From reconf_slaves
// on, the promotion has happened and the leader names the new master.
func (a answer) failing() bool {
	if a.err != nil || a.unknown {
		return false
	}
	inProgress := a.hasFlag("failover_in_progress")
	if inProgress && (a.state == "reconf_slaves" || a.state == "update_config") {
		return false
	}
	return inProgress || a.hasFlag("o_down")
}

// discoverEvery: SENTINEL SENTINELS and MYID ride on every tenth query of a
// sentinel (and on the first after a failure); sentinels themselves learn
// of new peers within about 10s, so asking more often buys nothing.
const discoverEvery = 10

// newSentinelClient opens (lazily: no I/O) a go-redis client for one
// sentinel. No retries: the watcher polls anyway, and a retry would hide a
// slow sentinel inside the query timeout.
func (w *Watcher) newSentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{
		Addr:                     addr,
		Username:                 w.opts.Username,
		Password:                 w.opts.Password,
		DialTimeout:              w.opts.DialTimeout,
		TLSConfig:                w.opts.TLS,
		Dialer:                   tlsDialer(w.opts.TLS, w.opts.DialTimeout),
		DialerRetries:            1,
		ReadTimeout:              w.opts.QueryTimeout,
		WriteTimeout:             w.opts.QueryTimeout,
		ContextTimeoutEnabled:    true,
		MaxRetries:               -1,
		PoolSize:                 4,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// poll queries s each time it is kicked. Exit: ctx done.
func (w *Watcher) poll(ctx context.Context, s *sentinelConn) {
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		a := w.query(ctx, s, n%discoverEvery == 0)
		n++
		if a.err != nil {
			n = 0 // rediscover after the next success
		}
		select {
		case w.answers <- a:
		case <-ctx.Done():
			return
		}
	}
}

// query asks one sentinel for the master (and, when discover, for its id
// and peers).
func (w *Watcher) query(ctx context.Context, s *sentinelConn, discover bool) answer {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, w.opts.DialTimeout+3*w.opts.QueryTimeout)
	defer cancel()
	var a answer
	for range readAttempts {
		a = w.read(ctx, s)
		if a.err != nil || a.unknown || a.consistent() {
			break
		}
	}
	if a.err == nil && !a.unknown && !a.consistent() {
		a.err = fmt.Errorf("sentinel answer keeps changing: master at %s, SENTINEL MASTER %s (%s)", a.addr, a.infoAddr, a.flags)
	}
	if a.err == nil && !a.unknown && (a.state == "send_slaveof_noone" || a.state == "wait_promotion") {
		a.promoted = w.promotedReplica(ctx, s)
	}
	if a.err == nil && discover {
		w.discover(ctx, s, &a)
	}
	a.sentinel, a.started, a.at = s.addr, started, time.Now()
	return a
}

// readAttempts bounds the re-reads of a torn answer (see consistent).
const readAttempts = 3

// consistent reports whether the two reads of a describe one state: the
// address equals SENTINEL MASTER's ip:port, except on a leader between its
// promotion and its own +switch-master (§1.4), which names the promoted
// replica while SENTINEL MASTER keeps the old ip. Anything else means the
// sentinel changed its mind between the two reads.
func (a answer) consistent() bool {
	if a.addr == a.infoAddr {
		return true
	}
	return a.hasFlag("failover_in_progress") && (a.state == "reconf_slaves" || a.state == "update_config")
}

// read sends SENTINEL MASTER (epoch, flags, failover state) then
// GET-MASTER-ADDR-BY-NAME (the address to route to). go-redis's
// SentinelClient cannot pipeline them, so they are two round trips, in this
// order: a failover landing in between pairs the new address with the old
// epoch and failover state, which consistent detects (and query re-reads);
// the other order could pair the old address with the new epoch.
func (w *Watcher) read(ctx context.Context, s *sentinelConn) (a answer) {
	name := w.opts.MasterName
	info, infoErr := s.client.Master(ctx, name).Result()
	var rerr redis.Error
	if infoErr != nil && !errors.As(infoErr, &rerr) {
		a.err = fmt.Errorf("sentinel master: %w", infoErr)
		return a
	}
	// A Redis error to SENTINEL MASTER is "no such master" or a refusal
	// (NOAUTH, ACL); GET-MASTER-ADDR-BY-NAME tells which without matching
	// the error text.
	var err error
	a.addr, a.unknown, err = masterAddr(ctx, s.client, name, s.host)
	switch {
	case a.unknown:
		return a
	case err == nil && infoErr != nil:
		err = fmt.Errorf("sentinel master: %w", infoErr)
	}
	if err != nil {
		a.err = err
		return a
	}
	if a.epoch, err = strconv.ParseInt(info["config-epoch"], 10, 64); err != nil {
		a.err = fmt.Errorf("sentinel master: config-epoch %q: %w", info["config-epoch"], err)
		return a
	}
	a.flags = info["flags"]
	a.state = info["failover-state"]
	if a.state == "none" {
		a.state = ""
	}
	a.infoAddr, _ = nodeAddr(info["ip"], info["port"], s.host)
	if ms, err := strconv.ParseInt(info["failover-timeout"], 10, 64); err == nil && ms > 0 {
		a.timeout = time.Duration(ms) * time.Millisecond
	}
	return a
}

// promotedReplica asks s which replica its failover selected: the leader
// flags it "promoted" in SENTINEL REPLICAS from +selected-slave on. This is
// how a failover whose events were lost still yields a candidate to watch
// (see candidate.go). "" when none is flagged or the query fails.
func (w *Watcher) promotedReplica(ctx context.Context, s *sentinelConn) string {
	reps, err := s.client.Replicas(ctx, w.opts.MasterName).Result()
	if err != nil {
		w.log.Debug("sentinel replicas query failed", zap.String("sentinel", s.addr), zap.Error(err))
		return ""
	}
	for _, r := range reps {
		if !slices.Contains(strings.Split(r["flags"], ","), "promoted") {
			continue
		}
		if addr, ok := nodeAddr(r["ip"], r["port"], s.host); ok {
			return addr
		}
	}
	return ""
}

// discover adds MYID and the SENTINEL SENTINELS list to a. Failures only
// cost the discovery, not the answer.
func (w *Watcher) discover(ctx context.Context, s *sentinelConn, a *answer) {
	id := redis.NewStringCmd(ctx, "sentinel", "myid")
	if s.client.Process(ctx, id) == nil { // before 6.2: unknown subcommand
		a.runID = id.Val()
	}
	list, err := s.client.Sentinels(ctx, w.opts.MasterName).Result()
	if err != nil {
		w.log.Debug("sentinel discovery failed", zap.String("sentinel", s.addr), zap.Error(err))
		return
	}
	for _, m := range list {
		p := peer{runID: m["runid"]}
		if p.runID == "" {
			p.runID = m["name"] // the name of a sentinel instance is its run id
		}
		// A peer that announced 0.0.0.0 has no address we could use: unlike a
		// monitored node, it is not on the host of the sentinel listing it.
		if !unspecified(m["ip"]) {
			p.addr, _ = nodeAddr(m["ip"], m["port"], "")
		}
		a.peers = append(a.peers, p)
	}
}

// learnPeers adds sentinels named by SENTINEL SENTINELS. It waits until
// every configured sentinel has been asked once, so that a configured
// sentinel (say localhost:26379) is recognised by its run id and not added
// a second time under the address it announces (127.0.0.1:26379).
func (w *Watcher) learnPeers(ctx context.Context, a answer) {
	st := &w.st
	for _, p := range a.peers {
		key := p.runID
		if key == "" {
			key = p.addr
		}
		if key != "" && len(st.pending) < 4*maxSentinels {
			st.pending[key] = p
		}
	}
	known := make(map[string]bool)
	for _, addr := range st.order {
		s := st.sentinels[addr]
		if !s.tried && !s.discovered {
			return
		}
		if s.runID != "" {
			known[s.runID] = true
		}
	}
	for key, p := range st.pending {
		delete(st.pending, key)
		switch {
		case p.addr == "":
			w.log.Debug("sentinel peer announced no usable address", zap.String("run_id", p.runID))
		case known[p.runID] || st.sentinels[p.addr] != nil:
		case len(st.order) >= maxSentinels:
			if !st.fullLogged {
				st.fullLogged = true
				w.log.Warn("too many sentinels; not adding more", zap.Int("max", maxSentinels))
			}
		default:
			w.log.Info("sentinel discovered", zap.String("sentinel", p.addr),
				zap.String("run_id", p.runID), zap.String("from", a.sentinel))
			w.addSentinel(ctx, p.addr, true)
			if p.runID != "" {
				st.sentinels[p.addr].runID = p.runID
				known[p.runID] = true
			}
		}
	}
}

// masterAddr asks c for the address of the master called name (a wildcard
// address stands for host, the sentinel's own). unknown is true when the
// sentinel does not monitor that name.
func masterAddr(ctx context.Context, c *redis.SentinelClient, name, host string) (addr string, unknown bool, err error) {
	hp, err := c.GetMasterAddrByName(ctx, name).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", true, nil
	case err != nil:
		return "", false, fmt.Errorf("sentinel get-master-addr-by-name: %w", err)
	case len(hp) != 2:
		return "", false, fmt.Errorf("sentinel get-master-addr-by-name: %d fields, want 2", len(hp))
	}
	addr, ok := nodeAddr(hp[0], hp[1], host)
	if !ok {
		return "", false, fmt.Errorf("sentinel get-master-addr-by-name: bad address %q %q", hp[0], hp[1])
	}
	return addr, false, nil
}
