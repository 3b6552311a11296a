//go:build unix && !linux

package topology

import (
	"errors"
	"syscall"
)

// sysProcAttr puts the child in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitExited cannot wait without reaping on this system: the exit is then
// recorded only after the reap, which leaves a small PID-reuse window.
func waitExited(int) error { return errors.ErrUnsupported }
