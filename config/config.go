package config

import "time"

// EnvPrefix starts the name of every environment variable Load reads:
// SENTINEL_PROXY_ followed by the setting's file key in upper case, e.g.
// SENTINEL_PROXY_HOLD_TIMEOUT for hold_timeout.
const EnvPrefix = "SENTINEL_PROXY_"

// Config is the whole configuration of one proxy process. It is plain data:
// Load fills it, Validate checks it, and the caller translates it into the
// options of the sentinel and proxy packages.
//
// The mapstructure tag of a field is its key in the YAML file; the flag is the
// same key with dashes (--hold-timeout) and the environment variable is
// EnvPrefix plus the key in upper case. Fields tagged redact:"true" are
// secrets: String, fmt verbs, zap and JSON output show them as "REDACTED".
type Config struct {
	// Sentinels are the sentinel addresses (host:port, IPv6 as [::1]:26379),
	// shared by all groups. At least one is required when a group has a
	// MasterName.
	Sentinels []string `mapstructure:"sentinels"`
	// SentinelUsername is the ACL user for the sentinels; "" means the
	// default user.
	SentinelUsername string `mapstructure:"sentinel_username"`
	// SentinelPassword authenticates to the sentinels; "" means no AUTH.
	SentinelPassword string `mapstructure:"sentinel_password" redact:"true"`

	// Admin is the listen address of the admin HTTP endpoint (metrics,
	// health, status); "" turns it off.
	Admin string `mapstructure:"admin"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel string `mapstructure:"log_level"`
	// LogFormat is console (human-readable) or json.
	LogFormat string `mapstructure:"log_format"`

	// DialTimeout bounds every dial to a data node or a sentinel; must be > 0.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// HoldTimeout is how long commands wait while no master is verified
	// before they fail with a MASTERDOWN error; 0 fails them at once.
	HoldTimeout time.Duration `mapstructure:"hold_timeout"`
	// PollInterval is the period of sentinel polling, which runs even while
	// event subscriptions work; must be > 0.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// QueryTimeout bounds one query to one sentinel; must be > 0.
	QueryTimeout time.Duration `mapstructure:"query_timeout"`
	// DrainTimeout is how long a graceful shutdown lets in-flight commands
	// finish; 0 closes every connection at once.
	DrainTimeout time.Duration `mapstructure:"drain_timeout"`

	// StopWritesWhenBlind makes the proxy refuse commands (after
	// HoldTimeout, with -MASTERDOWN) while no sentinel answers. By default
	// it keeps serving the last verified master, and says so in logs and
	// /readyz.
	StopWritesWhenBlind bool `mapstructure:"stop_writes_when_blind"`

	// BackendUsername is the proxy's own ACL user on the data nodes (ROLE
	// checks); "" means the default user.
	BackendUsername string `mapstructure:"backend_username"`
	// BackendPassword is the proxy's own password on the data nodes; ""
	// means no AUTH.
	BackendPassword string `mapstructure:"backend_password" redact:"true"`

	// Password turns on proxy-terminated authentication for the default
	// user: clients AUTH to the proxy, and their traffic uses the backend
	// credentials. "" (and no Users) means passthrough: clients
	// authenticate to Redis itself.
	Password string `mapstructure:"password" redact:"true"`
	// Users are ACL-style users for proxy-terminated authentication (file
	// only). A user named "default" stands for Password.
	Users []User `mapstructure:"users"`

	// TLS on the client listener: certificate and key (both or neither),
	// an optional CA bundle that client certificates must chain to (mutual
	// TLS), and the lowest TLS version accepted ("1.2" or "1.3").
	TLSCertFile     string `mapstructure:"tls_cert_file"`
	TLSKeyFile      string `mapstructure:"tls_key_file"`
	TLSClientCAFile string `mapstructure:"tls_client_ca_file"`
	TLSMinVersion   string `mapstructure:"tls_min_version"`

	// TLS to the data nodes: on/off, the CA bundle to verify them with
	// (system roots when ""), the name to verify (the dialled host when
	// ""), and an optional client certificate and key.
	BackendTLS           bool   `mapstructure:"backend_tls"`
	BackendTLSCAFile     string `mapstructure:"backend_tls_ca_file"`
	BackendTLSServerName string `mapstructure:"backend_tls_server_name"`
	BackendTLSCertFile   string `mapstructure:"backend_tls_cert_file"`
	BackendTLSKeyFile    string `mapstructure:"backend_tls_key_file"`

	// TLS to the sentinels, as for the data nodes.
	SentinelTLS           bool   `mapstructure:"sentinel_tls"`
	SentinelTLSCAFile     string `mapstructure:"sentinel_tls_ca_file"`
	SentinelTLSServerName string `mapstructure:"sentinel_tls_server_name"`
	SentinelTLSCertFile   string `mapstructure:"sentinel_tls_cert_file"`
	SentinelTLSKeyFile    string `mapstructure:"sentinel_tls_key_file"`

	// CommandPolicy is "deny" (every command but those denied; the default,
	// with a built-in list of dangerous commands) or "allow" (only the
	// commands in AllowCommands, plus the connection basics). Groups may
	// override all three.
	CommandPolicy string `mapstructure:"command_policy"`
	// AllowCommands: under "deny", removes commands from the deny list
	// (e.g. monitor); under "allow", the commands permitted. Entries are
	// command names or command|subcommand (config|get).
	AllowCommands []string `mapstructure:"allow_commands"`
	// DenyCommands are refused on top of the built-in list (or, under
	// "allow", despite AllowCommands).
	DenyCommands []string `mapstructure:"deny_commands"`

	// MaxClients is the most client connections per group; more are
	// answered "-ERR max number of clients reached" and closed.
	MaxClients int `mapstructure:"max_clients"`
	// ProtoMaxBulkLen is the largest bulk argument in bytes (Redis's
	// proto-max-bulk-len).
	ProtoMaxBulkLen int64 `mapstructure:"proto_max_bulk_len"`
	// ClientQueryBufferLimit bounds one client's unanswered requests in
	// bytes (Redis's client-query-buffer-limit).
	ClientQueryBufferLimit int64 `mapstructure:"client_query_buffer_limit"`
	// PubSubOutputLimit is the most bytes a subscriber (or MONITOR, or a
	// tracking connection) may leave unread before it is disconnected, as
	// Redis's client-output-buffer-limit pubsub hard limit; 0 turns it off.
	PubSubOutputLimit int64 `mapstructure:"pubsub_output_limit"`
	// IdleTimeout closes clients idle that long; 0 (the default) never.
	// Subscribers and blocked clients are not idle.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// HandshakeTimeout is how long a new client has to send its first
	// complete command (and finish TLS); 0 turns it off.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`

	// SharedConnections is how many backend connections per connection
	// state (user, db, protocol) carry the plain commands of all clients
	// at once; 0 turns sharing off: each batch of commands then takes a
	// pooled connection of its own. Groups may override it.
	SharedConnections int `mapstructure:"shared_connections"`

	// Procs is how many threads run the proxy's Go code at once
	// (GOMAXPROCS). 0, the default, is half the CPUs the process may use,
	// at least 1, unless the GOMAXPROCS environment variable is set: the
	// proxy is bound by system calls and wake-ups, not by computing, and
	// on a host it shares with Redis or its clients, Go's idle threads
	// spinning for work take CPU time from them (see the README's
	// Benchmarks).
	Procs int `mapstructure:"procs"`

	// Groups are the master groups (Sentinel or Cluster), each served on
	// its own listen address.
	// At least one is required.
	Groups []Group `mapstructure:"groups"`

	// problems are what Load found wrong in the file beyond what decoding
	// rejects (unknown keys, durations without a unit). They are kept here,
	// not returned by Load, so that Validate lists them with everything else.
	problems []string
}

