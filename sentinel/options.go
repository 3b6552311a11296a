package sentinel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Options configures a Watcher. Every optional field documents what its zero
// value means.
type Options struct {
	// MasterName is the name the sentinels monitor the master under. Required;
	// it may not contain whitespace (sentinel events are space-separated).
	MasterName string

	// Sentinels are the configured sentinel addresses, host:port. Hostnames
	// and bracketed IPv6 ("[::1]:26379") are accepted. At least one is
	// required; more are discovered with SENTINEL SENTINELS.
	Sentinels []string

	// Username is the sentinel ACL user; "" means the default user.
	Username string

	// Password is the sentinel password (requirepass or the ACL user's); ""
	// means no AUTH.
	Password string

	// DataUsername and DataPassword authenticate the ROLE check on data nodes;
	// "" means none.
	DataUsername string
	DataPassword string

	// PollInterval is how often every sentinel is asked even without events.
	// Zero means 1s.
	PollInterval time.Duration

	// QueryTimeout bounds one command (a sentinel query, ROLE). Zero means
	// 500ms.
	QueryTimeout time.Duration

	// DialTimeout bounds one connection attempt. Zero means 1s.
	DialTimeout time.Duration

	// TLS, when set, connects to the sentinels over TLS. A copy is made
	// per connection with ServerName set to the sentinel's host when TLS
	// names none. nil means plain TCP.
	TLS *tls.Config

	// DataTLS, when set, connects to the data nodes (ROLE checks) over
	// TLS, as TLS does for the sentinels. nil means plain TCP.
	DataTLS *tls.Config

	// StopWritesWhenBlind chooses what Master reports while no sentinel
	// answers: false (the default) keeps the last verified master, true
	// reports "" so the proxy stops sending writes.
	StopWritesWhenBlind bool
}

const (
	defaultPollInterval = time.Second
	defaultQueryTimeout = 500 * time.Millisecond
	defaultDialTimeout  = time.Second

	// maxSentinels bounds the known set (configured + discovered): every
	// known sentinel costs a poller, a subscriber and two connections.
	maxSentinels = 32
)

// withDefaults returns o with zero durations replaced by their defaults and
// sentinel addresses normalised (net.JoinHostPort form, duplicates dropped).
// It assumes o.validate() passed.
func (o Options) withDefaults() Options {
	if o.PollInterval == 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = defaultQueryTimeout
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = defaultDialTimeout
	}
	seen := make(map[string]bool, len(o.Sentinels))
	addrs := make([]string, 0, len(o.Sentinels))
	for _, s := range o.Sentinels {
		a, _ := normalizeAddr(s)
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	o.Sentinels = addrs
	return o
}

// validate reports every problem with o at once.
func (o Options) validate() error {
	var errs []error
	if o.MasterName == "" {
		errs = append(errs, errors.New("master name is empty"))
	} else if strings.ContainsAny(o.MasterName, " \t\r\n") {
		errs = append(errs, fmt.Errorf("master name %q contains whitespace", o.MasterName))
	}
	if len(o.Sentinels) == 0 {
		errs = append(errs, errors.New("no sentinel addresses"))
	}
	if len(o.Sentinels) > maxSentinels {
		errs = append(errs, fmt.Errorf("%d sentinel addresses, at most %d", len(o.Sentinels), maxSentinels))
	}
	for _, s := range o.Sentinels {
		if _, err := normalizeAddr(s); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"poll interval", o.PollInterval}, {"query timeout", o.QueryTimeout}, {"dial timeout", o.DialTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// normalizeAddr checks a host:port and returns it in net.JoinHostPort form,
// so "[::1]:26379" and hostnames compare equal however they were written.
func normalizeAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("sentinel address %q: %w", s, err)
	}
	if host == "" {
		return "", fmt.Errorf("sentinel address %q: empty host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("sentinel address %q: bad port", s)
	}
	return net.JoinHostPort(host, port), nil
}

// nodeAddr builds the address of a node a sentinel reported as ip and port.
// Sentinel reports an unspecified ip (0.0.0.0, ::) or "" when it has no
// better address: for a monitored node that means "the host this sentinel
// reaches it on", i.e. the sentinel's own host (a sentinel connecting to
// 0.0.0.0 reaches its own machine), so selfHost is substituted. ok is false
// when the port is not a port.
func nodeAddr(ip, port, selfHost string) (addr string, ok bool) {
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", false
	}
	if unspecified(ip) {
		ip = selfHost
	}
	return net.JoinHostPort(ip, port), true
}

// unspecified reports whether ip is Sentinel's "no usable address"
// placeholder.
func unspecified(ip string) bool {
	if ip == "" {
		return true
	}
	p := net.ParseIP(ip)
	return p != nil && p.IsUnspecified()
}

// hostOf returns the host part of a normalised host:port.
func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// tlsDialer returns a go-redis dialer that connects over TLS with cfg, or
// nil (go-redis's plain dialer) when cfg is nil. Unlike go-redis's own TLS
// dialer, the handshake is bounded by ctx as well as by timeout. The
// configuration is cloned per connection with ServerName defaulting to the
// dialled host; a VerifyConnection callback gets that name in
// ConnectionState.ServerName even for an IP address (which crypto/tls leaves
// empty there), so a callback that verifies the server itself checks the
// name the default verification would.
func tlsDialer(cfg *tls.Config, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if cfg == nil {
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := cfg.Clone()
		if c.ServerName == "" {
			c.ServerName = hostOf(addr)
		}
		if verify := c.VerifyConnection; verify != nil {
			name := c.ServerName
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				cs.ServerName = name
				return verify(cs)
			}
		}
		if timeout > 0 {
			raw.SetDeadline(time.Now().Add(timeout))
		}
		tc := tls.Client(raw, c)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		raw.SetDeadline(time.Time{})
		return tc, nil
	}
}
