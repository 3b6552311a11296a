package topology

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// exitWait bounds how long Kill, Stop and Topology.Stop wait for a signalled
// process to exit before reporting it.
const exitWait = 10 * time.Second

// errAddrInUse marks a start that failed because the port was taken between
// choosing it and the process binding it; the caller retries on a new port.
var errAddrInUse = errors.New("address already in use")

// errNotRunning is returned by Pause and Resume on a node with no process.
var errNotRunning = errors.New("not running")

// Node is one redis-server or redis-sentinel process of a Topology. Its
// address never changes; its process does (Kill, Restart).
type Node struct {
	// Name is "redis-1" … for data nodes (redis-1 is the initial master)
	// and "sentinel-1" … for sentinels; "node-1" … in a Cluster.
	Name string
	// Host, Port and Addr (host:port) are where the node listens.
	Host string
	Port int
	Addr string

	sentinel bool
	argv     []string // binary and arguments, config path included
	confPath string
	logPath  string
	out      io.Writer // extra copy of the output (Options.Log), or nil
	log      *zap.Logger
	client   *redis.Client

	mu     sync.Mutex
	proc   *process // current or last process; nil before the first start
	closed bool     // the topology is stopped: no more starts
}

// process is one run of a node's program.
type process struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed once the process is reaped

	// Guarded by Node.mu.
	exited bool // the process has exited (perhaps not yet reaped)
	paused bool
}

func newNode(name string, sentinel bool, host string, port int, argv []string, confPath, logPath, password string, out io.Writer, log *zap.Logger) *Node {
	addr := joinPort(host, port)
	return &Node{
		Name: name, Host: host, Port: port, Addr: addr,
		sentinel: sentinel, argv: argv, confPath: confPath, logPath: logPath, out: out,
		log: log.With(zap.String("node", name), zap.String("addr", addr)),
		client: redis.NewClient(&redis.Options{
			Addr:     addr,
			Password: password,
			// Plain RESP2, no CLIENT SETINFO, no maintenance
			// notifications: the same on redis-server and Sentinel 7.0.
			Protocol:                 2,
			DisableIdentity:          true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
			// Callers poll; a check must fail fast, never retry by itself.
			MaxRetries:    -1,
			DialerRetries: 1,
			DialTimeout:   time.Second,
			ReadTimeout:   time.Second,
			WriteTimeout:  time.Second,
			PoolSize:      4,
		}),
	}
}

// IsSentinel reports whether the node is a sentinel (else a data node).
func (n *Node) IsSentinel() bool { return n.sentinel }

// ConfigPath is the node's config file (Sentinel and failovers rewrite it).
func (n *Node) ConfigPath() string { return n.confPath }

// LogPath is the file the node's output goes to.
func (n *Node) LogPath() string { return n.logPath }

// Client is a small go-redis client to the node (RESP2, authenticated, no
// retries, 1 s timeouts), owned by the topology and closed by Stop. Do not
// close it; use your own client for blocking or long commands.
func (n *Node) Client() *redis.Client { return n.client }

// PID is the process ID of the running process, or 0 when none runs.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || n.proc.exited {
		return 0
	}
	return n.proc.pid
}

// Running reports whether the node's process is alive (perhaps paused).
func (n *Node) Running() bool { return n.PID() != 0 }

// Paused reports whether the node is stopped with SIGSTOP.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil && !n.proc.exited && n.proc.paused
}

// live reports whether the node can answer: running and not paused.
func (n *Node) live() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil && !n.proc.exited && !n.proc.paused
}

// Kill sends SIGKILL to the node's process group (a crash, or a host that
// dies) and waits until it has exited. Killing a node that is not running
// is a no-op.
func (n *Node) Kill() error {
	p, err := n.signal(syscall.SIGKILL)
	if p == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill %s: %w", n.Name, err)
	}
	n.log.Info("node killed", zap.Int("pid", p.pid))
	return n.waitExit(p)
}

// Pause sends SIGSTOP to the node's process group: it keeps its sockets but
// answers nothing, like a frozen host or a partition without resets. A
// sentinel paused for more than 2 s enters TILT mode for 30 s after Resume.
func (n *Node) Pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proc
	if p == nil || p.exited {
		return fmt.Errorf("pause %s: %w", n.Name, errNotRunning)
	}
	if err := syscall.Kill(-p.pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", n.Name, err)
	}
	p.paused = true
	n.log.Info("node paused", zap.Int("pid", p.pid))
	return nil
}

// Resume sends SIGCONT to a paused node.
func (n *Node) Resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proc
	if p == nil || p.exited {
		return fmt.Errorf("resume %s: %w", n.Name, errNotRunning)
	}
	if err := syscall.Kill(-p.pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume %s: %w", n.Name, err)
	}
	p.paused = false
	n.log.Info("node resumed", zap.Int("pid", p.pid))
	return nil
}

// Stop shuts the node down gracefully (SIGTERM, after SIGCONT if paused),
// and with SIGKILL if it has not exited within 10 s. A master waits up to
// 2 s (shutdown-timeout) for lagging replicas first. Stopping a node that is
// not running is a no-op.
func (n *Node) Stop() error {
	p, err := n.signal(syscall.SIGCONT, syscall.SIGTERM)
	if p == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", n.Name, err)
	}
	select {
	case <-p.done:
		n.log.Info("node stopped", zap.Int("pid", p.pid))
		return n.waitExit(p)
	case <-time.After(exitWait):
	}
	return n.Kill()
}

