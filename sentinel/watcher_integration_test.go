package sentinel

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// proc is a redis-server or redis-sentinel the test started.
type proc struct {
	name, addr, log string
	cmd             *exec.Cmd
}

// freePort finds a free loopback port by listening on 127.0.0.1:0.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProc writes conf to dir/name.conf and starts bin on it; Cleanup kills
// it by PID. On failure its log tail is printed.
func startProc(t *testing.T, bin, dir, name string, port int, conf string) *proc {
	t.Helper()
	p := &proc{name: name, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		log: filepath.Join(dir, name+".log")}
	base := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nprotected-mode no\ndaemonize no\n", port, dir, p.log)
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(base+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, path)
	p.cmd.Dir = dir
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("--- %s log (tail) ---\n%s", name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	})
	return p
}

// waitFor runs f every 20ms until it returns nil or d passes.
func waitFor(t *testing.T, d time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		<-tick.C
	}
}

// switchLog records sentinel events with their arrival time.
type switchLog struct {
	mu    sync.Mutex
	first map[string]time.Time
}

func (l *switchLog) note(ch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.first[ch]; !ok {
		l.first[ch] = time.Now()
	}
}

func (l *switchLog) at(ch string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.first[ch]
	return at, ok
}

// TestIntegrationSentinelFailover runs 1 master, 1 replica and 3 sentinels,
// forces SENTINEL FAILOVER and checks the watcher follows it: it holds
// during the failover, names the replica once promoted, and never names a
// node whose ROLE is not master.
func TestIntegrationSentinelFailover(t *testing.T) {
	serverBin, err1 := exec.LookPath("redis-server")
	sentinelBin, err2 := exec.LookPath("redis-sentinel")
	if err1 != nil || err2 != nil {
		t.Skip("redis-server / redis-sentinel not on PATH")
	}
	dir := t.TempDir()
	mp, rp := freePort(t), freePort(t)
	master := startProc(t, serverBin, dir, "master", mp, "save \"\"\nappendonly no\n")
	replica := startProc(t, serverBin, dir, "replica", rp,
		fmt.Sprintf("save \"\"\nappendonly no\nreplicaof 127.0.0.1 %d\n", mp))
	client := func(addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1, DisableIdentity: true})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	mc, rc := client(master.addr), client(replica.addr)
	waitFor(t, 10*time.Second, "replication link up", func(ctx context.Context) error {
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica not linked yet")
		}
		return nil
	})

	var sents []*proc
	for i := range 3 {
		conf := fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds mymaster 2000\n"+
			"sentinel failover-timeout mymaster 3000\n"+
			"sentinel parallel-syncs mymaster 1\n", mp)
		sents = append(sents, startProc(t, sentinelBin, dir, fmt.Sprintf("sentinel-%d", i), freePort(t), conf))
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sents[0].addr, DialTimeout: time.Second, MaxRetries: -1, DisableIdentity: true})
	t.Cleanup(func() { _ = sc.Close() })
	waitFor(t, 15*time.Second, "sentinel sees a healthy replica", func(ctx context.Context) error {
		reps, err := sc.Replicas(ctx, "mymaster").Result()
		if err != nil {
			return err
		}
		for _, r := range reps {
			if r["flags"] == "slave" && r["master-link-status"] == "ok" {
				return nil
			}
		}
		return fmt.Errorf("replicas: %v", reps)
	})

	// Independent observer of the sentinels' own events, for the timings.
	events := &switchLog{first: make(map[string]time.Time)}
	obsCtx, obsStop := context.WithCancel(context.Background())
	var obsWG sync.WaitGroup
	t.Cleanup(func() { obsStop(); obsWG.Wait() })
	for _, s := range sents {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.addr, DisableIdentity: true})
		ps := c.PSubscribe(obsCtx, "*")
		obsWG.Add(1)
		go func() {
			defer obsWG.Done()
			defer func() { _ = ps.Close(); _ = c.Close() }()
			ch := ps.Channel()
			for {
				select {
				case <-obsCtx.Done():
					return
				case m := <-ch:
					events.note(m.Channel)
				}
			}
		}()
	}

	opts := Options{MasterName: "mymaster", PollInterval: 500 * time.Millisecond,
		QueryTimeout: 500 * time.Millisecond, DialTimeout: 500 * time.Millisecond}
	for _, s := range sents {
		opts.Sentinels = append(opts.Sentinels, s.addr)
	}
	type pub struct {
		addr string
		at   time.Time
	}
	var pubMu sync.Mutex
	var pubs []pub
	r := startWatcher(t, opts, func(w *Watcher) {
		w.onPublish = func(a string) {
			pubMu.Lock()
			pubs = append(pubs, pub{a, time.Now()})
			pubMu.Unlock()
		}
	})
	waitMaster(t, r.w, master.addr, 10*time.Second)
	eventually(t, 10*time.Second, "subscribed to every sentinel", func() bool { return allSubscribed(r.w) })

	// Checker: whatever Master() names must answer ROLE master.
	roleClients := map[string]*redis.Client{master.addr: mc, replica.addr: rc}
	chkCtx, chkStop := context.WithCancel(context.Background())
	violations := make(chan string, 100)
	var chkWG sync.WaitGroup
	chkWG.Add(1)
	go func() {
		defer chkWG.Done()
		for chkCtx.Err() == nil {
			addr, changed := r.w.Master()
			if c := roleClients[addr]; c != nil {
				ctx, cancel := context.WithTimeout(chkCtx, time.Second)
				role, err := c.Do(ctx, "ROLE").Slice()
				cancel()
				if now, _ := r.w.Master(); err == nil && now == addr && role[0] != "master" {
					select {
					case violations <- fmt.Sprintf("Master() = %s whose ROLE is %v", addr, role[0]):
					default:
					}
				}
			}
			select {
			case <-changed:
			case <-time.After(10 * time.Millisecond):
			case <-chkCtx.Done():
			}
		}
	}()

	// Promotion: when the replica first answers ROLE master (every 10ms).
	var promotedAt time.Time
	chkWG.Add(1)
	go func() {
		defer chkWG.Done()
		for chkCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(chkCtx, time.Second)
			role, err := rc.Do(ctx, "ROLE").Slice()
			cancel()
			if err == nil && role[0] == "master" {
				promotedAt = time.Now() // read after chkWG.Wait
				return
			}
			select {
			case <-time.After(10 * time.Millisecond):
			case <-chkCtx.Done():
			}
		}
	}()

	// sent: when the accepted command was sent. +try-failover (and the
	// hold) may reach the watcher before the reply reaches the test.
	var sent, t0 time.Time
	waitFor(t, 15*time.Second, "SENTINEL FAILOVER accepted", func(ctx context.Context) error {
		sent = time.Now()
		err := sc.Failover(ctx, "mymaster").Err()
		t0 = time.Now()
		return err
	})
	d := waitMaster(t, r.w, replica.addr, 20*time.Second)
	switchAt := t0.Add(d)
	chkStop()
	chkWG.Wait()
	close(violations)
	for v := range violations {
		t.Error(v)
	}

	pubMu.Lock()
	seq := slices.Clone(pubs)
	pubMu.Unlock()
	var names []string
	var holdAt time.Time
	for _, p := range seq {
		names = append(names, fmt.Sprintf("%q", p.addr))
		if p.addr == "" && p.at.After(sent) && holdAt.IsZero() {
			holdAt = p.at
		}
	}
	if len(seq) < 2 || seq[0].addr != master.addr || seq[len(seq)-1].addr != replica.addr {
		t.Errorf("published sequence %v", names)
	}
	for i, p := range seq {
		if p.addr == master.addr && i > 0 && seq[i-1].addr == replica.addr {
			t.Errorf("went back to the old master: %v", names)
		}
	}
	st := r.w.Status()
	if st.FailoverInProgress || st.LastVerified.Epoch < 1 || st.Blind {
		t.Errorf("status after failover: %+v", st)
	}
	t.Logf("published: %s", strings.Join(names, " -> "))
	if holdAt.IsZero() {
		t.Errorf("Master() never held (\"\") during the failover: %v", names)
	} else {
		t.Logf("hold (Master()=\"\") %v after SENTINEL FAILOVER", holdAt.Sub(t0).Round(time.Millisecond))
	}
	// For comparison: the sentinels' own +switch-master comes later.
	eventually(t, 10*time.Second, "+switch-master from a sentinel", func() bool {
		_, ok := events.at("+switch-master")
		return ok
	})
	t.Logf("switched to the replica %v after SENTINEL FAILOVER (epoch %d)", switchAt.Sub(t0).Round(time.Millisecond), st.LastVerified.Epoch)
	if !promotedAt.IsZero() {
		t.Logf("switched %v after the replica answered ROLE master (polled every 10ms)", switchAt.Sub(promotedAt).Round(time.Millisecond))
	}
	for _, ch := range []string{"+try-failover", "+promoted-slave", "+switch-master"} {
		if at, ok := events.at(ch); ok {
			t.Logf("first %s seen %v after the command (watcher switch %+v relative to it)",
				ch, at.Sub(t0).Round(time.Millisecond), switchAt.Sub(at).Round(time.Millisecond))
		}
	}
}
