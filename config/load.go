package config

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// ErrHelp is returned by Load when --help or -h was given; the caller prints
// Usage and exits 0.
var ErrHelp = errors.New("help requested")

// Flags that are not settings of Config: they have no file key, and Load
// reads them from the flag set rather than through viper.
const (
	flagConfig       = "config"
	flagHelp         = "help"
	flagListen       = "listen"
	flagMasterName   = "master-name"
	flagClusterNodes = "cluster-nodes"
)

// Load builds a Config from args (without the program name), the environment
// as read by getenv (nil means an empty environment) and, when --config or
// SENTINEL_PROXY_CONFIG names one, a YAML file. Precedence, highest first:
// flags given on the command line, environment variables (empty ones are
// ignored), the file, Default().
//
// --listen and --master-name (or their environment variables) are the quick
// form of one group: if the file has a group with that master name, --listen
// replaces its listen address; otherwise the group is appended to the file's.
// --cluster-nodes is the quick form of a cluster group, named "cluster": if
// the file has a cluster group of that name, the flags replace its nodes and
// listen address; otherwise the group is appended.
//
// Load fails on what it cannot decode (bad flags, unreadable file, a value of
// the wrong type). It does not validate: unknown keys and the like are kept
// for Validate, which the caller must call, so that every problem is listed
// together. It returns ErrHelp when --help or -h was given.
func Load(args []string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	fs := newFlagSet()
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("parse flags: %w", err)
	}
	if help, _ := fs.GetBool(flagHelp); help {
		return Config{}, ErrHelp
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("parse flags: unexpected argument %q", fs.Arg(0))
	}

	// The environment fills the flags the command line left unset, with
	// the flags' own parsers. Set flags, from either source, are Changed and
	// so win over the file in viper; the others fall back to the file, then
	// to their defaults (Default()).
	// Strings are kept as given (a password may end in a space); durations
	// and lists are trimmed.
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		name := envName(f.Name)
		val := getenv(name)
		if f.Changed || f.Name == flagHelp || strings.TrimSpace(val) == "" {
			return
		}
		if f.Value.Type() != "string" {
			val = strings.TrimSpace(val)
		}
		if err := fs.Set(f.Name, val); err != nil {
			envErr = errors.Join(envErr, fmt.Errorf("environment %s: %w", name, err))
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}

	v := viper.New()
	var problems []string
	path, _ := fs.GetString(flagConfig)
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config file %s: %w", path, err)
		}
		// Only the file is loaded yet, so these keys are the file's own.
		problems = checkKeys(v.AllSettings(), reflect.TypeFor[Config](), "")
		for i, p := range problems {
			problems[i] = "config file " + path + ": " + p
		}
	}

	var bindErr error
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case flagConfig, flagHelp, flagListen, flagMasterName, flagClusterNodes:
			return
		}
		bindErr = errors.Join(bindErr, v.BindPFlag(strings.ReplaceAll(f.Name, "-", "_"), f))
	})
	if bindErr != nil {
		return Config{}, fmt.Errorf("bind flags: %w", bindErr)
	}

	c := Default()
	if err := v.Unmarshal(&c); err != nil {
		// Flag values are already parsed, so this is the file's fault.
		return Config{}, fmt.Errorf("config file %s: %w", path, err)
	}
	name, _ := fs.GetString(flagMasterName)
	listen, _ := fs.GetString(flagListen)
	nodes, _ := fs.GetStringSlice(flagClusterNodes)
	c.Groups = withQuickGroup(c.Groups, Group{
		MasterName: strings.TrimSpace(name), Listen: strings.TrimSpace(listen), ClusterNodes: cleanList(nodes),
	})
	c.Sentinels = cleanList(c.Sentinels)
	c.LogLevel = strings.ToLower(strings.TrimSpace(c.LogLevel))
	c.LogFormat = strings.ToLower(strings.TrimSpace(c.LogFormat))
	if len(c.Users) == 0 {
		c.Users = nil
	}
	c.CommandPolicy = strings.ToLower(strings.TrimSpace(c.CommandPolicy))
	c.AllowCommands = lowerList(c.AllowCommands)
	c.DenyCommands = lowerList(c.DenyCommands)
	for i := range c.Groups {
		g := &c.Groups[i]
		g.CommandPolicy = strings.ToLower(strings.TrimSpace(g.CommandPolicy))
		g.ClusterNodes = cleanList(g.ClusterNodes)
		g.AllowCommands = lowerList(g.AllowCommands)
		g.DenyCommands = lowerList(g.DenyCommands)
	}
	c.problems = problems
	return c, nil
}

