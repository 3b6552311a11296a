package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// plainClient is a go-redis client to one node: RESP2, no identity, no
// retries, short timeouts. Observers must never hang on a paused node.
func plainClient(addr string, db int, timeout time.Duration) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, DB: db, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1, DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		PoolSize: 2,
	})
}

// events records, per sentinel event name, the first time any sentinel
// published it about our master.
type events struct {
	master string
	mu     sync.Mutex
	first  map[string]time.Time
}

func (e *events) note(channel, payload string, at time.Time) {
	// Payloads name the instance: "master mymaster 127.0.0.1 6379 …" or
	// "slave 127.0.0.1:6381 127.0.0.1 6381 @ mymaster 127.0.0.1 6379";
	// +switch-master starts with the name itself.
	if !strings.Contains(" "+payload+" ", " "+e.master+" ") {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.first[channel]; !ok {
		e.first[channel] = at
	}
}

func (e *events) at(name string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.first[name]
	return t, ok
}

// subscribe records every sentinel's events until ctx ends.
func (e *events) subscribe(ctx context.Context, wg *sync.WaitGroup, sentinels []string) {
	for _, s := range sentinels {
		c := plainClient(s, 0, 2*time.Second)
		ps := c.PSubscribe(ctx, "*")
		wg.Add(1)
		go func() { // exits when ctx ends
			defer wg.Done()
			defer c.Close()
			defer ps.Close()
			ch := ps.Channel()
			for {
				select {
				case <-ctx.Done():
					return
				case m, ok := <-ch:
					if !ok {
						return
					}
					e.note(m.Channel, m.Payload, time.Now())
				}
			}
		}()
	}
}

// promotion is the first replica seen answering ROLE with "master".
type promotion struct {
	mu   sync.Mutex
	addr string
	at   time.Time
}

func (p *promotion) get() (string, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr, p.at
}

// pollRoles asks every replica for ROLE every 10 ms until one says master
// or ctx ends.
func (p *promotion) pollRoles(ctx context.Context, wg *sync.WaitGroup, replicas []string) {
	wg.Add(1)
	go func() { // exits at the promotion or when ctx ends
		defer wg.Done()
		var cs []*redis.Client
		for _, r := range replicas {
			cs = append(cs, plainClient(r, 0, 200*time.Millisecond))
		}
		defer func() {
			for _, c := range cs {
				c.Close()
			}
		}()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, c := range cs {
				v, err := c.Do(ctx, "role").Slice()
				if err == nil && len(v) > 0 && v[0] == "master" {
					p.mu.Lock()
					p.addr, p.at = replicas[i], time.Now()
					p.mu.Unlock()
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// oldSample is one look at the old master.
type oldSample struct {
	at   time.Time
	role string
	sets int64
}

// oldMaster samples the old master's role and SET counter every 50 ms.
type oldMaster struct {
	mu      sync.Mutex
	samples []oldSample
}

// baseline takes one sample now, synchronously, just before the event: a
// master about to be stopped cannot be sampled later, and the last
// periodic sample may be 50 ms (25 writes) old.
func (o *oldMaster) baseline(ctx context.Context, addr string) {
	c := plainClient(addr, 0, 200*time.Millisecond)
	defer c.Close()
	if s, err := readSample(ctx, c); err == nil {
		o.mu.Lock()
		o.samples = append(o.samples, s)
		o.mu.Unlock()
	}
}

func (o *oldMaster) sample(ctx context.Context, wg *sync.WaitGroup, addr string) {
	wg.Add(1)
	go func() { // exits when ctx ends
		defer wg.Done()
		c := plainClient(addr, 0, 200*time.Millisecond)
		defer c.Close()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if s, err := readSample(ctx, c); err == nil {
				o.mu.Lock()
				o.samples = append(o.samples, s)
				o.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func readSample(ctx context.Context, c *redis.Client) (oldSample, error) {
	info, err := c.Info(ctx, "replication", "commandstats").Result()
	if err != nil {
		return oldSample{}, err
	}
	s := oldSample{at: time.Now()}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "role:"); ok {
			s.role = v
		}
		if v, ok := strings.CutPrefix(line, "cmdstat_set:calls="); ok {
			n, _, _ := strings.Cut(v, ",")
			s.sets, _ = strconv.ParseInt(n, 10, 64)
		}
	}
	return s, nil
}

// setsAfter returns how many SETs the old master ran after t while it was
// still a master, and whether it was seen as a master after t at all.
func (o *oldMaster) setsAfter(t time.Time) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var before, last int64
	seenAfter := false
	for _, s := range o.samples {
		switch {
		case !s.at.After(t):
			before, last = s.sets, s.sets
		case s.role == "master":
			last, seenAfter = s.sets, true
		}
	}
	return last - before, seenAfter
}

// converted returns when the old master was first seen as a replica.
func (o *oldMaster) converted() (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.samples {
		if s.role == "slave" {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// agreedMaster asks every sentinel for the master's address and returns it
// when all that answer agree.
func agreedMaster(ctx context.Context, sentinels []string, name string) (string, bool) {
	addr := ""
	for _, s := range sentinels {
		c := plainClient(s, 0, time.Second)
		v, err := c.Do(ctx, "sentinel", "get-master-addr-by-name", name).StringSlice()
		c.Close()
		if err != nil || len(v) != 2 {
			continue
		}
		a := net.JoinHostPort(v[0], v[1])
		if addr != "" && a != addr {
			return "", false
		}
		addr = a
	}
	return addr, addr != ""
}
