package compose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// trickyPassword has what start.sh must quote for Redis's config parser (a
// backslash) and what a shell might expand. Spaces and quotes are refused
// (Sentinel 7.0 rewrites auth-pass unquoted; see start.sh).
const trickyPassword = `pa$s\wo!rd#1`

// TestComposeNodesStartFromTheirConfigs runs every redis/*.conf through
// redis/start.sh with the real redis-server 7.0, on loopback: the compose
// host names become 127.0.0.1 and the fixed ports free ones, the rest of
// each file is used as written. It checks that Redis accepts every
// directive, that start.sh's password quoting works (AUTH, masterauth,
// sentinel auth-pass), that the nodes form the topology (two replicas
// linked, three sentinels that know each other and monitor the master with
// the topology's settings), and that a restarted sentinel keeps the config
// it rewrote (start.sh copies the template only once).
func TestComposeNodesStartFromTheirConfigs(t *testing.T) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (make deps): configs checked as text only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tmp := t.TempDir()
	ports := make(map[string]int)
	for _, n := range append(append([]string{}, dataNodes...), sentinels...) {
		ports[n] = freePort(t)
	}
	templates := filepath.Join(tmp, "templates")
	if err := os.MkdirAll(templates, 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("redis/start.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(templates, "start.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	for n := range ports {
		b, err := os.ReadFile(filepath.Join("redis", n+".conf"))
		if err != nil {
			t.Fatal(err)
		}
		conf := loopbackConf(t, n, string(b), ports)
		if err := os.WriteFile(filepath.Join(templates, n+".conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Stands in for the redis image's entrypoint, which is given
	// "redis-server CONF [--sentinel]" and drops root before running it.
	bin := filepath.Join(tmp, "bin")
	entry := "#!/bin/sh\nshift\nexec " + server + ` "$@"` + "\n"
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "docker-entrypoint.sh"), []byte(entry), 0o755); err != nil {
		t.Fatal(err)
	}

	st := &nodes{t: t, tmp: tmp, templates: templates, path: bin + string(os.PathListSeparator) + os.Getenv("PATH")}
	t.Cleanup(st.stopAll)

	t.Run("start.sh refuses to start without REDIS_PASSWORD", func(t *testing.T) {
		cmd := exec.Command("sh", filepath.Join(templates, "start.sh"), "redis-1.conf")
		cmd.Env = []string{"PATH=" + st.path, "DATA_DIR=" + tmp}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "REDIS_PASSWORD") {
			t.Errorf("start.sh without REDIS_PASSWORD: err %v, output %q", err, out)
		}
	})

	t.Run("start.sh refuses a password with a space", func(t *testing.T) {
		cmd := exec.Command("sh", filepath.Join(templates, "start.sh"), "sentinel-1.conf")
		cmd.Env = []string{"PATH=" + st.path, "DATA_DIR=" + tmp, "REDIS_PASSWORD=two words"}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "spaces or quotes") {
			t.Errorf("start.sh with a space in REDIS_PASSWORD: err %v, output %q", err, out)
		}
	})

	for _, n := range dataNodes {
		st.start(n)
		c := redis.NewClient(&redis.Options{Addr: addr(ports[n]), Password: trickyPassword, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		waitFor(ctx, t, n+" answers PING with the password", func() error { return c.Ping(ctx).Err() })
		if n == masterService {
			anon := redis.NewClient(&redis.Options{Addr: addr(ports[n]), MaxRetries: -1})
			if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
				t.Errorf("%s without a password: %v, want NOAUTH (requirepass)", n, err)
			}
			anon.Close()
			continue
		}
		waitFor(ctx, t, n+" linked to the master (masterauth)", func() error {
			info, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "master_link_status:up") {
				return errors.New("master_link_status is not up")
			}
			return nil
		})
	}

	for _, n := range sentinels {
		st.start(n)
	}
	m := topology.DefaultMasterName
	for _, n := range sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr(ports[n]), MaxRetries: -1})
		t.Cleanup(func() { sc.Close() })
		var got map[string]string
		waitFor(ctx, t, n+" knows 2 replicas and 2 other sentinels", func() error {
			var err error
			if got, err = sc.Master(ctx, m).Result(); err != nil {
				return err
			}
			if got["num-slaves"] != "2" || got["num-other-sentinels"] != "2" || got["flags"] != "master" {
				return fmt.Errorf("SENTINEL MASTER %s: num-slaves %s, num-other-sentinels %s, flags %s",
					m, got["num-slaves"], got["num-other-sentinels"], got["flags"])
			}
			return nil
		})
		for k, want := range map[string]string{
			"ip":                      "127.0.0.1",
			"port":                    strconv.Itoa(ports[masterService]),
			"quorum":                  strconv.Itoa(topology.DefaultQuorum),
			"down-after-milliseconds": strconv.FormatInt(topology.DefaultDownAfter.Milliseconds(), 10),
			"failover-timeout":        strconv.FormatInt(topology.DefaultFailoverTimeout.Milliseconds(), 10),
			"parallel-syncs":          "1",
		} {
			if got[k] != want {
				t.Errorf("%s: SENTINEL MASTER %s %s = %q, want %q", n, m, k, got[k], want)
			}
		}
	}

	// A restarted container keeps its rewritten config: same sentinel ID.
	s1 := sentinels[0]
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr(ports[s1]), MaxRetries: -1})
	defer sc.Close()
	before, err := sentinelMyID(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(st.dataDir(s1), s1+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "sentinel myid "+before) {
		t.Errorf("%s did not rewrite its config in its data directory", s1)
	}
	st.stop(s1)
	st.start(s1)
	var after string
	waitFor(ctx, t, s1+" back after a restart", func() error {
		var err error
		after, err = sentinelMyID(ctx, sc)
		return err
	})
	if after != before {
		t.Errorf("%s: sentinel ID %s after a restart, was %s: start.sh replaced the rewritten config", s1, after, before)
	}

	// After a failover, Sentinel's REPLICAOF + CONFIG REWRITE lands in the
	// old master's copy of its config, so a restarted container comes back
	// as a replica rather than as a second master. Sentinel converts a live
	// old master about 10 s after the promotion: most of this test's time.
	waitFor(ctx, t, "SENTINEL FAILOVER accepted", func() error { return sc.Failover(ctx, m).Err() })
	var newMaster string
	waitFor(ctx, t, "a new master", func() error {
		a, err := sc.GetMasterAddrByName(ctx, m).Result()
		if err != nil {
			return err
		}
		if newMaster = net.JoinHostPort(a[0], a[1]); newMaster == addr(ports[masterService]) {
			return errors.New("still the old master")
		}
		return nil
	})
	_, newPort, _ := net.SplitHostPort(newMaster)
	confPath := filepath.Join(st.dataDir(masterService), masterService+".conf")
	waitFor(ctx, t, "the old master's config rewritten", func() error {
		b, err := os.ReadFile(confPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "replicaof 127.0.0.1 "+newPort) {
			return fmt.Errorf("%s has no replicaof 127.0.0.1 %s", confPath, newPort)
		}
		return nil
	})
	st.stop(masterService)
	st.start(masterService)
	old := redis.NewClient(&redis.Options{Addr: addr(ports[masterService]), Password: trickyPassword, MaxRetries: -1})
	defer old.Close()
	var role string
	waitFor(ctx, t, masterService+" back after a restart", func() error {
		info, err := old.Info(ctx, "replication").Result()
		role = field(info, "role")
		return err
	})
	if role != "slave" {
		t.Errorf("%s restarted as %q, want a replica (slave) of %s", masterService, role, newMaster)
	}
}