// Usage returns the --help text: synopsis, every flag with its default, and
// how flags, environment and file relate.
func Usage() string {
	var b strings.Builder
	b.WriteString(`Usage:
  sentinel-proxy --listen ADDR --master-name NAME --sentinels HOST:PORT[,HOST:PORT...] [flags]
  sentinel-proxy --listen ADDR --cluster-nodes HOST:PORT[,HOST:PORT...] [flags]
  sentinel-proxy --config FILE [flags]
  sentinel-proxy check --config FILE [flags]   check the configuration against the live sentinels
  sentinel-proxy health [--url URL]            probe the admin endpoint (container health checks)
  sentinel-proxy dev [--keep|--manual]         local throwaway topology with a failover demo
  sentinel-proxy dev --cluster                 local throwaway Redis Cluster behind the proxy

Serves Redis clients on a fixed address and forwards their commands to the
master that Redis Sentinel currently names, following failovers, or to the
masters of a Redis Cluster by the slot of their keys.

Flags:
`)
	b.WriteString(newFlagSet().FlagUsages())
	b.WriteString(`
Every flag except --help can also be set in the environment as
SENTINEL_PROXY_ followed by the flag name in upper case with underscores
(--hold-timeout: SENTINEL_PROXY_HOLD_TIMEOUT=5s; lists comma-separated:
SENTINEL_PROXY_SENTINELS=10.0.0.1:26379,10.0.0.2:26379). Empty variables are
ignored. Durations use Go syntax: 500ms, 5s, 1m.

The config file (YAML) takes the same settings with underscores
(hold_timeout: 5s), except --config, --listen, --master-name and
--cluster-nodes; its master groups share the sentinels, and a group with
cluster_nodes instead of master_name is a Redis Cluster (name: names it in
logs, metrics and /status; "cluster" when left out):

  sentinels: [10.0.0.1:26379, 10.0.0.2:26379]
  groups:
    - {master_name: sessions, listen: "127.0.0.1:6380"}
    - {master_name: cache, listen: "127.0.0.1:6381"}
    - {name: shop, cluster_nodes: ["10.0.1.1:7000", "10.0.1.2:7000"], listen: "127.0.0.1:6382"}

Precedence: flags given on the command line, then the environment, then the
file, then the defaults. With a config file, --master-name and --listen name
one group: if the file has a group with that master name, --listen replaces
its listen address; otherwise the group is added to the file's groups.
--cluster-nodes with --listen does the same for a cluster group named
"cluster".
Unknown keys in the file are errors, and all problems are reported at once.
`)
	return b.String()
}

