package proxy

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cmdClass groups commands for the latency histogram.
type cmdClass uint8

const (
	classOther cmdClass = iota
	classRead
	classWrite
	classBlocking
	classTransaction
	classPubSub
	classConnection
	numClasses
)

var classNames = [numClasses]string{"other", "read", "write", "blocking", "transaction", "pubsub", "connection"}

// Reasons the proxy closes a client, for sentinel_proxy_client_disconnects_total.
const (
	reasonIdle          = "idle_timeout"
	reasonHandshake     = "handshake_timeout"
	reasonOutputLimit   = "output_limit"
	reasonProtocol      = "protocol_error"
	reasonRequestTooBig = "request_too_large"
	reasonPanic         = "panic"
)

// metrics are one server's Prometheus collectors, labelled with its group.
// The hot path only does atomic adds on pre-resolved children.
type metrics struct {
	cmdOK, cmdErrReply, cmdProxyErr, cmdDenied prometheus.Counter
	retried, held, holdTimeouts                prometheus.Counter
	redirects                                  prometheus.Counter
	holdSeconds                                prometheus.Counter
	latency                                    *classHistogram
	rejectedMax, rejectedAuth                  prometheus.Counter
	disconnects                                *prometheus.CounterVec
	dialErrors, failovers, panics              prometheus.Counter
	failoverDur                                prometheus.Histogram
	shardCmds                                  *prometheus.CounterVec // a cluster's commands by master

	collectors []prometheus.Collector
}

func newMetrics(group string) *metrics {
	labels := prometheus.Labels{"group": group}
	m := &metrics{}
	cmds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_proxy_commands_total", ConstLabels: labels,
		Help: "Commands answered, by outcome: ok, error_reply (Redis's error), proxy_error (the proxy's own error), denied (command policy).",
	}, []string{"outcome"})
	m.cmdOK, m.cmdErrReply = cmds.WithLabelValues("ok"), cmds.WithLabelValues("error_reply")
	m.cmdProxyErr, m.cmdDenied = cmds.WithLabelValues("proxy_error"), cmds.WithLabelValues("denied")
	m.shardCmds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_proxy_cluster_commands_total", ConstLabels: labels,
		Help: "Commands a cluster group sent, by the master (host:port) of their slot.",
	}, []string{"master"})
	m.collectors = append(m.collectors, m.shardCmds)
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
		m.collectors = append(m.collectors, c)
		return c
	}
	m.redirects = counter("sentinel_proxy_cluster_redirects_total", "Cluster redirects (-MOVED, -ASK, -TRYAGAIN, -CLUSTERDOWN) the proxy followed for its clients.")
	m.retried = counter("sentinel_proxy_commands_retried_total", "Commands sent again to a new master (they had not run, or were refused as -READONLY/-LOADING/-MASTERDOWN).")
	m.held = counter("sentinel_proxy_commands_held_total", "Batches of commands that waited for a master.")
	m.holdSeconds = counter("sentinel_proxy_hold_seconds_total", "Seconds commands spent waiting for a master.")
	m.holdTimeouts = counter("sentinel_proxy_hold_timeouts_total", "Held commands answered -MASTERDOWN after the hold timeout.")
	m.failovers = counter("sentinel_proxy_failovers_total", "Master switches the proxy followed.")
	m.panics = counter("sentinel_proxy_session_panics_total", "Sessions that panicked; each closed only its own client.")
	m.dialErrors = counter("sentinel_proxy_backend_dial_errors_total", "Backend connections that could not be opened.")
	lat := newClassHistogram("sentinel_proxy_command_duration_seconds",
		"Time from reading a command's batch to answering it, by command class.", labels,
		[]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})
	m.latency = lat
	rej := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_proxy_client_connections_rejected_total", ConstLabels: labels,
		Help: "Client connections refused (maxclients) and failed authentications (auth).",
	}, []string{"reason"})
	m.rejectedMax, m.rejectedAuth = rej.WithLabelValues("maxclients"), rej.WithLabelValues("auth")
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sentinel_proxy_client_disconnects_total", ConstLabels: labels,
		Help: "Clients the proxy closed, by reason.",
	}, []string{"reason"})
	for _, r := range []string{reasonIdle, reasonHandshake, reasonOutputLimit, reasonProtocol, reasonRequestTooBig, reasonPanic} {
		m.disconnects.WithLabelValues(r)
	}
	m.failoverDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sentinel_proxy_failover_duration_seconds", ConstLabels: labels,
		Help:    "From losing the master (failover start, or the switch itself) to the first command answered by the new master.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.collectors = append(m.collectors, cmds, lat, rej, m.disconnects, m.failoverDur)
	return m
}

