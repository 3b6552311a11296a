package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Default timeouts of FetchOptions.
const (
	DefaultDialTimeout  = 2 * time.Second
	DefaultQueryTimeout = 2 * time.Second
)

// FetchOptions say how Fetch and FetchCommands reach the seed nodes.
type FetchOptions struct {
	// Username and Password authenticate (AUTH) on each node; "" means
	// none.
	Username, Password string
	// TLSConfig, if set, makes the connections TLS (and Fetch picks the
	// nodes' TLS ports from CLUSTER SHARDS), dialled by TLSDialer. nil
	// means plain TCP.
	TLSConfig *tls.Config
	// Dialer, if set, replaces TLSDialer or go-redis's plain dialer (for
	// a custom TLS handshake, say).
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds a dial; 0 means 2s.
	DialTimeout time.Duration
	// QueryTimeout bounds each reply; 0 means 2s. COMMAND's reply is
	// about 200 KiB.
	QueryTimeout time.Duration
}

// Source says where a fetched Map came from.
type Source struct {
	// Addr is the seed that answered.
	Addr string
	// Command is "CLUSTER SHARDS", or "CLUSTER SLOTS" when the seed did
	// not know CLUSTER SHARDS (Redis before 7).
	Command string
}

// Fetch asks every seed at once for the slot map and returns the first
// good answer: CLUSTER SHARDS, or CLUSTER SLOTS from a seed that answers
// CLUSTER SHARDS with an error (Redis before 7). The seeds still asking are
// cancelled and waited for. When none answers, the error joins every
// seed's. A seed's view may be stale just after a failover or a slot
// move: refresh on MOVED.
func Fetch(ctx context.Context, seeds []string, opts FetchOptions) (*Map, Source, error) {
	type answer struct {
		m   *Map
		src Source
	}
	a, err := first(ctx, seeds, opts, func(ctx context.Context, c *redis.Client, seed string) (answer, error) {
		popts := ParseOptions{From: seed, TLS: opts.TLSConfig != nil}
		reply, err := c.Do(ctx, "cluster", "shards").Result()
		if err == nil {
			m, err := ParseShards(reply, popts)
			return answer{m, Source{seed, "CLUSTER SHARDS"}}, err
		}
		var rerr redis.Error
		if !errors.As(err, &rerr) {
			return answer{}, fmt.Errorf("cluster shards: %w", err)
		}
		reply, err2 := c.Do(ctx, "cluster", "slots").Result()
		if err2 != nil {
			return answer{}, fmt.Errorf("cluster shards: %w; cluster slots: %w", err, err2)
		}
		m, err := ParseSlots(reply, popts)
		return answer{m, Source{seed, "CLUSTER SLOTS"}}, err
	})
	if err != nil {
		return nil, Source{}, fmt.Errorf("fetch slot map: %w", err)
	}
	return a.m, a.src, nil
}

// FetchCommands asks every seed at once for COMMAND and returns the Table
// of the first good answer, as Fetch does.
func FetchCommands(ctx context.Context, seeds []string, opts FetchOptions) (Table, error) {
	t, err := first(ctx, seeds, opts, func(ctx context.Context, c *redis.Client, _ string) (Table, error) {
		reply, err := c.Do(ctx, "command").Result()
		if err != nil {
			return nil, fmt.Errorf("command: %w", err)
		}
		return ParseCommands(reply)
	})
	if err != nil {
		return nil, fmt.Errorf("fetch command table: %w", err)
	}
	return t, nil
}

// first runs ask against every seed, each from its own goroutine with its
// own client, and returns the first success; the others are cancelled,
// and every goroutine has ended and every client is closed on return.
func first[T any](ctx context.Context, seeds []string, opts FetchOptions,
	ask func(context.Context, *redis.Client, string) (T, error)) (T, error) {
	var zero T
	if len(seeds) == 0 {
		return zero, errors.New("no seed nodes")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	results := make(chan result, len(seeds))
	var wg sync.WaitGroup
	for _, seed := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(seed, opts)
			defer c.Close()
			v, err := ask(ctx, c, seed)
			if err != nil {
				err = fmt.Errorf("%s: %w", seed, err)
			}
			results <- result{v, err}
		}()
	}
	defer wg.Wait()
	var errs []error
	for range seeds {
		r := <-results
		if r.err == nil {
			return r.v, nil
		}
		errs = append(errs, r.err)
	}
	return zero, errors.Join(errs...)
}

// newClient returns a one-connection go-redis client to addr: RESP2, no
// retries, no CLIENT SETINFO, bounded by the options' timeouts.
func newClient(addr string, o FetchOptions) *redis.Client {
	dial, query := o.DialTimeout, o.QueryTimeout
	if dial <= 0 {
		dial = DefaultDialTimeout
	}
	if query <= 0 {
		query = DefaultQueryTimeout
	}
	dialer := o.Dialer
	if dialer == nil {
		dialer = TLSDialer(o.TLSConfig, dial)
	}
	return redis.NewClient(&redis.Options{
		Addr:                     addr,
		Username:                 o.Username,
		Password:                 o.Password,
		TLSConfig:                o.TLSConfig,
		Dialer:                   dialer,
		Protocol:                 2,
		DialTimeout:              dial,
		DialerRetries:            1,
		ReadTimeout:              query,
		WriteTimeout:             query,
		ContextTimeoutEnabled:    true,
		MaxRetries:               -1,
		PoolSize:                 1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// TLSDialer returns a go-redis dialer that connects over TLS with a clone
// of cfg per connection, or nil (go-redis's plain dialer) when cfg is nil.
// The clone's ServerName is the dialled host when cfg names none, as
// go-redis's own TLS dial does; a VerifyConnection callback also gets that
// name in ConnectionState.ServerName, which crypto/tls leaves empty for an
// IP address. cmd/sentinel-proxy's reloadable configuration verifies the
// server in that callback and refuses a certificate without a name to
// check: without the name, every node dialled by IP is refused. timeout
// bounds the dial and the handshake together.
func TLSDialer(cfg *tls.Config, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if cfg == nil {
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: DialTLSConfig(cfg, addr)}
		return d.DialContext(ctx, network, addr)
	}
}

// DialTLSConfig returns base for a dial to addr: a clone whose ServerName
// is addr's host when base names none, as crypto/tls.Dial does, and whose
// VerifyConnection (if any) is given that name in
// ConnectionState.ServerName, which crypto/tls leaves empty for an IP
// address.
func DialTLSConfig(base *tls.Config, addr string) *tls.Config {
	c := base.Clone()
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		c.ServerName = host
	}
	if verify := c.VerifyConnection; verify != nil {
		name := c.ServerName
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			cs.ServerName = name
			return verify(cs)
		}
	}
	return c
}
