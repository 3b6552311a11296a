package sentinel

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// checkRole asks addr for its ROLE over a short-lived connection and returns
// the role ("master", "slave", "sentinel"). A fresh connection each time:
// checks are rare (only when the target or its epoch changes, on Suspect,
// and while unverified), and a cached one would be exactly the connection
// Sentinel's CLIENT KILL closes during a failover.
func (w *Watcher) checkRole(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.DialTimeout+w.opts.QueryTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr:                     addr,
		Username:                 w.opts.DataUsername,
		Password:                 w.opts.DataPassword,
		DialTimeout:              w.opts.DialTimeout,
		DialerRetries:            1,
		ReadTimeout:              w.opts.QueryTimeout,
		WriteTimeout:             w.opts.QueryTimeout,
		ContextTimeoutEnabled:    true,
		MaxRetries:               -1,
		PoolSize:                 2, // one dial failure must not start go-redis's background redialer
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer func() { _ = c.Close() }()
	vals, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", err
	}
	if len(vals) == 0 {
		return "", fmt.Errorf("empty ROLE reply")
	}
	role, ok := vals[0].(string)
	if !ok {
		return "", fmt.Errorf("ROLE reply starts with %T", vals[0])
	}
	return role, nil
}
