package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"go.uber.org/zap"
)

// portAttempts bounds the retries when a chosen free port is taken before
// the process binds it.
const portAttempts = 5

// nodeSpec is what launchNode needs to start one node; the Sentinel
// topology and the cluster fill it in their own way.
type nodeSpec struct {
	name     string
	sentinel bool
	host     string
	dir      string   // the node's directory (its config and data)
	conf     string   // config file path, inside argv
	argv     []string // program and arguments
	logPath  string
	password string    // for the node's check client
	out      io.Writer // extra copy of the output, or nil
	logger   *zap.Logger
	// render returns the config file for a port.
	render func(port int, dir string) string
	// record is called with every node before its process starts, failed
	// attempts included, so that Stop finds every process.
	record func(*Node)
}

// launchNode writes a node's config on a free port and starts it, choosing a
// new port if another process took it first.
func launchNode(ctx context.Context, s nodeSpec) (*Node, error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("node dir: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort(s.host)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(s.conf, []byte(s.render(port, s.dir)), 0o600); err != nil {
			return nil, fmt.Errorf("write config: %w", err)
		}
		n := newNode(s.name, s.sentinel, s.host, port, s.argv, s.conf, s.logPath, s.password, s.out, s.logger)
		s.record(n)
		err = n.start(ctx)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == portAttempts {
			return nil, err
		}
		s.logger.Info("port taken, retrying", zap.String("node", s.name), zap.Int("port", port))
	}
}

// freePort asks the kernel for a free port on host. Another process can take
// it before ours binds it; launchNode retries then.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", joinPort(host, 0))
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	return port, nil
}
