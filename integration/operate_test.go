package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// Operating the proxy from outside, as an operator does: the real binary,
// its admin endpoint, SIGHUP and SIGTERM (issue 6).

// configProxy is the binary started with --config only, so that a reload
// can change everything the file says.
type configProxy struct {
	*proxyProc
	file string
}

// startConfigProxy writes body to a config file and starts the binary with
// it and --admin; it waits for /readyz.
func startConfigProxy(t *testing.T, topo *topology.Topology, body string) *configProxy {
	t.Helper()
	file := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	p := launchProxy(t, admin, proxyBinary(t, topo), "--config", file, "--admin", admin)
	return &configProxy{proxyProc: p, file: file}
}

// reload rewrites the file, sends SIGHUP and waits until the reload counter
// for result moves.
func (p *configProxy) reload(t *testing.T, body, result string) {
	t.Helper()
	before := p.sample(t, `sentinel_proxy_config_reloads_total{result="`+result+`"}`)
	if err := os.WriteFile(p.file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "reload "+result, func() bool {
		return p.sample(t, `sentinel_proxy_config_reloads_total{result="`+result+`"}`) > max(before, 0)
	})
}

// sample returns the value of the exact series (name{labels}) on /metrics,
// or -1.
func (p *proxyProc) sample(t *testing.T, series string) float64 {
	t.Helper()
	_, body := httpGet(p.admin, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

func httpGet(addr, path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func yamlList(items []string) string { return `["` + strings.Join(items, `", "`) + `"]` }

// rawConn is one client connection that the test keeps across reloads.
type rawConn struct {
	nc net.Conn
	rd *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{nc: nc, rd: bufio.NewReader(nc)}
}

// do sends one inline command and returns the first line of its reply.
func (c *rawConn) do(t *testing.T, cmd string) string {
	t.Helper()
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write([]byte(cmd + "\r\n")); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	line, err := c.rd.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return strings.TrimRight(line, "\r\n")
}

func TestOperateReload(t *testing.T) {
	st := sharedStack(t, false)
	topo := st.Topo
	listen, other := freeAddr(t), freeAddr(t)
	base := fmt.Sprintf("sentinels: %s\nlog_level: info\nhold_timeout: 5s\n", yamlList(topo.SentinelAddrs()))
	group := fmt.Sprintf("groups:\n  - {master_name: %s, listen: %q}\n", topo.MasterName(), listen)
	p := startConfigProxy(t, topo, base+group)

	c := dialRaw(t, listen)
	if got := c.do(t, "SET reload:k 1"); got != "+OK" {
		t.Fatalf("SET = %q", got)
	}
	if got := c.do(t, "TYPE reload:k"); got != "+string" {
		t.Fatalf("TYPE = %q", got)
	}

	// 1. A command policy change and a new group, with the client connected.
	p.reload(t, base+"deny_commands: [type]\n"+group+
		fmt.Sprintf("  - {master_name: nosuchmaster, listen: %q}\n", other), "ok")
	if got := c.do(t, "TYPE reload:k"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("TYPE after the reload = %q, want NOPERM", got)
	}
	if got := c.do(t, "GET reload:k"); got != "$1" {
		t.Fatalf("GET on the same connection after the reload = %q", got)
	}
	c.rd.ReadString('\n') // the value
	if nc, err := net.DialTimeout("tcp", other, 2*time.Second); err != nil {
		t.Fatalf("the added group does not listen: %v", err)
	} else {
		nc.Close()
	}
	code, body := httpGet(p.admin, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "nosuchmaster") {
		t.Fatalf("/readyz with an unknown master group = %d %q, want 503 naming it", code, body)
	}

	// 2. An invalid file is rejected; everything keeps running as it was.
	p.reload(t, base+"hold_timout: 1s\n"+group, "error")
	// The log line reaches the test through a pipe: wait for it.
	waitFor(t, 5*time.Second, "the rejected reload's reason in the log", func() bool {
		return strings.Contains(p.out.String(), `unknown key \"hold_timout\"`) || strings.Contains(p.out.String(), `unknown key "hold_timout"`)
	})
	if got := c.do(t, "TYPE reload:k"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("TYPE after a rejected reload = %q, want the running policy (NOPERM)", got)
	}

	// 3. New sentinel list (two of the three) and the extra group removed:
	// a new watcher takes over, the client stays connected.
	two := topo.SentinelAddrs()[:2]
	p.reload(t, fmt.Sprintf("sentinels: %s\nlog_level: info\nhold_timeout: 5s\n", yamlList(two))+group, "ok")
	if !strings.Contains(p.out.String(), "new watcher in use") {
		t.Errorf("no new watcher after changing the sentinels:\n%s", p.out.String())
	}
	if got := c.do(t, "TYPE reload:k"); got != "+string" {
		t.Fatalf("TYPE after removing the deny list = %q", got)
	}
	waitFor(t, 10*time.Second, "removed group stops listening", func() bool {
		nc, err := net.DialTimeout("tcp", other, time.Second)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	var status struct {
		Groups []struct {
			Name   string `json:"name"`
			Master string `json:"master"`
		} `json:"groups"`
	}
	_, body = httpGet(p.admin, "/status")
	if err := json.Unmarshal([]byte(body), &status); err != nil || len(status.Groups) != 1 || status.Groups[0].Master != topo.Master().Addr {
		t.Fatalf("/status after the reloads = %s (%v), want one group on %s", body, err, topo.Master().Addr)
	}
	if got := c.do(t, "DEL reload:k"); got != ":1" {
		t.Fatalf("DEL = %q", got)
	}
}

func TestOperateMetricsAcrossFailover(t *testing.T) {
	st := startStack(t, stackOptions{})
	topo := st.Topo
	listen := freeAddr(t)
	p := startConfigProxy(t, topo, fmt.Sprintf("sentinels: %s\nhold_timeout: 15s\ngroups:\n  - {master_name: %s, listen: %q}\n",
		yamlList(topo.SentinelAddrs()), topo.MasterName(), listen))
	old := topo.Master().Addr
	series := func(name string) string { return name + `{group="` + topo.MasterName() + `"}` }
	if v := p.sample(t, series("sentinel_proxy_failovers_total")); v != 0 {
		t.Fatalf("failovers before = %v", v)
	}
	if v := p.sample(t, `sentinel_proxy_master_info{addr="`+old+`",group="`+topo.MasterName()+`"}`); v != 1 {
		t.Fatalf("master_info for %s = %v", old, v)
	}
	epoch0 := p.sample(t, series("sentinel_proxy_config_epoch"))

	ctx := testContext(t, 90*time.Second)
	c := redis.NewClient(&redis.Options{Addr: listen, MaxRetries: -1, ReadTimeout: 20 * time.Second})
	defer c.Close()
	if err := c.Set(ctx, "m:k", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Watch /readyz while the master dies.
	saw503 := make(chan string, 1)
	stopWatch := make(chan struct{})
	go func() {
		defer close(saw503)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if code, body := httpGet(p.admin, "/readyz"); code == http.StatusServiceUnavailable {
				saw503 <- body
				return
			}
		}
	}()
	if err := topo.Master().Kill(); err != nil {
		t.Fatal(err)
	}
	newMaster, err := topo.WaitForNewMaster(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	// The first command after the switch is held, then answered by the new master.
	if err := c.Set(ctx, "m:k", "2", 0).Err(); err != nil {
		t.Fatalf("SET after the failover: %v", err)
	}
	close(stopWatch)
	body, ok := <-saw503
	if !ok || !strings.Contains(body, topo.MasterName()) {
		t.Errorf("/readyz never said 503 while no master was verified (got %q)", body)
	}
	waitFor(t, 10*time.Second, "/readyz ready again", func() bool { code, _ := httpGet(p.admin, "/readyz"); return code == 200 })

	checks := []struct {
		series string
		ok     func(float64) bool
		want   string
	}{
		{series("sentinel_proxy_failovers_total"), func(v float64) bool { return v == 1 }, "1"},
		{series("sentinel_proxy_failover_duration_seconds_count"), func(v float64) bool { return v == 1 }, "1"},
		{series("sentinel_proxy_failover_duration_seconds_sum"), func(v float64) bool { return v > 0 && v < 30 }, "in (0, 30)"},
		{series("sentinel_proxy_config_epoch"), func(v float64) bool { return v > epoch0 }, fmt.Sprintf("> %v", epoch0)},
		{`sentinel_proxy_master_info{addr="` + newMaster + `",group="` + topo.MasterName() + `"}`, func(v float64) bool { return v == 1 }, "1"},
		{`sentinel_proxy_sentinel_events_total{event="+switch-master",group="` + topo.MasterName() + `"}`, func(v float64) bool { return v >= 1 }, ">= 1"},
		{`sentinel_proxy_commands_total{group="` + topo.MasterName() + `",outcome="ok"}`, func(v float64) bool { return v >= 2 }, ">= 2"},
		{series("sentinel_proxy_master_known"), func(v float64) bool { return v == 1 }, "1"},
		{series("sentinel_proxy_sentinels_known"), func(v float64) bool { return v == 3 }, "3"},
	}
	for _, ch := range checks {
		if v := p.sample(t, ch.series); !ch.ok(v) {
			t.Errorf("%s = %v, want %s", ch.series, v, ch.want)
		}
	}
	if v := p.sample(t, `sentinel_proxy_master_info{addr="`+old+`",group="`+topo.MasterName()+`"}`); v != -1 {
		t.Errorf("master_info still names the old master %s", old)
	}
	if !strings.Contains(p.out.String(), "first command answered by the new master") {
		t.Errorf("no failover timing line in the log:\n%s", p.out.String())
	}
}

func TestOperateGracefulShutdown(t *testing.T) {
	st := sharedStack(t, false)
	topo := st.Topo
	listen := freeAddr(t)
	p := startConfigProxy(t, topo, fmt.Sprintf("sentinels: %s\ndrain_timeout: 10s\ngroups:\n  - {master_name: %s, listen: %q}\n",
		yamlList(topo.SentinelAddrs()), topo.MasterName(), listen))

	idle := dialRaw(t, listen)
	if got := idle.do(t, "PING"); got != "+PONG" {
		t.Fatalf("PING = %q", got)
	}
	blocked := dialRaw(t, listen)
	blocked.nc.Write([]byte("BLPOP shutdown:q 2\r\n"))
	pipe := dialRaw(t, listen)
	const n = 2000
	var batch strings.Builder
	for i := range n {
		fmt.Fprintf(&batch, "SET shutdown:%d %d\r\n", i, i)
	}
	time.Sleep(200 * time.Millisecond) // BLPOP is blocked on the master now
	pipe.nc.Write([]byte(batch.String()))
	start := time.Now()
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// Every command of the batch is answered.
	pipe.nc.SetDeadline(time.Now().Add(15 * time.Second))
	for i := range n {
		line, err := pipe.rd.ReadString('\n')
		if err != nil || line != "+OK\r\n" {
			t.Fatalf("reply %d of the pipelined batch = %q, %v", i, line, err)
		}
	}
	// The blocked BLPOP finishes with its own timeout reply.
	blocked.nc.SetDeadline(time.Now().Add(15 * time.Second))
	if line, err := blocked.rd.ReadString('\n'); err != nil || line != "*-1\r\n" {
		t.Fatalf("BLPOP during the drain = %q, %v; want its timeout reply", line, err)
	}
	// The idle client is closed, not answered.
	idle.nc.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := idle.rd.ReadString('\n'); err == nil {
		t.Fatal("the idle client got data after SIGTERM")
	}
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit after the drain")
	}
	if p.waitErr != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", p.waitErr)
	}
	t.Logf("drained and exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if _, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		t.Error("still accepting after exit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	direct := st.Direct(topo.Master(), 0)
	if v, err := direct.Get(ctx, fmt.Sprintf("shutdown:%d", n-1)).Result(); err != nil || v != fmt.Sprint(n-1) {
		t.Fatalf("last SET of the batch on the master: %q, %v", v, err)
	}
	keys, _ := direct.Keys(ctx, "shutdown:*").Result()
	if len(keys) > 0 {
		direct.Del(ctx, keys...)
	}
}

// Out of file descriptors: accepting slows down (and says so) but the proxy
// keeps running and serves again once descriptors are free.
func TestOperateOutOfFileDescriptors(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	topo := sharedStack(t, false).Topo
	listen := freeAddr(t)
	admin := freeAddr(t)
	// prlimit execs the proxy: the PID is the proxy's.
	p := launchProxy(t, admin, prlimit, "--nofile=64:64", "--", proxyBinary(t, topo),
		"--listen", listen, "--master-name", topo.MasterName(), "--sentinels", strings.Join(topo.SentinelAddrs(), ","),
		"--admin", admin, "--drain-timeout", "0s")

	// Far more connections than descriptors.
	var conns []net.Conn
	for range 150 {
		c, err := net.DialTimeout("tcp", listen, 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	waitFor(t, 10*time.Second, "the proxy to report running out of descriptors", func() bool {
		return strings.Contains(p.out.String(), "accept failed, slowing down")
	})
	if p.dead() {
		t.Fatalf("the proxy exited when out of descriptors: %v", p.waitErr)
	}
	for _, c := range conns {
		c.Close()
	}
	// Served again once descriptors are free.
	waitFor(t, 20*time.Second, "a client served after the descriptors are back", func() bool {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte("PING\r\n"))
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && line == "+PONG\r\n"
	})
	t.Logf("%d connections opened against a 64-descriptor proxy; it slowed down, stayed up and served again", len(conns))
}