// newFlagSet defines every flag with its default from Default(). It writes
// nothing itself: Load returns errors and Usage renders the help.
func newFlagSet() *pflag.FlagSet {
	d := Default()
	fs := pflag.NewFlagSet("sentinel-proxy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false

	fs.String(flagConfig, "", "YAML config `file` (several master groups, every setting)")
	fs.String(flagListen, "", "quick form: `address` clients connect to, e.g. 127.0.0.1:6380")
	fs.String(flagMasterName, "", "quick form: master `name` as the sentinels monitor it, e.g. mymaster")
	fs.StringSlice(flagClusterNodes, nil, "quick form: Redis Cluster node `addresses` host:port, comma-separated (instead of --master-name; no sentinels needed)")
	fs.StringSlice("sentinels", d.Sentinels, "sentinel `addresses` host:port, comma-separated or repeated (IPv6 as [::1]:26379)")
	fs.String("sentinel-username", d.SentinelUsername, "ACL `user` for the sentinels")
	fs.String("sentinel-password", d.SentinelPassword, "`password` for the sentinels (prefer the environment: flags show in ps)")
	fs.Bool("stop-writes-when-blind", d.StopWritesWhenBlind, "refuse commands while no sentinel answers, instead of serving the last verified master")
	fs.String("backend-username", d.BackendUsername, "the proxy's own ACL `user` on the Redis data nodes")
	fs.String("backend-password", d.BackendPassword, "the proxy's own `password` on the Redis data nodes")
	fs.String("password", d.Password, "proxy-terminated auth: `password` clients must AUTH with (their traffic then uses the backend credentials); passthrough when empty (prefer the environment)")
	fs.String("tls-cert-file", d.TLSCertFile, "client listener TLS certificate `file` (PEM); TLS is on when set")
	fs.String("tls-key-file", d.TLSKeyFile, "client listener TLS private key `file` (PEM)")
	fs.String("tls-client-ca-file", d.TLSClientCAFile, "CA bundle `file`: require client certificates signed by it (mutual TLS)")
	fs.String("tls-min-version", d.TLSMinVersion, "lowest TLS `version` the listener accepts: 1.2 or 1.3")
	fs.Bool("backend-tls", d.BackendTLS, "connect to the Redis data nodes with TLS")
	fs.String("backend-tls-ca-file", d.BackendTLSCAFile, "CA bundle `file` to verify the data nodes (system roots when empty)")
	fs.String("backend-tls-server-name", d.BackendTLSServerName, "`name` the data nodes' certificates must carry (the dialled host when empty)")
	fs.String("backend-tls-cert-file", d.BackendTLSCertFile, "client certificate `file` for the data nodes")
	fs.String("backend-tls-key-file", d.BackendTLSKeyFile, "client key `file` for the data nodes")
	fs.Bool("sentinel-tls", d.SentinelTLS, "connect to the sentinels with TLS")
	fs.String("sentinel-tls-ca-file", d.SentinelTLSCAFile, "CA bundle `file` to verify the sentinels (system roots when empty)")
	fs.String("sentinel-tls-server-name", d.SentinelTLSServerName, "`name` the sentinels' certificates must carry (the dialled host when empty)")
	fs.String("sentinel-tls-cert-file", d.SentinelTLSCertFile, "client certificate `file` for the sentinels")
	fs.String("sentinel-tls-key-file", d.SentinelTLSKeyFile, "client key `file` for the sentinels")
	fs.String("command-policy", d.CommandPolicy, "command `policy`: deny refuses the built-in dangerous commands plus --deny-commands; allow permits only --allow-commands")
	fs.StringSlice("allow-commands", d.AllowCommands, "`commands` (name or name|subcommand) allowed: exceptions to the deny list, or the whole allow list")
	fs.StringSlice("deny-commands", d.DenyCommands, "`commands` (name or name|subcommand) refused besides the built-in list")
	fs.Int("max-clients", d.MaxClients, "most client connections per group")
	fs.Int64("proto-max-bulk-len", d.ProtoMaxBulkLen, "largest bulk argument a client may send, in `bytes`")
	fs.Int64("client-query-buffer-limit", d.ClientQueryBufferLimit, "largest request (all its arguments) a client may send, in `bytes`")
	fs.Int64("pubsub-output-limit", d.PubSubOutputLimit, "disconnect a subscriber that leaves this many `bytes` unread (0: off)")
	fs.Int("procs", d.Procs, "threads running Go code at once, GOMAXPROCS (0: half the CPUs, at least 1, unless GOMAXPROCS is set)")
	fs.Int("shared-connections", d.SharedConnections, "backend connections per connection state that carry every client's plain commands (0: no sharing)")
	fs.Duration("idle-timeout", d.IdleTimeout, "close clients idle this long (0: never)")
	fs.Duration("handshake-timeout", d.HandshakeTimeout, "time a new client has to send its first command (0: no limit)")
	fs.String("admin", d.Admin, "admin HTTP listen `address` (metrics, health, status); off when empty")
	fs.String("log-level", d.LogLevel, "log `level`: debug, info, warn or error")
	fs.String("log-format", d.LogFormat, "log `format`: console or json")
	fs.Duration("dial-timeout", d.DialTimeout, "timeout of each dial to a Redis node or a sentinel")
	fs.Duration("hold-timeout", d.HoldTimeout, "how long commands wait while no master is verified (0: fail at once)")
	fs.Duration("poll-interval", d.PollInterval, "how often every sentinel is asked for the master")
	fs.Duration("query-timeout", d.QueryTimeout, "timeout of each query to one sentinel")
	fs.Duration("drain-timeout", d.DrainTimeout, "how long shutdown lets in-flight commands finish (0: close at once)")
	fs.BoolP(flagHelp, "h", false, "show this help")
	return fs
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, "-", "_"))
}

