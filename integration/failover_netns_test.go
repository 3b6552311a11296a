package integration

// Split brain: the master is cut off from the sentinels while the proxy
// (and the replicas) can still reach it. The sentinels promote a replica;
// the old master goes on answering as a master. The proxy must follow the
// sentinels, not the node that still says "master".
//
// The topology package binds every node to one host, so this test starts
// its own six processes:
//
//	root namespace                         namespace spx…
//	  proxy (this process)  ── 10.250.N.1 ══ veth ══ 10.250.N.2 ── master
//	  replicas (127.0.0.1)  ── 10.250.N.1 ─┘
//	  sentinels (127.0.0.1, and 10.250.N.3 as source and announce address)
//
// The sentinels bind 10.250.N.3 first and use it as bind-source-addr, so
// every packet they send the master comes from .3. Cutting them off is one
// blackhole route for 10.250.N.3/32 inside the master's namespace: the
// master's answers to the sentinels are dropped, while the proxy (.1) and
// the replicas (.1) keep talking to it. No firewall tool is needed (this
// machine has neither nft nor iptables). Every address is in 10.0.0.0/8,
// on interfaces the test creates and deletes; nothing leaves the machine.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// netns is a network namespace joined to the root one by a veth pair.
type netns struct {
	name       string
	hostIf     string
	hostIP     string // .1 on hostIf: the proxy's and the replicas' source
	sentinelIP string // .3 on hostIf: the sentinels' source
	nsIP       string // .2 inside the namespace: the master
}

// ipCmd runs ip(8) with args.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetns creates the namespace and the veth pair on a 10.250.N.0/24
// subnet no interface or route of this machine uses, and deletes both
// when t ends (after the processes inside are killed: register it first).
func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("split-brain test needs root for ip netns (not root here)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("split-brain test needs ip(8) from iproute2: " + err.Error())
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:3])
	n := &netns{name: "spx" + id, hostIf: "spx" + id + "h"}
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	routes, _ := exec.Command("ip", "-4", "route").Output()
	used := string(addrs) + string(routes)
	for i := range 250 {
		third := (int(rnd[3]) + i) % 250
		prefix := "10.250." + strconv.Itoa(third) + "."
		if !strings.Contains(used, prefix) {
			n.hostIP, n.nsIP, n.sentinelIP = prefix+"1", prefix+"2", prefix+"3"
			break
		}
	}
	if n.hostIP == "" {
		t.Fatal("no free 10.250.N.0/24 subnet")
	}
	nsIf := "spx" + id + "n"
	if err := ipCmd("netns", "add", n.name); err != nil {
		if strings.Contains(err.Error(), "not permitted") || strings.Contains(err.Error(), "ermission denied") {
			// An unprivileged container: nothing to clean up.
			t.Skip("split-brain test cannot create a network namespace here: " + err.Error())
		}
		t.Fatalf("set up the namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ipCmd("netns", "del", n.name); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
		_ = ipCmd("link", "del", n.hostIf) // gone with its peer already
	})
	for _, args := range [][]string{
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", n.name},
		{"addr", "add", n.hostIP + "/24", "dev", n.hostIf},
		{"addr", "add", n.sentinelIP + "/24", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "addr", "add", n.nsIP + "/24", "dev", nsIf},
		{"-n", n.name, "link", "set", nsIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatalf("set up the namespace: %v", err)
		}
	}
	return n
}

// isolate drops, inside the namespace, everything sent to the sentinels.
func (n *netns) isolate() error {
	return ipCmd("-n", n.name, "route", "add", "blackhole", n.sentinelIP+"/32")
}

// nsProc is one redis-server or redis-sentinel process of the test.
type nsProc struct {
	name, addr string
	pid        int
	done       chan struct{}
}

// startProc writes conf and runs argv plus the config path, in its own
// process group, killed (SIGKILL to the group, by PID) when t ends. It
// waits until the process answers PING on addr.
func startProc(t *testing.T, dir, name, addr string, argv []string, conf []string) *nsProc {
	t.Helper()
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], append(argv[1:], path)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &nsProc{name: name, addr: addr, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }() // exits with the process
	t.Cleanup(func() {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) still running 10 s after SIGKILL", name, p.pid)
		}
	})
	c := directTo(addr, 0)
	defer c.Close()
	waitFor(t, 10*time.Second, name+" to answer PING on "+addr, func() bool {
		select {
		case <-p.done:
			return true
		default:
		}
		return c.Ping(context.Background()).Err() == nil
	})
	select {
	case <-p.done:
		b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
		t.Fatalf("%s exited at start: %s", name, b)
	default:
	}
	return p
}

// freeLoopbackPort returns a port that was free on 127.0.0.1 a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sentinelQuery runs one SENTINEL subcommand on a sentinel.
func sentinelQuery(ctx context.Context, addr string, args ...any) (any, error) {
	c := directTo(addr, 0)
	defer c.Close()
	return c.Do(ctx, append([]any{"sentinel"}, args...)...).Result()
}

// agreedMaster returns the address every sentinel names, or an error.
func agreedMaster(ctx context.Context, sentinels []string) (string, error) {
	var addr string
	for _, s := range sentinels {
		v, err := sentinelQuery(ctx, s, "get-master-addr-by-name", "mymaster")
		if err != nil {
			return "", err
		}
		hp, ok := v.([]any)
		if !ok || len(hp) != 2 {
			return "", fmt.Errorf("%s: get-master-addr-by-name = %v", s, v)
		}
		a := net.JoinHostPort(fmt.Sprint(hp[0]), fmt.Sprint(hp[1]))
		if addr != "" && a != addr {
			return "", fmt.Errorf("sentinels disagree: %s and %s", addr, a)
		}
		addr = a
	}
	return addr, nil
}

