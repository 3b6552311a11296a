package sentinel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// eventKind says what a sentinel event means for the watched master. Events
// are only triggers to re-query; the kind decides whether to stop routing
// (start) or to look for the end of a hold (abort) at once.
type eventKind int

const (
	evOther   eventKind = iota
	evStart             // a failover of the named master has started
	evAbort             // a failover start was withdrawn
	evPromote           // a replica was promoted or a sentinel switched
)

// event is a parsed sentinel Pub/Sub message.
type event struct {
	Event
	// ours is true when the payload names MasterName, or names no master at
	// all (+new-epoch, +vote-for-leader, +tilt): those may concern us.
	ours bool
	kind eventKind
	// master is the address of the master the event is about ("" when the
	// payload does not say, e.g. +switch-master whose old address is the
	// emitter's own view and must not be used).
	master string
	// newAddr is +switch-master's new address, logged as a hint only.
	newAddr string
	// node is the address of the instance the payload's details describe
	// (for +selected-slave and +failover-state-*: the replica chosen for
	// promotion); "" when the payload has no instance details.
	node string
}

// parseEvent parses one message. selfHost is the emitting sentinel's host,
// substituted for Sentinel's 0.0.0.0 placeholder (see nodeAddr).
func parseEvent(channel, payload, name, selfHost string) event {
	ev := event{Event: Event{Channel: channel, Payload: payload}}
	f := strings.Fields(payload)
	switch {
	case channel == "+switch-master":
		// <name> <old-ip> <old-port> <new-ip> <new-port>: only name and new.
		if len(f) >= 5 {
			ev.ours = f[0] == name
			ev.newAddr, _ = nodeAddr(f[3], f[4], selfHost)
		}
		ev.kind = evPromote
		return ev
	case len(f) >= 4 && f[0] == "master":
		// master <name> <ip> <port> ...
		ev.ours = f[1] == name
		ev.master, _ = nodeAddr(f[2], f[3], selfHost)
		ev.node = ev.master
	case len(f) >= 8 && (f[0] == "slave" || f[0] == "sentinel") && f[4] == "@":
		// slave|sentinel <id> <ip> <port> @ <name> <master-ip> <master-port> ...
		ev.ours = f[5] == name
		ev.master, _ = nodeAddr(f[6], f[7], selfHost)
		ev.node, _ = nodeAddr(f[2], f[3], selfHost)
	case len(f) >= 1 && (f[0] == "master" || f[0] == "slave" || f[0] == "sentinel"):
		// Instance details we cannot read: about some master, maybe ours.
		ev.ours = true
	default:
		// No master name in the payload (+new-epoch, +vote-for-leader,
		// +tilt, -tilt, script events): a trigger for everyone.
		ev.ours = true
		return ev
	}
	ev.kind = classify(channel, f[0])
	return ev
}

// classify maps a channel to its meaning; typ is the instance type in the
// payload (+odown is only ever about a master, but be strict).
func classify(channel, typ string) eventKind {
	switch {
	case channel == "+odown" && typ == "master",
		channel == "+try-failover",
		channel == "+elected-leader",
		channel == "+selected-slave",
		strings.HasPrefix(channel, "+failover-state-") && channel != "+failover-state-reconf-slaves":
		return evStart
	case strings.HasPrefix(channel, "-failover-abort-"), channel == "-odown":
		return evAbort
	case channel == "+promoted-slave", channel == "+failover-state-reconf-slaves",
		channel == "+config-update-from", channel == "+failover-end":
		return evPromote
	}
	return evOther
}

// inboxKind tags what a subscriber reports to the main loop.
type inboxKind int

const (
	inSubscribed inboxKind = iota // (re)subscribed: events may have been missed
	inDown                        // subscription broken
	inEvent                       // a message
)

// inboxMsg is a subscriber's report to the main loop.
type inboxMsg struct {
	sentinel string
	kind     inboxKind
	err      error
	ev       event
}

// Subscription tuning: go-redis's own health check waits 3s idle; a missing
// pong after pingWait means a dead link (no EOF from a partition).
const (
	pingIdle   = 3 * time.Second
	backoffMin = 100 * time.Millisecond
	backoffMax = 3200 * time.Millisecond
)

// subscribe keeps one PSUBSCRIBE * open on s until ctx ends: liveness by
// PING after idle, reconnect with jittered exponential backoff, and a report
// to the main loop after every (re)subscribe so it re-queries. A wake from
// the main loop (a query of s succeeded: it is reachable again) ends the
// backoff at once and resets it, unless the last attempt was refused by s
// itself (a Redis error: s was reachable then, so a successful query says
// nothing new and retrying faster would not help).
// Exit: ctx done.
func (w *Watcher) subscribe(ctx context.Context, s *sentinelConn) {
	backoff := w.backoffMin
	for ctx.Err() == nil {
		drainWake(s) // this attempt answers any wake sent before it
		up, err := w.subscribeOnce(ctx, s)
		if ctx.Err() != nil {
			return
		}
		w.report(ctx, inboxMsg{sentinel: s.addr, kind: inDown, err: err})
		if up {
			backoff = w.backoffMin
		}
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, w.backoffMax)
		var wake <-chan struct{}
		var rerr redis.Error
		if !errors.As(err, &rerr) {
			wake = s.wake
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-wake:
			t.Stop()
			backoff = w.backoffMin
		}
	}
}

// drainWake empties s.wake without blocking.
func drainWake(s *sentinelConn) {
	select {
	case <-s.wake:
	default:
	}
}

// subscribeOnce runs one subscription until it breaks; up reports whether it
// was ever confirmed.
func (w *Watcher) subscribeOnce(ctx context.Context, s *sentinelConn) (up bool, err error) {
	ps := s.client.PSubscribe(ctx) // no pattern yet: no I/O
	// Closing the PubSub is what unblocks a pending receive on shutdown.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	if err := ps.PSubscribe(ctx, "*"); err != nil {
		return false, fmt.Errorf("psubscribe: %w", err)
	}
	pingSent := false
	for {
		wait := w.pingIdle
		if pingSent {
			wait = w.opts.QueryTimeout
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return up, nil
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return up, fmt.Errorf("receive: %w", err)
			}
			if pingSent {
				return up, errors.New("no pong: subscription link dead")
			}
			if err := ps.Ping(ctx); err != nil {
				return up, fmt.Errorf("ping: %w", err)
			}
			pingSent = true
			continue
		}
		pingSent = false // any traffic proves the link
		switch m := msg.(type) {
		case *redis.Subscription:
			up = true
			drainWake(s) // sent before the main loop knew: not a reason to skip a backoff later
			w.report(ctx, inboxMsg{sentinel: s.addr, kind: inSubscribed})
		case *redis.Message:
			ev := parseEvent(m.Channel, m.Payload, w.opts.MasterName, s.host)
			ev.Sentinel = s.addr
			ev.At = time.Now()
			w.report(ctx, inboxMsg{sentinel: s.addr, kind: inEvent, ev: ev})
		}
	}
}

// report hands a message to the main loop; it waits (the main loop never
// blocks on subscribers, so this is bounded) unless ctx ends.
func (w *Watcher) report(ctx context.Context, m inboxMsg) {
	select {
	case w.inbox <- m:
	case <-ctx.Done():
	}
}
