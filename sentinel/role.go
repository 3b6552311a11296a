package sentinel

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// ROLE checks run in their own goroutines so that a hung or unreachable
// node (a frozen old master costs up to DialTimeout+QueryTimeout) never
// delays the main loop's reaction to the promotion. At most one check per
// address runs at a time; its result comes back on w.roles and makes the
// main loop decide again.

// maxVerifyRetries bounds the fast re-query pace per unverified candidate.
const maxVerifyRetries = 40

// verdict is the last ROLE check of one address.
type verdict struct {
	epoch     int64     // the candidate's config epoch when checked
	started   time.Time // when the check began
	at        time.Time // when it ended
	ok        bool      // ROLE said master
	firstFail time.Time // first of the current run of failures for this epoch
}

// roleResult is a finished ROLE check.
type roleResult struct {
	addr    string
	epoch   int64
	started time.Time
	role    string
	err     error
}

// verified reports the ROLE verdict for (addr, epoch) from a check that
// began at or after notBefore and is recent (retryEvery). done is false when
// there is none yet: a check is then running, and its result re-runs decide.
func (w *Watcher) verified(ctx context.Context, addr string, epoch int64, notBefore time.Time) (ok, done bool) {
	v, have := w.st.verdicts[addr]
	if have && v.epoch == epoch && !v.started.Before(notBefore) && time.Since(v.at) < w.retryEvery {
		return v.ok, true
	}
	w.startCheck(ctx, addr, epoch)
	return false, false
}

// startCheck starts a ROLE check of addr unless one is running.
func (w *Watcher) startCheck(ctx context.Context, addr string, epoch int64) {
	st := &w.st
	if _, busy := st.checking[addr]; busy {
		return
	}
	started := time.Now()
	st.checking[addr] = started
	w.tasks.Add(1)
	go func() {
		defer w.tasks.Done()
		role, err := w.checkRole(ctx, addr)
		select {
		case w.roles <- roleResult{addr: addr, epoch: epoch, started: started, role: role, err: err}:
		case <-ctx.Done():
		}
	}()
}

// onRole records a finished check and decides again.
func (w *Watcher) onRole(ctx context.Context, res roleResult) {
	st := &w.st
	delete(st.checking, res.addr)
	now := time.Now()
	ok := res.err == nil && res.role == "master"
	v := verdict{epoch: res.epoch, started: res.started, at: now, ok: ok}
	if ok {
		delete(st.roleErr, res.addr)
		if res.addr == st.cur.Addr && res.epoch == st.cur.Epoch && st.valid {
			st.cur.VerifiedAt = now
		}
	} else {
		v.firstFail = now
		if prev := st.verdicts[res.addr]; !prev.ok && prev.epoch == res.epoch && !prev.firstFail.IsZero() {
			v.firstFail = prev.firstFail
		}
		w.roleProblem(res)
		if res.addr == st.cur.Addr && st.valid {
			st.valid = false // whatever asked, the current master is not master now
			w.log.Info("current master failed its ROLE check; holding", zap.String("master", res.addr))
		}
	}
	if len(st.verdicts) > 64 {
		clear(st.verdicts)
	}
	st.verdicts[res.addr] = v
	if t, again := st.recheck[res.addr]; again {
		delete(st.recheck, res.addr)
		if !res.started.After(t) {
			w.startCheck(ctx, res.addr, res.epoch)
		}
	}
	w.decide(ctx)
	w.apply()
}

// roleProblem logs a failed check: Warn the first time a given problem is
// seen for an address, Debug while it repeats.
func (w *Watcher) roleProblem(res roleResult) {
	st := &w.st
	var problem string
	switch {
	case res.err != nil && isAuthError(res.err):
		problem = fmt.Sprintf("cannot verify ROLE on %s: %v (the data nodes want a password: set --backend-password, and --backend-username for an ACL user)", res.addr, res.err)
	case res.err != nil:
		problem = fmt.Sprintf("cannot verify ROLE on %s: %v", res.addr, res.err)
	default:
		problem = fmt.Sprintf("ROLE on %s is %q, not master", res.addr, res.role)
	}
	st.errMsg = problem
	if st.roleErr[res.addr] == problem {
		w.log.Debug(problem, zap.String("addr", res.addr))
		return
	}
	if len(st.roleErr) > 64 {
		clear(st.roleErr)
	}
	st.roleErr[res.addr] = problem
	w.log.Warn(problem, zap.String("addr", res.addr), zap.Int64("epoch", res.epoch))
}

// scheduleRetry re-queries soon while the candidate addr is unverified, for
// at most maxVerifyRetries rounds; the poll interval goes on after that.
func (w *Watcher) scheduleRetry(addr string) {
	st := &w.st
	v := st.verdicts[addr]
	if st.retry == nil || v.ok || time.Since(v.firstFail) > maxVerifyRetries*w.retryEvery {
		return
	}
	st.retry.Reset(w.retryEvery)
}

// checkRole asks addr for its ROLE over a short-lived connection and returns
// the role ("master", "slave", "sentinel"). A fresh connection each time:
// checks are rare (only when the target or its epoch changes, on Suspect,
// and while unverified), and a cached one would be exactly the connection
// Sentinel's CLIENT KILL closes during a failover.
func (w *Watcher) checkRole(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.DialTimeout+w.opts.QueryTimeout)
	defer cancel()
	c := w.newNodeClient(addr)
	// Closing on cancel unblocks a read from a frozen node at shutdown.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		if stop() {
			_ = c.Close()
		}
	}()
	return w.askRole(ctx, c)
}

// newNodeClient opens (lazily: no I/O) a go-redis client for a data node,
// with the data credentials and no retries.
func (w *Watcher) newNodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                     addr,
		Username:                 w.opts.DataUsername,
		Password:                 w.opts.DataPassword,
		DialTimeout:              w.opts.DialTimeout,
		TLSConfig:                w.opts.DataTLS,
		Dialer:                   tlsDialer(w.opts.DataTLS, w.opts.DialTimeout),
		DialerRetries:            1,
		ReadTimeout:              w.opts.QueryTimeout,
		WriteTimeout:             w.opts.QueryTimeout,
		ContextTimeoutEnabled:    true,
		MaxRetries:               -1,
		PoolSize:                 2, // one dial failure must not start go-redis's background redialer
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// askRole sends ROLE on c, bounded by DialTimeout+QueryTimeout, and returns
// the role.
func (w *Watcher) askRole(ctx context.Context, c *redis.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.DialTimeout+w.opts.QueryTimeout)
	defer cancel()
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

// isAuthError reports a refusal of the proxy's credentials on a data node.
func isAuthError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS") ||
		strings.Contains(msg, "NOAUTH ") || strings.Contains(msg, "WRONGPASS ")
}
