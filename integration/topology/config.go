package topology

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// dataConfig renders a data node's config file. replicaOf is "" for the
// initial master. Persistence is off: a restarted node comes back empty, as
// a node without persistence does.
func dataConfig(o Options, port int, dir, replicaOf string) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# written by sentinel-proxy integration/topology; rewritten by Sentinel on failover")
	line("port %d", port)
	line("bind %s", o.Host)
	// Sentinels and clients may connect from a non-loopback Host: never
	// answer -DENIED (redis-protocol-notes §1.7).
	line("protected-mode no")
	line("daemonize no")
	line("supervised no")
	line(`logfile ""`)
	line("dir %s", quote(dir))
	line(`save ""`)
	line("appendonly no")
	// Redis 7 defaults to diskless sync with a 5 s delay waiting for more
	// replicas; a test topology wants its replicas online at once.
	line("repl-diskless-sync yes")
	line("repl-diskless-sync-delay 0")
	// Bounds a graceful Node.Stop of a master waiting for lagging replicas.
	line("shutdown-timeout 2")
	// Tests use DEBUG (SLEEP, PROTOCOL, ...); loopback and throwaway only.
	line("enable-debug-command yes")
	if o.Password != "" {
		line("requirepass %s", quote(o.Password))
		line("masterauth %s", quote(o.Password))
	}
	if replicaOf != "" {
		host, p, _ := net.SplitHostPort(replicaOf)
		line("replicaof %s %s", host, p)
	}
	for _, l := range o.RedisConfig {
		line("%s", l)
	}
	return b.String()
}

// sentinelConfig renders a sentinel's config file, monitoring master.
// Sentinel rewrites this file itself (known replicas, sentinels, epochs).
func sentinelConfig(o Options, port int, dir, master string) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	host, p, _ := net.SplitHostPort(master)
	name := o.MasterName
	line("# written by sentinel-proxy integration/topology; rewritten by Sentinel")
	line("port %d", port)
	line("bind %s", o.Host)
	line("protected-mode no")
	line("daemonize no")
	line(`logfile ""`)
	line("dir %s", quote(dir))
	if net.ParseIP(o.Host) == nil {
		line("sentinel resolve-hostnames yes")
	}
	line("sentinel monitor %s %s %s %d", name, host, p, o.Quorum)
	line("sentinel down-after-milliseconds %s %d", name, o.DownAfter.Milliseconds())
	line("sentinel failover-timeout %s %d", name, o.FailoverTimeout.Milliseconds())
	line("sentinel parallel-syncs %s 1", name)
	if o.Password != "" {
		line("sentinel auth-pass %s %s", name, quote(o.Password))
	}
	if o.SentinelPassword != "" {
		line("requirepass %s", quote(o.SentinelPassword))
		// The password this sentinel gives the others; requirepass alone
		// would do in 7.0, this says it explicitly.
		line("sentinel sentinel-pass %s", quote(o.SentinelPassword))
	}
	for _, l := range o.SentinelConfig {
		line("%s", l)
	}
	return b.String()
}

// quote makes s one argument for Redis's config parser (sdssplitargs).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// joinPort is net.JoinHostPort with an int port.
func joinPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
