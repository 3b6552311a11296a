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
	// shared by all groups. At least one is required.
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

	// Groups are the master groups, each served on its own listen address.
	// At least one is required.
	Groups []Group `mapstructure:"groups"`

	// problems are what Load found wrong in the file beyond what decoding
	// rejects (unknown keys, durations without a unit). They are kept here,
	// not returned by Load, so that Validate lists them with everything else.
	problems []string
}

// Group is one master group: the clients that connect to Listen are served by
// the master the sentinels name MasterName.
type Group struct {
	// MasterName is the name the sentinels monitor the master under.
	MasterName string `mapstructure:"master_name"`
	// Listen is the address clients connect to (host:port; ":6380" means
	// every interface; port 0 picks a free port, for tests).
	Listen string `mapstructure:"listen"`
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
	}
}
