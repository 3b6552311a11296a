package topology

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"go.uber.org/zap"
)

// Defaults applied by Start to zero-valued Options fields.
const (
	DefaultMasterName = "mymaster"
	DefaultReplicas   = 2
	DefaultSentinels  = 3
	DefaultQuorum     = 2
	DefaultHost       = "127.0.0.1"

	// DefaultDownAfter is also the minimum: with down-after-milliseconds at
	// or below 1000 the first PING to a freshly promoted master races its own
	// SDOWN timer, and Sentinel has been measured to fail over twice in a row
	// (redis-protocol-notes §1.10, run 3).
	DefaultDownAfter = 2 * time.Second

	// DefaultFailoverTimeout keeps tests short and matches the measurements
	// in redis-protocol-notes §1.10. It bounds how long the leader waits for
	// the promotion and for the other replicas to be reconfigured (its own
	// late +switch-master comes about then), how long a second SENTINEL
	// FAILOVER answers -INPROG, the retry delay after an aborted attempt
	// (2x), and the delay before Sentinel re-points a replica that follows
	// the wrong master.
	DefaultFailoverTimeout = 3 * time.Second

	// defaultWait bounds Start and the Wait* methods when the caller's
	// context has no deadline of its own.
	defaultWait = 60 * time.Second
)

// Options describes the topology to start. The zero value is valid: one
// master, two replicas and three sentinels (quorum 2) on 127.0.0.1, no
// passwords, in a temporary directory.
type Options struct {
	// Dir holds config files, data directories and logs. "" means a new
	// temporary directory, removed by Stop. A directory given here is
	// created if needed and left in place.
	Dir string

	// MasterName is the name the sentinels monitor. "" means "mymaster".
	MasterName string

	// Replicas is the number of replicas of the initial master. 0 means 2;
	// use a negative value for none.
	Replicas int

	// Sentinels is the number of sentinels. 0 means 3.
	Sentinels int

	// Quorum is the sentinel quorum. 0 means 2 (1 with a single sentinel).
	Quorum int

	// DownAfter is down-after-milliseconds. 0 means 2s; less than 2s is
	// rejected (it causes spurious double failovers).
	DownAfter time.Duration

	// FailoverTimeout is the sentinel failover-timeout. 0 means 3s.
	FailoverTimeout time.Duration

	// Password, if set, is every data node's requirepass and masterauth and
	// the sentinels' auth-pass for the master.
	Password string

	// SentinelPassword, if set, is the sentinels' requirepass (and the
	// password they use with each other).
	SentinelPassword string

	// Host is the address every process binds to and announces. "" means
	// 127.0.0.1.
	Host string

	// RedisServer and RedisSentinel are the binaries to run. "" means
	// "redis-server" / "redis-sentinel" from PATH; when redis-sentinel is
	// missing, redis-server is run with --sentinel (it is the same program).
	RedisServer, RedisSentinel string

	// RedisConfig and SentinelConfig are extra lines appended to every data
	// node's / sentinel's config file (e.g. ACL "user" lines).
	RedisConfig, SentinelConfig []string

	// Log, if non-nil, also receives every process's output, each line
	// prefixed with the node name. The output always goes to
	// Dir/<node>.log as well. Writes to Log are serialised.
	Log io.Writer

	// Logger receives lifecycle events (node started, killed, ...).
	// nil means no logging.
	Logger *zap.Logger
}

// withDefaults returns a copy of o with zero fields filled in and the
// binaries resolved, or every problem found.
func (o Options) withDefaults() (Options, error) {
	if o.MasterName == "" {
		o.MasterName = DefaultMasterName
	}
	switch {
	case o.Replicas == 0:
		o.Replicas = DefaultReplicas
	case o.Replicas < 0:
		o.Replicas = 0
	}
	if o.Sentinels == 0 {
		o.Sentinels = DefaultSentinels
	}
	if o.Quorum == 0 {
		o.Quorum = min(DefaultQuorum, o.Sentinels)
	}
	if o.DownAfter == 0 {
		o.DownAfter = DefaultDownAfter
	}
	if o.FailoverTimeout == 0 {
		o.FailoverTimeout = DefaultFailoverTimeout
	}
	if o.Host == "" {
		o.Host = DefaultHost
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}

	var errs []error
	if o.Sentinels < 1 {
		errs = append(errs, fmt.Errorf("sentinels must be at least 1, got %d", o.Sentinels))
	}
	if o.Quorum < 1 || o.Quorum > o.Sentinels {
		errs = append(errs, fmt.Errorf("quorum must be between 1 and %d sentinels, got %d", o.Sentinels, o.Quorum))
	}
	if o.DownAfter < DefaultDownAfter {
		errs = append(errs, fmt.Errorf("down-after %v is below %v: shorter values cause spurious double failovers", o.DownAfter, DefaultDownAfter))
	}
	if o.FailoverTimeout < time.Second {
		errs = append(errs, fmt.Errorf("failover timeout %v is below 1s", o.FailoverTimeout))
	}
	var err error
	if o.RedisServer, err = lookBinary(o.RedisServer, "redis-server"); err != nil {
		errs = append(errs, err)
	}
	if o.RedisSentinel == "" {
		if p, lerr := exec.LookPath("redis-sentinel"); lerr == nil {
			o.RedisSentinel = p
		}
		// else: started as "redis-server --sentinel", see sentinelCommand.
	} else if o.RedisSentinel, err = lookBinary(o.RedisSentinel, "redis-sentinel"); err != nil {
		errs = append(errs, err)
	}
	return o, errors.Join(errs...)
}

// lookBinary resolves name (or def when name is "") on PATH, with an error
// that tells a user on Debian/Ubuntu what to install.
func lookBinary(name, def string) (string, error) {
	if name == "" {
		name = def
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found (%w): install the Debian/Ubuntu packages redis-server and redis-sentinel (apt-get install -y redis-server redis-sentinel), or run `make deps`", name, err)
	}
	return p, nil
}
