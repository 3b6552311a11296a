package topology

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"go.uber.org/zap"
)

// procs is what a Sentinel topology and a cluster both keep of the
// processes they start: their directory, the copy of the nodes' output,
// and every node ever spawned, so that Stop finds each one.
type procs struct {
	what   string // "topology" or "cluster", in errors and logs
	dir    string
	ownDir bool
	out    *lockedWriter // the Log option, serialised; nil if unset

	mu      sync.Mutex
	spawned []*Node // every node ever started, failed attempts included

	stopOnce sync.Once
	stopErr  error
}

// open prepares the directory (a new temporary one when dir is empty) and
// the output copy.
func (p *procs) open(what, dir string, log io.Writer) error {
	p.what, p.dir = what, dir
	if p.dir == "" {
		var err error
		if p.dir, err = os.MkdirTemp("", "sentinel-proxy-"+what+"-"); err != nil {
			return fmt.Errorf("%s dir: %w", what, err)
		}
		p.ownDir = true
	} else if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return fmt.Errorf("%s dir: %w", what, err)
	}
	if log != nil {
		p.out = &lockedWriter{w: log}
	}
	return nil
}

// record remembers a node before its process starts (nodeSpec.record).
func (p *procs) record(n *Node) {
	p.mu.Lock()
	p.spawned = append(p.spawned, n)
	p.mu.Unlock()
}

// nodeOutput is where a node's output goes besides its log file, or nil.
func (p *procs) nodeOutput(name string) io.Writer {
	if p.out == nil {
		return nil
	}
	return &prefixWriter{w: p.out, prefix: name + " | "}
}

// stop kills every spawned process (in the order order leaves them, when
// given), waits for them and removes a temporary directory. Safe to call
// twice; the second call returns the first one's result.
func (p *procs) stop(logger *zap.Logger, order func([]*Node)) error {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		nodes := slices.Clone(p.spawned)
		p.mu.Unlock()
		if order != nil {
			order(nodes)
		}
		var errs []error
		for _, n := range nodes {
			errs = append(errs, n.shutdown())
		}
		if p.ownDir {
			if err := os.RemoveAll(p.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s dir: %w", p.what, err))
			}
		}
		p.stopErr = errors.Join(errs...)
		logger.Info(p.what+" stopped", zap.Error(p.stopErr))
	})
	return p.stopErr
}