// Group is one master group: the clients that connect to Listen are served by
// the master the sentinels name MasterName, or by the masters of the Redis
// Cluster that ClusterNodes belong to. Exactly one of the two is set.
type Group struct {
	// Name names the group in logs, metrics, /status and check; "" means
	// MasterName, or "cluster" for a cluster group (see Label).
	Name string `mapstructure:"name"`
	// MasterName is the name the sentinels monitor the master under.
	MasterName string `mapstructure:"master_name"`
	// ClusterNodes are host:port addresses of some nodes of a Redis
	// Cluster: the seeds the slot map is first read from. Any node will
	// do; the proxy learns the others from the cluster.
	ClusterNodes []string `mapstructure:"cluster_nodes"`
	// Listen is the address clients connect to (host:port; ":6380" means
	// every interface; port 0 picks a free port, for tests).
	Listen string `mapstructure:"listen"`
	// CommandPolicy, AllowCommands and DenyCommands override the top-level
	// settings of the same name for this group when set.
	CommandPolicy string   `mapstructure:"command_policy"`
	AllowCommands []string `mapstructure:"allow_commands"`
	DenyCommands  []string `mapstructure:"deny_commands"`
	// Sharing is "off" to turn shared connections off for this group, "on"
	// to turn them on (shared_connections of them, at least one), and ""
	// to follow shared_connections.
	Sharing string `mapstructure:"sharing"`
}

// DefaultClusterName is the name of a cluster group that gives none.
const DefaultClusterName = "cluster"

// Label is the group's name in logs, metrics, /status and check, and what
// a reload matches running groups by: Name, else MasterName, else
// DefaultClusterName for a cluster group.
func (g Group) Label() string {
	switch {
	case g.Name != "":
		return g.Name
	case g.MasterName != "" || len(g.ClusterNodes) == 0:
		return g.MasterName
	}
	return DefaultClusterName
}

// IsCluster reports whether the group is a Redis Cluster (ClusterNodes set).
func (g Group) IsCluster() bool { return len(g.ClusterNodes) > 0 }

// User is one proxy-side ACL user. Give Password or PasswordSHA256 (the
// lower-case hex SHA-256 of the password, as Redis ACL's #<hash>), not both.
type User struct {
	Name           string `mapstructure:"name"`
	Password       string `mapstructure:"password" redact:"true"`
	PasswordSHA256 string `mapstructure:"password_sha256" redact:"true"`
}

// Default returns the configuration with every default filled in. It has no
// sentinels and no groups, so it does not validate on its own.
func Default() Config {
	return Config{
		LogLevel:     "info",
		LogFormat:    "console",
		DialTimeout:  2 * time.Second,
		HoldTimeout:  5 * time.Second,
		PollInterval: time.Second,
		QueryTimeout: 500 * time.Millisecond,
		DrainTimeout: 10 * time.Second,

		TLSMinVersion:          "1.2",
		CommandPolicy:          "deny",
		MaxClients:             10000,
		ProtoMaxBulkLen:        512 << 20,
		ClientQueryBufferLimit: 1 << 30,
		PubSubOutputLimit:      32 << 20,
		HandshakeTimeout:       10 * time.Second,
		SharedConnections:      1,
	}
}