// Restart starts the node's program again on the same port with the same
// config file and waits until it answers. The config file is the one
// Sentinel and failovers rewrite, so the node comes back in the role that
// file names: the initial master comes back as a master (what a crashed
// master without its own supervisor does, and what Sentinel later converts
// to a replica); a replica comes back replicating from the master it was
// last told to follow; a sentinel comes back with its known replicas,
// sentinels and epochs; a Cluster node comes back with its node ID and
// last known cluster configuration (nodes.conf), and a master that was
// failed over meanwhile is made a replica by the cluster. Data nodes come
// back empty (no persistence).
// Restart fails if the node is still running.
func (n *Node) Restart(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("restart %s: still running (pid %d)", n.Name, n.PID())
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	// The last process is reaped (and its output copied) before the next
	// one starts.
	n.mu.Lock()
	last := n.proc
	n.mu.Unlock()
	if last != nil {
		select {
		case <-last.done:
		case <-ctx.Done():
			return fmt.Errorf("restart %s: %w", n.Name, ctx.Err())
		}
	}
	if err := n.start(ctx); err != nil {
		return fmt.Errorf("restart %s: %w", n.Name, err)
	}
	return nil
}

// signal sends sigs, in order, to the process group of the running process
// and returns that process (nil if none runs). The group is signalled only
// while its leader has not exited, so its ID cannot have been reused.
func (n *Node) signal(sigs ...syscall.Signal) (*process, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proc
	if p == nil || p.exited {
		return nil, nil
	}
	for _, s := range sigs {
		if err := syscall.Kill(-p.pid, s); err != nil && !errors.Is(err, syscall.ESRCH) {
			return p, err
		}
	}
	if sigs[len(sigs)-1] == syscall.SIGKILL {
		p.paused = false
	}
	return p, nil
}

// waitExit waits, bounded, until p is reaped and the rest of its process
// group (a forked RDB child, say) has gone too. Only signal 0 is sent to the
// group once p is reaped: the group ID stays reserved while any member,
// even a zombie, exists, and probing a reused one would be harmless.
func (n *Node) waitExit(p *process) error {
	deadline := time.NewTimer(exitWait)
	defer deadline.Stop()
	select {
	case <-p.done:
	case <-deadline.C:
		return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", n.Name, p.pid, exitWait)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for syscall.Kill(-p.pid, 0) == nil {
		select {
		case <-deadline.C:
			return fmt.Errorf("%s: process group %d still has members %v after SIGKILL", n.Name, p.pid, exitWait)
		case <-tick.C:
		}
	}
	return nil
}

// start runs the node's program and waits until the node answers INFO with
// the new process's ID (so a foreign server that took the port cannot pass
// for it). On failure the process is killed.
func (n *Node) start(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errors.New("topology stopped")
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("open log: %w", err)
	}
	// The child has its own copy of the file descriptor.
	defer logf.Close()
	cmd := exec.Command(n.argv[0], n.argv[1:]...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Stdout = logf
	if n.out != nil {
		cmd.Stdout = io.MultiWriter(logf, n.out)
		// A forked RDB child may hold the pipe; don't let Wait hang on it.
		cmd.WaitDelay = time.Second
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("start %s: %w", n.argv[0], err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	n.proc = p
	n.mu.Unlock()
	go n.reap(p)

	if err := n.waitReady(ctx, p); err != nil {
		_, _ = n.signal(syscall.SIGKILL)
		_ = n.waitExit(p)
		return err
	}
	n.log.Info("node started", zap.Int("pid", p.pid))
	return nil
}

// reap records p's exit and reaps it. It exits when the process does.
func (n *Node) reap(p *process) {
	if err := waitExited(p.pid); err == nil {
		n.markExited(p)
	}
	_ = p.cmd.Wait() // the exit status is in the log; killed is normal here
	n.markExited(p)
	close(p.done)
}

func (n *Node) markExited(p *process) {
	n.mu.Lock()
	p.exited = true
	n.mu.Unlock()
}

// waitReady polls INFO server until process_id is p's PID.
func (n *Node) waitReady(ctx context.Context, p *process) error {
	var last error
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		// A plain dial first: go-redis logs every failed dial through its
		// global logger, and the port is refused until the process binds.
		conn, err := d.DialContext(ctx, "tcp", n.Addr)
		if err == nil {
			_ = conn.Close()
			var pid int
			pid, err = n.infoPID(ctx)
			if err == nil && pid == p.pid {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("port answered by process %d, not ours", pid)
			}
		}
		last = err
		select {
		case <-p.done:
			tail := n.logTail()
			if bytes.Contains(tail, []byte("Address already in use")) {
				return fmt.Errorf("%s exited: %w", n.Name, errAddrInUse)
			}
			return fmt.Errorf("%s exited during start (%s): %s", n.Name, p.cmd.ProcessState, tail)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)", n.Name, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// infoPID returns the process_id the node reports in INFO server.
func (n *Node) infoPID(ctx context.Context) (int, error) {
	info, err := n.info(ctx, "server")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(info["process_id"])
}

// info runs INFO section and returns its key:value lines.
func (n *Node) info(ctx context.Context, section string) (map[string]string, error) {
	s, err := n.client.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("info %s on %s: %w", section, n.Name, err)
	}
	m := make(map[string]string)
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// logTail returns the end of the node's log, for error messages.
func (n *Node) logTail() []byte { return fileTail(n.logPath) }

// fileTail returns the end of a log file, for error messages.
func fileTail(path string) []byte {
	const max = 1500
	f, err := os.Open(path)
	if err != nil {
		return []byte("(no log: " + err.Error() + ")")
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(-max, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return bytes.TrimSpace(b)
}

// shutdown marks the node closed, kills its process group and waits.
func (n *Node) shutdown() error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	err := n.Kill()
	if cerr := n.client.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close client %s: %w", n.Name, cerr)
	}
	return err
}