// Collectors returns the server's Prometheus collectors (labelled with the
// group), for the caller's registry.
func (s *Server) Collectors() []prometheus.Collector {
	labels := prometheus.Labels{"group": s.opts.Name}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	backend := func(state string, f func(PoolStats) float64) prometheus.Collector {
		l := prometheus.Labels{"group": s.opts.Name, "state": state}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sentinel_proxy_backend_connections", ConstLabels: l,
			Help: "Backend connections open now: idle in the pool, busy with a batch, or pinned to a session.",
		}, func() float64 { return f(s.pool.stats()) })
	}
	pinned := func() int { return int(s.pinnedN.Load()) }
	return append([]prometheus.Collector{
		gauge("sentinel_proxy_client_connections", "Client connections open now.", func() float64 { return float64(s.clients.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_proxy_client_connections_total", Help: "Client connections accepted.", ConstLabels: labels,
		}, func() float64 { return float64(s.accepted.Load()) }),
		gauge("sentinel_proxy_client_connections_parked", "Idle clients held without a goroutine.", func() float64 { return float64(s.parker.count()) }),
		backend("idle", func(p PoolStats) float64 { return float64(p.Idle) }),
		backend("pinned", func(PoolStats) float64 { return float64(pinned()) }),
		backend("busy", func(p PoolStats) float64 { return float64(max(p.Open-p.Idle-pinned(), 0)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sentinel_proxy_backend_dials_total", Help: "Backend connections opened.", ConstLabels: labels,
		}, func() float64 { return float64(s.pool.stats().Dials) }),
	}, s.m.collectors...)
}

// countReply counts one reply and its latency in seconds.
func (m *metrics) countReply(info cmdInfo, isErr bool, latency float64) {
	if isErr {
		m.cmdErrReply.Inc()
	} else {
		m.cmdOK.Inc()
	}
	m.latency.observe(info.class, latency, 1)
}

// replyTally counts a batch's replies that came together, to be counted
// with one update per class (metrics.countTally).
type replyTally struct {
	byClass  [numClasses]uint32
	ok, errs uint32
}

func (t *replyTally) add(info cmdInfo, isErr bool) {
	t.byClass[info.class]++
	if isErr {
		t.errs++
	} else {
		t.ok++
	}
}

// countTally counts the replies of t, each with latency in seconds.
func (m *metrics) countTally(t *replyTally, latency float64) {
	for c, n := range t.byClass {
		if n > 0 {
			m.latency.observe(cmdClass(c), latency, uint64(n))
		}
	}
	if t.ok > 0 {
		m.cmdOK.Add(float64(t.ok))
	}
	if t.errs > 0 {
		m.cmdErrReply.Add(float64(t.errs))
	}
}

// failoverClock measures from losing the master to the first command the
// new one answers.
type failoverClock struct {
	lostAt  atomic.Int64 // UnixNano; 0 when not measuring
	newAddr atomic.Pointer[string]
}

// lost starts the clock unless it runs.
func (c *failoverClock) lost(now time.Time) { c.lostAt.CompareAndSwap(0, now.UnixNano()) }

// switched names the master whose first answer stops the clock.
func (c *failoverClock) switched(addr string) { c.newAddr.Store(&addr) }

// answered stops the clock if addr is the new master; it returns the
// duration, or 0.
func (c *failoverClock) answered(addr string) time.Duration {
	at := c.lostAt.Load()
	if at == 0 {
		return 0
	}
	now := time.Now()
	if p := c.newAddr.Load(); p == nil || *p != addr {
		return 0
	}
	if !c.lostAt.CompareAndSwap(at, 0) {
		return 0
	}
	return now.Sub(time.Unix(0, at))
}

// classOf maps a command to its latency class. name is lower case.
func classOf(kind cmdKind, name string) cmdClass {
	switch kind {
	case kindBlocking:
		return classBlocking
	case kindMulti, kindExec, kindDiscard, kindWatch, kindUnwatch:
		return classTransaction
	case kindDuplex:
		return classPubSub
	case kindAuth, kindHello, kindSelect, kindReset, kindQuit, kindPin:
		return classConnection
	}
	switch name {
	case "get", "mget", "exists", "ttl", "pttl", "type", "strlen", "getrange", "substr", "lcs",
		"hget", "hmget", "hgetall", "hexists", "hlen", "hkeys", "hvals", "hscan", "hstrlen", "hrandfield",
		"lrange", "llen", "lindex", "lpos", "scard", "smembers", "sismember", "smismember", "srandmember",
		"sscan", "sinter", "sunion", "sdiff", "sintercard", "zrange", "zrangebyscore", "zrangebylex",
		"zrevrange", "zrevrangebyscore", "zrevrangebylex", "zscore", "zmscore", "zcard", "zcount",
		"zlexcount", "zrank", "zrevrank", "zscan", "zrandmember", "zinter", "zunion", "zdiff",
		"scan", "keys", "dbsize", "randomkey", "xrange", "xrevrange", "xlen", "xread", "xinfo", "xpending",
		"bitcount", "bitpos", "getbit", "pfcount", "geopos", "geodist", "geohash", "georadius_ro",
		"georadiusbymember_ro", "geosearch", "dump", "object", "memory", "expiretime", "pexpiretime",
		"touch", "eval_ro", "evalsha_ro", "fcall_ro", "sort_ro":
		return classRead
	case "set", "setex", "psetex", "setnx", "getset", "getdel", "getex", "mset", "msetnx", "append",
		"incr", "decr", "incrby", "decrby", "incrbyfloat", "del", "unlink", "expire", "pexpire",
		"expireat", "pexpireat", "persist", "rename", "renamenx", "hset", "hsetnx", "hmset", "hdel",
		"hincrby", "hincrbyfloat", "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "lset", "lrem",
		"ltrim", "linsert", "lmove", "rpoplpush", "lmpop", "sadd", "srem", "spop", "smove", "sinterstore",
		"sunionstore", "sdiffstore", "zadd", "zrem", "zincrby", "zpopmin", "zpopmax", "zmpop",
		"zremrangebyscore", "zremrangebyrank", "zremrangebylex", "zunionstore", "zinterstore",
		"zdiffstore", "zrangestore", "xadd", "xdel", "xtrim", "xack", "xclaim", "xautoclaim", "xgroup",
		"xsetid", "setbit", "setrange", "bitop", "bitfield", "pfadd", "pfmerge", "geoadd", "restore",
		"copy", "flushdb", "flushall", "move", "swapdb", "publish", "spublish", "eval", "evalsha",
		"fcall", "sort":
		return classWrite
	}
	if strings.HasPrefix(name, "client") {
		return classConnection
	}
	return classOther
}