func TestFailoverSplitBrain(t *testing.T) {
	n := newNetns(t)
	dir := t.TempDir()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	sentinelBin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"protected-mode no", `save ""`, "appendonly no", "repl-diskless-sync yes",
		"repl-diskless-sync-delay 0", "dir " + dir}

	mport := strconv.Itoa(freeLoopbackPort(t))
	master := startProc(t, dir, "master", net.JoinHostPort(n.nsIP, mport),
		[]string{"ip", "netns", "exec", n.name, server},
		append([]string{"port " + mport, "bind " + n.nsIP}, common...))
	for i := range 2 {
		port := strconv.Itoa(freeLoopbackPort(t))
		startProc(t, dir, "replica-"+strconv.Itoa(i+1), "127.0.0.1:"+port, []string{server},
			append([]string{"port " + port, "bind 127.0.0.1", "replicaof " + n.nsIP + " " + mport,
				"replica-announce-ip 127.0.0.1"}, common...))
	}
	var sentinels []string
	for i := range 3 {
		port := strconv.Itoa(freeLoopbackPort(t))
		p := startProc(t, dir, "sentinel-"+strconv.Itoa(i+1), "127.0.0.1:"+port, []string{sentinelBin}, []string{
			"port " + port, "bind " + n.sentinelIP + " 127.0.0.1", "bind-source-addr " + n.sentinelIP,
			"protected-mode no", "dir " + dir,
			"sentinel monitor mymaster " + n.nsIP + " " + mport + " 2",
			"sentinel down-after-milliseconds mymaster 2000",
			"sentinel failover-timeout mymaster 3000",
			"sentinel parallel-syncs mymaster 1",
		})
		sentinels = append(sentinels, p.addr)
	}
	ctx := testContext(t, 2*time.Minute)
	waitFor(t, 30*time.Second, "every sentinel to know both replicas and the other sentinels", func() bool {
		for _, s := range sentinels {
			v, err := sentinelQuery(ctx, s, "master", "mymaster")
			if err != nil {
				return false
			}
			m := fmt.Sprint(v)
			if !strings.Contains(m, "flags master ") || !strings.Contains(m, "num-slaves 2 ") ||
				!strings.Contains(m, "num-other-sentinels 2 ") {
				return false
			}
		}
		return true
	})
	// The isolation below relies on the sentinels' source address.
	mc := directTo(master.addr, 0)
	defer mc.Close()
	list, err := mc.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, " name=sentinel-") && !strings.Contains(l, "addr="+n.sentinelIP+":") {
			t.Fatalf("a sentinel reaches the master from another address than %s: %s", n.sentinelIP, l)
		}
	}

	proxyAddr, src := startNetnsProxy(t, sentinels)
	waitRoutes(t, proxyAddr, master.addr, 20*time.Second)
	newCli := func(o *redis.Options) *redis.Client { o.Addr = proxyAddr; return redis.NewClient(o) }
	l := startLoad(t, proxyAddr, keyPrefix(t), newCli)
	l.waitAcksAfter(t, time.Now().Add(time.Second))

	event := time.Now()
	if err := n.isolate(); err != nil {
		t.Fatal(err)
	}
	var newAddr string
	waitFor(t, 30*time.Second, "the sentinels to agree on a new master", func() bool {
		a, err := agreedMaster(ctx, sentinels)
		newAddr = a
		return err == nil && a != master.addr
	})
	at := waitRoutes(t, proxyAddr, newAddr, 30*time.Second)
	t.Logf("master isolated from the sentinels; they agree on %s; the proxy routes to it %v after the isolation",
		newAddr, at.Sub(event).Round(time.Millisecond))

	// The old master is alive, reachable and still a master: nothing the
	// proxy sends may reach it any more.
	s1 := waitSnap(t, mc, 5*time.Second)
	observe(2 * time.Second)
	s2 := waitSnap(t, mc, 5*time.Second)
	if s1.role != "master" || s2.role != "master" {
		t.Errorf("the isolated old master's role is %s, %s; want master (split brain)", s1.role, s2.role)
	}
	if s2.calls["set"] != s1.calls["set"] {
		t.Errorf("the isolated old master executed %d SETs in the 2 s after the proxy moved", s2.calls["set"]-s1.calls["set"])
	}
	if stray := l.strayWrites(t, master.addr, newAddr); len(stray) > 0 {
		t.Errorf("%d writes ran on the isolated old master after the promotion, e.g. %v", len(stray), stray[:min(len(stray), 5)])
	}
	t.Logf("watcher: %+v", src.Status().LastVerified)
	l.finish(t, at, newAddr, planned)
}

// startNetnsProxy runs a watcher and a proxy in this process, like
// startStack does for topology stacks, stopped when t ends.
func startNetnsProxy(t *testing.T, sentinels []string) (string, *sentinel.Watcher) {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))
	src, err := sentinel.New(sentinel.Options{MasterName: "mymaster", Sentinels: sentinels}, log.Named("watcher"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.NewServer(proxy.Options{Name: "mymaster", Source: src, HoldTimeout: 10 * time.Second,
		DrainTimeout: time.Second}, log.Named("proxy"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- src.Run(ctx) }()
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("stop proxy or watcher: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("proxy or watcher did not stop within 30 s")
				return
			}
		}
	})
	return ln.Addr().String(), src
}