// field returns the value of key in an INFO reply.
func field(info, key string) string {
	for l := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+":"); ok {
			return v
		}
	}
	return ""
}

// serviceName matches the compose service names of the Redis nodes.
var serviceName = regexp.MustCompile(`\b(redis|sentinel)-[0-9]+\b`)

// sentinelMyID is SENTINEL MYID, which go-redis has no method for.
func sentinelMyID(ctx context.Context, sc *redis.SentinelClient) (string, error) {
	cmd := redis.NewStringCmd(ctx, "sentinel", "myid")
	if err := sc.Process(ctx, cmd); err != nil {
		return "", err
	}
	return cmd.Val(), nil
}

// loopbackConf rewrites a compose node's config for loopback: service names
// become 127.0.0.1, fixed ports become the nodes' free ports. It fails if a
// service name is left outside comments (that would be a DNS lookup).
func loopbackConf(t *testing.T, node, conf string, ports map[string]int) string {
	t.Helper()
	var out []string
	for l := range strings.SplitSeq(conf, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 0 || strings.HasPrefix(f[0], "#"):
		case f[0] == "bind":
			l = "bind 127.0.0.1"
		case f[0] == "port", f[0] == "replica-announce-port", len(f) > 1 && f[0] == "sentinel" && f[1] == "announce-port":
			l = strings.Join(append(f[:len(f)-1], strconv.Itoa(ports[node])), " ")
		default:
			for name, p := range ports {
				defPort := "6379"
				if strings.HasPrefix(name, "sentinel-") {
					defPort = "26379"
				}
				l = regexp.MustCompile(`\b`+name+` `+defPort+`\b`).ReplaceAllString(l, "127.0.0.1 "+strconv.Itoa(p))
				l = regexp.MustCompile(`\b`+name+`\b`).ReplaceAllString(l, "127.0.0.1")
			}
		}
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") && serviceName.MatchString(l) {
			t.Fatalf("%s: a service name is left in %q", node, l)
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// nodes runs redis/start.sh for the compose nodes, each with its own data
// directory (a container's /data), and kills them by PID.
type nodes struct {
	t                    *testing.T
	tmp, templates, path string
	mu                   sync.Mutex
	procs                map[string]*exec.Cmd
	logs                 map[string]*lockedBuffer
}

func (s *nodes) dataDir(name string) string { return filepath.Join(s.tmp, "data", name) }

func (s *nodes) start(name string) {
	s.t.Helper()
	dir := s.dataDir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		s.procs, s.logs = make(map[string]*exec.Cmd), make(map[string]*lockedBuffer)
	}
	if s.logs[name] == nil {
		s.logs[name] = &lockedBuffer{}
	}
	cmd := exec.Command("sh", filepath.Join(s.templates, "start.sh"), name+".conf")
	cmd.Dir = dir // the image's WORKDIR is /data
	cmd.Env = []string{"PATH=" + s.path, "DATA_DIR=" + dir, "REDIS_PASSWORD=" + trickyPassword}
	cmd.Stdout, cmd.Stderr = s.logs[name], s.logs[name]
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", name, err)
	}
	s.procs[name] = cmd
	s.t.Logf("%s: pid %d", name, cmd.Process.Pid)
}

func (s *nodes) stop(name string) {
	s.mu.Lock()
	cmd := s.procs[name]
	delete(s.procs, name)
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

func (s *nodes) stopAll() {
	s.mu.Lock()
	var names []string
	for n := range s.procs {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		s.stop(n)
	}
	if s.t.Failed() {
		for n, l := range s.logs {
			s.t.Logf("--- %s output:\n%s", n, l.String())
		}
	}
}

// waitFor polls check until it succeeds or ctx ends (a test failure).
func waitFor(ctx context.Context, t *testing.T, what string, check func() error) {
	t.Helper()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