// withQuickGroup applies the quick form (--master-name or --cluster-nodes,
// and --listen) to the groups from the file; see Load. A half-given quick
// form still adds a group, so that Validate names what is missing.
func withQuickGroup(groups []Group, q Group) []Group {
	if q.MasterName == "" && q.Listen == "" && !q.IsCluster() {
		return groups
	}
	for i := range groups {
		g := &groups[i]
		same := q.MasterName != "" && !q.IsCluster() && g.MasterName == q.MasterName ||
			q.MasterName == "" && q.IsCluster() && g.IsCluster() && g.Label() == DefaultClusterName
		if !same {
			continue
		}
		if q.Listen != "" {
			g.Listen = q.Listen
		}
		if q.IsCluster() {
			g.ClusterNodes = q.ClusterNodes
		}
		return groups
	}
	return append(groups, q)
}

// lowerList is cleanList in lower case.
func lowerList(items []string) []string {
	out := cleanList(items)
	for i := range out {
		out[i] = strings.ToLower(out[i])
	}
	return out
}

// cleanList trims the items of a list given as "a, b," and drops empty ones.
func cleanList(items []string) []string {
	var out []string
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// checkKeys compares the settings read from the file with the struct type t
// by mapstructure tag and reports keys t does not have and durations written
// as bare numbers (which would decode as nanoseconds). prefix names the
// enclosing key in messages.
func checkKeys(m map[string]any, t reflect.Type, prefix string) []string {
	fields := make(map[string]reflect.Type)
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() && f.Tag.Get("mapstructure") != "" {
			fields[f.Tag.Get("mapstructure")] = f.Type
		}
	}
	var p []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		ft, ok := fields[k]
		switch {
		case !ok && prefix == "" && (k == "listen" || k == "master_name" || k == "cluster_nodes"):
			p = append(p, fmt.Sprintf("key %q belongs in a group: groups: [{master_name: NAME, listen: ADDR}] or [{cluster_nodes: [HOST:PORT], listen: ADDR}]", k))
		case !ok:
			p = append(p, fmt.Sprintf("unknown key %q%s", prefix+k, suggest(k, slices.Collect(maps.Keys(fields)))))
		case ft == reflect.TypeFor[time.Duration]():
			if isUnitless(m[k]) {
				p = append(p, fmt.Sprintf("%s%s: %v has no unit; write a duration such as \"5s\" or \"500ms\"", prefix, k, m[k]))
			}
		case ft.Kind() == reflect.Struct:
			if sub, ok := m[k].(map[string]any); ok {
				p = append(p, checkKeys(sub, ft, prefix+k+".")...)
			}
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			items, _ := m[k].([]any)
			for i, item := range items {
				if sub, ok := item.(map[string]any); ok {
					p = append(p, checkKeys(sub, ft.Elem(), fmt.Sprintf("%s%s[%d].", prefix, k, i))...)
				}
			}
		}
	}
	return p
}

// isUnitless reports whether a file value is a non-zero bare number.
func isUnitless(v any) bool {
	switch n := v.(type) {
	case int:
		return n != 0
	case int64:
		return n != 0
	case uint64:
		return n != 0
	case float64:
		return n != 0
	}
	return false
}

// suggest returns ` (did you mean "x"?)` for the known key closest to a
// mistyped one, or "" when none is within two edits.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range slices.Sorted(slices.Values(known)) {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, by bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
